"""The local executor: how a stage process's end maps to a JobState, cancellation by process group, torchrun."""
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flows.executors.base import JobState, StageJob, run_job
from flows.executors.local import LocalExecutor
from tests.procs import alive

# A stand-in stage CLI: `python -m stagecmd ACTION [ARG]`.
STAGECMD = textwrap.dedent("""
    import os, signal, subprocess, sys, time
    action = sys.argv[1]
    print(f"stagecmd {action} rank={os.environ.get('RANK', '-')}", flush=True)
    if action == "exit":
        sys.exit(int(sys.argv[2]))
    if action == "abort":
        os.abort()
    if action == "sleep":  # with a grandchild in a session of its own, as torchrun starts each rank
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
        open(sys.argv[2], "w").write(f"{os.getpid()} {child.pid}")
        time.sleep(300)
""")


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "stagecmd.py").write_text(STAGECMD)
    return tmp_path


def job(workdir: Path, *argv: str, **kwargs) -> StageJob:
    return StageJob(name="demo", argv=list(argv), log_path=workdir / "logs" / "demo.log", workdir=workdir, **kwargs)


def wait_for(path: Path) -> str:
    for _ in range(600):
        if path.is_file() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_exit_zero_is_completed_and_the_log_holds_the_command_and_its_output(workdir):
    result = run_job(LocalExecutor(module="stagecmd"), job(workdir, "exit", "0"), poll_interval_s=0.05)
    assert (result.state, result.returncode, result.ok) == (JobState.COMPLETED, 0, True)
    log = (workdir / "logs" / "demo.log").read_text()
    assert "stage demo:" in log and "-m stagecmd exit 0" in log
    assert "stagecmd exit rank=-" in log


def test_nonzero_exit_is_failed_and_the_message_quotes_the_log(workdir):
    result = run_job(LocalExecutor(module="stagecmd"), job(workdir, "exit", "3"), poll_interval_s=0.05)
    assert (result.state, result.returncode) == (JobState.FAILED, 3)
    assert "stagecmd exit" in result.message


def test_a_crash_by_signal_is_failed_not_cancelled(workdir):
    result = run_job(LocalExecutor(module="stagecmd"), job(workdir, "abort"), poll_interval_s=0.05)
    assert result.state is JobState.FAILED
    assert result.returncode == -signal.SIGABRT


def test_cancel_kills_the_whole_process_group_and_reports_cancelled(workdir):
    executor = LocalExecutor(module="stagecmd")
    handle = executor.submit(job(workdir, "sleep", str(workdir / "pids")))
    stage_pid, grandchild_pid = map(int, wait_for(workdir / "pids").split())
    executor.cancel(handle)
    state, code = executor.poll(handle)
    assert state is JobState.CANCELLED and code == -signal.SIGTERM
    time.sleep(0.2)  # the grandchild is reaped by init once killed
    assert not alive(stage_pid) and not alive(grandchild_pid)


def test_a_process_killed_from_outside_is_cancelled_and_what_it_started_is_stopped(workdir):
    executor = LocalExecutor(module="stagecmd")
    handle = executor.submit(job(workdir, "sleep", str(workdir / "pids")))
    stage_pid, grandchild_pid = map(int, wait_for(workdir / "pids").split())
    os.kill(stage_pid, signal.SIGKILL)
    for _ in range(200):
        state, code = executor.poll(handle)
        if state.final:
            break
        time.sleep(0.05)
    assert (state, code) == (JobState.CANCELLED, -signal.SIGKILL)
    assert not alive(grandchild_pid)  # a rank that outlived its launcher is stopped by the supervisor


FLOW = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from flows.executors.base import StageJob
    from flows.executors.local import LocalExecutor
    workdir = Path(sys.argv[1])
    job = StageJob(name="demo", argv=["sleep", str(workdir / "pids")], log_path=workdir / "demo.log", workdir=workdir)
    LocalExecutor(module="stagecmd").submit(job)
    time.sleep(300)
""")


def test_killing_the_flow_with_sigkill_stops_the_stage_and_every_rank(workdir):
    """kill -9 of the flow's process group: the stage (own session) and its rank (another session) stop too."""
    import subprocess
    root = Path(__file__).resolve().parents[2]
    flow = subprocess.Popen([sys.executable, "-c", FLOW, str(workdir)], cwd=workdir, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": f"{root}:{workdir}"})
    stage_pid, rank_pid = map(int, wait_for(workdir / "pids").split())
    os.killpg(flow.pid, signal.SIGKILL)
    flow.wait()
    deadline = time.monotonic() + 15
    while (alive(stage_pid) or alive(rank_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(stage_pid) and not alive(rank_pid)


def test_a_job_over_its_time_limit_is_stopped_and_reported_timeout(workdir):
    result = run_job(LocalExecutor(module="stagecmd"), job(workdir, "sleep", str(workdir / "pids"), time_limit_s=1),
                     poll_interval_s=0.05)
    stage_pid, grandchild_pid = map(int, (workdir / "pids").read_text().split())
    assert result.state is JobState.TIMEOUT
    time.sleep(0.2)
    assert not alive(stage_pid) and not alive(grandchild_pid)


def test_interrupting_run_job_cancels_the_stage(workdir):
    seen = []

    def interrupt(state):
        seen.append(state)
        if (workdir / "pids").is_file() and (workdir / "pids").read_text():
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_job(LocalExecutor(module="stagecmd"), job(workdir, "sleep", str(workdir / "pids")), poll_interval_s=0.05,
                on_poll=interrupt)
    stage_pid, grandchild_pid = map(int, (workdir / "pids").read_text().split())
    time.sleep(0.2)
    assert seen[0] is JobState.RUNNING
    assert not alive(stage_pid) and not alive(grandchild_pid)


def test_several_processes_run_under_torchrun_one_rank_each(workdir):
    executor = LocalExecutor(module="stagecmd")
    stage = job(workdir, "exit", "0", nproc_per_node=2)
    assert executor.command(stage)[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                           "--nproc_per_node", "2"]
    result = run_job(executor, stage, poll_interval_s=0.1)
    assert result.state is JobState.COMPLETED
    log = (workdir / "logs" / "demo.log").read_text()
    assert "stagecmd exit rank=0" in log and "stagecmd exit rank=1" in log


def test_more_than_one_node_is_refused_with_the_stage_named(workdir):
    with pytest.raises(ValueError, match="stage 'demo'.*2"):
        LocalExecutor(module="stagecmd").submit(job(workdir, "exit", "0", nodes=2))
