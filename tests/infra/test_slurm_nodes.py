"""A training stage across a real two-node Slurm, through the flow's Slurm executor, and its survival of a lost
node, a time limit and a preemption.

The module's fixture starts `LocalCluster(nodes=2)` (infra/slurm/local_cluster.py; it installs iproute2, slurm-wlm
and munge when missing): two slurmd, each in its own network namespace with its own hostname and address on a
private bridge, one slurmctld, munge. The alignment stage of a tiny world (16 steps, a checkpoint every 2) then
runs through the executor's own sbatch script: srun + torchrun with a c10d rendezvous on the first node,
DeepSpeed ZeRO-2 on gloo.

To stay within `make test`'s budget on 2 cores, the interrupted runs share one uninterrupted reference (one node,
2 processes), and the one-node run that hits its time limit (Slurm's smallest is a minute) waits it out paused,
on hicom-n2, while the reference and the two-node run use the CPUs.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from flows.executors import make_executor
from flows.executors.base import JobState, StageJob, run_job
from infra.slurm.local_cluster import _netns_list, _netns_pids, install

ROOT = Path(__file__).resolve().parents[2]
STEPS = 16  # 8 samples / (2 processes x 1) = 4 steps an epoch, 4 epochs; a checkpoint every 2 steps
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(running_cluster):
    if os.geteuid() != 0:
        pytest.skip("a cluster of network namespaces needs root")
    install(out=lambda _: None, networked=True)
    links = _links()
    with running_cluster("hicom-slurm2-", nodes=2) as local:
        local.host_links = links
        yield local


@pytest.fixture(scope="module")
def world(cluster):
    """A tiny world, tokenizer, random towers and a params.yaml whose align stage uses them (as tests/hicom/train).
    Under the cluster's folder: every node sees it at the same path."""
    from transformers import SiglipConfig, SiglipModel

    from hicom.data.synthetic import WorldConfig, generate_world
    from hicom.data.tokenizer import train_tokenizer, world_texts
    from hicom.data.video import FramePreprocessor
    from hicom.model.checkpoint import save_model
    from hicom.params import PARAMS_FILE, Params

    root = cluster.root.parent / "world"
    generate_world(WorldConfig(seed=2, num_videos=16, num_frames=8, size=64), root / "world", progress=False)
    tok = train_tokenizer(world_texts(root / "world"), 600, root / "tokenizer")
    profile = Params.load().profile("tiny")
    save_model(SiglipModel(SiglipConfig(vision_config=profile.vision.config, text_config=profile.text.config)),
               root / "towers", tokenizer=tok)
    FramePreprocessor(profile.vision.config["image_size"]).save_pretrained(root / "towers")
    (root / "data.yaml").write_text("datasets:\n  - {json_path: world/sft.jsonl, sampling_strategy: first:8}\n")
    params = yaml.safe_load(PARAMS_FILE.read_text())
    train = params["profiles"]["tiny"]["train"]
    train["common"].update(micro_batch=1, save_steps=2, save_total_limit=2, log_steps=1, zero_stage=2)
    train["align"].update(data="data.yaml", global_batch=2, micro_batch=1, epochs=4)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


def align_job(world: Path, name: str, nodes: int, nproc_per_node: int, time_limit_s: int | None = None) -> StageJob:
    out = world / name
    return StageJob(name, ["--params", str(world / "params.yaml"), "train", "--stage", "align", "--profile", "tiny",
                           "--out", str(out), "--towers", str(world / "towers"), "--tokenizer",
                           str(world / "tokenizer"), "--no-track"],
                    world / "logs" / f"{name}.log", workdir=ROOT, nodes=nodes, nproc_per_node=nproc_per_node,
                    # torchrun's launch settings and its rendezvous: which host joined as which rank
                    env={"LOGLEVEL": "INFO", "TORCH_LOGS": "torch.distributed.elastic.rendezvous.dynamic_rendezvous"},
                    time_limit_s=time_limit_s)


def executor(cluster, monkeypatch, **settings):
    """The executor the flow makes (make_executor with params.yaml's pipeline.clusters.slurm settings), its Slurm
    commands pointed at the local cluster through the environment, as a user's shell would be."""
    for key, value in cluster.env.items():
        monkeypatch.setenv(key, value)
    return make_executor("slurm", "hicom", {"python": sys.executable, **settings})


def result_of(job: StageJob) -> tuple[list[dict], dict]:
    from safetensors.torch import load_file
    out = Path(job.argv[job.argv.index("--out") + 1])
    history = json.loads((out / "trainer_state.json").read_text())["history"]
    return history, load_file(out / "compressor" / "compressor.safetensors")


