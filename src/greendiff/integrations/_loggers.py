"""Energy and CO2e beside the loss in the experiment trackers people already use.

``greendiff train --log-to tensorboard --log-to mlflow`` sends every log record (``train/``: loss, learning
rate, throughput, energy so far in kWh, CO2e so far in kg), every evaluation (``eval/``: FID, KID, the
evaluation's own energy) and the run's measured totals (``run/``) to each logger. One unit per quantity, as
in every machine-readable output: energy in kWh (``energy_kwh``), CO2e in kg (``emissions_kg``). Settings
(the images an evaluation scores) are the run's parameters, not metrics. The vendor libraries are optional
extras, imported only here and only when asked for.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

from greendiff.errors import UserInputError
from greendiff.names import check_tracking_uri, first_line

from greendiff.train import LOGGERS  # the config's names; each is also the module it needs and the extra that installs it


#: Record fields that are settings or positions, not measurements: never logged as metrics (``n``, the images
#: an evaluation scores, is the config's ``stop.eval_samples``, an MLflow parameter).
NOT_METRICS = frozenset({"step", "n"})


def _numbers(record: dict, prefix: str = "") -> dict[str, float]:
    """The numeric fields of a record (not flags, not :data:`NOT_METRICS`), as tracker metric names."""
    return {f"{prefix}{k}": float(v) for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in NOT_METRICS and math.isfinite(float(v))}


class MetricLogger:
    """A sink for training metrics. ``log`` takes a record from the training loop; ``close`` flushes."""

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        if record.get("event") == "eval":
            self.write(_numbers(record, "eval/"), step)
        elif record.get("event") == "final":  # the run's measured totals, at its last step
            self.write(_numbers(record, "run/"), step)
        elif "loss" in record:
            self.write(_numbers(record, "train/"), step)

    def write(self, metrics: dict[str, float], step: int) -> None:
        raise NotImplementedError

    def tag(self, tags: dict) -> None:
        """Describe the run (ledger id, location, intensity source), where the tracker has tags."""

    def close(self, status: str = "completed") -> None:
        pass


class TensorBoardLogger(MetricLogger):
    """Scalars in a TensorBoard event file under ``log_dir`` (``torch.utils.tensorboard``)."""

    def __init__(self, log_dir: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(str(self.log_dir))

    def write(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self._writer.add_scalar(name, value, step)

    def close(self, status: str = "completed") -> None:
        self._writer.flush()
        self._writer.close()


class MlflowLogger(MetricLogger):
    """Metrics, the config as parameters and the location as tags, in an MLflow run.

    Args:
        tracking_uri: Any MLflow tracking URI; ``file:./mlruns`` keeps everything local.
        experiment: Experiment name (created if missing).
        run_name: The MLflow run's name (the greendiff run directory's name).
        params: Flat ``key -> value`` to log as parameters (the resolved config).
        tags: Extra tags (location, intensity source, ledger run id).
    """

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, params: dict | None = None,
                 tags: dict | None = None) -> None:
        import os

        if tracking_uri.startswith("file:"):  # MLflow 3 keeps its file store only on request (maintenance mode)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        self._Metric = Metric
        self.client = MlflowClient(tracking_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name,
                                             tags={k: str(v) for k, v in (tags or {}).items()}).info.run_id
        items = [Param(k, str(v)[:500]) for k, v in (params or {}).items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def write(self, metrics: dict[str, float], step: int) -> None:
        import time

        now_ms = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self._Metric(k, v, now_ms, step) for k, v in metrics.items()])

    def tag(self, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def close(self, status: str = "completed") -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if status in ("completed", "stopped") else "KILLED")


def check_loggers(names: Iterable[str]) -> None:
    """Known names whose library is installed; a one-line error naming the extra to install otherwise."""
    import importlib.util

    for name in names:
        if name not in LOGGERS:
            raise UserInputError(f"--log-to {name!r}: use one of {', '.join(LOGGERS)}")
        if importlib.util.find_spec(name) is None:
            raise UserInputError(f"--log-to {name} needs the {name} package: pip install 'greendiff[{name}]'")


def make_loggers(names: Iterable[str], run_dir: Path, mlflow_uri: str, params: dict) -> list[MetricLogger]:
    """The loggers a run asks for: TensorBoard in ``run_dir/tensorboard``; MLflow at ``mlflow_uri``
    (default: ``file:`` the ``mlruns`` folder beside the run directory). A tracker that cannot be
    opened is a one-line error."""
    loggers: list[MetricLogger] = []
    for name in names:
        try:
            if name == "tensorboard":
                loggers.append(TensorBoardLogger(run_dir / "tensorboard"))
            elif name == "mlflow":
                uri = check_tracking_uri(mlflow_uri) or (run_dir.parent / "mlruns").resolve().as_uri()
                loggers.append(MlflowLogger(uri, "greendiff", run_dir.name, params))
        except UserInputError:
            raise
        except Exception as exc:  # the vendor's errors: bad URI, unreachable server, permissions
            raise UserInputError(f"--log-to {name}: cannot open the tracker: {first_line(exc)}") from None
    return loggers
