from __future__ import annotations

import json
import random
import re

import pytest
import torch
from safetensors.torch import load_file

from greendiff.data import batch_indices
from greendiff.errors import UserInputError
from greendiff.units import joules_to_kwh
from greendiff.train import (
    RecipeConfig,
    checkpoint_dirs,
    loss_weights,
    make_noise_scheduler,
    resolve_precision,
    train,
)
from greendiff.train import _family, _precision, _step
from tests.train.fakes import EvalRecorder, InterruptAfter


def losses(run_dir):
    return [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_loss_decreases_over_50_steps(tmp_path, tiny_data, tiny_config, tracker):
    result = train(tiny_config(run__max_steps=50, optim__ema="false"), tmp_path, tiny_data, tracker)
    values = losses(tmp_path)
    assert result.status == "completed" and len(values) == 50
    assert sum(values[-10:]) / 10 < 0.7 * sum(values[:10]) / 10


def test_outputs_of_a_run(tmp_path, tiny_data, tiny_config, tracker):
    train(tiny_config(run__max_steps=4), tmp_path, tiny_data, tracker)
    assert (tmp_path / "samples" / "step-4.png").is_file()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-4"]
    header = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert header["params"] > 0 and header["macs_per_image"] > 0
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[1])
    assert {"step", "loss", "lr", "samples_per_s", "energy_kwh", "emissions_kg", "warmup"} <= set(record)
    summary = tracker.stop()
    assert {p.name for p in summary.phases} == {"train", "sample", "checkpoint"}


def test_pipeline_round_trips_through_plain_diffusers(tmp_path, tiny_data, tiny_config, tracker):
    from diffusers import DDPMPipeline

    train(tiny_config(run__max_steps=3), tmp_path, tiny_data, tracker)
    pipe = DDPMPipeline.from_pretrained(str(tmp_path / "pipeline"))
    images = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 8, 8, 1)
    # the exported weights are the EMA weights, not the raw ones
    raw = load_file(str(checkpoint_dirs(tmp_path)[-1] / "model.safetensors"))
    exported = dict(pipe.unet.named_parameters())
    assert any(not torch.equal(raw[k], exported[k].detach()) for k in raw if k in exported)


