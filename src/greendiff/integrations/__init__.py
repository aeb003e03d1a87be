"""greendiff inside the tools people already use.

- ``greendiff train --log-to tensorboard|mlflow``: :class:`TensorBoardLogger`, :class:`MlflowLogger`.
- Other training loops: ``greendiff.integrations.hf.GreendiffCallback`` (Hugging Face ``Trainer``) and
  ``greendiff.integrations.lightning.GreendiffCallback`` (PyTorch Lightning). Those two modules import
  their framework; this package does not, so it imports without any optional extra.
"""

from __future__ import annotations

from greendiff.integrations._loggers import LOGGERS, MetricLogger, MlflowLogger, TensorBoardLogger, check_loggers, make_loggers
from greendiff.integrations._loop import LoopTracker

__all__ = ["LOGGERS", "LoopTracker", "MetricLogger", "MlflowLogger", "TensorBoardLogger", "check_loggers", "make_loggers"]
