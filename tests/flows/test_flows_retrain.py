"""The retrain flow on a stand-in pipeline (tests/flow_standin: the same dvc.yaml shape, instant stage commands)
in a temporary DVC project, with a Prefect test server, a local DVC remote and a temporary MLflow store.

calls.log, appended by every stand-in command, is the ground truth of what really ran.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from tests.procs import alive

STANDIN = Path(__file__).resolve().parents[1] / "flow_standin"
STAGES = ["prepare", "train", "evaluate@synthetic", "register"]


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def project(tmp_path, prefect_server, tracking_uri, monkeypatch):
    """A fresh stand-in project (DVC repo without git, local remote), its own Prefect result storage."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    root = tmp_path / "project"
    shutil.copytree(STANDIN, root)
    (root / "stages.yaml").rename(root / "dvc.yaml")
    dvc = [sys.executable, "-m", "dvc"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=root, check=True, env=env)
    subprocess.run([*dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], cwd=root, check=True, env=env)
    monkeypatch.syspath_prepend(str(root))  # the flow reads the stand-in CLI's options (--parent-run-id or not)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    for key in ("STANDIN_FAIL", "STANDIN_SLEEP", "STANDIN_STEPS", "STANDIN_LINGER", "HICOM_DVC_REMOTE",
                "HICOM_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    with temporary_settings(updates={PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(tmp_path / "results")}):
        yield root


def retrain(root: Path, **kwargs) -> dict:
    from flows.retrain import retrain as flow

    return flow(project_dir=str(root), **kwargs)


def calls(root: Path) -> list[str]:
    """The stages that really ran, in order."""
    log = root / "calls.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.is_file() else []


def set_param(root: Path, key: str, value) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    node = params
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))


def dvc_status(root: Path) -> dict:
    from flows.dvc import dvc_status as status

    return status(root)


def test_a_second_run_with_no_changes_reuses_every_stage(project):
    first = retrain(project)
    assert first["stages"] == {**{s: "ran" for s in STAGES}, "promote": "ran", "report": "ran"}
    assert calls(project) == [*STAGES, "promote", "pipeline-report"]
    # every command runs with its threads set (one process each here: all this machine's cores)
    threads = {line.split()[0]: line.split()[-1] for line in (project / "calls.log").read_text().splitlines()}
    assert set(threads.values()) == {f"OMP_NUM_THREADS={len(os.sched_getaffinity(0))}"}
    assert dvc_status(project) == {}
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(STAGES)
    pushed = {p.name for p in (project.parent / "remote").rglob("*") if p.is_file()}
    assert pushed  # the local remote received the outs

    assert first["results_not_stored"] == []
    second = retrain(project)
    assert second["stages"] == {**{s: "cached" for s in STAGES}, "promote": "ran", "report": "ran"}
    assert calls(project) == [*STAGES, "promote", "pipeline-report", "promote", "pipeline-report"]  # no stage again
    assert second["model"] == {"name": "standin-model", "version": "1", "alias": "champion", "promoted": True,
                               "reasons": ["first model"]}
    assert second["revision"]["dvc_status"] == "clean"
    report = (project / "outputs/runs" / second["run"] / "report/report.md").read_text()
    assert "outputs/eval/synthetic/results.json" in report  # given to the report: the cached stage logged nothing


def test_stages_whose_results_cannot_be_stored_are_named_in_the_summary_and_run_again_next_time(project, tmp_path):
    """Prefect only logs a failed write of a task's result and completes the task. Here the result storage path is
    a file, so no result can be written: the run says which stages lost their cache, and the next run does run
    them again, as it said."""
    (tmp_path / "results").write_text("a file where Prefect's result folder should be")
    first = retrain(project)
    assert first["stages"] == {**{s: "ran" for s in STAGES}, "promote": "ran", "report": "ran"}
    assert first["results_not_stored"] == STAGES
    assert f"cache: the result(s) of {', '.join(STAGES)} could not be stored" in first["lines"][1]
    second = retrain(project)
    assert second["stages"] == {**{s: "ran" for s in STAGES}, "promote": "ran", "report": "ran"}
    assert calls(project) == [*STAGES, "promote", "pipeline-report"] * 2


