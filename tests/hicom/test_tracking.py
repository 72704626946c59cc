import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow.data
import pytest
import torch
from mlflow.tracking import MlflowClient

from hicom import tracking
from hicom.tracking import PROJECT_ROOT, Tracker, default_tracking_uri, run_environment


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating one runs MLflow's migrations, which is slow)."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root}/mlflow.db"
    return root, uri, MlflowClient(uri)


@pytest.fixture
def tracker(store, request):
    """Tracker factory against the module store, one experiment per test, system metrics off unless asked."""
    _, uri, _ = store

    def make(**kwargs):
        kwargs.setdefault("experiment", request.node.name)
        kwargs.setdefault("system_metrics", False)
        return Tracker(tracking_uri=uri, **kwargs)
    return make


def exercise(t, tmp_path):
    """Call every logging method once."""
    (tmp_path / "a.txt").write_text("a")
    t.log_params({"a": {"b": 1}})
    t.log_metrics({"loss": 1.0}, step=0)
    t.log_input(name="d", digest="abc", source="dvc://outputs/d@rev", context="train")
    t.log_artifact(tmp_path / "a.txt")
    t.log_dict({"x": 1}, "x.json")
    t.set_tags({"k": "v"})


def test_log_params_flattens_nested_dicts_stringifies_and_truncates(tracker, store):
    _, _, client = store
    with tracker() as t:
        t.log_params({"model": {"compressor": {"local": {"injection": True}}, "lr": 1e-4}, "note": "x" * 7000})
    assert client.get_run(t.run_id).data.params == {
        "model.compressor.local.injection": "True", "model.lr": "0.0001", "note": "x" * 6000}


def test_log_params_rejects_a_key_given_both_flat_and_nested(tracker):
    with tracker() as t, pytest.raises(ValueError, match="'a.b' is given twice"):
        t.log_params({"a.b": 1, "a": {"b": 2}})


