"""Run a stage as a Slurm batch job: render an sbatch script, submit it, poll it, stream its log, cancel it.

The script comes from `infra/slurm/stage.sbatch.j2`: one task per node, `srun torchrun` with a c10d rendezvous
on the allocation's first node when the stage is distributed, the plain stage command otherwise. Slurm's
final states map one to one onto JobState. A job submitted with `--requeue` is put back in the queue by Slurm
itself on preemption or node failure (it is PENDING again and appends to the same log); where the cluster
ends such a job instead (PREEMPTED, NODE_FAIL), and when a job hits its time limit (TIMEOUT: Slurm never
requeues those; `requeue_on_timeout`), the executor requeues it with `scontrol requeue`, up to `max_requeues`
times, before reporting the state. Either way the stage's next run resumes from its last complete checkpoint.
A job Slurm refuses at submission (more nodes than the partition has, an unknown partition) fails at once,
with Slurm's reason.
"""
from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from flows.executors.base import JobState, StageJob
from hicom.core.files import atomic_write_text

TEMPLATES = Path(__file__).resolve().parents[2] / "infra" / "slurm"
_log = logging.getLogger(__name__)

# Every state Slurm reports (squeue, scontrol, sacct) -> ours. Unknown states fail loudly in map_slurm_state.
SLURM_STATES = {
    "PENDING": JobState.PENDING, "CONFIGURING": JobState.PENDING, "REQUEUED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING, "REQUEUE_FED": JobState.PENDING, "RESV_DEL_HOLD": JobState.PENDING,
    "RUNNING": JobState.RUNNING, "COMPLETING": JobState.RUNNING, "SUSPENDED": JobState.RUNNING,
    "STOPPED": JobState.RUNNING, "SIGNALING": JobState.RUNNING, "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED, "OUT_OF_MEMORY": JobState.FAILED, "SPECIAL_EXIT": JobState.FAILED,
    "TIMEOUT": JobState.TIMEOUT, "DEADLINE": JobState.TIMEOUT,
    "CANCELLED": JobState.CANCELLED, "REVOKED": JobState.CANCELLED,
    "NODE_FAIL": JobState.NODE_FAIL, "BOOT_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
}


def map_slurm_state(state: str) -> JobState:
    """'CANCELLED by 0', 'FAILED', 'RUNNING+' ... -> JobState."""
    name = state.strip().split()[0].rstrip("+").upper() if state.strip() else ""
    if name not in SLURM_STATES:
        raise ValueError(f"unknown Slurm job state {state!r}")
    return SLURM_STATES[name]


def parse_exit_code(text: str) -> int | None:
    """Slurm's 'status:signal' -> a return code: the status, or -signal when a signal ended it (as subprocess)."""
    match = re.fullmatch(r"\s*(\d+):(\d+)\s*", text or "")
    if match is None:
        return None
    status, sig = int(match.group(1)), int(match.group(2))
    return -sig if sig else status


