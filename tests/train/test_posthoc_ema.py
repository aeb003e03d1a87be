"""Post-hoc EMA (EDM2): the profile math, the toy reconstruction, and the snapshots of a tiny training run."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from greendiff.errors import UserInputError
from greendiff.train import Stop, TrainerCallback, checkpoint_dirs, train
from greendiff.train._posthoc_ema import (
    SNAPSHOT_DIR, PowerEMA, gamma_to_sigma_rel, power_ema_weight, reconstruct, sigma_rel_to_gamma, snapshot_steps,
    solve_weights,
)
from tests.train.fakes import InterruptAfter

STEPS = 2000


def theta(t: int) -> torch.Tensor:
    """The toy "parameter" after step t: a known function of the step, three coordinates within [-1, 1]."""
    return torch.tensor([math.sin(t / 150.0), t / STEPS, math.exp(-t / 300.0)])


def discrete_profile(end: int, gamma: float, length: int) -> np.ndarray:
    """The weights of θ_1..θ_length in a power EMA stopped after step ``end`` (0 after it): (i^(γ+1) - (i-1)^(γ+1))
    / end^(γ+1), what :func:`power_ema_weight`'s updates telescope to."""
    i = np.minimum(np.arange(1, length + 1, dtype=np.float64), end)
    return np.where(np.arange(1, length + 1) <= end, (i ** (gamma + 1) - (i - 1) ** (gamma + 1)) / end ** (gamma + 1), 0.0)


def test_sigma_rel_and_gamma_match_edm2s_values_and_round_trip():
    # EDM2 section 3.1: sigma_rel 0.05 and 0.10 are gamma 16.97 and 6.94
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.005)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.005)
    for sigma_rel in (0.01, 0.05, 0.08, 0.13, 0.25, 0.3):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(sigma_rel)) == pytest.approx(sigma_rel, rel=1e-10)
    assert gamma_to_sigma_rel(0.0) == pytest.approx(math.sqrt(1 / 12))  # a flat average: the uniform law's std
    with pytest.raises(ValueError):
        sigma_rel_to_gamma(0.31)


def test_power_ema_weight_telescopes_to_the_discrete_power_profile():
    gamma, steps = 6.94, 50
    assert power_ema_weight(1, gamma) == 1.0  # step 1 takes the parameters whole
    weights = np.zeros(steps)
    for t in range(1, steps + 1):  # the weight of each step's parameters after a run of lerps
        w = power_ema_weight(t, gamma)
        weights *= 1 - w
        weights[t - 1] = w
    np.testing.assert_allclose(weights, discrete_profile(steps, gamma, steps), rtol=1e-12, atol=1e-15)
    assert weights.sum() == pytest.approx(1.0)


def test_solve_weights_returns_a_snapshot_exactly_and_sums_to_one():
    gammas = [sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.10)] * 2
    x = solve_weights([1000, 1000, 500, 500], gammas, gammas[1], 1000)
    np.testing.assert_allclose(x, [0, 1, 0, 0], atol=1e-9)  # a profile already held needs no other
    x = solve_weights([1000, 1000, 500, 500], gammas, sigma_rel_to_gamma(0.08), 1000)
    assert x.sum() == pytest.approx(1.0) and np.all(np.isfinite(x))


