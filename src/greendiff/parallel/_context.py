"""Who this process is in a data-parallel job, and the few collectives greendiff needs.

torchrun and ``accelerate launch`` describe the job in environment variables: ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE`` and ``GROUP_RANK`` (the node). The process
group itself is created by accelerate (``PartialState``: NCCL on GPUs, gloo on CPUs); the
collectives here are ``torch.distributed``'s object collectives on it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    """This process's place in the job. A single process is ``Dist()`` (rank 0 of 1).

    Example:
        >>> Dist.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
        Dist(rank=3, world_size=4, local_rank=1, local_world_size=2, node_rank=1)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Dist:
        world = int(env.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local_rank = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        node = int(env["GROUP_RANK"]) if "GROUP_RANK" in env else rank // max(local_world, 1)
        return cls(rank, world, local_rank, local_world, node)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def prefix(self) -> str:
        """Device keys of this process in a job's records: ``node0/rank1/gpu:0`` (nothing for one process)."""
        return f"node{self.node_rank}/rank{self.rank}/" if self.distributed else ""

    def init(self, use_cuda: bool) -> None:
        """Create the process group (accelerate's ``PartialState``) if the job has several processes."""
        if self.distributed:
            from accelerate import PartialState

            PartialState(cpu=not use_cuda)

    def all_gather(self, obj: object) -> list:
        """Every rank's ``obj``, in rank order (a list of one without a job)."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: object, src: int = 0) -> object:
        """Rank ``src``'s ``obj`` on every rank."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_true(self, flag: bool) -> bool:
        """``flag`` held on every rank: one MIN all-reduce of one number, so every rank takes the same
        branch (skip a bad step, raise a failed write) and none waits for ever at the next collective.

        Example:
            >>> Dist().all_true(True), Dist().all_true(False)
            (True, False)
        """
        if not self.distributed:
            return bool(flag)
        import torch
        import torch.distributed as dist

        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        box = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        dist.all_reduce(box, op=dist.ReduceOp.MIN)
        return bool(box.item())

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


def split_key(key: str) -> tuple[str, str, str]:
    """``node0/rank1/gpu:0`` -> ``("node0", "rank1", "gpu:0")``; an unprefixed key is node0/rank0."""
    parts = key.split("/", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 and parts[0].startswith("node") else ("node0", "rank0", key)
