"""The `retrain` flow: every dvc.yaml stage in order, then promotion and the pipeline report.

Each stage is a Prefect task that runs the stage's CLI through an executor (local, Slurm, Kubernetes).
A task is cached on the stage's inputs (command, params slice, content of its data and code deps) with
its result persisted, so a rerun skips what did not change, in this process or the next. After a
baseline stage runs, its outs are `dvc commit`ted; the run pushes its stages' outs once, at its end (also when a
stage failed: what finished before it). One MLflow parent run per pipeline run;
stages log child runs under it. Ablation variants (Tables A3-A5) write under outputs/variants/ and
leave the baseline's outputs, DVC records and registry alone.

Run it with `make run` / `python -m flows run` (flows/cli.py), or through the deployments in prefect.yaml.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.tasks import exponential_backoff

from flows.dvc import (
    DvcError,
    LockUpdates,
    dvc_status,
    lock_entry,
    push_stages,
    remote_status,
    remote_url,
    restore_outs,
)
from flows.errors import PipelineError
from flows.executors import executor_kind, make_executor
from flows.executors.base import (
    TRANSIENT_EXIT_CODES,
    JobState,
    StageFailed,
    StageJob,
    run_job,
)
from flows.hashes import ContentHashes, fingerprint
from flows.outs import claim, drop_aside, prepare_outs
from flows.settings import PROJECT_ROOT, PipelineSettings, load_checked_params
from flows.stages import (
    EFFICIENCY_COMMAND,
    EVALUATE_COMMAND,
    PIPELINE_REPORT_COMMAND,
    PROMOTE_COMMAND,
    REGISTER_COMMAND,
    Stage,
    load_stages,
)
from flows.variants import (
    RunVariant,
    make_variant,
    plan_variant,
    variant_params,
    variant_params_file,
    write_variant_params,
)

# A stage's progress bars (tqdm) go to its log file, a pod's log or a Slurm job's output, not to a terminal: at tqdm's
# default, a redraw every 0.1 s, that was a line a step (800 in the towers' log). A redraw every 10 s instead, unless
# TQDM_MININTERVAL is set where the flow runs.
PROGRESS_REDRAW_S = "10"
RUNS_DIR = "outputs/runs"  # per pipeline run: logs/, promotion.json, report/
CACHE_KEY_VERSION = "v1"  # bump when a stage task's result format changes
PROGRESS_EVERY_S = 30.0
RESULTS_BLOCK = "hicom-results"  # the RemoteFileSystem block of $HICOM_PREFECT_RESULTS on the Prefect server


@dataclass(frozen=True)
class PipelineRun:
    """What every stage task of one pipeline run shares."""

    root: Path
    name: str
    settings: PipelineSettings
    executor: str
    parent_run_id: str | None

    @property
    def run_dir(self) -> Path:
        return self.root / RUNS_DIR / self.name


# -- stage CLIs -----------------------------------------------------------------------------------
def tracks_itself(module: str, command: str) -> bool:
    """Whether `python -m module command` logs its own child run (takes --parent-run-id): its command registry says."""
    commands = importlib.import_module(f"{module}.commands").COMMANDS
    return command in commands and commands[command].TRACKED


# -- the stage task ------------------------------------------------------------------------------
def _cache_key(context, parameters: dict) -> str:
    return f"{CACHE_KEY_VERSION}-{parameters['stage'].name}-{parameters['fingerprint']}"


def _stage_key(stage: Stage, params: dict, hashes: ContentHashes) -> str:
    """The stage's fingerprint; a stage that registers a model is also keyed on the tracking server it registered
    on, so a fresh server (the team stack after a local run) gets its own version instead of a cached number that
    does not exist there. (DVC pushes are not keyed: every run pushes all outs to its remote, see `push_stages`.)"""
    key = fingerprint(stage, params, hashes)
    if stage.command == REGISTER_COMMAND:
        from hicom.tracking import default_tracking_uri

        key = hashlib.sha256(f"{key}\0{default_tracking_uri()}".encode()).hexdigest()
    return key


def result_storage():
    """Where stage results (the cache) are kept: $HICOM_PREFECT_RESULTS (the team stack's env file names its S3
    bucket), so a scheduled run on the stack's worker reuses what `make run-stack` computed; unset, Prefect's
    local storage under its home."""
    url = os.environ.get("HICOM_PREFECT_RESULTS")
    if not url:
        return None
    from prefect.filesystems import RemoteFileSystem

    endpoint = os.environ.get("AWS_ENDPOINT_URL")  # credentials: AWS_* from the environment, as for DVC
    storage = RemoteFileSystem(basepath=url, settings={"client_kwargs": {"endpoint_url": endpoint}} if endpoint else {})
    storage.save(RESULTS_BLOCK, overwrite=True)  # Prefect keeps result storage as a block on its server
    return storage


def _result_stored(task, stage: Stage, fingerprint: str) -> bool:
    """Whether the stage's result is in the result storage under its cache key. Prefect only logs a failed write
    (a full disk, an S3 bucket refusing writes) and completes the task: without this check the cache is lost
    silently and every later run trains again."""
    from prefect.results import get_result_store

    store = get_result_store().update_for_task(task)
    return store.exists(_cache_key(None, {"stage": stage, "fingerprint": fingerprint}))


def _storage_name(storage) -> str:
    if storage is not None:
        return storage.basepath
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH

    return str(PREFECT_RESULTS_LOCAL_STORAGE_PATH.value())


def _transient(task, task_run, state) -> bool:
    """Retry only failures that were not the stage's own doing: lost node, preemption, an exit flagged transient."""
    error = state.data
    if not isinstance(error, StageFailed):
        return False
    result = error.result
    return result.state.transient_failure or (result.state is JobState.FAILED and
                                              result.returncode in TRANSIENT_EXIT_CODES)


