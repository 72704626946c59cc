"""The Slurm executor: its sbatch script, its state mapping, and real jobs on a real single-node Slurm.

The module's fixture installs slurm-wlm + munge when missing (infra/slurm/local_cluster.py, root) and starts
munged, slurmctld and slurmd on free loopback ports; real `python -m hicom` stages then run through sbatch.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.executors import make_executor
from flows.executors.base import JobState, StageFailed, StageJob, run_job
from flows.executors.slurm import (
    SlurmExecutor,
    SlurmSettings,
    _Submitted,
    format_time_limit,
    map_slurm_state,
    parse_exit_code,
)
from flows.settings import Resources
from infra.slurm.local_cluster import install
from infra.stack.procs import group_members

ROOT = Path(__file__).resolve().parents[2]


# ---- the sbatch script ----

def test_multi_node_stage_runs_srun_torchrun_with_a_c10d_rendezvous_on_the_first_node(tmp_path):
    settings = SlurmSettings(partition="gpu", modules=("cuda/12.4",), setup=("source .venv/bin/activate",),
                             extra_sbatch=("--account=vision",))
    job = StageJob("sft", ["train", "--stage", "sft", "--out", "outputs/sft"], tmp_path / "sft.log",
                   workdir=tmp_path, nodes=4, nproc_per_node=8, gpus_per_node=8, env={"HF_HOME": "/data/hf cache"},
                   time_limit_s=2 * 86400 + 90)
    script = SlurmExecutor(settings).render(job)
    directives = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    assert directives == ["#SBATCH --job-name=sft", "#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1",
                          "#SBATCH --cpus-per-task=1", "#SBATCH --gpus-per-node=8", "#SBATCH --partition=gpu",
                          "#SBATCH --time=2-00:01:30", f"#SBATCH --output={tmp_path / 'sft.log'}",
                          "#SBATCH --open-mode=append", f"#SBATCH --chdir={tmp_path}", "#SBATCH --requeue",
                          "#SBATCH --account=vision"]
    assert 'RDZV_HOST=$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1)' in script
    launch = " ".join(script[script.index("srun "):].split("\\\n"))
    assert launch.split() == ["srun", "--kill-on-bad-exit=1", sys.executable, "-m", "torch.distributed.run",
                              "--nnodes=4", "--nproc_per_node=8", "--rdzv_backend=c10d",
                              '--rdzv_endpoint="${RDZV_HOST}:29500"', '--rdzv_id="${SLURM_JOB_ID}"',
                              "-m", "hicom", "train", "--stage", "sft", "--out", "outputs/sft"]
    assert "module load cuda/12.4\nsource .venv/bin/activate\nexport HF_HOME='/data/hf cache'\n" in script


def test_single_process_stage_runs_the_plain_stage_command_in_a_container_when_asked(tmp_path):
    settings = SlurmSettings(container_image="registry.example/hicom:1.0", requeue=False)
    script = SlurmExecutor(settings).render(StageJob("smoke", ["smoke", "--profile", "tiny"], tmp_path / "s.log",
                                                     workdir=tmp_path))
    assert "torch.distributed.run" not in script and "--gpus-per-node" not in script and "--time" not in script
    assert "#SBATCH --no-requeue" in script
    assert script.rstrip().splitlines()[-1] == (
        f"srun --container-image=registry.example/hicom:1.0 --container-mounts={tmp_path}:{tmp_path} "
        f"--container-workdir={tmp_path} python -m hicom smoke --profile tiny")


def test_a_log_path_with_whitespace_is_refused_before_submitting(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        SlurmExecutor().render(StageJob("x", ["smoke"], tmp_path / "my logs" / "x.log", workdir=tmp_path))


# ---- Slurm's words -> ours ----

@pytest.mark.parametrize("slurm, ours", [
    ("PENDING", JobState.PENDING), ("REQUEUED", JobState.PENDING), ("RUNNING", JobState.RUNNING),
    ("COMPLETING", JobState.RUNNING), ("COMPLETED", JobState.COMPLETED), ("FAILED", JobState.FAILED),
    ("OUT_OF_MEMORY", JobState.FAILED), ("TIMEOUT", JobState.TIMEOUT), ("DEADLINE", JobState.TIMEOUT),
    ("CANCELLED by 0", JobState.CANCELLED), ("CANCELLED+", JobState.CANCELLED), ("NODE_FAIL", JobState.NODE_FAIL),
    ("BOOT_FAIL", JobState.NODE_FAIL), ("PREEMPTED", JobState.PREEMPTED)])
def test_slurm_states_map_onto_job_states(slurm, ours):
    assert map_slurm_state(slurm) is ours


def test_an_unknown_slurm_state_is_an_error_not_a_guess():
    with pytest.raises(ValueError, match="unknown Slurm job state 'LOST_IN_SPACE'"):
        map_slurm_state("LOST_IN_SPACE")


def test_exit_codes_keep_the_status_or_the_signal():
    assert [parse_exit_code(c) for c in ("0:0", "3:0", "0:15", "garbage")] == [0, 3, -15, None]
    assert format_time_limit(59) == "0-00:00:59" and format_time_limit(86400 + 3661) == "1-01:01:01"


class _Recorded(SlurmExecutor):
    """The executor with Slurm's commands answered from recordings of the real ones' output."""

    def __init__(self, answers: dict[str, tuple[int, str, str]], **kwargs):
        super().__init__(**kwargs)
        self.answers = answers
        self.calls: list[str] = []

    def _run(self, *argv):
        command = " ".join(argv)
        self.calls.append(command)
        code, out, err = next((a for prefix, a in self.answers.items() if command.startswith(prefix)), (1, "", ""))
        return subprocess.CompletedProcess(argv, code, out, err)


def test_a_job_that_hit_its_time_limit_is_requeued_unless_told_not_to(tmp_path):
    answers = {"squeue": (0, "", ""), "scontrol requeue": (0, "", ""),
               "scontrol show job": (0, "JobId=8 JobName=align JobState=TIMEOUT Reason=TimeLimit ExitCode=0:15", "")}
    job = StageJob("align", ["train"], tmp_path / "align.log")
    for requeue_on_timeout, expected in ((True, JobState.PENDING), (False, JobState.TIMEOUT)):
        executor = _Recorded(answers, settings=SlurmSettings(requeue_on_timeout=requeue_on_timeout))
        executor._jobs["8"] = _Submitted(job, tmp_path / "align.sbatch")
        assert executor.poll("8")[0] is expected
        assert executor.calls.count("scontrol requeue 8") == (1 if requeue_on_timeout else 0)


def test_a_job_slurm_put_back_in_the_queue_is_reported_as_requeued(tmp_path, caplog):
    executor = _Recorded({"squeue": (0, "RUNNING\n", "")})
    executor._jobs["9"] = _Submitted(StageJob("align", ["train"], tmp_path / "align.log"), tmp_path / "align.sbatch")
    assert executor.poll("9")[0] is JobState.RUNNING and "back in the queue" not in caplog.text
    executor.answers["squeue"] = (0, "PENDING\n", "")  # Slurm requeued it (NODE_FAIL or preemption, --requeue)
    assert executor.poll("9")[0] is JobState.PENDING
    assert "stage align: Slurm job 9 is back in the queue (requeued by Slurm" in caplog.text
    assert "scontrol requeue 9" not in executor.calls


def test_a_job_gone_from_the_controller_is_read_from_the_completion_log():
    executor = _Recorded({
        "squeue": (1, "", "slurm_load_jobs error: Invalid job id specified"),
        "scontrol show job": (1, "", "slurm_load_jobs error: Invalid job id specified"),
        "sacct -n": (1, "", "Slurm accounting storage is disabled"),
        "sacct -c": (0, "41|TIMEOUT|0:15\n", ""),
    })
    assert executor.query("41") == (JobState.TIMEOUT, -15)
    assert [c.split()[0] for c in executor.calls] == ["squeue", "scontrol", "sacct", "sacct"]


def test_a_preempted_job_is_requeued_up_to_the_limit_then_reported(tmp_path):
    executor = _Recorded({"squeue": (0, "", ""),
                          "scontrol show job": (0, "JobId=7 JobName=sft JobState=PREEMPTED Reason=None "
                                                   "ExitCode=0:15 Restarts=0", ""),
                          "scontrol requeue": (0, "", "")},
                         settings=SlurmSettings(max_requeues=2))
    job = StageJob("sft", ["train"], tmp_path / "sft.log")
    executor._jobs["7"] = _Submitted(job, tmp_path / "sft.sbatch")  # as submit() leaves it
    states = [executor.poll("7")[0] for _ in range(3)]
    assert states == [JobState.PENDING, JobState.PENDING, JobState.PREEMPTED]
    assert executor.calls.count("scontrol requeue 7") == 2


def test_clusters_set_up_at_once_install_one_after_the_other(tmp_path, monkeypatch):
    """Parallel test workers (make test) start both Slurm test modules' clusters at once: two apt-gets at once fail
    on apt's lock, and two munge keys would be written over each other."""
    import concurrent.futures
    import threading

    from infra.slurm import local_cluster
    monkeypatch.setattr(local_cluster, "INSTALL_LOCK", tmp_path / "install.lock")
    inside, most = [], []
    guard = threading.Lock()

    def installing(out, networked):  # stands in for apt-get: records how many are inside at once
        with guard:
            inside.append(networked)
            most.append(len(inside))
        time.sleep(0.3)
        with guard:
            inside.remove(networked)

    monkeypatch.setattr(local_cluster, "_install", installing)
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda networked: install(networked=networked), (False, True, False)))
    assert most == [1, 1, 1]


