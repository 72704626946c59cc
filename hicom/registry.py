"""MLflow beyond a stage's own metrics: the registered model, its aliases, the promotion gate, and
reading a pipeline's runs back for reports.

Registration logs the final model as an MLflow 3 LoggedModel (pyfunc flavour, hicom.serving), creates
a new version of the registered model and points the `challenger` alias at it. The version carries
its evaluation and efficiency metrics and its question-set hashes as tags; its run keeps each
evaluation's results.json (with the per-question records) as the artifact `eval/<benchmark>/results.json`,
which the gate reads back to pair challenger and champion question by question. Promotion moves
`champion` only when the gate passes; the first version becomes champion.
"""
from __future__ import annotations

import dataclasses
import json
import tempfile
import time
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

# hicom.tracking first: it switches MLflow's telemetry off, which MLflow reads when it is imported (its client
# would write an installation id under $HOME).
from hicom.tracking import (
    PROJECT_ROOT,
    Tracker,
    artifact_store_errors,
    default_tracking_uri,
)

import mlflow
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from hicom.core.errors import ConfigError
from hicom.gate.decision import (
    ACCURACY_PREFIX,
    EFFICIENCY_PREFIX,
    GATE_PREFIX,
    LATENCY,
    QUESTION_SET_PREFIX,
    UNCHANGED,
    VISUAL_TOKENS,
    Candidate,
    GateDecision,
    benchmark_keys,
    gate_decision,
    read_evaluation,
)
from hicom.gate.settings import GateConfig

CHALLENGER, CHAMPION = "challenger", "champion"
# What the served model imports (hicom.serving); pinned to the versions it was logged with. Passing them
# also keeps MLflow from inferring requirements, which loads the model and takes 10+ s.
SERVING_DISTRIBUTIONS = ("mlflow", "torch", "transformers", "tokenizers", "safetensors", "einops", "numpy",
                         "pandas", "av", "decord", "pillow", "pyyaml", "tqdm")
REGISTERED_MODEL_DESCRIPTION = (
    "HICom video-LLM (instruction-conditioned video token compression). Loaded with "
    "mlflow.pyfunc.load_model('models:/NAME@champion'), it answers a question about a video: input columns "
    "video (path), question, options (optional list, A first); output reply, choice (letter), answer. "
    "Aliases: champion = the version that passed the promotion gate; challenger = the latest registered.")



# -- registration and promotion ------------------------------------------------------------------
def _client() -> MlflowClient:
    """A client on the project's store; MLflow's fluent model logging and `models:/` loading use the same one."""
    uri = default_tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(uri)


def serving_requirements() -> list[str]:
    return [f"{dist}=={metadata.version(dist)}" for dist in SERVING_DISTRIBUTIONS]


def register_model(*, model_dir: str | Path, towers_dir: str | Path, name: str, metrics: dict[str, float],
                   settings: dict, question_sets: dict[str, str] | None = None,
                   attachments: dict[str, Path] | None = None, experiment: str = "hicom",
                   parent_run_id: str | None = None, profile: str | None = None) -> dict:
    """Log the model (pyfunc), register a new version of `name` with its metrics as tags, alias it `challenger`.

    settings: the served model's model_config (see hicom.serving.VideoQAModel).
    question_sets: {benchmark: question-set hash} of the evaluations, kept as version tags.
    attachments: {artifact path: file} logged with the register run (the evaluation and profile results; the
    gate reads `eval/<benchmark>/results.json` back).
    Returns {name, version, run_id, model_uri, model_id}.
    """
    from hicom import serving
    from hicom.data.tokenizer import load_tokenizer
    from hicom.data.video import FramePreprocessor
    from hicom.serving import MODEL_ARTIFACT, SIGNATURE, TOWERS_ARTIFACT

    model_dir, towers_dir = Path(model_dir), Path(towers_dir)
    for path, what in ((model_dir / "config.json", "a saved HICom model"), (towers_dir, "the towers directory")):
        if not path.exists():
            raise FileNotFoundError(f"{path}: not found ({what})")
    client = _client()
    tags = {"stage": "register", "registered_model": name, **({"profile": profile} if profile else {})}
    with Tracker(experiment=experiment, run_name="register", parent_run_id=parent_run_id, tags=tags,
                 system_metrics=False) as tracker, tempfile.TemporaryDirectory() as tmp:
        # Only what inference needs from the towers: the instruction tokenizer and the frame preprocessor
        # (the tower weights are inside the saved model).
        towers = Path(tmp) / TOWERS_ARTIFACT
        load_tokenizer(towers_dir).save_pretrained(towers)
        FramePreprocessor.from_pretrained(towers_dir).save_pretrained(towers)
        tracker.log_params({"model_dir": str(model_dir), "towers_dir": str(towers_dir), "registered_model": name})
        for artifact_path, file in (attachments or {}).items():
            tracker.log_artifact(file, artifact_path)
        with mlflow.start_run(run_id=tracker.run_id), warnings.catch_warnings(), \
                artifact_store_errors(f"logging model {name} to run {tracker.run_id}"):
            # An input example would be a video file that a consumer of the model does not have.
            warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
            info = mlflow.pyfunc.log_model(
                name=name, python_model=serving.__file__, signature=SIGNATURE, model_config=settings,
                artifacts={MODEL_ARTIFACT: str(model_dir), TOWERS_ARTIFACT: str(towers)},
                code_paths=[str(PROJECT_ROOT / "hicom")], pip_requirements=serving_requirements(),
                tags=tags)
        now = int(time.time() * 1000)
        client.log_batch(tracker.run_id, metrics=[Metric(k, v, now, 0, model_id=info.model_id)
                                                  for k, v in sorted(metrics.items())])
        result = register_version(name, model_uri=info.model_uri, model_id=info.model_id, run_id=tracker.run_id,
                                  metrics=metrics, question_sets=question_sets)
        tracker.set_tags({"registered_model_version": result["version"], "model_id": info.model_id})
    return result


