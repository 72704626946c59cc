"""The executor interface: how a flow runs one stage command somewhere (here, Slurm, Kubernetes).

A stage is always the same `python -m hicom STAGE ...` command (DESIGN.md section 2); an executor
only decides where and how many processes run it. Long cluster jobs are submitted, then polled by
short calls, so no flow process needs to stay attached to a multi-day job.
"""
from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

# Stage exit codes that mean "try again unchanged" (sysexits EX_TEMPFAIL), besides NODE_FAIL/PREEMPTED.
TRANSIENT_EXIT_CODES = frozenset({75})


class JobState(str, enum.Enum):
    """Final and transient states, named after Slurm's (the richest of the three backends)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"

    @property
    def final(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)

    @property
    def transient_failure(self) -> bool:
        """Failures worth retrying unchanged: the job did not fail by itself."""
        return self in (JobState.NODE_FAIL, JobState.PREEMPTED)


@dataclass(frozen=True)
class StageJob:
    """One stage command to run.

    `argv` is what follows `python -m hicom` (e.g. ["train", "--stage", "align", ...]). With
    `nproc_per_node > 1` or `nodes > 1` the executor launches it under torchrun.
    """

    name: str
    argv: list[str]
    log_path: Path
    workdir: Path = Path(".")
    nodes: int = 1
    nproc_per_node: int = 1
    gpus_per_node: int = 0
    env: dict[str, str] = field(default_factory=dict)
    time_limit_s: int | None = None
    keep_fds: tuple[int, ...] = ()  # open files the job's processes inherit (the local stage lock)


@dataclass(frozen=True)
class JobResult:
    job: StageJob
    handle: str
    state: JobState
    returncode: int | None
    message: str

    @property
    def ok(self) -> bool:
        return self.state is JobState.COMPLETED


class StageFailed(RuntimeError):
    """A stage ended in a state other than COMPLETED; the message names the stage and its log."""

    def __init__(self, result: JobResult):
        self.result = result
        super().__init__(f"stage {result.job.name!r} ended {result.state.value}"
                         f"{f' (exit code {result.returncode})' if result.returncode is not None else ''}: "
                         f"{result.message}; log: {result.job.log_path}")


class Executor(Protocol):
    """Submit a stage, poll it, cancel it. `run` (below) is the blocking composition."""

    def submit(self, job: StageJob) -> str: ...

    def poll(self, handle: str) -> tuple[JobState, int | None]: ...

    def cancel(self, handle: str) -> None: ...


def run_job(executor: Executor, job: StageJob, poll_interval_s: float = 1.0,
            timeout_s: float | None = None, on_poll: Callable[[JobState], None] | None = None) -> JobResult:
    """Submit `job`, poll until it ends; cancel it if this call is interrupted or times out.

    on_poll: called with each polled state (a flow reports progress from it).
    """
    handle = executor.submit(job)
    started = time.monotonic()
    try:
        while True:
            state, code = executor.poll(handle)
            if on_poll is not None:
                on_poll(state)
            if state.final:
                message = "completed" if state is JobState.COMPLETED else _tail(job.log_path)
                return JobResult(job, handle, state, code, message)
            if timeout_s is not None and time.monotonic() - started > timeout_s:
                executor.cancel(handle)
                return JobResult(job, handle, JobState.TIMEOUT, code, f"no result after {timeout_s:.0f}s")
            time.sleep(poll_interval_s)
    except BaseException:
        executor.cancel(handle)
        raise


def _tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log, for a failure message."""
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"
