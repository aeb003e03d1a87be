from __future__ import annotations

import csv

import pytest
import torch

from greendiff.carbon import Location
from greendiff.ledger import Ledger


def test_hugging_face_trainer_is_measured_and_logs_energy(tmp_path):
    transformers = pytest.importorskip("transformers")
    from greendiff.integrations.hf import GreendiffCallback

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def forward(self, x, labels=None):
            out = self.linear(x).squeeze(-1)
            return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

    data = [{"x": torch.randn(4), "labels": torch.tensor(1.0)} for _ in range(32)]
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=6, per_device_train_batch_size=4,
                                          logging_steps=2, report_to=[], save_strategy="no", use_cpu=True,
                                          disable_tqdm=True)
    trainer = transformers.Trainer(model=Tiny(), args=args, train_dataset=data)
    callback = GreendiffCallback(name="hf-tiny", location=Location(country="FRA"), ledger=tmp_path / "l.sqlite").attach(trainer)
    assert trainer.callback_handler.callbacks[0] is callback
    trainer.train()
    summary = callback.summary
    assert summary.status == "completed" and summary.kind == "hf-trainer" and summary.energy_kwh > 0
    assert {p.name: p.count for p in summary.phases}["train"] == 6
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logged] == [2, 4, 6]
    energies = [h["energy_kwh"] for h in logged]
    assert energies == sorted(energies) and 0 < energies[-1] <= summary.energy_kwh and all("emissions_kg" in h for h in logged)
    (run,) = Ledger(tmp_path / "l.sqlite").list_runs()
    assert run.name == "hf-tiny" and run.assumptions["location"]["country"] == "FRA"


def test_lightning_fit_is_measured_logged_and_resumable(tmp_path):
    lightning = pytest.importorskip("lightning")
    from lightning.pytorch.loggers import CSVLogger

    from greendiff.integrations.lightning import GreendiffCallback

    class Tiny(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(4, 1)

        def training_step(self, batch, _):
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y)
            self.log("loss", loss)
            return loss

        def validation_step(self, batch, _):
            x, y = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.linear(x).squeeze(-1), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.TensorDataset(torch.randn(32, 4), torch.randn(32))
    loader = torch.utils.data.DataLoader(data, batch_size=4)

    def fit(steps, ckpt=None, name="v0"):
        callback = GreendiffCallback(name="pl-tiny", location=Location(country="SWE"), ledger=tmp_path / "l.sqlite")
        trainer = lightning.Trainer(max_steps=steps, accelerator="cpu", logger=CSVLogger(tmp_path, name="logs", version=name),
                                    log_every_n_steps=2, enable_progress_bar=False, enable_model_summary=False,
                                    default_root_dir=tmp_path, val_check_interval=4, limit_val_batches=2,
                                    callbacks=[callback], enable_checkpointing=False)
        trainer.fit(Tiny(), loader, loader, ckpt_path=ckpt)
        return callback, trainer

    callback, trainer = fit(8)
    summary = callback.summary
    assert summary.status == "completed" and summary.kind == "lightning" and summary.energy_kwh > 0
    phases = {p.name: p.count for p in summary.phases}
    assert phases["train"] == 8 and phases["eval"] >= 2  # the sanity check and the validations at steps 4 and 8
    with open(tmp_path / "logs" / "v0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("energy_kwh")]
    assert rows and [float(r["energy_kwh"]) for r in rows] == sorted(float(r["energy_kwh"]) for r in rows)
    assert all(r["emissions_kg"] for r in rows)
    ckpt = tmp_path / "ckpt.ckpt"
    trainer.save_checkpoint(ckpt)
    resumed, _ = fit(12, str(ckpt), "v1")
    first_kwh = summary.energy_kwh
    assert resumed.loop.prior_energy_j / 3.6e6 == pytest.approx(first_kwh, rel=1e-9)  # the total carries over
    assert resumed.loop.prior_emissions_kg == pytest.approx(summary.emissions_kg, rel=1e-9)  # and its CO2e
    assert resumed.summary.extra["prior_energy_kwh"] == pytest.approx(resumed.loop.prior_energy_j / 3.6e6)
    assert len(Ledger(tmp_path / "l.sqlite").list_runs()) == 2