def register_version(name: str, *, model_uri: str, model_id: str, run_id: str, metrics: dict[str, float],
                     question_sets: dict[str, str] | None = None) -> dict:
    """A new version of `name` from a logged model, with the gate's metrics, question-set hashes and provenance as
    version tags and a readable description; the `challenger` alias moves to it.
    Returns {name, version, run_id, model_uri, model_id}.
    """
    client = _client()
    try:
        client.create_registered_model(name, description=REGISTERED_MODEL_DESCRIPTION)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
            raise
    run_tags = client.get_run(run_id).data.tags
    provenance = {key: run_tags[tag] for key, tag in (("git_commit", "env.git_commit"), ("git_dirty", "env.git_dirty"),
                                                      ("profile", "profile"), ("pipeline_run_id", MLFLOW_PARENT_RUN_ID))
                  if tag in run_tags}
    shown = [_accuracy_text(metrics, key) for key in benchmark_keys(metrics)]
    shown += [f"{key}: {metrics[key]:g}" for key in (VISUAL_TOKENS, LATENCY) if key in metrics]
    description = (f"Registered by run {run_id} (pipeline {provenance.get('pipeline_run_id', '-')}, git "
                   f"{provenance.get('git_commit', 'unknown')[:12]}, profile {provenance.get('profile', '-')}).\n"
                   + ("\n".join(shown) or "No evaluation or efficiency metrics were given."))
    version = client.create_model_version(name, source=model_uri, run_id=run_id, model_id=model_id,
                                          tags={**{k: repr(v) for k, v in metrics.items()}, **provenance,
                                                **{f"{QUESTION_SET_PREFIX}{b}": h
                                                   for b, h in (question_sets or {}).items()}},
                                          description=description)
    client.set_registered_model_alias(name, CHALLENGER, version.version)
    return {"name": name, "version": str(version.version), "run_id": run_id,
            "model_uri": f"models:/{name}/{version.version}", "model_id": model_id}


def _accuracy_text(metrics: dict[str, float], key: str) -> str:
    """"accuracy/b: 0.4800 [95% CI 0.3600, 0.6000], n=60", the interval where the metrics have it."""
    low, high, n = (metrics.get(f"{key}/{part}") for part in ("ci_low", "ci_high", "n"))
    interval = f" [95% CI {low:.4f}, {high:.4f}]" if low is not None and high is not None else ""
    return f"{key}: {metrics[key]:.4f}{interval}" + (f", n={n:.0f}" if n is not None else "")


def version_metrics(client: MlflowClient, name: str, version: str) -> dict[str, float]:
    """The gate's metrics stored as tags on a model version."""
    try:
        tags = client.get_model_version(name, version).tags
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise ConfigError(f"registered model {name!r} has no version {version!r}") from None
        raise
    return {k: float(v) for k, v in tags.items() if k.startswith((ACCURACY_PREFIX, EFFICIENCY_PREFIX))}


def version_candidate(client: MlflowClient, name: str, version: str) -> Candidate:
    """A version's metrics (tags) and its evaluations' per-question records (its run's eval/<benchmark>/results.json
    artifacts), each benchmark without records named with the reason."""
    metrics = version_metrics(client, name, version)
    run_id = client.get_model_version(name, version).run_id
    label = f"version {version}"
    evaluations, unavailable = {}, {}
    for key in benchmark_keys(metrics):
        benchmark = key[len(ACCURACY_PREFIX):]
        path = f"eval/{benchmark}/results.json"
        if path not in {item.path for item in client.list_artifacts(run_id, f"eval/{benchmark}")}:
            unavailable[benchmark] = f"its run {run_id} has no artifact {path} (registered without its evaluation)"
            continue
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
            results = json.loads(Path(local).read_text())
        source = f"{label} ({path} of run {run_id})"
        try:
            evaluations[benchmark] = read_evaluation(results, source)
        except ConfigError as exc:  # kept before per-question records were: the gate says why it cannot pair
            unavailable[benchmark] = str(exc).removeprefix(f"{source}: ")
    return Candidate(label, metrics, evaluations, unavailable)


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """The version an alias points at, or None when the alias is not set."""
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise ConfigError(f"registered model {name!r} does not exist in {default_tracking_uri()}") from None
        raise
    version = aliases.get(alias)
    return None if version is None else str(version)