def test_a_run_writes_dvc_lock_once_for_all_its_stages_and_a_cached_rerun_leaves_it_untouched(project, monkeypatch):
    """DVC rewrites the whole dvc.lock on each write (~0.45 s for the real pipeline's): the run writes it once. The
    entries the stages' cached results hold are the ones dvc.lock holds, so a rerun has nothing to write."""
    from dvc.dvcfile import Lockfile

    writes = []
    dump_stages = Lockfile.dump_stages

    def counted(self, stages, **kwargs):
        writes.append([stage.name for stage in stages])
        return dump_stages(self, stages, **kwargs)

    monkeypatch.setattr(Lockfile, "dump_stages", counted)
    retrain(project)
    assert writes == [STAGES]
    written = (project / "dvc.lock").read_bytes()
    assert set(yaml.safe_load(written)["stages"]) == set(STAGES) and dvc_status(project) == {}

    assert set(retrain(project)["stages"].values()) == {"cached", "ran"}  # the stages cached, promote/report ran
    assert writes == [STAGES] and (project / "dvc.lock").read_bytes() == written


def test_changing_one_param_reruns_that_stage_and_those_after_it_only(project):
    retrain(project)
    set_param(project, "llm.steps", 2)  # train's params slice
    summary = retrain(project)
    assert summary["stages"] == {"prepare": "cached", "train": "ran", "evaluate@synthetic": "ran",
                                 "register": "ran", "promote": "ran", "report": "ran"}
    assert json.loads((project / "outputs/model/data.json").read_text())["value"] == 2
    assert dvc_status(project) == {}

    set_param(project, "llm.steps", 1)  # back: the cache holds that result, the workspace and dvc.lock another
    retrain(project)
    assert calls(project).count("train") == 3  # so it runs again rather than report outputs that are not there
    assert json.loads((project / "outputs/model/data.json").read_text())["value"] == 1
    assert dvc_status(project) == {}


def test_a_cached_stage_whose_outputs_were_deleted_gets_them_back_from_dvc_without_running(project):
    retrain(project)
    shutil.rmtree(project / "outputs/model")
    summary = retrain(project)
    assert summary["stages"]["train"] == "cached" and calls(project).count("train") == 1
    assert json.loads((project / "outputs/model/data.json").read_text())["value"] == 1


def test_a_transient_failure_is_retried_then_fails_the_flow_naming_the_stage_and_its_log(project, monkeypatch):
    from flows.executors.base import StageFailed

    monkeypatch.setenv("STANDIN_FAIL", "train:75")  # EX_TEMPFAIL every time
    with pytest.raises(StageFailed) as failure:
        retrain(project)
    message = str(failure.value)
    assert "stage 'train' ended FAILED (exit code 75)" in message
    assert "failing on purpose" in message
    log = Path(message.rsplit("log: ", 1)[1])
    assert log.name == "train.log" and log.read_text().count("failing on purpose") == 3
    assert calls(project) == ["prepare", "train", "train", "train"]  # 1 + pipeline.retries attempts, then stop


def test_a_transient_failure_that_clears_up_is_retried_to_success(project, monkeypatch):
    monkeypatch.setenv("STANDIN_FAIL", "train:75:1")  # fails once
    summary = retrain(project)
    assert calls(project)[:3] == ["prepare", "train", "train"]
    assert summary["stages"]["train"] == "ran" and dvc_status(project) == {}


def test_a_stages_progress_bar_is_redrawn_in_its_log_every_few_seconds_not_at_every_step(project, monkeypatch):
    """The stage's stderr is its log file: tqdm's default redraw every 0.1 s wrote a line a step there (the towers'
    800 steps, 800 lines). 30 steps of 0.05 s now draw the bar when it opens and when it closes."""
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    monkeypatch.setenv("STANDIN_STEPS", "train:30:0.05")
    retrain(project)
    [log] = project.glob("outputs/runs/*/logs/train.log")
    draws = [line for line in log.read_text().replace("\r", "\n").splitlines() if "train: training" in line]
    assert 1 <= len(draws) <= 3, draws
    assert "30/30" in draws[-1]


def test_a_stage_failing_by_itself_is_not_retried_and_what_finished_before_it_is_pushed(project, monkeypatch):
    from flows.executors.base import StageFailed

    monkeypatch.setenv("STANDIN_FAIL", "train:1")
    with pytest.raises(StageFailed, match=r"stage 'train' ended FAILED \(exit code 1\).*log: .*train\.log"):
        retrain(project)
    assert calls(project) == ["prepare", "train"]
    # the run pushes once at its end; a failed run still pushes the stages that finished before the failure
    committed = {out["md5"] for out in yaml.safe_load((project / "dvc.lock").read_text())["stages"]["prepare"]["outs"]}
    pushed = {p.parent.name + p.name for p in (project.parent / "remote").rglob("*") if p.is_file()}
    assert committed and committed <= pushed


