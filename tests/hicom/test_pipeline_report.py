"""Pipeline reports: one run's markdown/HTML with tables and plots, and several runs side by side.

The pipeline runs are logged by the test itself (a parent run, training children with loss histories,
an evaluate run with results.json, a profile run with profile.json, register/promote decisions) into
a sqlite MLflow store in a temporary directory.
"""
import json

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from hicom.cli import main
from hicom.core.errors import ConfigError
from hicom.evaluate.scoring import summarise
from hicom.pipeline_report import (
    PipelineData,
    accuracy_points,
    collect,
    compare_runs,
    pipeline_report,
)
from hicom.registry import RunRecord
from hicom.tracking import Tracker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def results(right, frames=32, answer="A"):
    """An evaluate stage's results.json: 40 questions on 10 videos (4 each), the first `right` answered right,
    question 39 unanswered, kinds alternating; scored as an evaluation scores them."""
    records = [{"id": f"q{i}", "video": f"v{i // 4}", "answer": answer,
                "choice": answer if i < right else (None if i == 39 else "Z"), "correct": i < right,
                "num_options": 4, "groups": {"kind": ("colour", "moment")[i % 2]}, "instruction_valid": True}
               for i in range(40)]
    return {"benchmark": "synthetic", **summarise(records, ("kind",)), "missing": 0, "settings": {"frames": frames}}


def cell(stats, key="accuracy"):
    """How the report shows an accuracy with its interval."""
    ci = stats[f"{key}_ci"]
    return f"{100 * stats[key]:.1f}% [{100 * ci['low']:.1f}, {100 * ci['high']:.1f}]"


PROFILE = {"environment": {"device": "cpu", "device_name": "test cpu", "dtype": "float32"},
           "rows": [{"model": model, "frames": 32, "visual_tokens": tokens, "vision_ms": 10.0, "compressor_ms": 2.0,
                     "llm_ttft_ms": ttft, "s_per_video": 0.5, "llm_prefill_flops": 2e9, "peak_memory_mb": 100.0}
                    for model, tokens, ttft in (("hicom", 48, 5.0), ("llava_ov", 256, 20.0))]}


def child(parent, name, tags=None, losses=(), artifacts=()):
    with Tracker(parent_run_id=parent, run_name=name, tags=tags or {}, system_metrics=False) as t:
        for step, loss in enumerate(losses, start=1):
            t.log_metrics({"loss": loss}, step=step)
        for path, folder in artifacts:
            t.log_artifact(path, folder)
    return t.run_id


def pipeline(tmp_path, name, right=None, injection="on", profile=True, decision=True, answer="A", content=None):
    """A parent run with three training stages, and optionally evaluate/profile/register/promote children."""
    with Tracker(experiment="pipelines", run_name=name, tags={"profile": "tiny"}, system_metrics=False) as parent:
        parent.log_params({"ablation": {"injection": injection}})
    for i, stage in enumerate(("align", "cond_pretrain", "sft")):
        child(parent.run_id, stage, {"stage": stage}, losses=[3.0 - i, 2.5 - i, 2.0 - i])
    if right is not None or content is not None:
        (tmp_path / "results.json").write_text(json.dumps(content or results(right, answer=answer)))
        child(parent.run_id, "evaluate-synthetic", {"stage": "evaluate"}, artifacts=[(tmp_path / "results.json", None)])
    if profile:
        (tmp_path / "profile.json").write_text(json.dumps(PROFILE))
        child(parent.run_id, "profile", artifacts=[(tmp_path / "profile.json", "profile")])
    if decision:
        child(parent.run_id, "register", {"stage": "register", "registered_model": "hicom-video-qa",
                                          "registered_model_version": "3"})
        child(parent.run_id, "promote", {"stage": "promote", "promotion": "promoted", "champion_version_before": "2",
                                         "promotion.reasons": "pass accuracy/synthetic: 0.3500 vs champion 0.3000"})
    return parent.run_id


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reports")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        for folder in "abcde":
            (root / folder).mkdir()
        legacy = {k: v for k, v in results(20).items() if k not in ("questions", "question_set")}
        yield {"root": root, "client": MlflowClient(),
               "full": pipeline(root / "a", "retrain-injection-on", right=14),
               "ablation": pipeline(root / "b", "retrain-injection-off", right=20, injection="off", decision=False),
               "bare": pipeline(root / "c", "retrain-untracked-eval", profile=False, decision=False),
               "other_set": pipeline(root / "d", "retrain-other-set", right=20, answer="B", decision=False),
               "legacy": pipeline(root / "e", "retrain-before-records", content=legacy, decision=False)}
    mlflow.set_tracking_uri(None)  # report calls set MLflow's global URI; later modules must not inherit it