@pytest.mark.parametrize("snapshots", [10, 20])
def test_a_known_ema_is_reconstructed_from_snapshots_of_a_toy_sequence(snapshots):
    param = [theta(0)]
    tracked, direct = PowerEMA(param, (0.05, 0.10)), PowerEMA(param, (0.08,))
    saved = []  # (step, [ema of each profile])
    every = STEPS // snapshots
    for t in range(1, STEPS + 1):
        param[0].copy_(theta(t))
        tracked.update(param, t)
        direct.update(param, t)
        if t % every == 0:
            saved.append((t, [s[0].double().clone() for s in tracked.shadows]))
    steps = [t for t, _ in saved for _ in tracked.gammas]
    gammas = [g for _ in saved for g in tracked.gammas]
    x = solve_weights(steps, gammas, sigma_rel_to_gamma(0.08), STEPS)
    rebuilt = sum(c * v for c, v in zip(x, [v for _, vs in saved for v in vs]))
    error = float((rebuilt - direct.shadows[0][0].double()).abs().max())
    # the bound: the rebuilt EMA is sum_i w_i θ_i with w the snapshots' combined discrete profile, so it is off
    # from the tracked one by at most ||w - w_target||_1 · max|θ| (max|θ| <= 1 here); float32 EMAs add ~1e-6
    w = sum(c * discrete_profile(s, g, STEPS) for c, s, g in zip(x, steps, gammas))
    mismatch = float(np.abs(w - discrete_profile(STEPS, sigma_rel_to_gamma(0.08), STEPS)).sum())
    assert error <= mismatch + 1e-5
    assert error < (1e-3 if snapshots == 10 else 1e-4)  # measured: 4.6e-4 and 3.1e-5
    # and the tracked EMA really differs from the two stored ones: the solve did some work
    assert all(float((s[0].double() - direct.shadows[0][0].double()).abs().max()) > 1e-2 for s in tracked.shadows)


def test_snapshot_steps_are_even_and_end_at_max_steps():
    assert sorted(snapshot_steps(2, 4)) == [2, 4]
    assert sorted(snapshot_steps(3, 1000)) == [334, 667, 1000]
    assert sorted(snapshot_steps(8, 3)) == [1, 2, 3]  # more snapshots than steps: one per step


def test_a_tiny_run_writes_its_snapshots_and_reconstructs(tmp_path, tiny_data, tiny_config, tracker):
    result = train(tiny_config(run__max_steps=4, optim__ema_snapshots=2), tmp_path, tiny_data, tracker)
    assert result.status == "completed"
    folder = tmp_path / SNAPSHOT_DIR
    assert sorted(p.name for p in folder.glob("step-*")) == ["step-2.json", "step-2.safetensors", "step-4.json",
                                                             "step-4.safetensors"]
    sidecar = json.loads((folder / "step-4.json").read_text())
    assert sidecar["step"] == 4 and sidecar["sigma_rels"] == [0.05, 0.1]
    assert sidecar["gammas"] == pytest.approx([16.97, 6.94], abs=0.005)
    last = load_file(str(folder / "step-4.safetensors"))
    model = load_file(str(checkpoint_dirs(tmp_path)[-1] / "model.safetensors"))
    assert {k.split("/", 1)[1] for k in last} == set(model)
    # sigma_rel 0.10 is the second stored profile itself at the last snapshot
    rebuilt = reconstruct(tmp_path, 0.10)
    assert rebuilt.keys() == model.keys()
    assert all(torch.allclose(rebuilt[k], last[f"1/{k}"], atol=1e-5) for k in rebuilt)
    # and another length differs from both stored ones
    other = reconstruct(tmp_path, 0.2)
    assert any(not torch.allclose(other[k], last[f"1/{k}"], atol=1e-6) for k in other)