# ---- a real cluster ----

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(running_cluster):
    if os.geteuid() != 0 and not shutil.which("slurmctld", path="/usr/sbin:/usr/bin"):
        pytest.skip("Slurm is not installed and installing it needs root")
    install(out=lambda _: None)
    with running_cluster("hicom-slurm-", ctld_port=_free_port(), slurmd_port=_free_port()) as local:
        yield local


@pytest.fixture
def executor(cluster):
    lines: list[str] = []
    ex = SlurmExecutor(SlurmSettings(python=sys.executable), command_env=cluster.env, log_sink=lines.append)
    ex.streamed = lines
    return ex


slow = pytest.mark.slow


@slow
def test_cluster_daemons_listen_on_loopback_only(cluster):
    import psutil
    pids = {pid for name in cluster.daemons for pid in group_members(cluster.table.get(name).pid)}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in pids]
    assert {c.laddr.port for c in listening} == {cluster.ctld_port, cluster.slurmd_port}
    assert {c.laddr.ip for c in listening} == {"127.0.0.1"}


@slow
def test_a_smoke_stage_completes_on_slurm_and_its_log_is_streamed(executor, tmp_path):
    job = StageJob("smoke", ["smoke", "--profile", "tiny", "--steps", "2"], tmp_path / "smoke.log", workdir=ROOT)
    result = run_job(executor, job, poll_interval_s=0.5)
    assert (result.state, result.returncode) == (JobState.COMPLETED, 0), job.log_path.read_text()
    assert any("gradients reached every compressor parameter: True" in line for line in executor.streamed)
    assert executor.streamed[0].startswith(f"[slurm] job {result.handle} restart 0")


