"""`make ablations` (`python -m flows ablations`): the paper's ablations with several seeds, and accuracy vs visual
tokens, as one Prefect flow, then one comparison report with a verdict per claim (hicom.ablations).

Each run of the sweep is the retrain flow (flows/retrain.py) with an ablation and the active profile's
`train.common.seed` set: only the training stages and what reads them rerun (under outputs/variants/<variant>/);
the upstream stages (world, tokenizer, towers, LLM, curation) keep their cache keys and are shared by every run.
A finished run's results are kept under outputs/ablations/runs/<variant>-seed<N>/ with the run's key (its stages'
commands, params and the content of their code and config deps); a later sweep reuses a run whose key is
unchanged without starting it, so an interrupted sweep resumes where it stopped (and the interrupted run itself
resumes from its stages' cache and checkpoints).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger

from flows.errors import PipelineError
from flows.hashes import ContentHashes
from flows.retrain import plan_run, retrain
from flows.settings import PROJECT_ROOT, AblationSweep, get_key, load_checked_params
from flows.stages import EVALUATE_COMMAND
from hicom.ablations import (
    BASELINE,
    Claim,
    RunResult,
    build_report,
    verdict_lines,
    write_report,
)
from hicom.core.files import atomic_write_json, read_json_object
from hicom.params import Params

SWEEP_DIR = "outputs/ablations"  # runs/<variant>-seed<N>/{results.json, run.json}; report/
RUN_RECORD_VERSION = 1  # bump when run.json's meaning changes


@dataclass(frozen=True)
class SweepRun:
    """One run of the sweep: a variant ("baseline" or a pipeline.ablations name) at one seed."""

    variant: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant}-seed{self.seed}"

    @property
    def ablations(self) -> list[str]:
        return [] if self.variant == BASELINE else [self.variant]


def sweep_runs(sweep: AblationSweep) -> list[SweepRun]:
    """Seed by seed (so an interrupted sweep has whole seeds first): the baseline and each claim's ablation; then the
    token-budget variants at their seeds. Each (variant, seed) once."""
    runs: list[SweepRun] = []
    for seed in sweep.seeds:
        runs += [SweepRun(BASELINE, seed)] + [SweepRun(c.ablation, seed) for c in sweep.claims.values()]
    for seed in sweep.token_seeds:
        runs += [SweepRun(variant, seed) for variant in sweep.token_variants]
    return list(dict.fromkeys(runs))


def seed_key(params: dict) -> str:
    """The active profile's training seed: initialisation and data order of the training stages."""
    key = f"profiles.{params['profile']}.train.common.seed"
    get_key(params, key, "pipeline.ablation_sweep (the seed of each run)")
    return key


def load_sweep(root: Path) -> tuple[dict, AblationSweep]:
    params, settings = load_checked_params(root / "params.yaml")
    sweep = settings.ablation_sweep
    if sweep is None:
        raise PipelineError("params.yaml: pipeline.ablation_sweep: not set; it names the seeds, claims and token "
                            "variants of `make ablations`")
    if seed_key(params) in sweep.set:
        raise PipelineError(f"params.yaml: pipeline.ablation_sweep.set.{seed_key(params)}: the sweep sets each run's "
                            "seed from pipeline.ablation_sweep.seeds")
    return params, sweep


def run_overrides(run: SweepRun, params: dict, sweep: AblationSweep) -> dict:
    """What the run sets on params.yaml besides its ablation: the sweep's own settings and the run's seed."""
    return {**sweep.set, seed_key(params): run.seed}