def test_log_metrics_keeps_step_history_and_skips_non_finite_with_a_warning(tracker, store, caplog):
    _, _, client = store
    with tracker() as t, caplog.at_level(logging.WARNING, logger="hicom.tracking"):
        for step, loss in enumerate([3.0, 2.0, float("nan"), 1.0]):
            t.log_metrics({"loss": loss, "lr": torch.tensor(0.5)}, step=step)
        t.log_metrics({"acc": float("inf")})
    history = client.get_metric_history(t.run_id, "loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 3.0), (1, 2.0), (3, 1.0)]
    assert [m.step for m in client.get_metric_history(t.run_id, "lr")] == [0, 1, 2, 3]
    assert "acc" not in client.get_run(t.run_id).data.metrics
    assert "loss=nan at step 2 is not finite" in caplog.text and "acc=inf" in caplog.text


def test_queued_metrics_are_all_stored_when_the_run_closes_and_a_failing_run_keeps_them(tracker, store):
    """With queue_metrics (a training loop), log_metrics queues (MLflow's asynchronous logging); closing the run waits
    for the queue, on a normal exit and on a failure alike, so a stage's last steps are never lost."""
    _, _, client = store
    steps = 300
    with tracker(queue_metrics=True) as t:
        for step in range(steps):
            t.log_metrics({"loss": 1.0 / (step + 1), "lr": 0.1}, step=step)
    assert [m.step for m in sorted(client.get_metric_history(t.run_id, "loss"), key=lambda m: m.step)] == list(
        range(steps))
    with pytest.raises(RuntimeError, match="crashed"), tracker(queue_metrics=True) as failed:
        for step in range(steps):
            failed.log_metrics({"loss": 1.0}, step=step)
        raise RuntimeError("crashed")
    run = client.get_run(failed.run_id)
    assert run.info.status == "FAILED" and len(client.get_metric_history(failed.run_id, "loss")) == steps


def test_normal_exit_finishes_the_run_with_no_system_metrics_when_off(tracker, store):
    _, _, client = store
    with tracker(run_name="ok") as t:
        t.log_metrics({"loss": 1.0})
    run = client.get_run(t.run_id)
    assert (run.info.status, run.info.run_name) == ("FINISHED", "ok")
    assert not [k for k in run.data.metrics if k.startswith("system/")]


def test_exception_inside_with_marks_the_run_failed_and_propagates(tracker, store):
    _, _, client = store
    with pytest.raises(ZeroDivisionError), tracker() as t:
        1 / 0
    assert client.get_run(t.run_id).info.status == "FAILED"


@pytest.mark.parametrize("kwargs", [{"rank": 1}, {"enabled": False}], ids=["rank1", "disabled"])
def test_inactive_tracker_creates_nothing_and_every_method_is_a_noop(kwargs, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with Tracker(tracking_uri=uri, **kwargs) as t:
        exercise(t, tmp_path)
        t.log_artifact(tmp_path / "missing")  # not even checked: nothing is logged
    assert (t.active, t.run_id) == (False, None)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlartifacts").exists()


def test_rank1_creates_no_run_in_a_live_store(tracker, store, request):
    _, _, client = store
    with tracker(rank=1) as t:
        t.log_params({"a": 1})
    assert t.run_id is None
    assert client.get_experiment_by_name(request.node.name) is None


def test_active_tracker_refuses_to_log_outside_with(tracker):
    t = tracker()
    with pytest.raises(RuntimeError, match="open run"):
        t.log_params({"a": 1})
    with t:
        pass
    with pytest.raises(RuntimeError, match="open run"):
        t.log_metrics({"loss": 1.0})


def test_parent_and_resume_together_are_rejected():
    with pytest.raises(ValueError, match="not both"):
        Tracker(parent_run_id="a", resume_run_id="b")


def test_child_run_is_nested_under_its_parent_in_the_parent_experiment(tracker, store):
    _, _, client = store
    with tracker(run_name="pipeline") as parent:
        with tracker(experiment="elsewhere", parent_run_id=parent.run_id, run_name="stage") as child:
            child.log_metrics({"loss": 1.0})
    run = client.get_run(child.run_id)
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.info.experiment_id == client.get_run(parent.run_id).info.experiment_id
    assert child.run_id != parent.run_id


def test_resume_continues_the_same_run_and_tolerates_relogged_params(tracker, store, request, caplog):
    _, _, client = store
    config = {"train": {"lr": 1e-4, "epochs": 2}}
    with tracker() as first:
        first.log_params(config)
        first.log_metrics({"loss": 2.0}, step=0)
    with tracker(resume_run_id=first.run_id) as resumed, caplog.at_level(logging.WARNING, logger="hicom.tracking"):
        resumed.log_params(config)
        resumed.log_params({"train": {"lr": 1e-4, "epochs": 3}})
        resumed.log_metrics({"loss": 1.0}, step=1)
    assert resumed.run_id == first.run_id
    runs = client.search_runs([client.get_experiment_by_name(request.node.name).experiment_id])
    assert [r.info.run_id for r in runs] == [first.run_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params == {"train.lr": "0.0001", "train.epochs": "2"}
    assert run.data.tags["param_changed.train.epochs"] == "3"
    assert "param train.epochs was '2'" in caplog.text
    assert [(m.step, m.value) for m in client.get_metric_history(first.run_id, "loss")] == [(0, 2.0), (1, 1.0)]


def test_a_resumed_run_does_not_log_again_the_steps_it_already_has(tracker, store):
    """Training resumed from its step-2 checkpoint replays steps 3-4 the crashed run had logged: once each."""
    _, _, client = store
    with tracker() as crashed:
        for step in (1, 2, 3, 4):
            crashed.log_metrics({"loss": 10.0 - step}, step=step)
    with tracker(resume_run_id=crashed.run_id) as resumed:
        for step in (3, 4, 5):
            resumed.log_metrics({"loss": 10.0 - step, "grad_norm": 1.0}, step=step)
    history = [(m.step, m.value) for m in client.get_metric_history(crashed.run_id, "loss")]
    assert sorted(history) == [(1, 9.0), (2, 8.0), (3, 7.0), (4, 6.0), (5, 5.0)]
    assert [m.step for m in client.get_metric_history(crashed.run_id, "grad_norm")] == [3, 4, 5]  # new metric: all


def test_log_input_records_our_name_digest_source_and_context(tracker, store, tmp_path):
    _, _, client = store
    digest = "ab" * 32  # a sha256 hex digest: longer than the 36 characters MLflow keeps
    with tracker() as t:
        t.log_input(name="curated", digest=digest, source="dvc://outputs/curated@1a2b", context="train",
                    num_rows=42, schema={"video": "path", "conversations": "list"})
        t.log_input(name="eval-set", digest="0123", source=str(tmp_path / "eval.jsonl"), context="eval")
    inputs = {i.dataset.name: i for i in client.get_run(t.run_id).inputs.dataset_inputs}
    train, evaluation = inputs["curated"], inputs["eval-set"]
    assert (train.dataset.digest, train.dataset.source_type) == (digest[:36], "dvc")
    assert json.loads(train.dataset.source) == {"uri": "dvc://outputs/curated@1a2b"}
    assert {tag.key: tag.value for tag in train.tags} == {"mlflow.data.context": "train", "digest": digest}
    assert json.loads(train.dataset.profile) == {"num_rows": 42}
    assert json.loads(train.dataset.schema) == {"video": "path", "conversations": "list"}
    assert (evaluation.dataset.digest, evaluation.dataset.source_type) == ("0123", "local")
    assert mlflow.data.get_source(evaluation).uri == str(tmp_path / "eval.jsonl")  # MLflow's own local source
    assert {tag.key: tag.value for tag in evaluation.tags}["mlflow.data.context"] == "eval"


def test_artifacts_files_directories_and_dicts_land_in_the_run(tracker, store, tmp_path):
    _, _, client = store
    (tmp_path / "report.md").write_text("# report")
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text("{}")
    with tracker() as t:
        t.log_artifact(tmp_path / "report.md")
        t.log_artifact(tmp_path / "report.md", artifact_path="docs")
        t.log_artifact(tmp_path / "ckpt")
        t.log_dict({"acc": 0.5}, "eval/metrics.json")
        with pytest.raises(FileNotFoundError, match="missing.txt"):
            t.log_artifact(tmp_path / "missing.txt")
    got = client.download_artifacts(t.run_id, "", str(tmp_path / "got"))
    files = sorted(str(p.relative_to(got)) for p in Path(got).rglob("*") if p.is_file())
    assert files == ["ckpt/config.json", "docs/report.md", "eval/metrics.json", "report.md"]
    assert json.loads((tmp_path / "got" / "eval" / "metrics.json").read_text()) == {"acc": 0.5}


def test_experiment_artifacts_live_beside_the_sqlite_store(tracker, store, request):
    root, _, client = store
    with tracker():
        pass
    assert client.get_experiment_by_name(request.node.name).artifact_location == str(root / "mlartifacts")


def test_run_records_environment_and_user_tags(tracker, store):
    _, _, client = store
    with tracker(tags={"stage": "pretrain"}) as t:
        t.set_tags({"long": "y" * 9000})
    tags = client.get_run(t.run_id).data.tags
    assert tags["env.torch"] == torch.__version__  # with its local label, e.g. 2.13.0+cpu
    assert {k: v for k, v in tags.items() if k.startswith("env.")} == {f"env.{k}": v
                                                                      for k, v in run_environment().items()}
    assert tags["stage"] == "pretrain" and tags["long"] == "y" * 8000


def test_run_environment_reports_absent_packages_and_unknown_git_outside_a_repo(monkeypatch, tmp_path):
    monkeypatch.setattr(tracking, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(tracking, "ENV_DISTRIBUTIONS", ("torch", "no-such-distribution-hicom"))
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    env = run_environment()
    assert env["torch"] == torch.__version__ and env["no-such-distribution-hicom"] == "absent"
    assert (env["git_commit"], env["git_dirty"]) == ("unknown", "unknown")
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))


def test_run_environment_does_not_raise_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "")
    env = run_environment()
    assert (env["git_commit"], env["git_dirty"]) == ("unknown", "unknown")


def test_default_tracking_uri_honours_env_var_else_project_sqlite(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert default_tracking_uri() == "http://mlflow.internal:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert default_tracking_uri() == f"sqlite:///{PROJECT_ROOT}/mlflow.db"
    assert (PROJECT_ROOT / "params.yaml").is_file()
    assert tracking._artifact_root(default_tracking_uri()) == str(PROJECT_ROOT / "mlartifacts")


def test_system_metrics_are_sampled_when_enabled(tracker, store, monkeypatch):
    _, _, client = store
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    with tracker(system_metrics=True) as t:
        time.sleep(0.6)
    metrics = client.get_run(t.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics and "system/system_memory_usage_megabytes" in metrics


def test_importing_tracking_switches_mlflow_telemetry_off(tmp_path):
    # A bare environment: no off-switch, and none of the CI/pytest variables that also silence mlflow.
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}  # mlflow keeps an installation id under $HOME
    code = ("import os, mlflow.telemetry as t; before = t.get_telemetry_client() is not None; import hicom.tracking;"
            "print(before, t.get_telemetry_client(), os.environ['MLFLOW_DISABLE_TELEMETRY'],"
            " os.environ['DO_NOT_TRACK'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["True", "None", "true", "true"]


@pytest.mark.parametrize("argv", [["compare", "--runs", "a", "b", "--out", "{tmp}/out"],
                                  ["promote", "--name", "nope", "--out", "{tmp}/promotion.json"],
                                  ["pipeline-report", "--run-id", "nope", "--out", "{tmp}/report"],
                                  ["register", "--model", "nope", "--towers", "nope", "--name", "n", "--eval", "nope",
                                   "--out", "{tmp}/registered.json"]],
                         ids=lambda argv: argv[0])
def test_the_registry_commands_start_no_mlflow_telemetry_and_write_no_installation_id(tmp_path, argv):
    """They import MLflow through hicom.registry: before the off-switch, MLflow's telemetry client started at import
    and wrote an installation id under $HOME (these commands failed here on their missing inputs, after importing)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/m.db"}
    done = subprocess.run([sys.executable, "-m", "hicom", *(a.format(tmp=tmp_path) for a in argv)], env=env,
                          cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "error:" in done.stderr, done.stderr  # it got past its imports to its inputs
    assert not (tmp_path / ".config" / "mlflow").exists()
