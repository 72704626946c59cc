"""The one module through which every stage logs to MLflow.

Stages take a `Tracker` and call it unconditionally: with tracking off, or on any torchrun rank but 0, every
method is a no-op, so a stage runs the same without a tracking server and only one process writes to a run.
All MLflow calls go through an explicit `MlflowClient` (no fluent global "active run"), so a pipeline's
parent run and a stage's child run can be open in one process at once.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import re
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

# No usage data leaves the machine. Set before mlflow is imported: it starts its telemetry client at import.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# A progress bar for each artifact read or written: our reads are single small JSON files (results, metrics), and
# the bars buried `compare`'s table and filled the stages' log files. `...=true` brings them back.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow.telemetry  # noqa: E402
from mlflow.entities import (  # noqa: E402
    Dataset,
    DatasetInput,
    InputTag,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.entities.lifecycle_stage import LifecycleStage  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, ErrorCode  # noqa: E402
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402
from mlflow.tracking.context.registry import resolve_tags  # noqa: E402
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID  # noqa: E402
from mlflow.utils.validation import (  # noqa: E402
    MAX_DATASET_DIGEST_SIZE,
    MAX_ENTITY_KEY_LENGTH,
    MAX_PARAM_VAL_LENGTH,
    MAX_TAG_VAL_LENGTH,
)
from sqlalchemy.engine import make_url  # noqa: E402

# Drop a telemetry client that an earlier `import mlflow` (before the off-switches above) may have started.
mlflow.telemetry.set_telemetry_client()

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ENV_DISTRIBUTIONS = ("torch", "transformers", "deepspeed", "mlflow", "decord", "av", "numpy")
SYSTEM_METRICS_INTERVAL_S = 5.0  # overridden by $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
FULL_DIGEST_TAG = "digest"  # input tag holding the whole digest: MLflow keeps at most 36 characters of it

_log = logging.getLogger(__name__)


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the project's own sqlite store, so runs land in one place without a server."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT}/mlflow.db"


class ArtifactStoreError(MlflowException):
    """The tracking server answers, but the artifact store behind it (the stack's S3) does not."""


@contextlib.contextmanager
def artifact_store_errors(what: str):
    """An upload that the tracking server's artifact proxy failed (HTTP 5xx on mlflow-artifacts/...) is an
    ArtifactStoreError naming the store, not MLflow's bare "too many 500 error responses"."""
    try:
        yield
    except MlflowException as e:
        if "mlflow-artifacts" not in str(e):
            raise
        endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
        store = f"its artifact store (S3 at {endpoint})" if endpoint else "its artifact store"
        raise ArtifactStoreError(f"{what}: the tracking server {default_tracking_uri()} could not write to {store}; "
                                 f"is S3 down? (`make stack-status` checks it). MLflow said: {e}") from e


def run_environment() -> dict[str, str]:
    """What a run needs to be reproduced: library versions, interpreter, host and git state. Never raises."""
    env = {}
    for dist in ENV_DISTRIBUTIONS:
        try:
            env[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            env[dist] = "absent"
    env["python"] = platform.python_version()
    env["hostname"] = socket.gethostname()
    env["platform"] = platform.platform()
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if commit is not None else None
    env["git_commit"] = commit.strip() if commit is not None else "unknown"
    env["git_dirty"] = "unknown" if status is None else str(bool(status.strip())).lower()
    return env


def _git(*args: str) -> str | None:
    """stdout of a read-only git command in the project, or None where git or the repository is missing.

    --no-optional-locks: `git status` must not take the index lock under a developer's feet.
    """
    try:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(PROJECT_ROOT), *args],
                              capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None


def _artifact_root(tracking_uri: str) -> str | None:
    """For a sqlite store, `mlartifacts/` beside the database file (absolute), not MLflow's cwd-relative ./mlruns.

    Other stores (a tracking server) choose their own artifact location.
    """
    if not tracking_uri.startswith("sqlite:"):
        return None
    database = make_url(tracking_uri).database
    if not database or database == ":memory:":
        return None
    return str(Path(database).resolve().parent / "mlartifacts")


def _flatten(params: dict, prefix: str = "") -> dict[str, object]:
    """{"model": {"compressor": {"local": x}}} -> {"model.compressor.local": x}."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        items = _flatten(value, f"{name}.") if isinstance(value, dict) else {name: value}
        for flat_key, flat_value in items.items():
            if flat_key in flat:
                raise ValueError(f"parameter {flat_key!r} is given twice (once as a nested key)")
            flat[flat_key] = flat_value
    return flat


class Tracker:
    """An MLflow run for one stage (or one pipeline), opened with `with`.

    Active only when `enabled` and `rank == 0`; otherwise every method is a no-op and `run_id` stays None.
    parent_run_id: start a nested child run of that run, in the parent's experiment (MLflow shows nesting only
        within one experiment); a pipeline keeps one parent run and one child per stage.
    resume_run_id: continue that run (a resumed training stage keeps one run), in its own experiment.
    system_metrics: sample CPU/memory/disk/network (and GPU where present) every few seconds into "system/*".
    queue_metrics: log metrics through MLflow's asynchronous queue, for a stream of them (a training loop's steps): a
        step does not wait for the store's write. Closing such a run waits for the queue to drain, up to a second
        more (MLflow's logging thread polls its queue once a second), so a run that logs a few numbers does not queue.
    Every run records `run_environment()` as "env.*" tags when it (re)starts.
    """

    def __init__(self, *, enabled: bool = True, experiment: str = "hicom", run_name: str | None = None,
                 tracking_uri: str | None = None, rank: int = 0, tags: dict | None = None,
                 parent_run_id: str | None = None, resume_run_id: str | None = None, system_metrics: bool = True,
                 queue_metrics: bool = False):
        if parent_run_id and resume_run_id:
            raise ValueError("give parent_run_id (start a child run) or resume_run_id (continue a run), not both")
        self.active = enabled and rank == 0
        self.run_id: str | None = None
        self._experiment = experiment
        self._run_name = run_name
        self._tracking_uri = tracking_uri or default_tracking_uri()
        self._tags = dict(tags or {})
        self._parent_run_id = parent_run_id
        self._resume_run_id = resume_run_id
        self._system_metrics = system_metrics
        self._queue_metrics = queue_metrics
        self._client: MlflowClient | None = None
        self._logged_through: dict[str, int] = {}  # a resumed run: the last step each metric has
        self._monitor = None
        self._open = False

    def __enter__(self) -> Tracker:
        if not self.active:
            return self
        if self._open:
            raise RuntimeError(f"run {self.run_id} is already open; a Tracker opens one run at a time")
        self._client = MlflowClient(self._tracking_uri)
        env_tags = {f"env.{key}": value for key, value in run_environment().items()}
        if self._resume_run_id:
            run = self._client.get_run(self._resume_run_id)
            if run.info.lifecycle_stage == LifecycleStage.DELETED:
                raise MlflowException(f"cannot resume run {self._resume_run_id}: it is deleted")
            self.run_id = run.info.run_id
            self._logged_through = {key: max(m.step for m in self._client.get_metric_history(self.run_id, key))
                                    for key in run.data.metrics}
            self._client.update_run(self.run_id, status=RunStatus.to_string(RunStatus.RUNNING), name=self._run_name)
            self._open = True
            self.set_tags({**env_tags, **self._tags})
        else:
            tags = {**env_tags, **self._tags}
            if self._parent_run_id:
                experiment_id = self._client.get_run(self._parent_run_id).info.experiment_id
                tags[MLFLOW_PARENT_RUN_ID] = self._parent_run_id
            else:
                experiment_id = self._experiment_id()
            # resolve_tags adds what mlflow.start_run would: mlflow.user, mlflow.source.*
            tags = {k: _truncate(v, MAX_TAG_VAL_LENGTH) for k, v in resolve_tags(tags).items()}
            run = self._client.create_run(experiment_id, run_name=self._run_name, tags=tags)
            self.run_id = run.info.run_id
            self._open = True
        if self._system_metrics:
            self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S,
                                                 resume_logging=self._resume_run_id is not None,
                                                 tracking_uri=self._tracking_uri)
            self._monitor.start()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self._open:
            return
        try:
            if self._monitor is not None:
                self._monitor.finish()  # flushes its last samples while the run is still RUNNING
                self._monitor = None
        finally:
            self._open = False
            status = RunStatus.FINISHED if exc_type is None else RunStatus.FAILED
            self._client.set_terminated(self.run_id, RunStatus.to_string(status))

    def _experiment_id(self) -> str:
        """The experiment's id, created (artifacts beside a sqlite store) on first use."""
        experiment = self._client.get_experiment_by_name(self._experiment)
        if experiment is None:
            try:
                return self._client.create_experiment(self._experiment,
                                                      artifact_location=_artifact_root(self._tracking_uri))
            except MlflowException as e:  # another process created it between our look-up and create
                if e.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                    raise
                experiment = self._client.get_experiment_by_name(self._experiment)
        if experiment.lifecycle_stage == LifecycleStage.DELETED:
            raise MlflowException(f"experiment {self._experiment!r} is deleted: restore it (mlflow experiments "
                                  f"restore) or pick another name")
        return experiment.experiment_id

    def _logging(self) -> bool:
        """Whether to log: False when inactive; an active Tracker must be inside its `with`."""
        if not self.active:
            return False
        if not self._open:
            raise RuntimeError("Tracker methods need an open run: use `with Tracker(...) as tracker:`")
        return True

    def log_params(self, params: dict) -> None:
        """Log a (nested) config as flat "a.b.c" params.

        A key the run already has (a resumed run logs its config again) is skipped when the value is the same;
        a changed value is kept as tag "param_changed.<key>", since MLflow params cannot change.
        """
        if not self._logging():
            return
        existing = self._client.get_run(self.run_id).data.params
        new, changed = [], []
        for key, value in _flatten(params).items():
            value = _truncate(value, MAX_PARAM_VAL_LENGTH)
            if key not in existing:
                new.append(Param(key, value))
            elif existing[key] != value:
                _log.warning("param %s was %r in run %s, now %r: logged as tag param_changed.%s",
                             key, existing[key], self.run_id, value, key)
                changed.append(RunTag(f"param_changed.{key}", value))
        if new or changed:
            self._client.log_batch(self.run_id, params=new, tags=changed)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log metrics at `step`; a NaN/inf (a diverging loss) is skipped with a warning rather than stored.

        In a resumed run, a step the run already has for a metric is skipped: training replays the steps
        between its last checkpoint and the crash, and MLflow would otherwise hold them twice.
        With queue_metrics the batch is queued (MLflow's asynchronous logging); closing the run (MLflow's
        set_terminated) waits for every queued batch."""
        if not self._logging():
            return
        timestamp = int(time.time() * 1000)
        batch = []
        for key, value in metrics.items():
            if step is not None and step <= self._logged_through.get(key, -1):
                continue
            value = float(value)
            if math.isfinite(value):
                batch.append(Metric(key, value, timestamp, step or 0))
            else:
                _log.warning("metric %s=%s at step %s is not finite: not logged", key, value, step)
        if batch:
            self._client.log_batch(self.run_id, metrics=batch, synchronous=not self._queue_metrics)

    def log_input(self, *, name: str, digest: str, source: str, context: str, num_rows: int | None = None,
                  schema: dict | None = None) -> None:
        """Record an input dataset by our own identity (manifest content hash, where it lives), loading no data.

        source: a path (source type "local") or a URI, whose scheme is the source type ("dvc://outputs/x@rev").
        MLflow stores at most 36 characters of a digest; the whole digest is also the input tag "digest".
        context: what the data was used for ("train", "eval").
        """
        if not self._logging():
            return
        scheme = urlsplit(source).scheme
        dataset = Dataset(
            name=name, digest=digest[:MAX_DATASET_DIGEST_SIZE],
            source_type=scheme if scheme not in ("", "file") else "local",
            source=json.dumps({"uri": source}),  # the shape of MLflow's own filesystem sources
            schema=json.dumps(schema, sort_keys=True) if schema is not None else None,
            profile=json.dumps({"num_rows": num_rows}) if num_rows is not None else None,
        )
        tags = [InputTag(MLFLOW_DATASET_CONTEXT, context), InputTag(FULL_DIGEST_TAG, digest)]
        self._client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags)])

    def log_artifact(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Copy a file, or a directory (kept under its own name), into the run's artifacts."""
        if not self._logging():
            return
        if not Path(path).exists():
            raise FileNotFoundError(f"artifact to log does not exist: {path}")
        with artifact_store_errors(f"logging {path} to run {self.run_id}"):
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, data: dict, artifact_file: str) -> None:
        """Write `data` as a JSON (or .yaml/.yml) artifact."""
        if self._logging():
            with artifact_store_errors(f"logging {artifact_file} to run {self.run_id}"):
                self._client.log_dict(self.run_id, data, artifact_file)

    def log_table(self, data: dict[str, list], artifact_file: str) -> None:
        """A table (column -> values) as a JSON artifact that MLflow's UI shows as a table (mlflow.log_table)."""
        if self._logging():
            self._client.log_table(self.run_id, data, artifact_file)

    def set_tags(self, tags: dict) -> None:
        """Set run tags; values are str()-ed and truncated to MLflow's limit."""
        if self._logging() and tags:
            self._client.log_batch(self.run_id, tags=[RunTag(k, _truncate(v, MAX_TAG_VAL_LENGTH))
                                                      for k, v in tags.items()])


def _truncate(value: object, limit: int) -> str:
    return str(value)[:limit]


def metric_name(*parts: object) -> str:
    """A valid MLflow metric key from free-text parts ("Humanity & History" -> "Humanity_History"), joined by "/".

    MLflow allows alphanumerics, "_", "-", ".", " " and "/" and rejects "." or ".." path segments; each part
    keeps its letters, digits, "_", "-" and "." (runs of anything else become one "_"), so parts never merge.
    """
    segments = []
    for part in parts:
        segment = re.sub(r"[^\w.\-]+", "_", str(part), flags=re.ASCII).strip("_")
        segments.append(segment if segment.strip(".") else "_")
    name = "/".join(segments)
    if len(name) > MAX_ENTITY_KEY_LENGTH:
        raise ValueError(f"metric name {name[:60]!r}... is longer than MLflow's {MAX_ENTITY_KEY_LENGTH} characters")
    return name
