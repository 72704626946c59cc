"""The CLI binds each process of a torchrun launch to its own cores where the processes' threads fill exactly the
cores it may use, and leaves placement to the kernel everywhere else."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from hicom.core.cpus import rank_cores

# Runs the CLI as a torchrun process would (it fails on the params file after its process setup), then prints the
# cores the process may run on.
PROBE = textwrap.dedent("""
    import os, sys
    from hicom.cli import main
    assert main(["--params", sys.argv[1], "synth", "--out", "unused"]) == 2
    print(",".join(map(str, sorted(os.sched_getaffinity(0)))))
""")

ALLOWED = sorted(os.sched_getaffinity(0))


@pytest.mark.parametrize(("allowed", "world", "threads", "expected"), [
    ([0, 1], 2, 1, [[0], [1]]),
    ([0, 1, 2, 3, 4, 5, 6, 7], 4, 2, [[0, 1], [2, 3], [4, 5], [6, 7]]),
    ([0, 1, 2, 3, 4, 5, 6, 7], 2, 4, [[0, 1, 2, 3], [4, 5, 6, 7]]),
    ([12, 3, 9, 5], 2, 2, [[3, 5], [9, 12]]),  # a cpuset of scattered cores, in any order
])
def test_processes_that_fill_the_allowed_cores_get_disjoint_shares_of_them(allowed, world, threads, expected):
    shares = [rank_cores(allowed, rank, world, threads) for rank in range(world)]
    assert shares == expected
    assert sorted(c for share in shares for c in share) == sorted(allowed)


@pytest.mark.parametrize(("allowed", "world", "threads"), [
    ([0, 1, 2, 3], 2, 1),  # fewer threads than cores: the kernel may use the idle ones
    ([0, 1], 2, 2),  # more threads than cores
    ([0, 1], 1, 2),  # one process
    ([0, 1], 2, 0),
])
def test_processes_that_do_not_fill_the_allowed_cores_are_not_bound(allowed, world, threads):
    assert all(rank_cores(allowed, rank, world, threads) is None for rank in range(world))


def _probe(tmp_path, cores: list[int], **env) -> subprocess.CompletedProcess:
    """The probe in a process that may run on `cores` only (as a cpuset or `taskset` would give it)."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("LOCAL_RANK", "LOCAL_WORLD_SIZE", "OMP_NUM_THREADS", "HICOM_BIND_CORES")}
    return subprocess.run([sys.executable, "-c", PROBE, str(tmp_path / "missing.yaml")], env={**clean, **env},
                          capture_output=True, text=True, check=True, cwd=tmp_path,
                          preexec_fn=lambda: os.sched_setaffinity(0, cores))


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two cores")
@pytest.mark.parametrize("rank", [0, 1])
def test_each_of_two_one_thread_processes_on_two_cores_runs_on_its_own_core(tmp_path, rank):
    two = ALLOWED[:2]
    out = _probe(tmp_path, two, LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2", OMP_NUM_THREADS="1")
    assert out.stdout.split()[-1] == str(two[rank])
    assert f"process {rank} of 2 on this node bound to core(s) {two[rank]}" in out.stderr


@pytest.mark.skipif(len(ALLOWED) < 2, reason="needs two cores")
@pytest.mark.parametrize("env", [
    {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "1", "HICOM_BIND_CORES": "0"},  # opted out
    {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "OMP_NUM_THREADS": "2"},  # 4 threads on 2 cores
    {"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"},  # torch's own thread count: every core in each process
    {"OMP_NUM_THREADS": "1"},  # not launched by torchrun
])
def test_a_process_the_binding_does_not_apply_to_keeps_every_core_it_was_given(tmp_path, env):
    two = ALLOWED[:2]
    out = _probe(tmp_path, two, **env)
    assert out.stdout.split()[-1] == ",".join(map(str, two))
    assert "bound to" not in out.stderr
