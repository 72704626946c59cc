"""`python -m flows ablations` on the stand-in pipeline (tests/flow_standin): the sweep's runs, the report and its
MLflow run, resuming after an interruption, and the sweep settings' checks.

The stand-in's "model" is llm.steps (the ablations change it), its evaluation scores questions by it
(STANDIN_QUESTIONS), and calls.log is the ground truth of which stage commands really ran.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

STANDIN = Path(__file__).resolve().parents[1] / "flow_standin"

SWEEP = {"benchmark": "synthetic", "seeds": [0, 1],
         "claims": {"A3": {"ablation": "worse", "says": "steps help", "on_binding": True}},
         "token_variants": ["baseline", "worse"], "token_seeds": [0], "breakdown": "family",
         "binding_families": ["colour_of_shape"], "skip_stages": []}


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def project(tmp_path, prefect_server, monkeypatch):
    """The stand-in project with a training seed the train stage reads, and three ablations of its skill."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    root = tmp_path / "project"
    shutil.copytree(STANDIN, root)
    stages = yaml.safe_load((root / "stages.yaml").read_text())
    stages["stages"]["train"]["params"].append("profiles.tiny.train.common.seed")
    (root / "dvc.yaml").write_text(yaml.safe_dump(stages))
    (root / "stages.yaml").unlink()
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["llm"]["steps"] = 6
    params["profiles"]["tiny"]["train"] = {"common": {"seed": 0}}
    params["pipeline"]["ablations"] = {"worse": {"set": {"llm.steps": 2}}, "small": {"set": {"llm.steps": 5}}}
    params["pipeline"]["ablation_sweep"] = SWEEP
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=root, check=True, env=env)
    subprocess.run([*dvc, "remote", "add", "-d", "local", str(tmp_path / "remote")], cwd=root, check=True, env=env)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("STANDIN_QUESTIONS", "60")
    for key in ("STANDIN_FAIL", "STANDIN_FAIL_IF", "STANDIN_SLEEP", "STANDIN_STEPS", "HICOM_DVC_REMOTE",
                "HICOM_EXECUTOR"):
        monkeypatch.delenv(key, raising=False)
    with temporary_settings(updates={PREFECT_RESULTS_LOCAL_STORAGE_PATH: str(tmp_path / "results")}):
        yield root


def calls(root) -> list[str]:
    """The stages that really ran, in order."""
    log = root / "calls.log"
    return [line.split()[0] for line in log.read_text().splitlines()] if log.is_file() else []


def sweep(root, *args) -> int:
    from flows.cli import main

    return main(["ablations", "--project-dir", str(root), *args])


def records(root) -> dict:
    return {p.parent.name: json.loads(p.read_text()) for p in (root / "outputs/ablations/runs").glob("*/run.json")}


