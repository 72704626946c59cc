"""Each process of a multi-process command bound to its own cores, where the processes' threads fill the machine.

Why: torchrun starts a stage's processes (instruction tuning: two of one thread each on 2 cores) and leaves the
kernel to place them; the kernel moves them between cores, and each move costs the process its warm caches. Bound
one to a core, instruction tuning's 3114 steps took 301 s instead of 319 on 2 cores (docs/timings.md), with the
same weights: only where a thread runs changes, never what it computes. DeepSpeed's own launcher does the same on
CPUs (`--bind_cores_to_rank`); torchrun binds only near GPUs. Where the threads do not fill exactly the cores this
process may use (another count of threads, a shared machine, a cluster allocation that says otherwise), nothing is
bound.
"""
from __future__ import annotations

import os

OPT_OUT = "HICOM_BIND_CORES"  # "0": leave placement to the kernel


def rank_cores(allowed: list[int], local_rank: int, local_world: int, threads: int) -> list[int] | None:
    """The cores of process `local_rank` of `local_world`, each of `threads` threads, or None where those
    processes' threads are not exactly the `allowed` cores (a single process is never bound)."""
    if local_world < 2 or threads < 1 or local_world * threads != len(allowed) or not 0 <= local_rank < local_world:
        return None
    ordered = sorted(allowed)
    return ordered[local_rank * threads:(local_rank + 1) * threads]


def bind_to_rank_cores() -> list[int] | None:
    """Bind this process to its share of the cores it may use; the cores bound to, or None where nothing was."""
    if os.environ.get(OPT_OUT) == "0" or "LOCAL_RANK" not in os.environ:
        return None
    try:
        local_rank = int(os.environ["LOCAL_RANK"])
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = int(os.environ.get("OMP_NUM_THREADS", "0"))
    except ValueError:
        return None  # torchrun writes these; anything else is not a launch this applies to
    cores = rank_cores(list(os.sched_getaffinity(0)), local_rank, local_world, threads)
    if cores is not None:
        os.sched_setaffinity(0, cores)
    return cores