class StopAt(TrainerCallback):
    """A stopping rule firing after step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, outcome):
        return Stop("enough") if outcome.step == self.step else None


def test_a_run_stopped_early_snapshots_its_last_step(tmp_path, tiny_data, tiny_config, tracker):
    result = train(tiny_config(run__max_steps=8, optim__ema_snapshots=2), tmp_path, tiny_data, tracker,
                   callbacks=[StopAt(5)])
    assert result.status == "stopped" and result.step == 5
    assert sorted(p.name for p in (tmp_path / SNAPSHOT_DIR).glob("*.json")) == ["step-4.json", "step-5.json"]
    last = load_file(str(tmp_path / SNAPSHOT_DIR / "step-5.safetensors"))
    # the snapshot holds step 5's update: sigma_rel 0.05 rebuilt at the end is that snapshot
    assert all(torch.allclose(t, last[f"0/{k}"], atol=1e-5) for k, t in reconstruct(tmp_path, 0.05).items())


def test_resume_keeps_the_emas_bit_identical(tmp_path, tiny_data, tiny_config, tracker):
    # a snapshot every step, and wide profiles (sigma_rel 0.25: gamma ~0.2) whose memory of the steps before the
    # stop is long: EMAs restarted at the resume would differ in every later snapshot (step 1's EMA is the
    # parameters themselves, so a stop after step 1 could not tell)
    config = tiny_config(run__max_steps=8, optim__ema_snapshots=8, optim__ema_snapshot_stds="0.1,0.25")
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    train(config, whole, tiny_data, tracker)
    stop_at = random.Random().randint(2, 7)  # checked to fail at 2 and at 7 with EMAs restarted at the resume
    first = train(config, split, tiny_data, tracker, callbacks=[InterruptAfter(stop_at)])
    assert first.status == "interrupted" and first.step == stop_at
    second = train(config, split, tiny_data, tracker, resume=True)
    assert second.status == "completed"
    for step in range(1, 9):
        a = load_file(str(whole / SNAPSHOT_DIR / f"step-{step}.safetensors"))
        b = load_file(str(split / SNAPSHOT_DIR / f"step-{step}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"step {step}, stop at {stop_at}"
    # only the state files of the checkpoints kept (run.keep_checkpoints of them) are kept
    kept = sorted(p.name for p in (split / SNAPSHOT_DIR / "state").iterdir())
    assert kept == sorted(f"{c.name}.safetensors" for c in checkpoint_dirs(split)) and "step-8.safetensors" in kept
    assert len(kept) == min(config.run.keep_checkpoints, 2)


def test_a_resume_refuses_a_changed_ema_state_file(tmp_path, tiny_data, tiny_config, tracker):
    config = tiny_config(run__max_steps=6, optim__ema_snapshots=2)
    first = train(config, tmp_path, tiny_data, tracker, callbacks=[InterruptAfter(3)])
    assert first.status == "interrupted"
    state = tmp_path / SNAPSHOT_DIR / "state" / "step-3.safetensors"
    state.write_bytes(state.read_bytes()[:-4] + b"\0\0\0\1")
    with pytest.raises(UserInputError, match="step-3: train_state.json: its posthoc_ema state is malformed .SHA-256 differs"):
        train(config, tmp_path, tiny_data, tracker, resume=True)


def test_reconstruct_bad_inputs_are_one_line_errors(tmp_path, tiny_data, tiny_config, tracker):
    with pytest.raises(UserInputError, match="no post-hoc EMA snapshots.*--ema-snapshots"):
        reconstruct(tmp_path, 0.1)
    for bad in (0.0, -0.1, 0.31, float("nan"), True, "0.1"):
        with pytest.raises(UserInputError, match=r"not an EMA length: a sigma_rel in \(0, 0.3\]"):
            reconstruct(tmp_path, bad)
    train(tiny_config(run__max_steps=2, optim__ema_snapshots=1), tmp_path, tiny_data, tracker)
    sidecar = tmp_path / SNAPSHOT_DIR / "step-2.json"
    sidecar.write_text(sidecar.read_text().replace('"step": 2', '"step": 3'))
    with pytest.raises(UserInputError, match="not a post-hoc EMA snapshot greendiff wrote") as info:
        reconstruct(tmp_path, 0.1)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("value, message", [("-1", "ema_snapshots must be >= 0 and at most 10000"),
                                            ("2.5", "--ema-snapshots must be an integer")])
def test_bad_ema_snapshots_flag_is_a_one_line_error_and_creates_nothing(tmp_path, capsys, value, message):
    from greendiff.cli._app import main
    from tests.cli.test_train_cli import TINY

    code = main(["train", *TINY, "--max-steps", "2", "--output-dir", str(tmp_path / "runs"),
                 "--ledger", str(tmp_path / "l.sqlite"), "--ema-snapshots", value])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "l.sqlite").exists()