def test_the_sweep_runs_each_variant_and_seed_once_writes_the_report_and_resumes_after_an_interruption(
        project, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flows.variants import make_variant

    worse0 = make_variant(["worse"], {"profiles.tiny.train.common.seed": 0}).name
    monkeypatch.setenv("STANDIN_FAIL_IF", f"{worse0}/eval")  # the ablation's first evaluation fails: the sweep stops
    assert sweep(project) == 1
    assert set(records(project)) == {"baseline-seed0"}
    first = len(calls(project))

    monkeypatch.delenv("STANDIN_FAIL_IF")
    assert sweep(project) == 0
    done = records(project)
    assert set(done) == {"baseline-seed0", "worse-seed0", "baseline-seed1", "worse-seed1"}  # token variants: the same
    assert done["worse-seed1"]["variant_name"].startswith("worse+set-")
    resumed = (project / "calls.log").read_text().splitlines()[first:]
    # baseline seed 0 was not rerun; the interrupted run kept its trained stage (only its evaluation ran again)
    assert not [c for c in resumed if "--out outputs/model" in c or "--out outputs/eval/" in c]
    assert done["worse-seed0"]["variant_name"] == worse0
    assert [c.split()[0] for c in resumed if worse0 in c] == ["evaluate@synthetic", "pipeline-report"]
    # the upstream stage is shared by every run: it ran once, in the first sweep
    assert calls(project).count("prepare") == 1

    report = project / "outputs/ablations/report"
    assert {p.name for p in report.iterdir()} == {"ablations.md", "ablations.html", "ablations.png",
                                                  "accuracy_vs_tokens.png", "summary.json"}
    summary = json.loads((report / "summary.json").read_text())
    a3 = summary["claims"]["A3"]
    assert a3["verdict"] == "reproduced"  # 6 steps (0.6 right) against 2 (0.2 right), on 2 x 60 paired questions
    pooled = a3["comparisons"]["overall"]["pooled"]
    assert pooled["difference"] == pytest.approx(0.4) and pooled["n"] == 120 and pooled["ci_low"] > 0
    assert set(a3["comparisons"]["overall"]["per_seed"]) == {"0", "1"}
    assert summary["variants"]["baseline"]["mean"] == pytest.approx(0.6)
    assert summary["variants"]["worse"]["visual_tokens"] == 6
    assert [(p["variant"], p["visual_tokens"]) for p in summary["accuracy_vs_tokens"]] == [("baseline", 10),
                                                                                          ("worse", 6)]
    markdown = (report / "ablations.md").read_text()
    assert "**reproduced**" in markdown and "+40.0 [" in markdown and "| `worse` | 0, 1 | 20.0, 20.0 | 20.0 |" in markdown

    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("standin-pipeline").experiment_id],
                             filter_string="tags.`pipeline.sweep` = 'ablations'")[0]
    assert run.data.tags["verdict.A3"] == "reproduced"
    assert run.data.metrics["baseline/accuracy_mean"] == pytest.approx(0.6)
    assert {a.path for a in client.list_artifacts(run.info.run_id, "ablations")} >= {
        "ablations/ablations.md", "ablations/ablations.html", "ablations/ablations.png", "ablations/summary.json"}

    # a third sweep with nothing changed runs no stage at all, and reports the same
    from flows.ablations import ablations

    before = len(calls(project))
    third = ablations(project_dir=str(project))
    assert len(calls(project)) == before
    assert set(third["status"].values()) == {"reused"} and third["lines"][0].startswith("ablations: 0 run(s) ran, 4 "
                                                                                         "reused")
    assert third["summary"]["claims"] == summary["claims"]


def test_a_changed_param_reruns_only_the_runs_it_touches(project):
    from flows.ablations import load_sweep, run_key, sweep_runs
    from flows.hashes import ContentHashes

    params, settings = load_sweep(project)
    runs = sweep_runs(settings)
    before = {r.name: run_key(project, r, params, settings, ContentHashes(project))[0] for r in runs}
    changed = yaml.safe_load((project / "params.yaml").read_text())
    changed["pipeline"]["ablation_sweep"]["token_variants"].append("small")
    changed["pipeline"]["ablations"]["worse"]["set"]["llm.steps"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(changed))
    params, settings = load_sweep(project)
    after = {r.name: run_key(project, r, params, settings, ContentHashes(project))[0] for r in sweep_runs(settings)}
    assert {name for name in after if before.get(name) != after[name]} == {"worse-seed0", "worse-seed1",
                                                                          "small-seed0"}


def test_the_sweeps_own_settings_apply_to_every_run_the_baseline_included(project):
    """pipeline.ablation_sweep.set (a shorter schedule for the whole sweep) reaches every run's stages, the
    baseline's too, and the report and its MLflow run say so; make run's own outputs stay as they were."""
    from mlflow.tracking import MlflowClient

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pipeline"]["ablation_sweep"].update(seeds=[0], token_variants=[], set={"towers.steps": 3})
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    assert sweep(project) == 0
    done = records(project)
    assert set(done) == {"baseline-seed0", "worse-seed0"}
    for name, record in done.items():
        prepared = project / "outputs/variants" / record["variant_name"] / "prepared/data.json"
        assert json.loads(prepared.read_text())["value"] == 3, name
    assert not (project / "outputs/prepared").exists()  # nothing written where `make run` keeps its outputs
    report = project / "outputs/ablations/report"
    assert json.loads((report / "summary.json").read_text())["settings"] == {"towers.steps": 3}
    assert "`towers.steps` = 3" in (report / "ablations.md").read_text()
    client = MlflowClient()
    run = client.search_runs([client.get_experiment_by_name("standin-pipeline").experiment_id],
                             filter_string="tags.`pipeline.sweep` = 'ablations'")[0]
    assert run.data.params["set.towers.steps"] == "3"