def promote(*, name: str, version: str | None, gate: GateConfig, experiment: str = "hicom",
            parent_run_id: str | None = None) -> dict:
    """Run the gate for `version` (default: the `challenger`) against the `champion`; move `champion` if it passes.

    The decision, its reasons and each benchmark's paired numbers (n, difference, interval, method, question set)
    are logged on a `promote` run (tags + promotion.json) and as version tags. A challenger without per-question
    records, or with fewer than registry.gate.min_questions, is refused before anything is logged.
    Returns {promoted, outcome, reasons, comparisons, champion_version, challenger_version,
    previous_champion_version}.
    """
    client = _client()
    champion_version = alias_version(client, name, CHAMPION)
    version = str(version) if version is not None else alias_version(client, name, CHALLENGER)
    if version is None:
        raise ConfigError(f"registered model {name!r} has no {CHALLENGER!r} alias: pass --version")
    challenger = version_candidate(client, name, version)
    if champion_version == version:
        decision = GateDecision(UNCHANGED, [f"version {version} is already the champion"])
    else:
        champion = version_candidate(client, name, champion_version) if champion_version else None
        decision = gate_decision(challenger, champion, gate)
    promoted = decision.passed
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, version)
    result = {"promoted": promoted, "outcome": decision.outcome, "reasons": decision.reasons,
              "comparisons": decision.comparisons,
              "champion_version": version if promoted else champion_version,
              "challenger_version": version, "previous_champion_version": champion_version}
    numbers = decision_tags(decision)
    with Tracker(experiment=experiment, run_name="promote", parent_run_id=parent_run_id, system_metrics=False,
                 tags={"stage": "promote", "registered_model": name, "challenger_version": version,
                       "champion_version_before": champion_version or "none",
                       "promotion": decision.outcome}) as tracker:
        tracker.log_params({"gate": dataclasses.asdict(gate)})
        tracker.log_dict({**result, "name": name, "gate": dataclasses.asdict(gate)}, "promotion.json")
        tracker.set_tags({"promotion.reasons": "\n".join(decision.reasons), **numbers})
    for key, value in {"promotion": decision.outcome, "promotion.reasons": "\n".join(decision.reasons),
                       "promotion.compared_with": champion_version or "none", "promotion.run_id": tracker.run_id,
                       **numbers}.items():
        client.set_model_version_tag(name, version, key, value)
    return result


def decision_tags(decision: GateDecision) -> dict[str, str]:
    """gate/<benchmark>/<field>: each paired comparison's verdict, n, difference, interval, method and set hash."""
    fields = ("verdict", "n", "videos", "difference", "ci_low", "ci_high", "margin", "mcnemar_p", "method",
              "question_set")
    return {f"{GATE_PREFIX}{benchmark}/{field}": str(numbers[field])
            for benchmark, numbers in decision.comparisons.items() for field in fields if field in numbers}


# -- reading a pipeline back ---------------------------------------------------------------------
@dataclass
class RunRecord:
    """One MLflow run, as plain data for reports."""

    run_id: str
    name: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # latest values

    @property
    def stage(self) -> str | None:
        return self.tags.get("stage")


def _record(run) -> RunRecord:
    return RunRecord(run.info.run_id, run.info.run_name or run.info.run_id[:8], run.info.status,
                     run.info.start_time or 0, dict(run.data.tags), dict(run.data.params), dict(run.data.metrics))


def pipeline_runs(parent_run_id: str) -> tuple[RunRecord, list[RunRecord]]:
    """A pipeline's parent run and its child runs (oldest first)."""
    client = _client()
    try:
        parent = client.get_run(parent_run_id)
    except MlflowException as exc:
        if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise ConfigError(f"run {parent_run_id!r} not found in {default_tracking_uri()}") from None
        raise
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`{MLFLOW_PARENT_RUN_ID}` = '{parent_run_id}'",
                                  order_by=["attributes.start_time ASC"], max_results=1000)
    return _record(parent), [_record(run) for run in children]


def metric_history(run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of a metric, in step order."""
    return sorted((m.step, m.value) for m in _client().get_metric_history(run_id, key))


def json_artifacts(run_id: str, filenames: tuple[str, ...]) -> list[tuple[str, dict]]:
    """(artifact path, content) of every JSON artifact with one of these file names, through all of a run's folders."""
    client = _client()
    found, folders = [], [None]
    while folders:
        for item in client.list_artifacts(run_id, folders.pop()):
            if item.is_dir:
                folders.append(item.path)
            elif Path(item.path).name in filenames:
                with tempfile.TemporaryDirectory() as tmp:
                    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=item.path, dst_path=tmp)
                    found.append((item.path, json.loads(Path(local).read_text())))
    return sorted(found, key=lambda pair: pair[0])


def log_folder(run_id: str, folder: str | Path, artifact_path: str) -> None:
    """Copy a folder's files into a run's artifacts (a report into its pipeline run)."""
    with artifact_store_errors(f"logging {folder} to run {run_id}"):
        _client().log_artifacts(run_id, str(folder), artifact_path)
