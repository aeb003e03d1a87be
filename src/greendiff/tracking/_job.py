"""A tracker for a data-parallel job: every rank measures, rank 0 writes one ledger run.

Each rank meters its own GPUs; the node's CPU and RAM are metered once, by the node's local rank 0,
over the launcher's process tree (every rank of the node, each counted once). Device keys carry
their place (``node0/rank1/gpu:0``). Readings are gathered to rank 0 at each :meth:`sync`, a
collective the training loop calls at the same steps on every rank; between syncs rank 0's own
samples carry the other ranks' last readings. Energy spent waiting (at a barrier, for a slower
rank) is in the meters' totals like any other. At :meth:`stop` the phases are merged and the
summary gets a per-rank and per-node breakdown.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import psutil

from greendiff.ledger import WindowTotal
from greendiff.parallel import Dist, split_key
from greendiff.tracking._run_summary import DeviceEnergy, RunSummary
from greendiff.tracking._tracker import Tracker


class JobTracker(Tracker):
    """:class:`Tracker` for one rank of a job (``dist``); with one process it is a plain Tracker.

    The collectives (:meth:`start`, :meth:`sync`, :meth:`stop`, :meth:`total_energy_j`) must be called
    by every rank at the same point of the program.
    """

    def __init__(self, *args, dist: Dist = Dist(), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dist = dist
        if dist.distributed:
            options = self.monitor_options
            self.monitor_options = dataclasses.replace(
                options, measure_node=options.measure_node and dist.is_local_main,
                gpu_indices=options.gpu_indices if options.gpu_indices is not None else (dist.local_rank,),
                process_root_pid=os.getppid() if dist.is_local_main else None)
        self._others: dict[str, float] = {}
        self._others_cpu_s = 0.0
        self._own_cpu = psutil.Process()
        self._own_cpu_start_s = 0.0

    # -- this rank -------------------------------------------------------------------------------------

    def recorded_key(self, key: str) -> str:
        return self.dist.prefix + key

    def _own_cpu_s(self) -> float:
        t = self._own_cpu.cpu_times()
        return t.user + t.system - self._own_cpu_start_s

    def _node_cpu_s(self) -> float:
        return self.monitor.cpu_time_s() if self.monitor_options.measure_node else 0.0

    def _recorded(self, reading, cpu_time_s: float) -> tuple[dict[str, float], float]:
        """Rank 0's sample: its own readings now, the other ranks' from the last :meth:`sync`."""
        if not self.dist.distributed:
            return super()._recorded(reading, cpu_time_s)
        own = {self.recorded_key(k): v for k, v in reading.energy_j.items()}
        node_cpu_s = cpu_time_s if self.monitor_options.measure_node else 0.0
        return {**self._others, **own}, node_cpu_s + self._others_cpu_s

    # -- collectives -------------------------------------------------------------------------------------

    def start(self) -> JobTracker:
        if not self.dist.distributed:
            super().start()
            return self
        from greendiff.energy import EnergyMonitor

        if self._monitor is None:
            self._monitor = EnergyMonitor.detect(self.monitor_options)
        t = self._own_cpu.cpu_times()
        self._own_cpu_start_s = t.user + t.system
        gathered = self.dist.all_gather((self.device_records(), self._monitor.notes))
        if self.dist.is_main:
            from greendiff.ledger import Ledger

            self.ledger = self._ledger_arg if isinstance(self._ledger_arg, Ledger) else Ledger(self._ledger_arg)
            notes = [f"rank {r}: {n}" for r, (_, rank_notes) in enumerate(gathered) for n in rank_notes]
            job = {"world_size": self.dist.world_size, "local_world_size": self.dist.local_world_size,
                   "method": "each rank meters its GPUs; local rank 0 meters the node's CPU and RAM over "
                             "the launcher's process tree; rank 0 writes the ledger"}
            self._open_run([d for rank_devices, _ in gathered for d in rank_devices], notes, {"job": job})
        self.run_id = self.dist.broadcast(self.run_id)
        self.sync()
        return self

    def sync(self) -> None:
        """Gather every rank's readings to rank 0 and write a ledger sample there (collective)."""
        if not self.dist.distributed:
            super().sync()
            return
        own = {self.recorded_key(k): v for k, v in self.monitor.read().energy_j.items()}
        gathered = self.dist.all_gather((own, self._node_cpu_s()))
        if self.dist.is_main:
            self._others = {k: v for r, (energy, _) in enumerate(gathered) if r for k, v in energy.items()}
            self._others_cpu_s = sum(cpu for r, (_, cpu) in enumerate(gathered) if r)
            self.sample(force=True)

    def sample(self, force: bool = False) -> None:
        if self.dist.distributed and not self.dist.is_main:
            return  # rank 0 writes; this rank's readings reach it at the next sync
        super().sample(force)

    def total_energy_j(self) -> float:
        """The job's energy so far, the same value on every rank (collective in a job)."""
        mine = super().total_energy_j()
        return float(sum(self.dist.all_gather(mine))) if self.dist.distributed else mine

    def stop(self, status: str = "completed", exit_code: int | None = None, extra: dict | None = None) -> RunSummary:
        if not self.dist.distributed:
            return super().stop(status, exit_code, extra)
        own = {"rank": self.dist.rank, "node": self.dist.node_rank, "local_rank": self.dist.local_rank, "pid": os.getpid(),
               "cpu_time_s": self._own_cpu_s(), "node_cpu_time_s": self._node_cpu_s()}
        phases, ranks = zip(*self.dist.all_gather((self._phases, own)))
        self.sync()
        summary = None
        if self.dist.is_main:
            self.monitor.close()
            merged: dict[str, list] = {}
            for rank_phases in phases:
                for name, (count, duration_s, energy) in rank_phases.items():
                    m = merged.setdefault(name, [0, 0.0, {}])
                    m[0], m[1] = max(m[0], count), max(m[1], duration_s)  # the same windows run on every rank
                    m[2].update(energy)
            self.ledger.put_windows(self.run_id, [WindowTotal(n, c, d, e) for n, (c, d, e) in merged.items()])
            summary = self._summarize(status)
            summary = summary.with_extra({**breakdown(summary.devices, list(ranks)), **(extra or {})})
            self.ledger.finish_run(self.run_id, status, summary.to_dict(), exit_code)
        else:
            self.monitor.close()
        self.summary = self.dist.broadcast(summary)
        return self.summary