def format_time_limit(seconds: int) -> str:
    """Seconds -> Slurm's D-HH:MM:SS (Slurm counts whole minutes, rounding up)."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


@dataclass(frozen=True)
class SlurmSettings:
    """Where and with what software a stage runs; the StageJob says how big it is."""

    partition: str | None = None
    cpus_per_task: int = 1
    modules: tuple[str, ...] = ()  # `module load` each
    setup: tuple[str, ...] = ()  # shell lines before the stage (e.g. "source .venv/bin/activate")
    container_image: str | None = None  # run under pyxis/enroot: srun --container-image
    container_mounts: tuple[str, ...] = ()
    # The stage's interpreter. Default: the flow's own (the project's venv, on the shared filesystem a Slurm
    # cluster mounts), never whatever `python` a node's PATH finds; in a container, the image's `python`. A
    # node that sees the project elsewhere names its interpreter, or activates an environment in `setup`.
    python: str | None = None

    @property
    def interpreter(self) -> str:
        return self.python or ("python" if self.container_image else sys.executable)
    module: str = "hicom"  # the package run with -m: the stage CLI
    requeue: bool = True
    max_requeues: int = 2
    # A job killed at its time limit is requeued too (within max_requeues): a training stage resumes from its
    # last checkpoint, so a limit shorter than the stage slices it instead of failing it.
    requeue_on_timeout: bool = True
    rdzv_port: int = 29500
    extra_sbatch: tuple[str, ...] = ()  # more #SBATCH options, e.g. "--account=vision"


@dataclass
class _Submitted:
    job: StageJob
    script: Path
    log_offset: int = 0
    partial_line: str = ""
    requeues: int = 0
    last_state: JobState | None = None


@dataclass
class SlurmExecutor:
    """Executor on a Slurm cluster, through its commands (sbatch, squeue, scontrol, sacct, scancel).

    command_env: extra environment for those commands (e.g. SLURM_CONF of a local test cluster).
    log_sink: receives each new line of a job's log while it is polled.
    """

    settings: SlurmSettings = field(default_factory=SlurmSettings)
    command_env: dict[str, str] = field(default_factory=dict)
    log_sink: Callable[[str], None] | None = None
    _jobs: dict[str, _Submitted] = field(default_factory=dict, init=False, repr=False)

    def render(self, job: StageJob) -> str:
        """The sbatch script for `job`."""
        s = self.settings
        for path in (job.log_path, job.workdir):
            if re.search(r"\s", str(Path(path).resolve())):
                raise ValueError(f"stage {job.name!r}: #SBATCH lines cannot hold the path {str(path)!r} (whitespace)")
        environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                                         keep_trailing_newline=True)
        environment.filters["shell_quote"] = shlex.quote
        container = ""
        if s.container_image:
            workdir = str(Path(job.workdir).resolve())
            mounts = ",".join((*s.container_mounts, f"{workdir}:{workdir}"))
            container = (f" --container-image={shlex.quote(s.container_image)} --container-mounts={shlex.quote(mounts)}"
                         f" --container-workdir={shlex.quote(workdir)}")
        return environment.get_template("stage.sbatch.j2").render(
            name=job.name, nodes=job.nodes, nproc_per_node=job.nproc_per_node, gpus_per_node=job.gpus_per_node,
            cpus_per_task=s.cpus_per_task, partition=s.partition,
            time=format_time_limit(job.time_limit_s) if job.time_limit_s else None,
            log_path=Path(job.log_path).resolve(), workdir=Path(job.workdir).resolve(), requeue=s.requeue,
            extra_sbatch=s.extra_sbatch, modules=s.modules, setup=s.setup, env=job.env,
            distributed=job.nodes > 1 or job.nproc_per_node > 1, container_flags=container,
            python=shlex.quote(s.interpreter), module=s.module, rdzv_port=s.rdzv_port, argv=shlex.join(job.argv))

    def submit(self, job: StageJob) -> str:
        log_path = Path(job.log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        script = log_path.with_suffix(".sbatch")
        atomic_write_text(script, self.render(job))  # a half-written script is never submitted
        offset = log_path.stat().st_size if log_path.exists() else 0  # stream only this attempt's lines
        done = self._run("sbatch", "--parsable", str(script))
        if done.returncode != 0:  # e.g. "Node count specification invalid", "invalid partition specified: gpu"
            reason = done.stderr.strip().removeprefix("sbatch: error: ") or f"exit {done.returncode}"
            raise RuntimeError(f"stage {job.name!r}: Slurm refused the job ({script}): {reason}")
        out = done.stdout
        handle = out.strip().split(";")[0]
        if not handle.isdigit():
            raise RuntimeError(f"sbatch gave no job id for stage {job.name!r}: {out!r}")
        self._jobs[handle] = _Submitted(job, script, log_offset=offset)
        _log.info("stage %s: Slurm job %s (%s)", job.name, handle, script)
        return handle

    def poll(self, handle: str) -> tuple[JobState, int | None]:
        self._stream_log(handle)
        state, code = self.query(handle)
        submitted = self._jobs.get(handle)
        retry = state.transient_failure or (state is JobState.TIMEOUT and self.settings.requeue_on_timeout)
        if retry and submitted is not None and self.settings.requeue \
                and submitted.requeues < self.settings.max_requeues:
            self._slurm("scontrol", "requeue", handle)
            submitted.requeues += 1
            _log.warning("stage %s: Slurm job %s ended %s; requeued (%d of %d)", submitted.job.name, handle,
                         state.value, submitted.requeues, self.settings.max_requeues)
            submitted.last_state = JobState.PENDING
            return JobState.PENDING, None
        if submitted is not None:
            if submitted.last_state is JobState.RUNNING and state is JobState.PENDING:
                _log.warning("stage %s: Slurm job %s is back in the queue (requeued by Slurm: node failure or "
                             "preemption); its next run resumes from the last checkpoint", submitted.job.name, handle)
            submitted.last_state = state
        if state.final:
            self._stream_log(handle, flush=True)
        return state, code

    def cancel(self, handle: str) -> None:
        """scancel; a job that has already ended is left as it is."""
        done = self._run("scancel", handle)
        if done.returncode != 0 and "already completing or completed" not in done.stderr \
                and "Invalid job id" not in done.stderr:
            raise RuntimeError(f"scancel {handle} failed: {done.stderr.strip()}")

    def query(self, handle: str) -> tuple[JobState, int | None]:
        """The job's state from the first source that knows it: squeue (queued or running), scontrol (recently
        finished, kept MinJobAge seconds), sacct (accounting database), sacct -c (job completion log)."""
        queued = self._run("squeue", "-h", "-j", handle, "-o", "%T")
        if queued.returncode == 0 and queued.stdout.strip():
            return map_slurm_state(queued.stdout.split()[0]), None
        shown = self._run("scontrol", "show", "job", "-o", handle)
        if shown.returncode == 0 and "JobState=" in shown.stdout:
            fields = dict(f.split("=", 1) for f in shown.stdout.split() if "=" in f)
            return map_slurm_state(fields["JobState"]), parse_exit_code(fields.get("ExitCode", ""))
        for completion_log in ((), ("-c",)):
            acct = self._run("sacct", *completion_log, "-n", "-P", "-X", "-j", handle, "-o", "JobID,State,ExitCode")
            for line in acct.stdout.splitlines() if acct.returncode == 0 else []:
                job_id, state, exit_code = line.split("|")
                if job_id == handle:
                    return map_slurm_state(state), parse_exit_code(exit_code)
        raise RuntimeError(f"Slurm knows no job {handle} (squeue, scontrol and sacct have none)")

    def _stream_log(self, handle: str, flush: bool = False) -> None:
        """Pass the log's new complete lines (and, at the end, a last partial one) to the log sink."""
        submitted = self._jobs.get(handle)
        if submitted is None:
            return
        try:
            with open(submitted.job.log_path, "rb") as f:
                f.seek(submitted.log_offset)
                data = f.read()
        except FileNotFoundError:
            return
        submitted.log_offset += len(data)
        text = submitted.partial_line + data.decode(errors="replace")
        lines = text.split("\n")
        submitted.partial_line = lines.pop()
        if flush and submitted.partial_line:
            lines.append(submitted.partial_line)
            submitted.partial_line = ""
        sink = self.log_sink or (lambda line: _log.info("[%s] %s", submitted.job.name, line))
        for line in lines:
            sink(line)

    def _run(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              env={**os.environ, **self.command_env})

    def _slurm(self, *argv: str) -> str:
        done = self._run(*argv)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed (exit {done.returncode}): {done.stderr.strip()}")
        return done.stdout