def run_key(root: Path, run: SweepRun, params: dict, sweep: AblationSweep, hashes: ContentHashes) -> tuple[str, dict]:
    """(the run's key, its plan's facts). The key covers every stage of the run: its command, its params slice and
    the content of its deps that no stage of the run makes (code, configs; a variant's copy of a data mixture as
    planned, before the run writes it); so it changes when anything the run's results derive from changes, and is
    known before any stage runs."""
    plan = plan_run(root, run.ablations, run_overrides(run, params, sweep), None, list(sweep.skip_stages))
    outs = [out for stage in plan.stages for out in stage.outs]

    def made_by_a_stage(dep: str) -> bool:
        return any(dep == out or dep.startswith(out + "/") or out.startswith(dep + "/") for out in outs)

    material = []
    for stage in plan.stages:
        material.append({"name": stage.name, "module": stage.module, "argv": stage.argv,
                         "nproc_per_node": stage.nproc_per_node,
                         "params": {k: get_key(plan.params, k, f"stage {stage.name!r} params") for k in stage.params},
                         "deps": {d: hashlib.sha256(plan.mixtures[d].encode()).hexdigest() if d in plan.mixtures
                                  else hashes.get(d) for d in stage.deps if not made_by_a_stage(d)}})
    evaluate = next((s for s in plan.stages if s.command == EVALUATE_COMMAND
                     and s.name == f"{EVALUATE_COMMAND}@{sweep.benchmark}"), None)
    if evaluate is None or not evaluate.metrics:
        raise PipelineError(f"pipeline.ablation_sweep.benchmark: no stage {EVALUATE_COMMAND}@{sweep.benchmark} with a "
                            "results file in dvc.yaml")
    key = hashlib.sha256(json.dumps({"version": RUN_RECORD_VERSION, "stages": material}, sort_keys=True,
                                    default=str).encode()).hexdigest()
    return key, {"results": evaluate.metrics[0], "params": plan.params, "variant_name": plan.variant.name}


def visual_tokens(results: dict, params: dict) -> int | None:
    """Visual tokens per video at the evaluated frame count: results.json's own `visual_tokens` where it has one,
    else the run's model config (built on the meta device) at results' `settings.frames` (else the profile's)."""
    if isinstance(results.get("visual_tokens"), int):
        return results["visual_tokens"]
    from hicom.model.build import build_model

    checked = Params(params, label="the sweep run's params")
    profile = checked.profile(params["profile"])
    frames = (results.get("settings") or {}).get("frames") or profile.num_frames
    return int(build_model(profile, device="meta").num_visual_tokens(int(frames)))


def run_dir(root: Path, run: SweepRun) -> Path:
    return root / SWEEP_DIR / "runs" / run.name


def finished(root: Path, run: SweepRun, key: str) -> dict | None:
    """The run's record when it finished with this key (else None: it runs)."""
    folder = run_dir(root, run)
    try:
        record = read_json_object(folder / "run.json")
    except Exception:  # absent or unreadable: not finished
        return None
    if record.get("key") != key or not (folder / "results.json").is_file():
        return None
    return record