def assert_same_training(job: StageJob, reference: tuple[list[dict], dict]):
    """Every step once, in order, with the reference's losses; the same final weights."""
    history, weights = result_of(job)
    assert [h["step"] for h in history] == list(range(1, STEPS + 1))
    assert [h["loss"] for h in history] == pytest.approx([h["loss"] for h in reference[0]], rel=1e-5)
    assert weights.keys() == reference[1].keys()
    assert all(torch.allclose(weights[k], reference[1][k], atol=1e-6) for k in weights)


def newest_step(job: StageJob) -> int:
    """The step of the stage's newest complete checkpoint (0: none)."""
    out = Path(job.argv[job.argv.index("--out") + 1])
    steps = [int(m.parent.name.removeprefix("step-")) for m in (out / "checkpoints").glob("step-*/complete.json")]
    return max(steps, default=0)


def wait_for_step(job: StageJob, step: int, handle: str, ex, timeout_s: float = 240) -> int:
    """Poll the job as run_job does (every 0.05 s) until the stage has a complete checkpoint at `step` or later;
    returns its step."""
    deadline = time.monotonic() + timeout_s
    while (newest := newest_step(job)) < step:
        state, _ = ex.poll(handle)
        assert not state.final, f"job {handle} ended {state} before a checkpoint at step {step}"
        assert time.monotonic() < deadline, f"no checkpoint at step {step} in {timeout_s:.0f}s"
        time.sleep(0.05)
    return newest


