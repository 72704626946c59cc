"""Run a stage as a child process group on this machine (the embedded default).

One process (`python -m hicom ...`) or, for `nproc_per_node > 1`, torchrun's launcher
(`python -m torch.distributed.run --standalone --nproc_per_node N -m hicom ...`, gloo on the CPU).
Each job runs under flows/executors/supervise.py, in a session of its own: the supervisor owns the whole
process tree (torchrun's ranks sit in sessions of their own), so a cancel, a time limit or the death of
the flow itself stops every rank.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import IO

from flows.executors.base import JobState, StageJob
from flows.executors.supervise import SCRIPT as SUPERVISOR
from flows.executors.supervise import descendants


# A process killed by one of these was stopped from outside (a cancel, a time limit, the OOM killer);
# any other signal (SIGSEGV, SIGABRT, SIGBUS) is the program failing by itself.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGKILL, signal.SIGINT, signal.SIGHUP)
CANCEL_GRACE_S = 10.0


@dataclass
class _Running:
    job: StageJob
    process: subprocess.Popen
    log: IO[bytes]
    started: float
    timed_out: bool = False
    cancelled: bool = False


class LocalExecutor:
    """Subprocess executor. `module` is the package run with `-m` (the stage CLI; tests use a stand-in)."""

    def __init__(self, python: str = sys.executable, module: str = "hicom"):
        self.python = python
        self.module = module
        self._jobs: dict[str, _Running] = {}

    def command(self, job: StageJob) -> list[str]:
        """The argv that runs `job` here."""
        if job.nodes > 1:
            raise ValueError(f"stage {job.name!r}: the local executor runs on one node, the job asks for "
                             f"{job.nodes} (use the slurm or kubernetes executor)")
        if job.nproc_per_node > 1:
            return [self.python, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", str(job.nproc_per_node), "-m", self.module, *job.argv]
        return [self.python, "-m", self.module, *job.argv]

    def supervised(self, job: StageJob) -> list[str]:
        """command(job) under the supervisor, which stops with this process and passes job.keep_fds on."""
        keep = [arg for fd in job.keep_fds for arg in ("--keep-fd", str(fd))]
        return [self.python, str(SUPERVISOR), str(os.getpid()), *keep, "--", *self.command(job)]

    def submit(self, job: StageJob) -> str:
        argv = self.command(job)
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(job.log_path, "ab")  # a retry appends to the same log, after its own header
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        log.write(f"=== {stamp} stage {job.name}: {subprocess.list2cmdline(argv)} (in {job.workdir})\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(self.supervised(job), cwd=job.workdir, pass_fds=job.keep_fds,
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True,
                                       env={**os.environ, "PYTHONUNBUFFERED": "1", **job.env})
        except OSError:
            log.close()
            raise
        handle = str(process.pid)
        self._jobs[handle] = _Running(job, process, log, time.monotonic())
        return handle

    def poll(self, handle: str) -> tuple[JobState, int | None]:
        running = self._running(handle)
        limit = running.job.time_limit_s
        if running.process.poll() is None and limit is not None and time.monotonic() - running.started > limit:
            running.timed_out = True
            self._stop(running)
        code = running.process.poll()
        if code is None:
            return JobState.RUNNING, None
        running.log.close()
        if running.timed_out:
            return JobState.TIMEOUT, code
        if code == 0:
            return JobState.COMPLETED, code
        if code < 0 and (running.cancelled or -code in STOP_SIGNALS):
            return JobState.CANCELLED, code
        return JobState.FAILED, code

    def cancel(self, handle: str) -> None:
        running = self._running(handle)
        if running.process.poll() is None:
            running.cancelled = True
            self._stop(running)

    def _running(self, handle: str) -> _Running:
        try:
            return self._jobs[handle]
        except KeyError:
            raise KeyError(f"local executor: no job with handle {handle!r} was submitted by this process") from None

    @staticmethod
    def _stop(running: _Running) -> None:
        """SIGTERM to the supervisor (it stops every descendant); after a grace period SIGKILL to whatever is
        left: the job's process group and every process that was below the supervisor."""
        group = running.process.pid  # start_new_session: the supervisor leads its own group
        tree = descendants(group)
        try:
            os.killpg(group, signal.SIGTERM)
            running.process.wait(timeout=CANCEL_GRACE_S)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        for kill in (lambda: os.killpg(group, signal.SIGKILL), *(lambda pid=pid: os.kill(pid, signal.SIGKILL)
                                                                  for pid in tree)):
            try:
                kill()
            except ProcessLookupError:
                pass
        running.process.wait()