@slow
def test_a_failing_stage_ends_failed_and_its_error_names_the_log(executor, tmp_path):
    job = StageJob("broken", ["smoke", "--profile", "no-such-profile"], tmp_path / "broken.log", workdir=ROOT)
    result = run_job(executor, job, poll_interval_s=0.5)
    assert result.state is JobState.FAILED and result.returncode not in (0, None)
    assert "no-such-profile" in result.message
    with pytest.raises(StageFailed, match=rf"stage 'broken' ended FAILED .*log: {job.log_path}"):
        raise StageFailed(result)


@slow
def test_a_cancelled_stage_ends_cancelled_and_its_processes_stop(executor, tmp_path):
    job = StageJob("long", ["smoke", "--profile", "tiny", "--steps", "1000000"], tmp_path / "long.log", workdir=ROOT)
    handle = executor.submit(job)
    state = _wait(executor, handle, lambda s: s is not JobState.PENDING)
    assert state is JobState.RUNNING
    executor.cancel(handle)
    assert _wait(executor, handle, lambda s: s.final) is JobState.CANCELLED
    assert not [p for p in _processes() if "--steps 1000000" in p]


@slow
def test_the_flows_factory_runs_stages_with_the_projects_interpreter_or_the_one_params_names(cluster, tmp_path,
                                                                                            monkeypatch):
    """The executor the flow makes (flows.executors.make_executor) on a node whose PATH has no venv: by default
    the stage runs with the project's interpreter (the flow's), not a bare `python`; with
    pipeline.clusters.slurm in params.yaml, with the interpreter and setup lines named there."""
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("PATH", "/usr/local/bin:/usr/bin:/bin")  # sbatch exports it: the node's plain PATH
    smoke = ["smoke", "--profile", "tiny", "--steps", "2"]
    job = StageJob("smoke", smoke, tmp_path / "default.log", workdir=ROOT)
    result = run_job(make_executor("slurm", "hicom"), job, poll_interval_s=0.5)
    assert (result.state, result.returncode) == (JobState.COMPLETED, 0), job.log_path.read_text()[-2000:]

    wrapper = tmp_path / "cluster-python"
    wrapper.write_text(f'#!/bin/sh\necho "cluster python, setup: $HICOM_NODE_SETUP"\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    from flows.settings import PipelineSettings
    params = yaml.safe_load(f"""
pipeline:
  clusters:
    slurm: {{python: {wrapper}, setup: ["export HICOM_NODE_SETUP=done"]}}
""")
    configured = make_executor("slurm", "hicom", PipelineSettings.from_params(params).clusters["slurm"])
    job = StageJob("smoke", smoke, tmp_path / "configured.log", workdir=ROOT)
    result = run_job(configured, job, poll_interval_s=0.5)
    assert (result.state, result.returncode) == (JobState.COMPLETED, 0), job.log_path.read_text()[-2000:]
    assert "cluster python, setup: done" in job.log_path.read_text()


@slow
@pytest.mark.parametrize("processes,env,threads", [
    (1, {}, "2"),  # a node's only process: the task's 2 CPUs (torchrun is not involved)
    (2, {}, "1"),  # 2 processes share them (as torchrun would set, but from the allocation, not its rule)
    # params.yaml threads_per_process, in the stage's environment as the flow passes it, wins
    (2, Resources(threads_per_process=2).thread_env(2, local=False), "2"),
])
def test_a_stages_processes_share_the_tasks_cpus_as_torch_threads(cluster, tmp_path, processes, env, threads):
    """Every layout of a stage gets threads from its allocation: torchrun alone gives 1 to each of several processes
    and every core to a node's only one, so a stage moved from 2 processes on a node to 1 on each of 2 nodes ran
    at another speed and ended with other weights (seen in the two-node test)."""
    wrapper = tmp_path / "cluster-python"  # in place of the interpreter: reports what the batch script handed it
    wrapper.write_text('#!/bin/sh\necho "torch threads: OMP=$OMP_NUM_THREADS MKL=$MKL_NUM_THREADS"\n')
    wrapper.chmod(0o755)
    ex = SlurmExecutor(SlurmSettings(python=str(wrapper), cpus_per_task=2), command_env=cluster.env)
    job = StageJob("threads", ["smoke"], tmp_path / "threads.log", workdir=ROOT, nproc_per_node=processes, env=env)
    result = run_job(ex, job, poll_interval_s=0.2)
    assert (result.state, result.returncode) == (JobState.COMPLETED, 0), job.log_path.read_text()[-2000:]
    assert f"torch threads: OMP={threads} MKL={threads}" in job.log_path.read_text()


def test_an_unknown_cluster_setting_fails_naming_its_key():
    from flows.errors import PipelineError
    with pytest.raises(PipelineError, match=r"pipeline\.clusters\.slurm\.pyhton: unknown key \(known: .*python"):
        make_executor("slurm", "hicom", {"pyhton": "/opt/venv/bin/python"})


def _wait(executor, handle, done, max_polls: int = 600):
    """Poll (0.2 s apart, at most `max_polls` times) until `done(state)`."""
    for _ in range(max_polls):
        state, _ = executor.poll(handle)
        if done(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"job {handle} still {state} after {max_polls} polls")


def _processes() -> list[str]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                out.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:
                pass
    return out