def test_pipeline_report_has_the_eval_efficiency_and_stage_tables_and_three_plots(runs, tmp_path):
    out = tmp_path / "report"
    assert main(["pipeline-report", "--run-id", runs["full"], "--out", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "# Pipeline run `retrain-injection-on`" in text
    r = results(14)
    assert (f"| synthetic | {cell(r)} | - | {cell(r, 'accuracy_answered')} | 40 | 10 | 1 | 0 | 25.0% |"
            in text)
    assert "Intervals: 95%, cluster bootstrap over videos" in text
    moment = r["breakdown"]["kind"]["moment"]
    chance = f"{100 * moment['chance']:.1f}%"  # every group shows its own chance level
    assert "**synthetic** by kind:" in text and f"| moment | {cell(moment)} | {chance} | 20 | 1 |" in text
    valid_chance = f"{100 * r['validity']['valid']['chance']:.1f}%"
    assert f"| valid | {cell(r)} | {valid_chance} | 40 | 1 |" in text and "| invalid |" not in text  # empty: left out
    assert "| HICom | 32 | 48 | 10.0 | 2.0 | 5.0 | 0.500 | 2.00 | 100.0 |" in text
    assert "| LLaVA-OV baseline | 32 | 256 |" in text
    assert "Registered `hicom-video-qa` version 3" in text and "Promotion: **promoted**" in text
    assert "| sft | `sft` | finished |" in text and "| 0.0000 | 3 |" in text
    pngs = ("loss_curves.png", "accuracy_vs_tokens.png", "latency_breakdown.png")
    for png in pngs:
        assert f"]({png})" in text and (out / png).read_bytes().startswith(PNG_MAGIC)
    html = (out / "report.html").read_text()
    assert "<table>" in html and '<img alt="loss curves per stage" src="loss_curves.png"' in html
    logged = {a.path for a in runs["client"].list_artifacts(runs["full"], "report")}
    assert logged == {f"report/{name}" for name in ("report.md", "report.html", *pngs)}


def test_files_given_on_the_command_line_fill_in_what_a_run_did_not_log(runs, tmp_path):
    bare = tmp_path / "bare"
    files = pipeline_report(runs["bare"], bare, log=False)
    text = (bare / "report.md").read_text()
    assert "No evaluation results" in text and "No efficiency profile" in text
    assert sorted(files) == ["loss_curves.png", "report.html", "report.md"]
    assert not runs["client"].list_artifacts(runs["bare"], "report")

    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps(results(36)))
    (tmp_path / "profile.json").write_text(json.dumps(PROFILE))
    filled = tmp_path / "filled"
    pipeline_report(runs["bare"], filled, eval_paths=[tmp_path / "eval"], profile_file=tmp_path / "profile.json",
                    log=False)
    text = (filled / "report.md").read_text()
    assert "| synthetic | 90.0% [" in text and "| HICom | 32 | 48 |" in text
    assert (filled / "accuracy_vs_tokens.png").read_bytes().startswith(PNG_MAGIC)


def test_compare_puts_runs_side_by_side_in_one_table_and_one_plot(runs, tmp_path, capsys):
    out = tmp_path / "compare"
    assert main(["compare", "--runs", runs["full"], runs["ablation"], "--out", str(out)]) == 0
    text = (out / "compare.md").read_text()
    assert text == capsys.readouterr().out.split("compare: wrote")[0].removesuffix("\n")
    header = ("| run | run id | ablation.injection | synthetic [95% CI] | visual tokens @32f | s/video @32f "
              "| align final loss | cond_pretrain final loss | sft final loss | model version | promotion |")
    assert header in text
    assert (f"| `retrain-injection-on` | `{runs['full'][:12]}` | on | {cell(results(14))} | 48 | 0.500 | 2.0000 "
            "| 1.0000 | 0.0000 | 3 | promoted |") in text
    assert f"| `retrain-injection-off` | `{runs['ablation'][:12]}` | off | {cell(results(20))} | 48 | 0.500 |" in text
    # paired: 6 more right, all on videos 3 and 4; a resample without both (p = 0.8^10 > 2.5%) differs by 0
    assert "## Paired differences against `retrain-injection-on`" in text
    assert "| `retrain-injection-off` | synthetic | +0.150 [95% CI +0.000, +0." in text
    assert "| 40 (10) | 0.0312 | inconclusive |" in text
    assert f"question set {results(14)['question_set']}" in text
    assert (out / "compare.png").read_bytes().startswith(PNG_MAGIC)


def test_compare_prints_no_progress_bar_for_the_artifacts_it_reads(runs, tmp_path, capsys):
    assert main(["compare", "--runs", runs["full"], runs["ablation"], "--out", str(tmp_path / "compare")]) == 0
    captured = capsys.readouterr()
    assert "## Paired differences" in captured.out
    assert "Downloading artifacts" not in captured.err + captured.out


def test_compare_tells_better_from_worse_when_the_interval_excludes_zero(tmp_path):
    from hicom.gate.decision import paired_comparison, read_evaluation
    from hicom.pipeline_report import paired_verdict

    spread = {**results(0), "questions": [{**q, "correct": i % 4 != 0} for i, q in enumerate(results(0)["questions"])]}
    new, old = read_evaluation(spread, "new"), read_evaluation(results(0), "old")
    assert paired_verdict(paired_comparison(new, old)) == "better"
    assert paired_verdict(paired_comparison(old, new)) == "worse"


def test_compare_refuses_runs_on_different_question_sets_naming_both_hashes(runs, tmp_path, capsys):
    out = tmp_path / "refused"
    assert main(["compare", "--runs", runs["full"], runs["other_set"], "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"run {runs['other_set']} (`retrain-other-set`) on synthetic was evaluated on question set "
            f"{results(20, answer='B')['question_set']}, run {runs['full']} (`retrain-injection-on`) on synthetic on "
            f"question set {results(14)['question_set']}") in err
    assert not out.exists()


def test_compare_on_a_run_without_per_question_records_names_the_run_and_why(runs, tmp_path, capsys):
    assert main(["compare", "--runs", runs["legacy"], runs["full"], "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert f"run {runs['legacy']} (`retrain-before-records`) on synthetic: no per-question records" in err
    assert "re-run its evaluation" in err


def test_an_unknown_run_or_a_stage_run_is_refused_naming_it(runs):
    with pytest.raises(ConfigError, match="run 'no-such-run' not found in sqlite:///"):
        collect("no-such-run")
    stage = runs["client"].search_runs(
        [runs["client"].get_run(runs["full"]).info.experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{runs['full']}' and tags.stage = 'sft'")[0]
    with pytest.raises(ConfigError, match=f"is a stage run \\(its parent is {runs['full']}\\)"):
        collect(stage.info.run_id)


def test_compare_needs_two_runs(runs, tmp_path):
    with pytest.raises(ConfigError, match="at least two pipeline runs, got 1"):
        compare_runs([runs["full"]], tmp_path)


def test_accuracy_is_plotted_at_the_tokens_of_the_frame_count_it_was_evaluated_at():
    parent = RunRecord("r", "run", "FINISHED", 0, {}, {}, {})

    def points(profile, evals):
        return accuracy_points(PipelineData(parent, [], {}, evals, profile, efficiency_frames=32))

    resolved = {**PROFILE, "accuracy_vs_tokens": [{"label": "synthetic", "accuracy": 0.35, "visual_tokens": 12}]}
    assert points(resolved, [results(14, frames=8)]) == resolved["accuracy_vs_tokens"]  # the profile stage's own
    ci = results(14)["accuracy_ci"]
    assert points(PROFILE, [results(14, frames=32)]) == [
        {"label": "synthetic", "visual_tokens": 48, "accuracy": 0.35, "chance": 0.25, "ci_low": ci["low"],
         "ci_high": ci["high"]}]
    assert points(PROFILE, [results(14, frames=8)]) == []  # 8 frames were not profiled: no made-up position