def test_an_ablation_writes_its_own_outputs_and_leaves_the_baseline_alone(project):
    retrain(project)
    lock_before = (project / "dvc.lock").read_text()
    model_before = (project / "outputs/model/data.json").read_text()
    summary = retrain(project, ablations=["longer", "no_prepare"])
    assert summary["stages"] == {"train": "ran", "evaluate@synthetic": "ran", "report": "ran"}  # no register/promote
    variant = project / "outputs/variants/longer+no_prepare"
    trained = json.loads((variant / "model/data.json").read_text())
    assert trained["value"] == 5 and list(trained["inputs"]) == ["standin/data.txt"]  # skipped prepare's stand-in
    assert (variant / "eval/synthetic/results.json").is_file()
    assert (project / "dvc.lock").read_text() == lock_before
    assert (project / "outputs/model/data.json").read_text() == model_before
    assert dvc_status(project) == {}
    assert yaml.safe_load((variant / "params.yaml").read_text())["llm"]["steps"] == 5
    assert not list(project.glob("params.*.yaml"))  # under outputs/, which a cluster's stage pods share


def test_a_variant_writes_its_own_copy_of_a_data_mixture_naming_its_outputs_and_its_params_name_the_copy(project):
    """A training stage reads its data through a mixture YAML its params name (profiles.<p>.train.<stage>.data),
    whose paths are relative to the YAML: a variant that remakes what it names trains on its own copy."""
    from flows.variants import make_variant
    from hicom.data.mixture import read_mixture

    mixture = "datasets:\n  - {json_path: ../outputs/prepared/data.json, split_turns: true}\n"
    (project / "mix").mkdir()
    (project / "mix" / "train.yaml").write_text(mixture)
    set_param(project, "profiles.tiny.train", {"sft": {"data": "mix/train.yaml"}})
    stages = yaml.safe_load((project / "dvc.yaml").read_text())
    stages["stages"]["train"]["deps"].append("mix/train.yaml")
    stages["stages"]["train"]["params"].append("profiles.tiny.train.sft")
    (project / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    summary = retrain(project, overrides={"towers.steps": 2})  # prepare reruns: the variant's own outputs/prepared
    assert summary["stages"]["train"] == "ran"
    variant = make_variant(None, {"towers.steps": 2}).name
    params_file = project / f"outputs/variants/{variant}/params.yaml"
    params = yaml.safe_load(params_file.read_text())
    copy = (params_file.parent / params["profiles"]["tiny"]["train"]["sft"]["data"]).resolve()  # as hicom reads it
    assert copy == (project / f"outputs/variants/{variant}/mix/train.yaml").resolve()
    [entry] = read_mixture(copy)
    assert entry.json_path.resolve() == (project / f"outputs/variants/{variant}/prepared/data.json").resolve()
    assert entry.json_path.is_file() and entry.split_turns is True
    assert (project / "mix" / "train.yaml").read_text() == mixture  # the baseline's, as it was


def test_the_parent_mlflow_run_records_stages_metrics_and_the_dvc_revision(project, tracking_uri):
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    summary = retrain(project)
    client = MlflowClient(tracking_uri)
    parent = client.get_run(summary["parent_run_id"])
    tags, metrics = parent.data.tags, parent.data.metrics
    assert tags["stage.train"] == "ran" and tags["stage.evaluate/synthetic"] == "ran"
    assert metrics["evaluate/synthetic/accuracy"] == 0.5
    assert tags["dvc.lock.sha256"] == summary["revision"]["lock_sha256"]
    assert tags["dvc.remote"].startswith("local: ")
    assert tags["promotion.promoted"] == "true"
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent.info.run_id}'")
    assert {r.data.tags.get("stage") for r in children} == {"prepare"}  # the one stage CLI that logs no run itself
    train_call = (project / "calls.log").read_text().splitlines()[1]
    assert train_call.startswith("train") and f"--parent-run-id {parent.info.run_id}" in train_call
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "dvc")}
    assert artifacts == {"dvc/dvc.lock", "dvc/revision.json"}


@pytest.mark.parametrize("change, message", [
    (lambda p: p["pipeline"].update(retriez=1), r"pipeline\.retriez: unknown key"),
    (lambda p: p["llm"].update(steps="many"), r"llm\.steps: expected int, got 'many'"),
    (lambda p: p.update(profile="huge"), r"profile: 'huge' is not defined"),
])
def test_bad_params_fail_before_any_stage_runs_naming_the_key(project, change, message):
    from hicom.core.errors import ConfigError

    params = yaml.safe_load((project / "params.yaml").read_text())
    change(params)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=message):
        retrain(project)
    assert calls(project) == [] and not (project / "outputs").exists()