def wait_for_state(ex, handle: str, wanted: JobState, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while (state := ex.poll(handle)[0]) is not wanted:
        assert time.monotonic() < deadline, f"job {handle} still {state}, not {wanted}"
        time.sleep(0.2)


def completion_records(cluster, handle: str) -> list[str]:
    """The job's states in Slurm's job completion log, one per run (sacct -c)."""
    done = subprocess.run(["sacct", "-c", "-n", "-P", "-j", handle, "-o", "JobID,State"], capture_output=True,
                          text=True, env={**os.environ, **cluster.env}, check=True)
    return [line.split("|")[1].split()[0] for line in done.stdout.splitlines() if line.split("|")[0] == handle]


def failure_report(cluster, node: str, log: str) -> str:
    """What tells why a run failed: the stage log's lines from rank 0 and srun, its tail, and the node's slurmd log."""
    ranks = [line for line in log.splitlines() if line.startswith(("[rank0]", "srun:", "[slurm]")) or "exitcode" in line]
    slurmd = (cluster.root / "log" / f"slurmd-{node}.log").read_text(errors="replace").splitlines()
    return "\n".join(["rank 0 / srun:", *ranks[-25:], "log tail:", log[-1500:], f"slurmd-{node}.log:", *slurmd[-20:]])


def resumed_steps(log: str) -> list[int]:
    return [int(s) for s in re.findall(r"train\[align\]: resuming from \S+ \(step (\d+)\)", log)]


# ---- bad input: refused at submission, with Slurm's reason ----

def test_more_nodes_than_the_cluster_has_or_an_unknown_partition_fail_at_submission(cluster, world, monkeypatch):
    job = align_job(world, "too-big", nodes=3, nproc_per_node=1)
    with pytest.raises(RuntimeError, match=r"stage 'too-big': Slurm refused the job .*: Batch job submission "
                                           r"failed: Node count specification invalid"):
        executor(cluster, monkeypatch).submit(job)
    with pytest.raises(RuntimeError, match=r"Slurm refused the job .*invalid partition specified: gpu"):
        executor(cluster, monkeypatch, partition="gpu").submit(align_job(world, "nowhere", 2, 1))
    assert not (world / "too-big").exists() and not (world / "nowhere").exists()


# ---- the runs ----

@pytest.fixture(scope="module")
def one_node_interrupted(cluster, world):
    """Started first, in the background: the stage on one node (hicom-n2), 2 processes, with a 1-minute
    time limit. Once it has a checkpoint at step 2 its processes are paused, so the limit falls between
    checkpoints (on a machine too busy to get there within the minute, the limit falls before the first one): the
    job ends TIMEOUT and the executor requeues it. Later runs get 10 minutes (the limit has been hit; a slow
    machine would only make them time out and be requeued again). The second run is preempted (scontrol requeue)
    after its first checkpoint; the third runs to the end. Yields the job and a future of (handle, final state,
    newest complete checkpoint at each interruption, whether the first run was paused)."""
    mp = pytest.MonkeyPatch()
    ex = executor(cluster, mp, extra_sbatch=["--nodelist=hicom-n2"], rdzv_port=29510, max_requeues=4)
    job = align_job(world, "one-node-interrupted", nodes=1, nproc_per_node=2, time_limit_s=60)
    out = Path(job.argv[job.argv.index("--out") + 1])
    pool = concurrent.futures.ThreadPoolExecutor(1)

    def run():
        handle = ex.submit(job)
        paused = []
        while "restart 1" not in _read(job.log_path):  # the executor's own polling, as run_job does it
            state, _ = ex.poll(handle)
            assert not state.final, f"job {handle} ended {state}"
            if not paused and newest_step(job) >= 2:
                # torchrun's agent and the two ranks (Python processes running the stage), not Slurm's processes
                paused = [pid for pid in _netns_pids(cluster.node("hicom-n2").netns)
                          if str(out) in _cmdline(pid) and _is_python(pid)]
                for pid in paused:
                    os.kill(pid, signal.SIGSTOP)
                assert paused and not (out / "trainer_state.json").exists(), "the stage ended before it was paused"
            time.sleep(0.05)
        timed_out_at = newest_step(job)  # the second run has only just started: nothing newer yet
        ex._slurm("scontrol", "update", f"JobId={handle}", "TimeLimit=10")
        wait_for_step(job, timed_out_at + 1, handle, ex)  # a checkpoint saved by the second run
        ex._slurm("scontrol", "requeue", handle)  # what preemption does to a --requeue job
        while "restart 2" not in _read(job.log_path):  # the second run is gone once the third has started
            state, _ = ex.poll(handle)
            assert not state.final, f"job {handle} ended {state}"
            time.sleep(0.2)
        preempted_at = newest_step(job)
        return handle, run_job_from(ex, handle), [timed_out_at, preempted_at], bool(paused)

    future = pool.submit(run)
    try:
        yield job, future
    finally:
        mp.undo()
        pool.shutdown(wait=False, cancel_futures=True)


@pytest.fixture(scope="module")
def reference(cluster, world, one_node_interrupted):
    """The uninterrupted stage on one node (hicom-n1), 2 processes: the result every other run must equal."""
    mp = pytest.MonkeyPatch()
    try:
        job = align_job(world, "one-node", nodes=1, nproc_per_node=2)
        result = run_job(executor(cluster, mp, extra_sbatch=["--nodelist=hicom-n1"]), job, poll_interval_s=0.5)
        assert result.state is JobState.COMPLETED, job.log_path.read_text()[-3000:]
        assert resumed_steps(job.log_path.read_text()) == []
        return result_of(job)
    finally:
        mp.undo()


def test_two_node_stage_loses_a_node_waits_for_it_resumes_and_ends_as_the_one_node_run(
        cluster, world, reference, one_node_interrupted, monkeypatch, caplog):
    """2 nodes x 1 process: ranks on different hosts meet at the first node's address. After its checkpoint at
    step 4 (or a later one), node hicom-n1 dies (its slurmd and every process of the job there killed): Slurm marks
    the node down and the job NODE_FAIL and requeues it, the job waits until the node is back, and resumes from the
    last complete checkpoint. Every step once; losses and final weights equal the uninterrupted one-node run's."""
    ex = executor(cluster, monkeypatch)
    job = align_job(world, "two-nodes", nodes=2, nproc_per_node=1)
    handle = ex.submit(job)

    first = cluster.node("hicom-n1")
    wait_for_step(job, 4, handle, ex)
    assert cluster.kill_node(first.name)  # its slurmd, the batch script, srun, torchrun's agent and rank 0
    # The last complete checkpoint is the one on disk once rank 0 is dead: the run may have saved another between the
    # poll that saw step 4 and the kill (step 6 seen in CI), and none can complete after it.
    lost_at = newest_step(job)
    assert 4 <= lost_at < STEPS
    deadline = time.monotonic() + 120
    while not cluster.node_state(first.name).startswith("down"):
        assert time.monotonic() < deadline, f"Slurm did not mark {first.name} down"
        time.sleep(0.5)
    wait_for_state(ex, handle, JobState.PENDING)  # requeued by Slurm; it cannot start without the node
    assert f"Slurm job {handle} is back in the queue (requeued by Slurm" in caplog.text
    # Held while the node rejoins: slurmctld still owes the node the kill of the lost run, and slurmd kills by job
    # id, so delivered after the next run has started it would kill that run's rank 0 (seen in CI). start_node
    # returns once slurmctld has no message left to send.
    ex._slurm("scontrol", "hold", handle)
    cluster.start_node(first.name, out=lambda _: None)
    ex._slurm("scontrol", "release", handle)

    result = run_job_from(ex, handle)
    log = job.log_path.read_text()
    assert result is JobState.COMPLETED, failure_report(cluster, first.name, log)
    assert f"[slurm] job {handle} restart 0 on hicom-n[1-2]" in log
    assert f"[slurm] job {handle} restart 1 on hicom-n[1-2]" in log

    # Ranks on different hosts, meeting at the first node's namespace address (torchrun's own rendezvous log).
    first_run = log.split(f"[slurm] job {handle} restart 1")[0]
    joined = dict(re.findall(r"The node '([a-z0-9.-]+)_\d+_\d+' has joined round \d+ of the rendezvous "
                             rf"'{handle}' as rank (\d) in a world of size 2", first_run))
    assert joined == {"hicom-n1": "0", "hicom-n2": "1"}
    assert re.search(r"rdzv_endpoint\s*:\s*hicom-n1:29500", first_run)
    assert first_run.count("master_addr=hicom-n1") == 2  # both agents hand their ranks the first node
    second = cluster.node("hicom-n2")
    seen_from_second = subprocess.run(cluster._in(second.netns, second.name, ["getent", "hosts", "hicom-n1"]),
                                      capture_output=True, text=True, check=True).stdout.split()
    assert seen_from_second == [first.addr, "hicom-n1"] and first.addr == "10.251.17.2"

    # Resumed from the checkpoint the node died after; the second run trained each later step once.
    assert resumed_steps(log) == [lost_at]
    printed = [int(s) for s in re.findall(r"train\[align\] step (\d+)/", log.split("restart 1")[1])]
    assert printed == list(range(lost_at + 1, STEPS + 1))
    assert_same_training(job, reference)
    records = completion_records(cluster, handle)
    assert records == ["NODE_FAIL", "COMPLETED"]


def test_a_time_limit_between_checkpoints_and_a_preemption_requeue_the_stage_which_resumes_to_the_same_result(
        cluster, reference, one_node_interrupted):
    job, future = one_node_interrupted
    handle, state, interrupted_at, paused = future.result(timeout=600)
    log = job.log_path.read_text()
    assert state is JobState.COMPLETED, log[-3000:]
    records = completion_records(cluster, handle)
    assert records[0] == "TIMEOUT" and records[-1] == "COMPLETED"
    assert [f"[slurm] job {handle} restart {i}" in log for i in range(3)] == [True] * 3
    assert paused == (interrupted_at[0] >= 2)  # paused between checkpoints, unless the limit came first
    assert resumed_steps(log) == [step for step in interrupted_at if step]  # a run with no checkpoint starts afresh
    printed = [int(s) for s in re.findall(r"train\[align\] step (\d+)/", log.split("restart 2")[1])]
    assert printed == list(range(interrupted_at[1] + 1, STEPS + 1))
    assert_same_training(job, reference)


def test_down_leaves_no_namespace_interface_or_daemon(cluster):
    """Last: the module's cluster goes down, and nothing of it is left (the fixture's own `down` then finds nothing)."""
    pids = [record.pid for name in cluster.daemons if (record := cluster.table.get(name))]
    assert len(pids) == 4 and set(cluster.namespaces) <= set(_netns_list())
    assert _links() == cluster.host_links  # the host's own network was never touched
    cluster.down(out=lambda _: None)
    assert not set(cluster.namespaces) & set(_netns_list())
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert not any((Path("/etc/netns") / ns).exists() for ns in cluster.namespaces)
    assert _links() == cluster.host_links


def run_job_from(ex, handle: str, timeout_s: float = 300) -> JobState:
    """run_job's polling for a job already submitted."""
    deadline = time.monotonic() + timeout_s
    while True:
        state, _ = ex.poll(handle)
        if state.final:
            return state
        assert time.monotonic() < deadline, f"job {handle} still {state}"
        time.sleep(0.5)


def _read(path: Path) -> str:
    """A job's log so far ('' before Slurm has started it)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _is_python(pid: int) -> bool:
    try:
        return Path(os.readlink(f"/proc/{pid}/exe")).name.startswith("python")
    except OSError:
        return False


def _links() -> list[str]:
    done = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True)
    return sorted(line.split(":")[1].strip() for line in done.stdout.splitlines())