def test_resume_after_a_stop_at_a_random_step_is_bit_identical(tmp_path, tiny_data, tiny_config, tracker):
    config = tiny_config(run__max_steps=12)
    whole, split = tmp_path / "whole", tmp_path / "split"
    whole.mkdir(), split.mkdir()
    train(config, whole, tiny_data, tracker)
    stop_at = random.Random().randint(1, 11)
    first = train(config, split, tiny_data, tracker, callbacks=[InterruptAfter(stop_at)])
    assert first.status == "interrupted" and first.step == stop_at
    second = train(config, split, tiny_data, tracker, resume=True)
    assert second.status == "completed" and second.step == 12
    a = load_file(str(checkpoint_dirs(whole)[-1] / "model.safetensors"))
    b = load_file(str(checkpoint_dirs(split)[-1] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"differs after stop at {stop_at}"
    ema_a = load_file(str(checkpoint_dirs(whole)[-1] / "ema.safetensors"))
    ema_b = load_file(str(checkpoint_dirs(split)[-1] / "ema.safetensors"))
    assert len(ema_a) > 0 and ema_a.keys() == ema_b.keys() and all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    opt_a = load_file(str(checkpoint_dirs(whole)[-1] / "optimizer.safetensors"))
    opt_b = load_file(str(checkpoint_dirs(split)[-1] / "optimizer.safetensors"))
    assert len(opt_a) > 0 and opt_a.keys() == opt_b.keys() and all(torch.equal(opt_a[k], opt_b[k]) for k in opt_a)


def test_resume_without_checkpoint_is_a_user_error(tmp_path, tiny_data, tiny_config, tracker):
    with pytest.raises(UserInputError, match="nothing to resume"):
        train(tiny_config(run__max_steps=2), tmp_path, tiny_data, tracker, resume=True)


def test_min_snr_weights():
    optim = RecipeConfig()
    scheduler = make_noise_scheduler(optim)
    t = torch.tensor([1, 500, 999])
    w = loss_weights(scheduler, t, optim)
    alphas = scheduler.alphas_cumprod[t]
    snr = alphas / (1 - alphas)
    assert torch.allclose(w, torch.clamp(snr, max=5.0) / snr)
    assert w[0] < 1 and w[2] == pytest.approx(1.0)  # low noise down-weighted, high noise kept
    uniform = loss_weights(scheduler, t, RecipeConfig(loss_weighting="uniform"))
    assert torch.equal(uniform, torch.ones(3))


def test_mixed_precision_flag_sets_the_autocast_dtype(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    seen = []
    real = _family.diffusion_loss

    def spy(unet, *args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return real(unet, *args, **kwargs)

    monkeypatch.setattr(_family, "diffusion_loss", spy)
    train(tiny_config(run__max_steps=1, optim__mixed_precision="bf16"), tmp_path / "a", tiny_data, tracker)
    train(tiny_config(run__max_steps=1, optim__mixed_precision="no"), tmp_path / "b", tiny_data, tracker)
    assert seen == [torch.bfloat16, torch.float32]


def test_auto_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(_precision, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu"))[0] == "no"
    monkeypatch.setattr(_precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu"))[0] == "bf16"
    with pytest.raises(UserInputError, match="fp16 autocast is not supported on the CPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_ema_weights_differ_from_raw_and_no_ema_means_no_ema(tmp_path, tiny_data, tiny_config, tracker):
    train(tiny_config(run__max_steps=5), tmp_path / "ema", tiny_data, tracker)
    assert (checkpoint_dirs(tmp_path / "ema")[-1] / "ema.safetensors").exists()
    train(tiny_config(run__max_steps=5, optim__ema="false"), tmp_path / "raw", tiny_data, tracker)
    assert not (checkpoint_dirs(tmp_path / "raw")[-1] / "ema.safetensors").exists()


def test_non_finite_losses_are_skipped_then_stop(tmp_path, tiny_data, tiny_config, tracker, monkeypatch, caplog):
    real = _family.diffusion_loss
    calls = iter(range(1000))

    def sometimes_nan(*args, **kwargs):
        loss = real(*args, **kwargs)
        return loss * float("nan") if next(calls) == 1 else loss

    monkeypatch.setattr(_family, "diffusion_loss", sometimes_nan)
    result = train(tiny_config(run__max_steps=4), tmp_path / "one", tiny_data, tracker)
    assert result.status == "completed" and "update skipped" in caplog.text
    monkeypatch.setattr(_family, "diffusion_loss", lambda *a, **k: real(*a, **k) * float("inf"))
    result = train(tiny_config(run__max_steps=10, run__max_bad_steps=3), tmp_path / "bad", tiny_data, tracker)
    assert (result.status, result.step) == ("diverged", 3)
    assert result.stop_reason == "3 steps in a row had a non-finite loss or gradient"


def test_batches_cover_each_epoch_once():
    seen = torch.cat([batch_indices(s, 64, 16, seed=3) for s in range(4)])
    assert sorted(seen.tolist()) == list(range(64))
    assert not torch.equal(batch_indices(0, 64, 16, 3), batch_indices(4, 64, 16, 3))  # next epoch reshuffles


def test_schedule_and_sampler_flags():
    from diffusers import DDIMScheduler, DDPMScheduler

    from greendiff.train import make_sampler

    linear, cosine = make_noise_scheduler(RecipeConfig(beta_schedule="linear")), make_noise_scheduler(RecipeConfig())
    assert not torch.allclose(linear.betas, cosine.betas)
    assert linear.betas[0] == pytest.approx(1e-4) and linear.betas[-1] == pytest.approx(0.02)
    assert isinstance(make_sampler(RecipeConfig(), cosine), DDIMScheduler)
    assert type(make_sampler(RecipeConfig(sampler="ddpm"), cosine)) is DDPMScheduler


def scripted_quality(monkeypatch, fids):
    """Replace the metric computation by a scripted FID sequence (the sampling still runs)."""
    import greendiff.evaluate as evaluate_pkg
    from greendiff.evaluate import Quality

    values = iter(fids)
    monkeypatch.setattr(evaluate_pkg, "quality",
                        lambda *a, **k: Quality(next(values), 0.0, 0.0, 1.0, 1.0, 16))


def test_early_stopping_on_a_scripted_metric_keeps_the_best_checkpoint(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    scripted_quality(monkeypatch, [10.0, 9.0, 9.5, 9.6, 1.0])
    config = tiny_config(run__max_steps=40, stop__eval_every=2, stop__eval_samples=8, stop__patience=2,
                         stop__spread_seeds=1)
    result = train(config, tmp_path, tiny_data, tracker)
    assert (result.status, result.step) == ("stopped", 8)
    assert "no improvement" in result.stop_reason and "best 9 at step 4" in result.stop_reason
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("event") == "eval"]
    assert [(r["step"], r["fid"], r["best"]) for r in evals] == [(2, 10.0, True), (4, 9.0, True), (6, 9.5, False), (8, 9.6, False)]
    assert all(r["energy_kwh"] > 0 for r in evals)
    assert json.loads((tmp_path / "checkpoints" / "best" / "train_state.json").read_text())["step"] == 4
    assert [r for r in records if r.get("event") == "stopped"] == [records[-1]] == \
        [{"event": "stopped", "step": 8, "reason": result.stop_reason}]
    assert (tmp_path / "pipeline" / "model_index.json").exists()  # a stopped run is a finished run


def test_target_metric_stops_at_once(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    scripted_quality(monkeypatch, [10.0, 4.0, 3.0])
    result = train(tiny_config(run__max_steps=40, stop__eval_every=3, stop__eval_samples=8, stop__target=5.0,
                               stop__spread_seeds=1),
                   tmp_path, tiny_data, tracker)
    assert (result.status, result.step) == ("stopped", 6) and result.stop_reason.startswith("target reached")


def test_energy_budget_stops_the_run(tmp_path, tiny_data, tiny_config, tracker):
    """The budget holds from the first step (stop.budget_warmup_steps delays only the forecast): a budget smaller
    than one step stops the run after it."""
    result = train(tiny_config(run__max_steps=40, stop__budget_kwh=1e-9, stop__budget_warmup_steps=3),
                   tmp_path, tiny_data, tracker)
    assert (result.status, result.step) == ("stopped", 1) and "energy budget" in result.stop_reason


def test_a_budget_forecasts_the_run_after_its_warmup_steps(tmp_path, tiny_data, tiny_config, tracker):
    train(tiny_config(run__max_steps=5, stop__budget_kwh=1.0, stop__budget_warmup_steps=3), tmp_path, tiny_data, tracker)
    forecast = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"forecast"' in line]
    assert [f["step"] for f in forecast] == [3] and forecast[0]["energy_kwh"] > forecast[0]["energy_kwh_low"] > 0


def test_resume_keeps_the_stopping_state(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    scripted_quality(monkeypatch, [10.0, 9.0, 9.5, 9.6])
    config = tiny_config(run__max_steps=40, stop__eval_every=2, stop__eval_samples=8, stop__patience=2,
                         stop__spread_seeds=1)
    first = train(config, tmp_path, tiny_data, tracker, callbacks=[InterruptAfter(6)])
    assert first.status == "interrupted" and first.step == 6  # evaluations at 2, 4, 6 (one without improvement)
    result = train(config, tmp_path, tiny_data, tracker, resume=True)
    assert (result.status, result.step) == ("stopped", 8)  # the 4th evaluation is the 2nd without improvement


def test_first_evaluation_reports_the_seed_spread_and_kwh_schedule(tmp_path, tiny_data, tiny_config, tracker):
    config = tiny_config(run__max_steps=6, stop__eval_every_kwh=1e-12, stop__eval_samples=16, stop__spread_seeds=3)
    train(config, tmp_path, tiny_data, tracker)
    evals = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert [e["step"] for e in evals] == list(range(1, 7))  # any energy triggers the kWh schedule each step
    assert set(evals[0]["spread"]) == {"fid", "kid", "precision", "recall"} and evals[0]["spread"]["fid"] > 0
    assert all("spread" not in e for e in evals[1:])  # once per run


def test_optimizer_is_fused_adamw_with_the_loops_update():
    from greendiff.train import RecipeConfig
    from greendiff.train._loop import make_optimizer

    opt = make_optimizer(torch.nn.Linear(4, 2).parameters(), RecipeConfig(lr=3e-4, adam_beta1=0.9, weight_decay=0.01))
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    assert (opt.defaults["lr"], opt.defaults["betas"], opt.defaults["weight_decay"]) == (3e-4, (0.9, 0.999), 0.01)
    # from the same weights and gradients, the fused kernel makes the default loop's update
    a, b = torch.nn.Linear(4, 2), torch.nn.Linear(4, 2)
    b.load_state_dict(a.state_dict())
    before = a.weight.detach().clone()
    fused = make_optimizer(a.parameters(), RecipeConfig(lr=1e-2))
    loop = torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8)
    for model, optimizer in ((a, fused), (b, loop)):
        for _ in range(3):
            optimizer.zero_grad()
            (model(torch.arange(12.0).reshape(3, 4)) ** 2).sum().backward()
            optimizer.step()
    assert torch.allclose(a.weight, b.weight, atol=1e-6) and not torch.allclose(a.weight, before, atol=1e-3)


@pytest.mark.parametrize(("kind", "diffusers_name"), [("cosine", "cosine"), ("linear", "linear"),
                                                     ("constant", "constant_with_warmup")])
def test_lr_schedule_is_diffusers_curve(kind, diffusers_name):
    from diffusers.optimization import get_scheduler

    from greendiff.train._schedule import make_lr_scheduler

    def curve(make):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = make(optimizer)
        values = []
        for _ in range(120):
            values.append(scheduler.get_last_lr()[0])
            optimizer.step()
            scheduler.step()
        return values

    ours = curve(lambda o: make_lr_scheduler(o, kind, 10, 120))
    theirs = curve(lambda o: get_scheduler(diffusers_name, optimizer=o, num_warmup_steps=10, num_training_steps=120))
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_a_budget_stopped_run_has_finished_its_learning_rate_decay(tmp_path, tiny_data, tiny_config, tracker):
    def last_lr(run_dir):
        return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "lr" in r][-1]["lr"]

    per_step = tiny_config(run__max_steps=10, optim__lr_schedule="cosine")
    train(per_step, tmp_path / "probe", tiny_data, tracker)
    logs = [r for r in map(json.loads, (tmp_path / "probe" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    per_step_kwh = (logs[-1]["energy_kwh"] - logs[0]["energy_kwh"]) / (logs[-1]["step"] - logs[0]["step"])

    def budget() -> float:
        """~30 steps of a run allowed 1,000, over what the shared tracker has metered so far (a run's energy is
        the tracker's: the earlier runs' closing samples and exports, which cost more on a cold machine)."""
        return joules_to_kwh(tracker.total_energy_j()) + 30 * per_step_kwh

    fitted = train(tiny_config(run__max_steps=1000, optim__lr_schedule="cosine", stop__budget_kwh=budget(),
                               stop__budget_warmup_steps=5), tmp_path / "fitted", tiny_data, tracker)
    cut = train(tiny_config(run__max_steps=1000, optim__lr_schedule="cosine", stop__budget_kwh=budget(),
                            stop__budget_warmup_steps=5, stop__fit_schedule=False), tmp_path / "cut", tiny_data, tracker)
    assert fitted.status == cut.status == "stopped" and 10 < fitted.step < 200
    assert last_lr(tmp_path / "fitted") < 0.2 * 2e-3 < 0.9 * 2e-3 < last_lr(tmp_path / "cut")


def test_stratified_timesteps_cover_every_stratum_with_a_uniform_marginal():
    from greendiff.train._objectives import sample_timesteps

    g = torch.Generator().manual_seed(0)
    batches = [sample_timesteps(8, 1000, g, "stratified") for _ in range(2000)]
    assert all(sorted(int(t) // 125 for t in b) == list(range(8)) for b in batches[:50])
    counts = torch.bincount(torch.cat(batches) // 100, minlength=10).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.05  # 16,000 draws, each decile within 5 %


def test_evaluation_at_the_end_and_a_tuner_stopping_the_run(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    scripted_quality(monkeypatch, [10.0, 30.0, 99.0])
    pruner = EvalRecorder(prune_above=20.0, reason="pruned")
    config = tiny_config(run__max_steps=40, stop__eval_every=3, stop__eval_samples=8, stop__spread_seeds=1,
                         stop__eval_at_end=True)
    result = train(config, tmp_path, tiny_data, tracker, callbacks=[pruner])
    assert (result.status, result.step, result.stop_reason) == ("stopped", 6, "pruned")
    assert pruner.told == [(3, 10.0, False), (6, 30.0, False)]  # step 6 was just evaluated: no second evaluation
    scripted_quality(monkeypatch, [5.0])
    recorder = EvalRecorder()
    result = train(tiny_config(run__max_steps=4, stop__eval_samples=8, stop__spread_seeds=1, stop__eval_at_end=True),
                   tmp_path / "plain", tiny_data, tracker, callbacks=[recorder])
    assert result.status == "completed" and recorder.told == [(4, 5.0, True)]


def test_a_moved_horizon_is_saved_with_the_scheduler():
    from greendiff.train._schedule import make_lr_scheduler

    def scheduler():
        return make_lr_scheduler(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0), "cosine", 0, 1000)

    moved = scheduler()
    moved.lr_lambdas[0].horizon_steps = 50
    resumed = scheduler()
    resumed.load_state_dict(moved.state_dict())
    assert resumed.lr_lambdas[0].horizon_steps == 50 and resumed.lr_lambdas[0](50) == 0.0


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    """The disk fills up during the second checkpoint: a one-line error, the first checkpoint intact, nothing half-written."""
    import errno

    from greendiff.train import _checkpoint

    real_write, calls = _checkpoint._write_file, []

    def write_file(path, data):
        calls.append(path)
        if path.name == "optimizer.safetensors" and path.parent.name == ".tmp-step-4":
            real_write(path, data[: len(data) // 2])  # partly written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, data)

    monkeypatch.setattr(_checkpoint, "_write_file", write_file)
    with pytest.raises(UserInputError, match=r"could not write checkpoint .*step-4: No space left on device; "
                                             r"the previous checkpoint is intact") as err:
        train(tiny_config(run__max_steps=6, run__checkpoint_every=2), tmp_path / "run", tiny_data, tracker)
    assert "\n" not in str(err.value)
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step-2"]
    assert sorted(p.name for p in root.iterdir()) == ["step-2"]  # the partial .tmp-step-4 is removed
    json.loads((root / "step-2" / "train_state.json").read_text())  # complete and readable
    monkeypatch.setattr(_checkpoint, "_write_file", real_write)
    result = train(tiny_config(run__max_steps=6, run__checkpoint_every=2), tmp_path / "run", tiny_data, tracker, resume=True)
    assert result.status == "completed" and result.step == 6  # and the run resumes from it


# -- checkpoints hold no pickles; a broken one is passed over; a changed config is refused ----------------------------

class _Payload:
    """Unpickling this creates ``path``: what a planted pickle in a shared run directory could do."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


@pytest.mark.parametrize("planted", ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin", "scheduler.bin"])
def test_a_pickle_planted_in_a_checkpoint_is_never_loaded(tmp_path, tiny_data, tiny_config, tracker, planted):
    import pickle

    config = tiny_config(run__max_steps=2)
    run_dir = tmp_path / "run"
    train(config, run_dir, tiny_data, tracker)
    marker = tmp_path / "pwned"
    (checkpoint_dirs(run_dir)[-1] / planted).write_bytes(pickle.dumps(_Payload(marker)))
    try:
        train(tiny_config(run__max_steps=4), run_dir, tiny_data, tracker, resume=True)
        message = "resumed"
    except Exception as exc:  # noqa: BLE001 -- whatever the loader raised, the payload must not have run
        message = str(exc)
    assert not marker.exists(), "resume ran code from the run directory"
    assert re.search(f"no usable checkpoint .*step-2: holds files greendiff did not write: {planted}$", message), message


@pytest.mark.parametrize("replaced", ["optimizer.safetensors", "ema.safetensors", "rng-0.safetensors"])
def test_a_pickle_in_place_of_a_checkpoint_file_is_never_loaded(tmp_path, tiny_data, tiny_config, tracker, caplog, replaced):
    """Not an extra file this time: one of the checkpoint's own files replaced by a pickle payload, with its
    recorded size updated so the size check passes. It is never unpickled, and the checkpoint is passed over."""
    import pickle

    config = tiny_config(run__max_steps=6, run__checkpoint_every=2, run__keep_checkpoints=3)
    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    train(config, run_dir, tiny_data, tracker, callbacks=[InterruptAfter(4)])
    folder = checkpoint_dirs(run_dir)[-1]
    (folder / replaced).write_bytes(pickle.dumps(_Payload(marker)))
    state = json.loads((folder / "train_state.json").read_text())
    state["files"][replaced] = (folder / replaced).stat().st_size
    (folder / "train_state.json").write_text(json.dumps(state))
    result = train(config, run_dir, tiny_data, tracker, resume=True)
    assert not marker.exists(), "resume ran code from the run directory"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"checkpoint step-4 is unusable ({replaced} is unreadable" in warnings[0]
    assert (result.status, result.step) == ("completed", 6) and (run_dir / "checkpoints" / ".bad-step-4").is_dir()


def test_checkpoints_are_safetensors_and_json_only(tmp_path, tiny_data, tiny_config, tracker):
    train(tiny_config(run__max_steps=2), tmp_path, tiny_data, tracker)
    (checkpoint,) = checkpoint_dirs(tmp_path)
    names = sorted(p.name for p in checkpoint.iterdir())
    assert names == ["ema.safetensors", "model.safetensors", "optimizer.safetensors", "rng-0.safetensors", "train_state.json"]
    state = json.loads((checkpoint / "train_state.json").read_text())
    assert state["step"] == 2 and state["fingerprint"]["model.block_out_channels"] == [8, 16]
    assert state["optimizer"]["param_groups"][0]["betas"] == [0.95, 0.999] and state["ema"]["optimization_step"] == 2
    assert state["files"] == {n: (checkpoint / n).stat().st_size for n in names if n != "train_state.json"}


def _corrupt(folder, how):
    if how == "truncated model":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif how == "garbage state":
        (folder / "train_state.json").write_text("{not json")
    elif how == "missing optimizer":
        (folder / "optimizer.safetensors").unlink()
    elif how == "no state file":
        (folder / "train_state.json").unlink()
    elif how == "same-size garbage":
        size = (folder / "ema.safetensors").stat().st_size
        (folder / "ema.safetensors").write_bytes(b"\xff" * size)


def _tamper(folder, how):
    """Change one value the way someone editing a shared checkpoint would, and record the new sizes so the
    size check passes: only the value checks can catch it."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    state = json.loads((folder / "train_state.json").read_text())

    def rewrite(name, tensors=lambda t: t, metadata=lambda m: m):
        with safe_open(str(folder / name), framework="pt") as f:
            old_tensors, old_meta = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
        save_file(tensors(old_tensors), str(folder / name), metadata=metadata(old_meta))

    def numpy_rng(index, value):
        def edit(meta):
            numpy_state = json.loads(meta["numpy"])
            if index == 1:
                numpy_state[1][0] = value
            else:
                numpy_state[index] = value
            return {**meta, "numpy": json.dumps(numpy_state)}
        rewrite("rng-0.safetensors", metadata=edit)

    if how == "NumPy RNG key out of range":
        numpy_rng(1, 2**40)
    elif how == "NumPy RNG position huge":
        numpy_rng(2, 10**30)
    elif how == "torch RNG state cut short":
        rewrite("rng-0.safetensors", tensors=lambda t: {**t, "torch": t["torch"][:100].clone()})
    elif how == "model NaN":
        rewrite("model.safetensors", tensors=lambda t: {k: v.fill_(float("nan")) if i == 0 else v
                                                        for i, (k, v) in enumerate(t.items())})
    elif how == "energy NaN":
        state["energy_j"] = float("nan")
    elif how == "energy negative":
        state["energy_j"] = -1.0
    elif how == "step negative":
        state["step"] = -4
    elif how == "bad-step count Infinity":
        state["divergence"]["bad_steps"] = float("inf")
    elif how == "best step Infinity":
        state["stopping"]["rules"]["best_step"] = float("inf")
    elif how == "learning rate a string":
        state["optimizer"]["param_groups"][0]["lr"] = "fast"
    elif how == "EMA step negative":
        state["ema"]["optimization_step"] = -3
    state["files"] = {name: (folder / name).stat().st_size for name in state["files"]}
    (folder / "train_state.json").write_text(json.dumps(state))


_TAMPERED = ["NumPy RNG key out of range", "NumPy RNG position huge", "torch RNG state cut short", "model NaN",
             "energy NaN", "energy negative", "step negative", "bad-step count Infinity", "best step Infinity",
             "learning rate a string", "EMA step negative"]


@pytest.mark.parametrize("how", ["truncated model", "garbage state", "missing optimizer", "no state file", "same-size garbage",
                                 *_TAMPERED])
def test_an_unusable_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_data, tiny_config, tracker, caplog, how):
    config = tiny_config(run__max_steps=6, run__checkpoint_every=2, run__keep_checkpoints=3)
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(config, whole, tiny_data, tracker)
    train(config, split, tiny_data, tracker, callbacks=[InterruptAfter(4)])
    assert [p.name for p in checkpoint_dirs(split)] == ["step-2", "step-4"]
    (_tamper if how in _TAMPERED else _corrupt)(split / "checkpoints" / "step-4", how)
    result = train(config, split, tiny_data, tracker, resume=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "checkpoint step-4 is unusable" in warnings[0] and "resuming from step-2" in warnings[0]
    assert "\n" not in warnings[0]
    assert (result.status, result.step) == ("completed", 6)
    starts = [r for r in map(json.loads, (split / "metrics.jsonl").read_text().splitlines()) if r.get("event") == "start"]
    assert [s["step"] for s in starts] == [0, 2]
    assert (split / "checkpoints" / ".bad-step-4").is_dir()  # kept aside for a look, never loaded again
    a = load_file(str(checkpoint_dirs(whole)[-1] / "model.safetensors"))
    b = load_file(str(checkpoint_dirs(split)[-1] / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # still exact: replayed from step 2


def test_no_usable_checkpoint_is_a_one_line_error(tmp_path, tiny_data, tiny_config, tracker):
    config = tiny_config(run__max_steps=2)
    train(config, tmp_path, tiny_data, tracker)
    _corrupt(checkpoint_dirs(tmp_path)[-1], "truncated model")
    with pytest.raises(UserInputError, match=r"no usable checkpoint in .*checkpoints: step-2: model.safetensors is "
                                             r"truncated or altered") as err:
        train(config, tmp_path, tiny_data, tracker, resume=True)
    assert "\n" not in str(err.value)


def test_a_config_that_no_longer_matches_the_checkpoint_is_refused(tmp_path, tiny_data, tiny_config, tracker):
    from greendiff.train._checkpoint import check_resume

    train(tiny_config(run__max_steps=2), tmp_path, tiny_data, tracker)
    before = (tmp_path / "metrics.jsonl").read_text()
    edited = tiny_config(run__max_steps=4, model__block_out_channels="16,32", data__resolution=16)
    message = (r"config no longer matches checkpoint step-2: model.block_out_channels \[8, 16\] -> \[16, 32\], "
               r"data.resolution 8 -> 16")
    with pytest.raises(UserInputError, match=message):
        check_resume(tmp_path, edited, tiny_data.channels)
    with pytest.raises(UserInputError, match=message):
        train(edited, tmp_path, tiny_data, tracker, resume=True)
    assert (tmp_path / "metrics.jsonl").read_text() == before  # refused before any step
    check_resume(tmp_path, tiny_config(run__max_steps=4), tiny_data.channels)  # only max_steps changed: fine


# -- divergence ---------------------------------------------------------------------------------------------------------

def test_losses_non_finite_every_other_step_are_a_diverged_run(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    """A finite loss between non-finite ones resets the count in a row; the share of bad steps still counts."""
    real, calls = _family.diffusion_loss, iter(range(1000))
    monkeypatch.setattr(_family, "diffusion_loss",
                        lambda *a, **k: real(*a, **k) * (float("nan") if next(calls) % 2 else 1.0))
    result = train(tiny_config(run__max_steps=60, run__checkpoint_every=5), tmp_path, tiny_data, tracker)
    assert result.status == "diverged" and result.step == 40
    assert result.stop_reason == "20 of the first 40 steps had a non-finite loss or gradient (more than a quarter)"
    assert not (tmp_path / "pipeline").exists() and not (tmp_path / "samples" / "step-40.png").exists()
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-25", "step-35"]  # kept; none of the diverged state
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1]) == {
        "event": "diverged", "step": 40, "reason": result.stop_reason}


def test_a_short_run_mostly_non_finite_is_diverged_at_its_end(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    real, calls = _family.diffusion_loss, iter(range(1000))
    monkeypatch.setattr(_family, "diffusion_loss", lambda *a, **k: real(*a, **k) * (float("inf") if next(calls) in (1, 3, 4) else 1.0))
    result = train(tiny_config(run__max_steps=6), tmp_path, tiny_data, tracker)
    assert result.status == "diverged" and result.stop_reason.startswith("3 of the first 6 steps")


def test_a_non_finite_gradient_skips_the_update_and_counts(tmp_path, tiny_data, tiny_config, tracker, monkeypatch, caplog):
    """A finite loss whose gradient is NaN would poison the weights: the update is skipped like a NaN loss's."""
    real, calls = _family.diffusion_loss, iter(range(1000))

    def nan_gradient_once(unet, *args, **kwargs):
        loss = real(unet, *args, **kwargs)
        if next(calls) == 1:
            x = next(unet.parameters()).sum()
            loss = loss + 0.0 * torch.sqrt(x - x)  # value unchanged (0), gradient NaN
        return loss
    monkeypatch.setattr(_family, "diffusion_loss", nan_gradient_once)
    result = train(tiny_config(run__max_steps=5, optim__ema="false"), tmp_path, tiny_data, tracker)
    assert result.status == "completed" and "update skipped" in caplog.text
    weights = load_file(str(checkpoint_dirs(tmp_path)[-1] / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_bad_step_counts_survive_a_resume(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    """A quarter of the first 12 steps bad (not more: the interrupted run is not diverged), then every other one:
    with the 3 earlier bad steps counted, the 20th bad step is step 46 (without them it would be step 52)."""
    real, calls = _family.diffusion_loss, iter(range(1000))

    def bad(call):
        return call % 4 == 3 if call < 12 else call % 2 == 1
    monkeypatch.setattr(_family, "diffusion_loss", lambda *a, **k: real(*a, **k) * (float("nan") if bad(next(calls)) else 1.0))
    config = tiny_config(run__max_steps=60, run__checkpoint_every=4)
    first = train(config, tmp_path, tiny_data, tracker, callbacks=[InterruptAfter(12)])
    assert (first.status, first.step) == ("interrupted", 12)
    assert json.loads((checkpoint_dirs(tmp_path)[-1] / "train_state.json").read_text())["divergence"] == {"bad_steps": 3, "bad_in_row": 1}
    second = train(config, tmp_path, tiny_data, tracker, resume=True)
    assert (second.status, second.step) == ("diverged", 46)
    assert second.stop_reason == "20 of the first 46 steps had a non-finite loss or gradient (more than a quarter)"


@pytest.mark.parametrize("end", ["stopped by a target", "interrupted"])
def test_a_run_ended_early_with_over_a_quarter_of_its_steps_bad_is_diverged(tmp_path, tiny_data, tiny_config, tracker,
                                                                            monkeypatch, end):
    """10 of 30 steps bad, never many in a row: however the run ends, the share is judged before anything is saved."""
    real, calls = _family.diffusion_loss, iter(range(1000))
    monkeypatch.setattr(_family, "diffusion_loss",
                        lambda *a, **k: real(*a, **k) * (float("nan") if next(calls) % 3 == 1 else 1.0))
    scripted_quality(monkeypatch, [1.0])
    if end == "interrupted":
        config = tiny_config(run__max_steps=100)
        result = train(config, tmp_path, tiny_data, tracker, callbacks=[InterruptAfter(30)])
    else:
        config = tiny_config(run__max_steps=100, stop__eval_every=30, stop__eval_samples=8, stop__target=5.0,
                             stop__spread_seeds=1)
        result = train(config, tmp_path, tiny_data, tracker)
    assert (result.status, result.step) == ("diverged", 30)
    assert result.stop_reason == "10 of the first 30 steps had a non-finite loss or gradient (more than a quarter)"
    assert not (tmp_path / "pipeline").exists() and checkpoint_dirs(tmp_path) == []
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["event"] == "diverged"


def test_non_finite_weights_are_never_checkpointed_or_exported(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    """An update that leaves the losses finite but some weights infinite (here the EMA's, as a huge step gives):
    the run is diverged at the first checkpoint after it, which is not written, and nothing is exported."""
    real_update, updates = _step.apply_update, iter(range(1000))

    def update_then_overflow(accelerator, unet, objects, loss, grad_clip):
        done = real_update(accelerator, unet, objects, loss, grad_clip)
        if next(updates) == 2:  # step 3
            objects.ema.shadow_params[0].fill_(float("inf"))
        return done
    monkeypatch.setattr(_step, "apply_update", update_then_overflow)
    result = train(tiny_config(run__max_steps=6, run__checkpoint_every=2), tmp_path, tiny_data, tracker)
    assert (result.status, result.step) == ("diverged", 4)
    assert result.stop_reason == "the weights are not finite after step 4 (an update too large for them)"
    assert [p.name for p in checkpoint_dirs(tmp_path)] == ["step-2"] and not (tmp_path / "pipeline").exists()
    ema = load_file(str(checkpoint_dirs(tmp_path)[-1] / "ema.safetensors"))
    assert all(torch.isfinite(t).all() for t in ema.values())


def test_a_checkpoint_recover_puts_back_counts_for_the_check_before_a_resume(tmp_path, tiny_data, tiny_config, tracker):
    """A kill between the renames of a replaced checkpoint leaves only ``.old-step-N``; the check made before
    anything is created must accept what the resume itself will put back and use."""
    from greendiff.train._checkpoint import check_resume

    config = tiny_config(run__max_steps=2)
    train(config, tmp_path, tiny_data, tracker)
    root = tmp_path / "checkpoints"
    (root / "step-2").rename(root / ".old-step-2")
    check_resume(tmp_path, tiny_config(run__max_steps=3), tiny_data.channels)
    assert train(tiny_config(run__max_steps=3), tmp_path, tiny_data, tracker, resume=True).step == 3


class ThreadsAtLog:
    """Records torch's thread count at every log record."""

    def __init__(self) -> None:
        self.seen = []

    def on_log(self, trainer, event) -> None:
        self.seen.append(torch.get_num_threads())


def test_training_takes_its_share_of_the_cores_beside_another_run(tmp_path, tiny_data, tiny_config, tracker,
                                                                   monkeypatch):
    import os

    import psutil

    from greendiff.parallel import _threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("GREENDIFF_THREADS", raising=False)
    registry = tmp_path / "processes"
    registry.mkdir()
    other = os.getppid()  # a live process registered as another greendiff run
    (registry / str(other)).write_text(repr(psutil.Process(other).create_time()))
    monkeypatch.setattr(_threads, "default_registry", lambda: registry)
    monkeypatch.setattr(_threads, "available_cores", lambda: 4)
    before = torch.get_num_threads()
    threads = ThreadsAtLog()
    train(tiny_config(run__max_steps=3), tmp_path / "run", tiny_data, tracker, callbacks=[threads])
    assert threads.seen and set(threads.seen) == {2}  # 4 cores, 2 runs
    assert torch.get_num_threads() == before  # given back afterwards
    assert [p.name for p in registry.iterdir()] == [str(other)]  # this run's entry is gone


# -- a copied run directory with planted symbolic links: nothing is written through them ------------------------------

def test_planted_links_in_a_run_directory_are_never_written_through(tmp_path, tiny_data, tiny_config, tracker, caplog):
    import shutil

    from greendiff.train._checkpoint import check_resume

    config = tiny_config(run__max_steps=4, run__checkpoint_every=2, run__keep_checkpoints=3)
    run_dir, outside = tmp_path / "run", tmp_path / "outside"
    train(config, run_dir, tiny_data, tracker)
    resumed = tiny_config(run__max_steps=6, run__checkpoint_every=2, run__keep_checkpoints=3)
    outside.mkdir()
    (outside / "victim.txt").write_text("precious\n")
    (outside / "victim.png").write_bytes(b"precious")
    shutil.copytree(run_dir / "checkpoints" / "step-2", outside / "ckpt")
    shutil.copytree(run_dir / "pipeline", outside / "pipe")
    # metrics.jsonl a link: one line, before anything starts (the resume checks)
    (run_dir / "metrics.jsonl").rename(tmp_path / "metrics.jsonl")
    (run_dir / "metrics.jsonl").symlink_to(outside / "victim.txt")
    with pytest.raises(UserInputError, match=r"run/metrics.jsonl is a symbolic link"):
        check_resume(run_dir, resumed, tiny_data.channels)
    with pytest.raises(UserInputError, match=r"cannot write .*metrics.jsonl: it is a symbolic link"):
        train(resumed, run_dir, tiny_data, tracker, resume=True)
    (run_dir / "metrics.jsonl").unlink()
    (tmp_path / "metrics.jsonl").rename(run_dir / "metrics.jsonl")
    # a sample grid, a checkpoint and the pipeline as links to outside files and folders
    (run_dir / "samples" / "step-6.png").symlink_to(outside / "victim.png")
    shutil.rmtree(run_dir / "checkpoints" / "step-2")
    (run_dir / "checkpoints" / "step-2").symlink_to(outside / "ckpt", target_is_directory=True)
    (run_dir / "checkpoints" / ".tmp-step-6").symlink_to(outside, target_is_directory=True)
    shutil.rmtree(run_dir / "pipeline")
    (run_dir / "pipeline").symlink_to(outside / "pipe", target_is_directory=True)
    (run_dir / ".tmp-pipeline").symlink_to(outside, target_is_directory=True)
    result = train(resumed, run_dir, tiny_data, tracker, resume=True)
    assert result.status == "completed" and result.step == 6
    assert (outside / "victim.txt").read_text() == "precious\n" and (outside / "victim.png").read_bytes() == b"precious"
    assert (outside / "ckpt" / "model.safetensors").is_file() and (outside / "pipe" / "model_index.json").is_file()
    assert sorted(p.name for p in outside.iterdir()) == ["ckpt", "pipe", "victim.png", "victim.txt"]
    assert not (run_dir / "samples" / "step-6.png").is_symlink() and (run_dir / "samples" / "step-6.png").stat().st_size > 100
    assert not (run_dir / "pipeline").is_symlink() and (run_dir / "pipeline" / "model_index.json").is_file()
    leftovers = [p.name for p in [*run_dir.iterdir(), *(run_dir / "checkpoints").iterdir()] if p.is_symlink()]
    assert leftovers == ["step-2"]  # passed over, left as it was: no .del-/.old-/.tmp- links behind
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-2", "step-4", "step-6"]
    assert any("checkpoints/step-2 is a symbolic link, not a checkpoint" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("edit, message", [
    ({"data__dataset": "mnist"}, "data.dataset digits -> mnist"),
    ({"optim__objective": "v"}, "optim.objective epsilon -> v"),
    ({"optim__lr": 0.5}, "optim.lr 0.002 -> 0.5")])
def test_a_resume_with_any_other_config_value_edited_is_refused(tmp_path, tiny_data, tiny_config, tracker, edit, message):
    """Not only the shapes: a run resumed on another dataset or objective would be two runs in one."""
    from greendiff.train._checkpoint import check_resume

    train(tiny_config(run__max_steps=2), tmp_path, tiny_data, tracker)
    with pytest.raises(UserInputError, match=r"^config no longer matches checkpoint step-2: " + re.escape(message)
                                             + r"; undo the edit, or start a new run$"):
        check_resume(tmp_path, tiny_config(run__max_steps=4, **edit), tiny_data.channels)


# -- a carbon budget on an hourly grid: enforced at the ledger's own accounting ----------------------------------------

def test_a_carbon_budget_on_an_hourly_grid_stops_where_the_ledgers_emissions_reach_it(tmp_path, tiny_data, tiny_config,
                                                                                      monkeypatch):
    """Each step takes 10 (fake) minutes and 1 kWh: 100 g/kWh in the first hour, 400 after it. The ledger charges
    steps 1-6 0.1 kg each and later ones 0.4: at step 10 the run has emitted 2.2 kg and an 11th step would pass
    the 2.5 kg budget. (Priced at the first hour's intensity, as the budget once was, it would run 24 steps and
    emit 7.8 kg.)"""
    import io
    from datetime import datetime, timedelta, timezone

    from greendiff.carbon import Location, TraceProvider, parse_trace_csv
    from greendiff.energy import DeviceInfo, EnergyMonitor, Meter
    from greendiff.energy._monitor import Reading
    from greendiff.tracking import Tracker

    t0 = datetime(2024, 3, 1, tzinfo=timezone.utc)
    rows = "".join(f"{(t0 + timedelta(hours=h)).isoformat()},{100 if h == 0 else 400}\n" for h in range(24))
    trace = parse_trace_csv(io.StringIO("timestamp,intensity\n" + rows), "two-level trace")
    clock, meter_j = [t0.timestamp()], [0.0]

    class FakeGpu(Meter):
        def devices(self):
            return [DeviceInfo("gpu:0", "gpu", "FakeGPU", "counter", "device")]

        def read_energy_j(self):
            return {"gpu:0": meter_j[0]}

    class FakeClockMonitor(EnergyMonitor):
        def read(self):
            return Reading(clock[0], clock[0], self._meters[0].read_energy_j())

    def one_kwh_in_ten_minutes(*args):
        loss = _family.diffusion_loss(*args)
        meter_j[0] += 3.6e6
        clock[0] += 600.0
        return loss

    monkeypatch.setattr("greendiff.tracking._tracker._now_window", lambda: (t0, t0 + timedelta(seconds=1)))
    tracker = Tracker("budget", kind="train", location=Location(), pue=1.0, provider=TraceProvider(trace),
                      ledger=tmp_path / "ledger.sqlite", monitor=FakeClockMonitor([FakeGpu()]), sample_interval_s=0.0).start()
    config = tiny_config(run__max_steps=40, stop__budget_kgco2e=2.5, stop__budget_warmup_steps=2)
    result = train(config, tmp_path / "run", tiny_data, tracker, objective=one_kwh_in_ten_minutes)
    summary = tracker.stop("completed")
    assert (result.status, result.step) == ("stopped", 10) and result.stop_reason == ("carbon budget: 2.20 kg CO2e emitted, the next step would pass 2.50 kg CO2e")
    assert summary.emissions_kg == pytest.approx(2.2) and summary.energy_kwh == pytest.approx(10.0)
    assert summary.emissions_kg <= 2.5 < summary.emissions_kg + 0.4  # one more step would have passed it
    logs = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert [round(r["emissions_kg"] * 1000) for r in logs] == [100, 200, 300, 400, 500, 600, 1000, 1400, 1800, 2200]