class _Progress:
    """Every PROGRESS_EVERY_S while a stage runs: its state and the last line of its log."""

    def __init__(self, stage: str, log_path: Path, logger):
        self.stage, self.log_path, self.logger = stage, log_path, logger
        self.started = self.last = time.monotonic()

    def __call__(self, state: JobState) -> None:
        now = time.monotonic()
        if state.final or now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        self.logger.info(f"{self.stage}: {state.value.lower()} for {now - self.started:.0f}s | "
                         f"{_last_line(self.log_path)}")


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = [line.strip() for line in f.read().decode(errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return "(no log yet)"
    return next((line for line in reversed(lines) if line), "(empty log)")[:200]


def _execute(stage: Stage, run: PipelineRun, key: str | None, first_attempt: bool, child_run: bool,
             locks: LockUpdates | None = None) -> dict:
    """Run one stage command through the executor; its outs' hashes, DVC record and timing.

    key: the stage's cache key (None for actions); a first attempt keeps, sets aside or clears earlier
    outputs (flows/outs.py), a retry keeps them so training resumes. child_run: log an MLflow child run for
    it, unless its CLI logs its own (takes --parent-run-id). locks: the run's DVC commits, for a tracked stage."""
    logger = get_run_logger()
    with claim(run.root, stage, key) as held:
        if first_attempt:
            prepare_outs(run.root, stage, held, logger)
        resources = run.settings.resources_for(stage.command)
        tracked_by_cli = tracks_itself(stage.module, stage.command)
        argv = stage.job_argv(run.root)
        if tracked_by_cli and run.parent_run_id:
            argv += ["--parent-run-id", run.parent_run_id]
        log_path = run.run_dir / "logs" / f"{stage.name}.log"
        job = StageJob(name=stage.name, argv=argv, log_path=log_path, workdir=run.root, nodes=resources.nodes,
                       nproc_per_node=stage.nproc_per_node, gpus_per_node=resources.gpus_per_node,
                       env={"TQDM_MININTERVAL": os.environ.get("TQDM_MININTERVAL", PROGRESS_REDRAW_S),
                            **resources.thread_env(stage.nproc_per_node, local=run.executor == "local")},
                       time_limit_s=run.settings.stage_timeout_s, keep_fds=(held.fd,))
        executor = make_executor(run.executor, stage.module, run.settings.clusters.get(run.executor))
        logger.info(f"{stage.name}: running `{' '.join(argv)}` on {run.executor} "
                    f"({stage.nproc_per_node} process(es)); log: {log_path}")
        started = time.monotonic()
        with _child_run(stage, run, argv, log_path, enabled=child_run and not tracked_by_cli):
            result = run_job(executor, job, poll_interval_s=executor_kind(run.executor).poll_interval_s,
                             on_poll=_Progress(stage.name, log_path, logger))
            if not result.ok:
                raise StageFailed(result)
        seconds = time.monotonic() - started
        held.finished()
        drop_aside(run.root, stage)
    lock = locks.commit(stage) if stage.tracked else None
    hashes = ContentHashes(run.root)
    logger.info(f"{stage.name}: done in {seconds:.0f}s" + (" (outs committed to DVC)" if lock else ""))
    return {"stage": stage.name, "outs": {out: hashes.get(out) for out in stage.outs}, "dvc_lock": lock,
            "log": str(log_path), "seconds": round(seconds, 1), "parent_run_id": run.parent_run_id,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


@contextlib.contextmanager
def _child_run(stage: Stage, run: PipelineRun, argv: list[str], log_path: Path, enabled: bool):
    """A child MLflow run for a stage whose CLI logs none itself: its command, outcome, duration and log."""
    from hicom.tracking import Tracker

    started = time.monotonic()
    with Tracker(enabled=enabled and run.parent_run_id is not None, run_name=stage.name,
                 parent_run_id=run.parent_run_id, system_metrics=False,
                 tags={"stage": stage.name, "command": " ".join(argv)}) as tracker:
        try:
            yield
        finally:
            if tracker.run_id:
                tracker.log_metrics({"seconds": time.monotonic() - started})
                if log_path.is_file():
                    tracker.log_artifact(log_path, "logs")


@task(name="stage", task_run_name="{stage.name}", cache_key_fn=_cache_key, persist_result=True,
      result_serializer="json", retry_condition_fn=_transient)
def run_stage(stage: Stage, fingerprint: str, run: PipelineRun, locks: LockUpdates) -> dict:
    """One dvc.yaml stage. Cached on `fingerprint`; a retry (transient failure) keeps the outs so training resumes."""
    return _execute(stage, run, fingerprint, first_attempt=TaskRunContext.get().task_run.run_count <= 1,
                    child_run=True, locks=locks)


@task(name="action", task_run_name="{stage.name}", cache_policy=NO_CACHE, retry_condition_fn=_transient)
def run_action(stage: Stage, run: PipelineRun) -> dict:
    """A step that acts on the registry or reports on this run (promote, report): never cached; its CLI logs."""
    return _execute(stage, run, None, first_attempt=True, child_run=False)


# -- the flows -----------------------------------------------------------------------------------
@flow(name="pipeline", log_prints=True, validate_parameters=False)
def run_pipeline(stages: list[Stage], params: dict, run: PipelineRun) -> dict:
    """The stages in order (cached where their inputs did not change), then promotion and the report."""
    logger = get_run_logger()
    retrying = {"retries": run.settings.retries,
                "retry_delay_seconds": exponential_backoff(run.settings.retry_delay_s)}
    storage = result_storage()
    if storage is not None:
        retrying["result_storage"] = storage
    hashes = ContentHashes(run.root)
    records: dict[str, dict] = {}
    with LockUpdates(run.root) as locks:
        try:
            for i, stage in enumerate(stages, 1):
                key = _stage_key(stage, params, hashes)
                logger.info(f"[{i}/{len(stages)}] {stage.name}")
                result = run_stage.with_options(**retrying)(stage, key, run, locks, return_state=True)
                cached = result.name == "Cached"
                outcome = result.result()  # raises the stage's error (StageFailed names the stage and its log)
                if cached and not _workspace_matches(run, stage, outcome, hashes):
                    logger.warning(f"{stage.name}: cached result, but the workspace holds other outputs (deleted "
                                   "or overwritten) and DVC cannot restore them: running it again")
                    outcome = run_stage.with_options(refresh_cache=True, **retrying)(stage, key, run, locks)
                    cached = False
                elif cached and stage.tracked and lock_entry(run.root, stage.name) != outcome["dvc_lock"]:
                    outcome = {**outcome, "dvc_lock": locks.commit(stage)}
                if cached:
                    logger.info(f"{stage.name}: cached (inputs unchanged since {outcome['finished_at']})")
                hashes.forget(stage.outs)
                records[stage.name] = {**outcome, "status": "cached" if cached else "ran", "fingerprint": key}
                if not cached and not _result_stored(run_stage.with_options(**retrying), stage, key):
                    records[stage.name]["result_not_stored"] = True
                    logger.warning(f"{stage.name}: Prefect could not store its result (its error is logged above; "
                                   f"storage: {_storage_name(storage)}): the next run cannot reuse it and runs the "
                                   "stage again")
                _log_stage(run, stage, records[stage.name])
        except BaseException:
            _keep_finished(run, stages, records, locks, logger)
            raise
        locks.write()
    pushed = [s for s in stages if s.tracked]
    push_stages(run.root, pushed)
    if pushed:
        logger.info(f"DVC: the outs of {len(pushed)} stage(s) pushed to {remote_url(run.root)}")
    register = next((s for s in stages if s.command == REGISTER_COMMAND), None)
    if register is not None:
        registered = json.loads((run.root / register.outs[0]).read_text())
        records["promote"] = _action(run, "promote", [PROMOTE_COMMAND, "--name", str(registered["name"]),
                                                     "--version", str(registered["version"]),
                                                     "--out", str(run.run_dir / "promotion.json")], stages)
    if run.parent_run_id:
        records["report"] = _action(run, "report", _report_argv(run, stages), stages)
    return records


def _keep_finished(run: PipelineRun, stages: list[Stage], records: dict, locks: LockUpdates, logger) -> None:
    """After a stage failed: write what the stages before it committed to dvc.lock and push their outs, so the
    workspace and the remote hold the run's work so far; a write or push that fails too is a warning (the stage's
    error is the one to see)."""
    finished = [s for s in stages if s.tracked and s.name in records]
    try:
        locks.write()
        push_stages(run.root, finished)
    except DvcError as exc:
        logger.warning(f"DVC: keeping the {len(finished)} finished stage(s) failed too: {exc}")


def _report_argv(run: PipelineRun, stages: list[Stage]) -> list[str]:
    """pipeline-report of this run, given the evaluation and profile files themselves: a cached stage logged
    nothing under this run's MLflow parent."""
    argv = [PIPELINE_REPORT_COMMAND, "--run-id", run.parent_run_id, "--out", str(run.run_dir / "report")]
    results = [path for s in stages if s.command == EVALUATE_COMMAND for path in s.metrics]
    if results:
        argv += ["--eval", *results]
    efficiency = next((s for s in stages if s.command == EFFICIENCY_COMMAND), None)
    if efficiency is not None:
        argv += ["--efficiency", f"{efficiency.outs[0]}/profile.json"]
    return argv


def _workspace_matches(run: PipelineRun, stage: Stage, outcome: dict, hashes: ContentHashes) -> bool:
    """Whether the outs on disk are the ones the cached run produced, after restoring them with DVC where
    dvc.lock still records that run (e.g. after `make clean`)."""
    def matches() -> bool:
        return all(hashes.get(out) == digest for out, digest in outcome["outs"].items())

    if matches():
        return True
    recorded = stage.tracked and lock_entry(run.root, stage.name) == outcome["dvc_lock"]
    if not (recorded and restore_outs(run.root, stage)):
        return False
    hashes.forget(stage.outs)
    if matches():
        get_run_logger().info(f"{stage.name}: outputs restored from DVC ({run.root / 'dvc.lock'})")
        return True
    return False


def _action(run: PipelineRun, name: str, argv: list[str], stages: list[Stage]) -> dict:
    """A flow-only step (it needs this run's model version or MLflow run, which dvc.yaml cannot name)."""
    module = stages[0].module if stages else "hicom"
    action = Stage(name=name, module=module, argv=tuple(argv), nproc_per_node=1, deps=(), params=(),
                   outs=(), tracked=False)
    outcome = run_action.with_options(retries=run.settings.retries,
                                      retry_delay_seconds=exponential_backoff(run.settings.retry_delay_s))(action, run)
    return {**outcome, "status": "ran"}


def _log_stage(run: PipelineRun, stage: Stage, record: dict) -> None:
    """On the parent run: the stage's status and duration, its metrics files' numbers, its log if it ran."""
    if not run.parent_run_id:
        return
    from hicom.tracking import Tracker

    key = _mlflow_key(stage.name)
    with Tracker(resume_run_id=run.parent_run_id, system_metrics=False) as parent:
        tags = {f"stage.{key}": record["status"]}
        if record["status"] == "cached" and record.get("parent_run_id"):
            tags[f"stage.{key}.from_run"] = record["parent_run_id"]
        parent.set_tags(tags)
        metrics = {f"{key}/seconds": record["seconds"]} if record["status"] == "ran" else {}
        for path in stage.metrics:
            metrics.update(_top_level_numbers(run.root / path, key))
        parent.log_metrics(metrics)
        if record["status"] == "ran" and Path(record["log"]).is_file():
            parent.log_artifact(record["log"], "logs")


def _mlflow_key(stage: str) -> str:
    """evaluate@synthetic -> evaluate/synthetic (MLflow names allow no '@')."""
    from hicom.tracking import metric_name

    return metric_name(*stage.split("@"))


def _top_level_numbers(path: Path, prefix: str) -> dict[str, float]:
    """The numbers at the top of a JSON metrics file (e.g. results.json's accuracy), named <prefix>/<key>."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {f"{prefix}/{k}": float(v) for k, v in data.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


@dataclass(frozen=True)
class RunPlan:
    """A checked request: the stages to run (a variant's own where it changes them), the params they read and the
    variant's copies of data mixtures those params name (path relative to the project -> text; written with them)."""

    root: Path
    settings: PipelineSettings
    variant: RunVariant
    params: dict
    executor: str
    stages: list[Stage]
    mixtures: dict[str, str]


def plan_run(root: Path, ablations: list[str] | None, overrides: dict[str, Any] | None,
             executor: str | None, skip: list[str] | None = None) -> RunPlan:
    """Everything that can be wrong in a request (params, ablation names, overrides, executor, dvc.yaml),
    checked in a second and before any work starts. skip: stages to leave out of this run (a name, or a `foreach`
    stage's base name), none of whose outputs another stage of the run reads."""
    root = root.resolve()
    params, settings = load_checked_params(root / "params.yaml")
    variant = make_variant(ablations, overrides)
    changed, skipped = variant_params(params, settings, variant)
    kind = executor or os.environ.get("HICOM_EXECUTOR") or settings.executor
    executor_kind(kind).settings(kind, settings.clusters.get(kind))  # an unknown kind or setting fails here
    defined = load_stages(root)
    planned = plan_variant(root, defined, params, changed, skipped, variant, variant_params_file(variant))
    stages = planned.stages
    if not variant.is_baseline:  # an ablation is compared, not served: it registers nothing
        stages = [s for s in stages if s.command != REGISTER_COMMAND]
    if skip:
        stages = drop_stages(stages, skip, {s.name for s in defined})
    return RunPlan(root, settings, variant, planned.params, kind, stages, planned.mixtures)


def drop_stages(stages: list[Stage], skip: list[str], defined: set[str]) -> list[Stage]:
    """The stages without those named in `skip` (a stage's name or a `foreach` stage's base name, e.g. evaluate);
    a name dvc.yaml does not define (`defined`), or a dropped stage whose outputs a remaining stage reads, is an
    error naming it. (A defined stage this run does not have anyway, e.g. register in a variant, is no error.)"""
    names = defined | {name.partition("@")[0] for name in defined}
    unknown = sorted(set(skip) - names)
    if unknown:
        raise PipelineError(f"skip: stage {unknown[0]!r} is not defined in dvc.yaml ({', '.join(sorted(names))})")
    dropped = [s for s in stages if s.name in skip or s.name.partition("@")[0] in skip]
    kept = [s for s in stages if s not in dropped]
    for stage in kept:
        for dep in stage.deps:
            for gone in dropped:
                reader = next((out for out in gone.outs if dep == out or dep.startswith(out + "/")
                               or out.startswith(dep + "/")), None)
                if reader is not None:
                    raise PipelineError(f"skip: stage {gone.name!r} cannot be left out: stage {stage.name!r} reads "
                                        f"its output {reader}")
    return kept


@flow(name="retrain", log_prints=True)
def retrain(ablations: list[str] | None = None, overrides: dict[str, Any] | None = None,
            executor: str | None = None, project_dir: str | None = None, skip: list[str] | None = None) -> dict:
    """Retrain end to end. ablations: names under params.yaml pipeline.ablations (no_grouping, no_injection,
    two_stage); overrides: {"dotted.key": value} on params.yaml; executor: local | slurm | kubernetes
    (default: $HICOM_EXECUTOR, else pipeline.executor); skip: stages this run leaves out (see `plan_run`)."""
    from hicom.tracking import Tracker, default_tracking_uri

    logger = get_run_logger()
    plan = plan_run(Path(project_dir or PROJECT_ROOT), ablations, overrides, executor, skip)
    root, settings, variant, kind, planned = plan.root, plan.settings, plan.variant, plan.executor, plan.stages
    if not variant.is_baseline:
        write_variant_params(root, variant, plan.params, plan.mixtures)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"{stamp}-{variant.name}"
    started = time.monotonic()
    tags = {"pipeline.variant": variant.name, "pipeline.executor": kind, "pipeline.run": name,
            "profile": str(plan.params.get("profile", "?"))}
    with Tracker(experiment=settings.experiment, run_name=f"retrain {variant.name} {stamp}", tags=tags,
                 system_metrics=False) as parent:
        parent.log_params({"ablations": ",".join(variant.ablations) or "none",
                           **{f"override.{k}": v for k, v in variant.overrides}})
        run = PipelineRun(root=root, name=name, settings=settings, executor=kind, parent_run_id=parent.run_id)
        logger.info(f"retrain {variant.name}: {len(planned)} stages on {kind}; MLflow run {parent.run_id}; "
                    f"logs in {run.run_dir / 'logs'}")
        records = run_pipeline.with_options(timeout_seconds=settings.timeout_s)(planned, plan.params, run)
        revision = _record_revision(parent, run, planned, records)
    summary = _summary(run, planned, variant.name, records, revision, time.monotonic() - started,
                       default_tracking_uri())
    create_markdown_artifact(summary["markdown"], key="retrain-summary",
                             description=f"retrain {variant.name}: stages, model version, where things are")
    report_md = run.run_dir / "report" / "report.md"
    if report_md.is_file():
        create_markdown_artifact(report_md.read_text(), key="retrain-report", description="pipeline report")
    for line in summary["lines"]:
        print(line)
    return summary


def _record_revision(parent, run: PipelineRun, stages: list[Stage], records: dict) -> dict:
    """The data revision of this run on its MLflow parent run: dvc.lock (hash + file) and each out's hash."""
    lock = run.root / "dvc.lock"
    lock_sha = hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else "none"
    outs = {}
    for stage in stages:
        record = records[stage.name]
        dvc_outs = {o["path"]: o.get("md5") for o in (record.get("dvc_lock") or {}).get("outs", [])}
        outs[stage.name] = {"dvc_md5": dvc_outs} if dvc_outs else {"sha256": record["outs"]}
    remote = remote_url(run.root)
    parent.set_tags({"dvc.lock.sha256": lock_sha, "dvc.remote": remote,
                     **{f"stage.{_mlflow_key(n)}": r["status"] for n, r in records.items()}})
    if lock.is_file():
        parent.log_artifact(lock, "dvc")
    parent.log_dict({"dvc_lock_sha256": lock_sha, "remote": remote, "outs": outs}, "dvc/revision.json")
    promotion = run.run_dir / "promotion.json"
    if promotion.is_file():
        decision = json.loads(promotion.read_text())
        parent.set_tags({"promotion.promoted": str(decision.get("promoted")).lower(),
                         "promotion.champion_version": str(decision.get("champion_version"))})
        parent.log_artifact(promotion)
    status = dvc_status(run.root)
    missing = remote_status(run.root) if remote != "none" else {}
    return {"lock_sha256": lock_sha, "remote": remote,
            "dvc_status": "clean" if not status else f"changed: {', '.join(sorted(status))}",
            "remote_status": "in sync" if not missing else
            f"{len(missing)} file(s) differ ({_count_states(missing)})"}


def _count_states(status: dict) -> str:
    """{path: "new", ...} -> "12 new, 1 missing"."""
    states = sorted(set(status.values()))
    return ", ".join(f"{sum(1 for v in status.values() if v == state)} {state}" for state in states)


def _summary(run: PipelineRun, stages: list[Stage], variant: str, records: dict, revision: dict, seconds: float,
             tracking_uri: str) -> dict:
    ran = [n for n, r in records.items() if r["status"] == "ran"]
    cached = [n for n, r in records.items() if r["status"] == "cached"]
    unstored = [n for n, r in records.items() if r.get("result_not_stored")]
    lines = [f"retrain {variant}: done in {seconds / 60:.1f} min; {len(ran)} step(s) ran, {len(cached)} cached"
             + (f" ({', '.join(cached)})" if cached else "")]
    if unstored:
        lines.append(f"cache: the result(s) of {', '.join(unstored)} could not be stored (see the flow's log): the "
                     "next run runs them again")
    model = None
    register = next((s for s in stages if s.command == REGISTER_COMMAND), None)
    promotion_file = run.run_dir / "promotion.json"
    if register is not None and promotion_file.is_file():
        registered = json.loads((run.root / register.outs[0]).read_text())
        decision = json.loads(promotion_file.read_text())
        alias = "champion" if str(decision.get("champion_version")) == str(registered["version"]) else "challenger"
        model = {"name": registered["name"], "version": str(registered["version"]), "alias": alias,
                 "promoted": bool(decision.get("promoted")), "reasons": decision.get("reasons", [])}
        verdict = "promoted" if model["promoted"] else "not promoted"
        lines.append(f"model: {model['name']} version {model['version']} is the {alias} ({verdict}: "
                     f"{'; '.join(model['reasons']) or 'no reasons given'}); load it with "
                     f"mlflow.pyfunc.load_model('models:/{model['name']}@{alias}')")
    report_dir = run.run_dir / "report"
    if report_dir.is_dir():
        pages = sorted(str(p) for p in report_dir.glob("report.*")) or [str(report_dir)]
        lines.append(f"report: {', '.join(pages)}")
    lines.append(f"logs: {run.run_dir / 'logs'}")
    if tracking_uri.startswith("sqlite:"):
        lines.append(f"MLflow: run {run.parent_run_id}; browse with `.venv/bin/mlflow ui --backend-store-uri "
                     f"{tracking_uri} --host 127.0.0.1 --port 5000`, then open http://127.0.0.1:5000")
    else:
        lines.append(f"MLflow: run {run.parent_run_id} at {tracking_uri}")
    lines.append(f"DVC: dvc.lock sha256 {revision['lock_sha256'][:12]}, pushed to {revision['remote']}; "
                 f"dvc status: {revision['dvc_status']}; dvc status -c (that remote): {revision['remote_status']}")
    markdown = "\n".join(f"- {line}" for line in lines)
    return {"run": run.name, "parent_run_id": run.parent_run_id, "variant": variant, "model": model,
            "stages": {n: r["status"] for n, r in records.items()}, "results_not_stored": unstored,
            "revision": revision, "lines": lines,
            "markdown": markdown}
