"""Data-parallel training: the job's shape (ranks, nodes), its collectives, and the local launcher."""

from __future__ import annotations

from greendiff.parallel._context import Dist, split_key
from greendiff.parallel._launch import torchrun_command, without_nproc

__all__ = ["Dist", "split_key", "torchrun_command", "without_nproc"]