def test_a_sweep_setting_that_is_a_runs_seed_is_refused_naming_the_key(project):
    from flows.ablations import load_sweep
    from flows.errors import PipelineError

    params = yaml.safe_load((project / "params.yaml").read_text())
    params["pipeline"]["ablation_sweep"]["set"] = {"profiles.tiny.train.common.seed": 3}
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(PipelineError, match=r"ablation_sweep\.set\.profiles\.tiny\.train\.common\.seed: the sweep "
                                            r"sets each run's seed"):
        load_sweep(project)
    assert sweep(project) == 1 and calls(project) == []


def test_report_only_runs_nothing(project):
    from flows.ablations import ablations
    from hicom.core.errors import ConfigError

    assert sweep(project, "--report-only") == 1  # nothing finished: no report either
    with pytest.raises(ConfigError, match="no finished run to report on"):
        ablations(project_dir=str(project), report_only=True)
    assert calls(project) == [] and not (project / "outputs/ablations/report").exists()


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(seeds=[]), r"pipeline\.ablation_sweep\.seeds: give at least one seed"),
    (lambda s: s.update(seeds=[0, 0]), r"pipeline\.ablation_sweep\.seeds: seeds repeat"),
    (lambda s: s.update(seeds=[0, "1"]), r"pipeline\.ablation_sweep\.seeds\[1\]: expected int"),
    (lambda s: s.update(benchmark="videomme"), r"pipeline\.ablation_sweep\.benchmark: 'videomme' is not in"),
    (lambda s: s["claims"]["A3"].update(ablation="wrose"),
     r"pipeline\.ablation_sweep\.claims\.A3\.ablation: 'wrose' is neither 'baseline' nor defined"),
    (lambda s: s["claims"]["A3"].pop("ablation"), r"pipeline\.ablation_sweep\.claims\.A3\.ablation: missing"),
    (lambda s: s.update(token_variants=["baseline", "tiny"]), r"pipeline\.ablation_sweep\.token_variants\[1\]"),
    (lambda s: s.update(binding_families=[]), r"pipeline\.ablation_sweep\.binding_families: a claim is judged"),
    (lambda s: s.update(seed=1), r"pipeline\.ablation_sweep\.seed: unknown key"),
    (lambda s: s.update(set=["llm.steps"]), r"pipeline\.ablation_sweep\.set: expected dict"),
    (lambda s: s.update(set={"pipeline.executor": "slurm"}),
     r"pipeline\.ablation_sweep\.set\.pipeline\.executor: cannot vary per run"),
    (lambda s: s.update(set={"llm.steps": 9}),
     r"pipeline\.ablation_sweep\.set\.llm\.steps: pipeline\.ablations\.worse sets it too"),
])
def test_bad_sweep_settings_fail_naming_the_key(change, message):
    import copy

    from flows.errors import PipelineError
    from flows.settings import PipelineSettings

    settings = copy.deepcopy(SWEEP)
    change(settings)
    pipeline = {"benchmarks": {"synthetic": {"data": "x"}}, "ablations": {"worse": {"set": {"llm.steps": 2}},
                                                                          "small": {}},
                "ablation_sweep": settings}
    with pytest.raises(PipelineError, match=message):
        PipelineSettings.from_params({"pipeline": pipeline})


def test_a_skipped_stage_whose_output_is_read_is_refused_naming_both(project):
    from flows.errors import PipelineError
    from flows.retrain import plan_run

    with pytest.raises(PipelineError, match="stage 'train' cannot be left out: stage 'evaluate@synthetic' reads"):
        plan_run(project, [], None, None, ["train"])
    with pytest.raises(PipelineError, match="skip: stage 'trian' is not defined in dvc.yaml"):
        plan_run(project, [], None, None, ["trian"])
    assert [s.name for s in plan_run(project, ["worse"], None, None, ["register"]).stages] == [
        "prepare", "train", "evaluate@synthetic"]