def breakdown(devices: Iterable[DeviceEnergy], ranks: list[dict]) -> dict:
    """Per-rank and per-node energy of a job's ``devices`` (keys ``node<N>/rank<R>/<device>``). A rank's own
    devices are its own; the node's CPU and RAM (metered by its local rank 0) are shared out by each rank's
    share of the node's CPU time."""
    own_kwh: dict[tuple[str, str], float] = {}
    node_kwh: dict[str, float] = {}
    shared_kwh: dict[str, float] = {}
    for d in devices:
        node, rank, key = split_key(d.key)
        node_kwh[node] = node_kwh.get(node, 0.0) + d.energy_kwh
        if d.kind == "gpu":
            own_kwh[(node, rank)] = own_kwh.get((node, rank), 0.0) + d.energy_kwh
        else:
            shared_kwh[node] = shared_kwh.get(node, 0.0) + d.energy_kwh
    node_cpu = {}
    for r in ranks:
        node_cpu[f"node{r['node']}"] = node_cpu.get(f"node{r['node']}", 0.0) + r["cpu_time_s"]
    rows = []
    for r in ranks:
        node = f"node{r['node']}"
        share = r["cpu_time_s"] / node_cpu[node] if node_cpu[node] > 0 else 1.0 / sum(x["node"] == r["node"] for x in ranks)
        rows.append({**r, "gpu_energy_kwh": own_kwh.get((node, f"rank{r['rank']}"), 0.0),
                     "attributed_energy_kwh": own_kwh.get((node, f"rank{r['rank']}"), 0.0) + share * shared_kwh.get(node, 0.0)})
    nodes = [{"node": n, "energy_kwh": kwh, "ranks": sum(f"node{r['node']}" == n for r in ranks),
              "node_cpu_time_s": next((r["node_cpu_time_s"] for r in ranks if f"node{r['node']}" == n and r["local_rank"] == 0), 0.0),
              "ranks_cpu_time_s": node_cpu.get(n, 0.0)} for n, kwh in sorted(node_kwh.items())]
    return {"world_size": len(ranks), "ranks": rows, "nodes": nodes,
            "breakdown_method": "a rank's GPUs are its own; each node's CPU and RAM energy is shared out by the ranks' "
                                "CPU-time shares"}
