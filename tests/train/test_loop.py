from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from greendiff.errors import UserInputError
from greendiff.train import (
    RecipeConfig,
    batch_indices,
    checkpoint_dirs,
    loss_weights,
    make_noise_scheduler,
    resolve_precision,
    train,
)
from greendiff.train import _loop


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
    assert {"step", "loss", "lr", "samples_per_s", "energy_kwh", "co2e_g"} <= set(record)
    summary = tracker.stop()
    assert {p["name"] for p in summary["phases"]} == {"train", "sample", "checkpoint"}


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
    calls = iter(range(100))
    first = train(config, split, tiny_data, tracker, stop_requested=lambda: next(calls) >= stop_at)
    assert first.status == "interrupted" and first.step == stop_at
    second = train(config, split, tiny_data, tracker, resume=True)
    assert second.status == "completed" and second.step == 12
    a = load_file(str(checkpoint_dirs(whole)[-1] / "model.safetensors"))
    b = load_file(str(checkpoint_dirs(split)[-1] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"differs after stop at {stop_at}"
    ema_a = torch.load(checkpoint_dirs(whole)[-1] / "custom_checkpoint_0.pkl", weights_only=False)
    ema_b = torch.load(checkpoint_dirs(split)[-1] / "custom_checkpoint_0.pkl", weights_only=False)
    assert all(torch.equal(x, y) for x, y in zip(ema_a["shadow_params"], ema_b["shadow_params"]))


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
    real = _loop.diffusion_loss

    def spy(unet, *args, **kwargs):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return real(unet, *args, **kwargs)

    monkeypatch.setattr(_loop, "diffusion_loss", spy)
    train(tiny_config(run__max_steps=1, optim__mixed_precision="bf16"), tmp_path / "a", tiny_data, tracker)
    train(tiny_config(run__max_steps=1, optim__mixed_precision="no"), tmp_path / "b", tiny_data, tracker)
    assert seen == [torch.bfloat16, torch.float32]


def test_auto_precision_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(_loop, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu"))[0] == "no"
    monkeypatch.setattr(_loop, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu"))[0] == "bf16"
    with pytest.raises(UserInputError, match="fp16 autocast is not supported on the CPU"):
        resolve_precision("fp16", torch.device("cpu"))


def test_ema_weights_differ_from_raw_and_no_ema_means_no_ema(tmp_path, tiny_data, tiny_config, tracker):
    train(tiny_config(run__max_steps=5), tmp_path / "ema", tiny_data, tracker)
    assert (checkpoint_dirs(tmp_path / "ema")[-1] / "custom_checkpoint_0.pkl").exists()
    train(tiny_config(run__max_steps=5, optim__ema="false"), tmp_path / "raw", tiny_data, tracker)
    assert not (checkpoint_dirs(tmp_path / "raw")[-1] / "custom_checkpoint_0.pkl").exists()


def test_non_finite_losses_are_skipped_then_stop(tmp_path, tiny_data, tiny_config, tracker, monkeypatch, caplog):
    real = _loop.diffusion_loss
    calls = iter(range(1000))

    def sometimes_nan(*args, **kwargs):
        loss = real(*args, **kwargs)
        return loss * float("nan") if next(calls) == 1 else loss

    monkeypatch.setattr(_loop, "diffusion_loss", sometimes_nan)
    result = train(tiny_config(run__max_steps=4), tmp_path / "one", tiny_data, tracker)
    assert result.status == "completed" and "update skipped" in caplog.text
    monkeypatch.setattr(_loop, "diffusion_loss", lambda *a, **k: real(*a, **k) * float("inf"))
    with pytest.raises(UserInputError, match="training diverged: 3 non-finite losses in a row"):
        train(tiny_config(run__max_steps=10, run__max_bad_steps=3), tmp_path / "bad", tiny_data, tracker)


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
    assert records[-2] == {"event": "stopped", "step": 8, "reason": result.stop_reason}
    assert (tmp_path / "pipeline" / "model_index.json").exists()  # a stopped run is a finished run


def test_target_metric_stops_at_once(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    scripted_quality(monkeypatch, [10.0, 4.0, 3.0])
    result = train(tiny_config(run__max_steps=40, stop__eval_every=3, stop__eval_samples=8, stop__target=5.0,
                               stop__spread_seeds=1),
                   tmp_path, tiny_data, tracker)
    assert (result.status, result.step) == ("stopped", 6) and result.stop_reason.startswith("target reached")


def test_energy_budget_stops_the_run(tmp_path, tiny_data, tiny_config, tracker):
    result = train(tiny_config(run__max_steps=40, stop__budget_kwh=1e-9, stop__budget_warmup_steps=3),
                   tmp_path, tiny_data, tracker)
    assert (result.status, result.step) == ("stopped", 3) and "energy budget" in result.stop_reason
    forecast = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if '"forecast"' in line]
    assert forecast and forecast[0]["energy_kwh"] > forecast[0]["energy_kwh_low"] > 0


def test_resume_keeps_the_stopping_state(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    scripted_quality(monkeypatch, [10.0, 9.0, 9.5, 9.6])
    config = tiny_config(run__max_steps=40, stop__eval_every=2, stop__eval_samples=8, stop__patience=2,
                         stop__spread_seeds=1)
    calls = iter(range(100))
    first = train(config, tmp_path, tiny_data, tracker, stop_requested=lambda: next(calls) >= 6)
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
    probe_kwh = [r for r in map(json.loads, (tmp_path / "probe" / "metrics.jsonl").read_text().splitlines()) if "lr" in r][-1]["energy_kwh"]
    budget = probe_kwh * 3  # ~30 steps of a run allowed 1,000
    fitted = train(tiny_config(run__max_steps=1000, optim__lr_schedule="cosine", stop__budget_kwh=budget,
                               stop__budget_warmup_steps=5), tmp_path / "fitted", tiny_data, tracker)
    cut = train(tiny_config(run__max_steps=1000, optim__lr_schedule="cosine", stop__budget_kwh=budget,
                            stop__budget_warmup_steps=5, stop__fit_schedule=False), tmp_path / "cut", tiny_data, tracker)
    assert fitted.status == cut.status == "stopped" and 10 < fitted.step < 200
    assert last_lr(tmp_path / "fitted") < 0.2 * 2e-3 < 0.9 * 2e-3 < last_lr(tmp_path / "cut")


def test_stratified_timesteps_cover_every_stratum_with_a_uniform_marginal():
    from greendiff.train._diffusion import sample_timesteps

    g = torch.Generator().manual_seed(0)
    batches = [sample_timesteps(8, 1000, g, "stratified") for _ in range(2000)]
    assert all(sorted(int(t) // 125 for t in b) == list(range(8)) for b in batches[:50])
    counts = torch.bincount(torch.cat(batches) // 100, minlength=10).float()
    assert (counts / counts.mean() - 1).abs().max() < 0.05  # 16,000 draws, each decile within 5 %


def test_evaluation_at_the_end_and_a_tuner_stopping_the_run(tmp_path, tiny_data, tiny_config, tracker, monkeypatch):
    scripted_quality(monkeypatch, [10.0, 30.0, 99.0])
    told = []
    config = tiny_config(run__max_steps=40, stop__eval_every=3, stop__eval_samples=8, stop__spread_seeds=1,
                         stop__eval_at_end=True)
    result = train(config, tmp_path, tiny_data, tracker,
                   on_eval=lambda e: told.append((e["step"], e["fid"], e.get("final", False))) or ("pruned" if e["fid"] > 20 else None))
    assert (result.status, result.step, result.stop_reason) == ("stopped", 6, "pruned")
    assert told == [(3, 10.0, False), (6, 30.0, False)]  # step 6 was just evaluated: no second evaluation
    told.clear()
    scripted_quality(monkeypatch, [5.0])
    result = train(tiny_config(run__max_steps=4, stop__eval_samples=8, stop__spread_seeds=1, stop__eval_at_end=True),
                   tmp_path / "plain", tiny_data, tracker, on_eval=lambda e: told.append((e["step"], e["fid"], e["final"])))
    assert result.status == "completed" and told == [(4, 5.0, True)]


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

    from accelerate import Accelerator

    real_save, calls = Accelerator.save_state, []

    def save_state(self, output_dir, **kwargs):
        calls.append(output_dir)
        if len(calls) == 2:
            real_save(self, output_dir, **kwargs)  # partly written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(self, output_dir, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    with pytest.raises(UserInputError, match=r"could not write checkpoint .*step-4: No space left on device; "
                                             r"the previous checkpoint is intact") as err:
        train(tiny_config(run__max_steps=6, run__checkpoint_every=2), tmp_path / "run", tiny_data, tracker)
    assert "\n" not in str(err.value)
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in checkpoint_dirs(tmp_path / "run")] == ["step-2"]
    assert sorted(p.name for p in root.iterdir()) == ["step-2"]  # the partial .tmp-step-4 is removed
    json.loads((root / "step-2" / "train_state.json").read_text())  # complete and readable
    monkeypatch.setattr(Accelerator, "save_state", real_save)
    result = train(tiny_config(run__max_steps=6, run__checkpoint_every=2), tmp_path / "run", tiny_data, tracker, resume=True)
    assert result.status == "completed" and result.step == 6  # and the run resumes from it