def keep_result(root: Path, run: SweepRun, key: str, facts: dict, summary: dict, seconds: float) -> dict:
    """Copy the run's results.json into the sweep's folder, then its record (written last: the finish mark)."""
    source = root / facts["results"]
    results = read_json_object(source)
    folder = run_dir(root, run)
    atomic_write_json(folder / "results.json", results)
    record = {"variant": run.variant, "seed": run.seed, "key": key, "variant_name": facts["variant_name"],
              "results_from": facts["results"], "parent_run_id": summary.get("parent_run_id"),
              "pipeline_run": summary.get("run"), "stages": summary.get("stages"), "seconds": round(seconds, 1),
              "visual_tokens": visual_tokens(results, facts["params"]),
              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    atomic_write_json(folder / "run.json", record)
    return record


def question_groups(root: Path, benchmark: str, data: str, breakdown: str) -> dict[str, str]:
    """question id -> its `breakdown` value, from the benchmark's data as its reader gives it (empty when the
    reader gives no such field or the data cannot be read: the records' own field is used then)."""
    from hicom.evaluate.benchmarks import read_benchmark

    try:
        samples = read_benchmark(benchmark, root / data)
    except Exception:
        return {}
    return {str(s.id): str(s.groups[breakdown]) for s in samples if breakdown in s.groups}


@flow(name="ablations", log_prints=True)
def ablations(project_dir: str | None = None, executor: str | None = None, report_only: bool = False) -> dict:
    """Every run of params.yaml pipeline.ablation_sweep not yet finished with its current key (report_only: none),
    then the comparison report, logged to MLflow."""
    logger = get_run_logger()
    root = Path(project_dir or PROJECT_ROOT).resolve()
    params, sweep = load_sweep(root)
    runs = sweep_runs(sweep)
    hashes = ContentHashes(root)
    keys = {run: run_key(root, run, params, sweep, hashes) for run in runs}  # every request checked before any work
    started = time.monotonic()
    status = {}
    for i, run in enumerate(runs, 1):
        key, facts = keys[run]
        if finished(root, run, key) is not None:
            status[run.name] = "reused"
            logger.info(f"[{i}/{len(runs)}] {run.name}: finished earlier with the same key: reused")
            continue
        if report_only:
            status[run.name] = "missing"
            continue
        logger.info(f"[{i}/{len(runs)}] {run.name}: running (variant {facts['variant_name']})")
        begun = time.monotonic()
        summary = retrain(ablations=run.ablations, overrides=run_overrides(run, params, sweep), executor=executor,
                          project_dir=str(root), skip=list(sweep.skip_stages))
        keep_result(root, run, key, facts, summary, time.monotonic() - begun)
        status[run.name] = "ran"
        logger.info(f"[{i}/{len(runs)}] {run.name}: done in {(time.monotonic() - begun) / 60:.1f} min")
    report = report_sweep(root, params, sweep, runs)
    seconds = time.monotonic() - started
    lines = [f"ablations: {sum(s == 'ran' for s in status.values())} run(s) ran, "
             f"{sum(s == 'reused' for s in status.values())} reused"
             + (f", {sum(s == 'missing' for s in status.values())} missing" if report_only else "")
             + f", in {seconds / 60:.1f} min", *report["verdicts"], f"report: {report['files']['ablations.md']}",
             f"MLflow: run {report['run_id']}"]
    for line in lines:
        print(line)
    return {"status": status, "seconds": seconds, **report, "lines": lines}


def report_sweep(root: Path, params: dict, sweep: AblationSweep, runs: list[SweepRun]) -> dict:
    """The report of the finished runs in outputs/ablations/report/, logged as one MLflow run (artifacts, metrics
    and a tag per claim's verdict)."""
    from hicom.tracking import Tracker

    results = []
    for run in runs:
        folder = run_dir(root, run)
        if (folder / "run.json").is_file() and (folder / "results.json").is_file():
            record = read_json_object(folder / "run.json")
            results.append(RunResult(run.variant, run.seed, read_json_object(folder / "results.json"),
                                     record.get("visual_tokens"), record.get("parent_run_id"),
                                     str((folder / "results.json").relative_to(root))))
    claims = [Claim(name, c.ablation, c.says, c.on_binding) for name, c in sweep.claims.items()]
    benchmark = (params.get("pipeline") or {}).get("benchmarks", {}).get(sweep.benchmark, {})
    groups = question_groups(root, sweep.benchmark, benchmark.get("data", ""), sweep.breakdown)
    report = build_report(results, claims, list(sweep.token_variants), breakdown=sweep.breakdown,
                          binding_families=list(sweep.binding_families), groups=groups, settings=sweep.set)
    out = root / SWEEP_DIR / "report"
    files = write_report(report, out)
    summary = report.to_dict()
    _, settings = load_checked_params(root / "params.yaml")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    with Tracker(experiment=settings.experiment, run_name=f"ablations {stamp}", system_metrics=False,
                 tags={"pipeline.sweep": "ablations", "profile": str(params.get("profile"))}) as tracker:
        tracker.log_params({"seeds": ",".join(map(str, sweep.seeds)), "benchmark": sweep.benchmark,
                            "token_variants": ",".join(sweep.token_variants), "breakdown": sweep.breakdown,
                            "binding_families": ",".join(sweep.binding_families),
                            **{f"set.{key}": value for key, value in sweep.set.items()}})
        metrics = {}
        for name, v in summary["variants"].items():
            metrics[f"{name}/accuracy_mean"] = v["mean"]
            for bound in ("low", "high"):
                if v["pooled_ci"][bound] is not None:
                    metrics[f"{name}/accuracy_ci_{bound}"] = v["pooled_ci"][bound]
        tags = {}
        for name, claim in summary["claims"].items():
            tags[f"verdict.{name}"] = claim["verdict"]
            for label, cmp in claim["comparisons"].items():
                slug = label.replace(" ", "_")
                tags[f"verdict.{name}.{slug}"] = cmp["verdict"]
                pooled = cmp["pooled"] or {}
                for field in ("difference", "ci_low", "ci_high"):
                    if isinstance(pooled.get(field), (int, float)):
                        metrics[f"{name}/{slug}/{field}"] = pooled[field]
        tracker.log_metrics(metrics)
        tracker.set_tags(tags)
        for path in files.values():
            tracker.log_artifact(path, "ablations")
        run_id = tracker.run_id
    return {"files": {k: str(v) for k, v in files.items()}, "verdicts": verdict_lines(report), "run_id": run_id,
            "summary": summary}