def test_an_unknown_ablation_fails_before_any_stage_runs(project):
    from flows.errors import PipelineError

    with pytest.raises(PipelineError, match="ablation 'longest' is not defined"):
        retrain(project, ablations=["longest"])
    assert calls(project) == []


def test_the_flow_timeout_stops_the_running_stage(project, monkeypatch):
    # 20 s: the pipeline subflow's start, prepare and train's start must fit inside it, also on a machine busy with
    # other tests (3 s was tight; 20 rather than 10 for more margin, at the cost of 10 s of this test's wall time)
    set_param(project, "pipeline.timeout_s", 20)
    monkeypatch.setenv("STANDIN_SLEEP", "train:600")
    with pytest.raises(TimeoutError):
        retrain(project)
    assert calls(project) == ["prepare", "train"]
    assert not alive(int((project / "sleep-train.pid").read_text()))  # gone (or a zombie: killed)
    assert not (project / "outputs/model").exists()


def straight_weights(root: Path, tmp_path: Path, steps: int) -> int:
    """The stand-in's training run uninterrupted, outside the flow."""
    env = {**os.environ, "STANDIN_STEPS": f"train:{steps}:0", "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-m", "standin", "--params", str(root / "params.yaml"), "train", "--stage", "train",
                    "--out", str(tmp_path / "straight")],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    return json.loads((tmp_path / "straight/data.json").read_text())["weights"]


def flow_in_background(project: Path, **env) -> subprocess.Popen:
    """retrain() in a process group of its own, on the test's Prefect server and results folder."""
    from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_LOCAL_STORAGE_PATH

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": f"{repo}:{project}",
           "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value()), **env}
    code = "import sys; from flows.retrain import retrain; retrain(project_dir=sys.argv[1])"
    return subprocess.Popen([sys.executable, "-c", code, str(project)], cwd=project, env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def kill_once_there(flow: subprocess.Popen, path: Path) -> None:
    """kill -9 of the flow's whole process group as soon as `path` exists (or once the flow has ended)."""
    for _ in range(1200):
        if path.exists() or flow.poll() is not None:
            break
        time.sleep(0.1)
    os.killpg(flow.pid, signal.SIGKILL)
    flow.wait()


def test_killing_the_whole_flow_mid_training_leaves_no_process_and_the_rerun_resumes(project, tmp_path, monkeypatch):
    """kill -9 of the flow's process group while train runs (its "rank" in a session of its own): nothing of
    the run is left, and the rerun resumes train from its last complete checkpoint to the uninterrupted result."""
    checkpoint = project / "outputs/model/checkpoints/step-0000003/complete.json"
    kill_once_there(flow_in_background(project, STANDIN_STEPS="train:10:1"), checkpoint)
    assert checkpoint.exists() and not (project / "outputs/model/data.json").exists(), "not killed mid-training"
    pids = [int(p) for line in (project / "pids-train").read_text().splitlines() for p in line.split()]
    deadline = time.monotonic() + 6  # well before the 7 s of training left would end it
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if alive(p)], "processes of the killed run are still running"

    monkeypatch.setenv("STANDIN_STEPS", "train:10:0")
    summary = retrain(project)
    assert summary["stages"]["train"] == "ran"
    trained = json.loads((project / "outputs/model/data.json").read_text())
    assert trained["resumed_from"] is not None and trained["resumed_from"] >= 3  # not step 1
    assert trained["weights"] == straight_weights(project, tmp_path, 10)
    assert dvc_status(project) == {}


def test_a_flow_killed_after_a_stage_completed_but_before_it_saw_the_stage_end_does_not_train_it_again(
        project, tmp_path, monkeypatch):
    """A completed training stage writes its final state, then deletes its checkpoints; the flow marks the stage
    finished once its processes have exited. Killed in between (the stage still tearing down), the rerun must
    keep the outputs, and the command finds the stage done instead of training again from scratch."""
    state = project / "outputs/model/trainer_state.json"
    kill_once_there(flow_in_background(project, STANDIN_STEPS="train:3:0", STANDIN_LINGER="train:120"), state)
    assert state.exists() and not (project / "outputs/model/checkpoints").exists(), "not killed after completion"
    assert not (project / "outputs/model/data.json").exists()
    pids = [int(p) for line in (project / "pids-train").read_text().splitlines() for p in line.split()]
    deadline = time.monotonic() + 30
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)

    monkeypatch.setenv("STANDIN_STEPS", "train:3:0")
    assert retrain(project)["stages"]["train"] == "ran"
    trained = json.loads((project / "outputs/model/data.json").read_text())
    assert trained.get("already_complete") is True, "the rerun trained the completed stage again"
    assert trained["weights"] == straight_weights(project, tmp_path, 3)
    assert dvc_status(project) == {}


