"""Data-parallel training: the job's shape (ranks, nodes), its collectives, and the local launcher."""

from __future__ import annotations

from greendiff.parallel._context import Dist, split_key
from greendiff.parallel._launch import torchrun_command, without_nproc
from greendiff.parallel._threads import ENV_THREADS, CoreShare, available_cores, thread_setting

__all__ = ["ENV_THREADS", "CoreShare", "Dist", "available_cores", "split_key", "thread_setting", "torchrun_command",
           "without_nproc"]
