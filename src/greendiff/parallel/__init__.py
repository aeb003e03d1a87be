"""Parallelism on one machine and across several: the job's shape (:class:`Dist`: ranks, nodes, from the
launcher's environment), the local launcher (``greendiff train --nproc N`` runs :func:`torchrun_command`), and
:class:`CoreShare`, this process's share of the cores among the greendiff runs on the machine (two runs must
not each run a thread per core).

Example (one run alone on 4 cores takes all 4, and gives the thread count back afterwards):
    >>> import pathlib, tempfile
    >>> from greendiff.parallel import CoreShare, Dist
    >>> Dist.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}).node_rank
    1
    >>> applied = []
    >>> registry = pathlib.Path(tempfile.mkdtemp()) / "processes"
    >>> with CoreShare(registry, cores=4, env={}, set_threads=applied.append, get_threads=lambda: 16) as share:
    ...     share.threads
    4
    >>> applied
    [4, 16]
"""

from __future__ import annotations

from greendiff.parallel._context import Dist, split_key
from greendiff.parallel._launch import torchrun_command, without_nproc
from greendiff.parallel._threads import CoreShare, available_cores, thread_setting

__all__ = ["CoreShare", "Dist", "available_cores", "split_key", "thread_setting", "torchrun_command", "without_nproc"]