def test_a_stage_refuses_to_start_while_a_process_of_an_earlier_run_still_writes_its_outputs(project):
    from flows.errors import PipelineError

    repo = Path(__file__).resolve().parents[2]
    holder = textwrap.dedent("""
        import sys, time
        from pathlib import Path
        from flows.outs import claim
        from flows.stages import load_stages
        stage = next(s for s in load_stages(Path(sys.argv[1])) if s.name == "train")
        with claim(Path(sys.argv[1]), stage, "an earlier run"):
            print("held", flush=True)
            time.sleep(120)
    """)
    orphan = subprocess.Popen([sys.executable, "-c", holder, str(project)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": f"{repo}:{project}"})
    try:
        assert orphan.stdout.readline().strip() == "held"
        with pytest.raises(PipelineError, match=rf"stage 'train': a process of an earlier run still writes its "
                                                rf"outputs \(owner pid {orphan.pid} on host "):
            retrain(project)
    finally:
        orphan.kill()
        orphan.wait()
    assert calls(project) == ["prepare"]
    assert retrain(project)["stages"]["train"] == "ran"  # the owner gone, it runs


def test_a_changed_command_starts_clean_keeping_the_old_checkpoints_aside_until_it_completes(project, monkeypatch):
    monkeypatch.setenv("STANDIN_STEPS", "train:3:0")
    monkeypatch.setenv("STANDIN_FAIL", "train:1")  # trains, then fails: checkpoints, no result
    from flows.executors.base import StageFailed
    with pytest.raises(StageFailed):
        retrain(project)
    set_param(project, "llm.steps", 2)  # another command
    with pytest.raises(StageFailed):
        retrain(project)
    aside = list((project / "outputs/.flow/aside").rglob("complete.json"))
    assert len(aside) == 3  # the first command's checkpoints, kept while the new one has not completed
    monkeypatch.delenv("STANDIN_FAIL")
    set_param(project, "llm.steps", 1)  # back to the first command: its checkpoints come back, it resumes
    retrain(project)
    assert json.loads((project / "outputs/model/data.json").read_text())["resumed_from"] == 3
    set_param(project, "llm.steps", 2)
    retrain(project)  # completes: nothing is kept aside any more
    assert json.loads((project / "outputs/model/data.json").read_text())["resumed_from"] is None
    assert not list((project / "outputs/.flow/aside").rglob("*"))


def test_deploy_creates_the_work_pools_and_the_scheduled_deployments(prefect_server):
    """`python -m flows deploy` against a Prefect server: prefect.yaml's deployments carry params.yaml's schedule,
    and the Kubernetes pool gets the committed base job template (its namespace, service account and stack
    settings), whether deploy creates it or it was made before with Prefect's default (a worker started first)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    from flows.cli import BASE_JOB_TEMPLATES, deploy
    from flows.settings import PROJECT_ROOT, load_checked_params

    _, settings = load_checked_params(PROJECT_ROOT / "params.yaml")
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name="hicom-kubernetes", type="kubernetes"), overwrite=True)
    deploy()
    with get_client(sync_client=True) as client:
        pools = {pool.name: pool for pool in client.read_work_pools()}
        assert (pools["hicom-process"].type, pools["hicom-kubernetes"].type) == ("process", "kubernetes")
        assert pools["hicom-kubernetes"].base_job_template == \
            json.loads(BASE_JOB_TEMPLATES["hicom-kubernetes"].read_text())
        client.delete_work_pool("hicom-kubernetes")
    deploy()  # a fresh server: the pool is created with the template
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("hicom-kubernetes").base_job_template == \
            json.loads(BASE_JOB_TEMPLATES["hicom-kubernetes"].read_text())
        scheduled = client.read_deployment_by_name("retrain/retrain-scheduled")
        kubernetes = client.read_deployment_by_name("retrain/retrain-kubernetes")
    assert scheduled.work_pool_name == "hicom-process" and scheduled.entrypoint == "flows.retrain.retrain"
    (schedule,) = scheduled.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone, schedule.active) == \
        (settings.schedule_cron, settings.schedule_timezone, True)
    assert str(PROJECT_ROOT) in json.dumps(scheduled.pull_steps)
    assert kubernetes.work_pool_name == "hicom-kubernetes" and kubernetes.parameters == {"executor": "kubernetes"}
    assert [s.active for s in kubernetes.schedules] == [False]
