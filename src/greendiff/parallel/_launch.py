"""``greendiff train --nproc N``: N local processes through torchrun (``torch.distributed.run``)."""

from __future__ import annotations

import sys


def torchrun_command(nproc: int, argv: list[str]) -> list[str]:
    """The command that runs ``greendiff train ARGV`` as ``nproc`` processes on this machine.

    Example:
        >>> torchrun_command(2, ["--max-steps", "10"])[1:6]
        ['-m', 'torch.distributed.run', '--standalone', '--nproc-per-node', '2']
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
            "-m", "greendiff", "train", *argv]


def without_nproc(argv: list[str]) -> list[str]:
    """``argv`` less ``--nproc N`` / ``--nproc=N`` (the launched processes must not launch again)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        out.append(arg)
    return out
