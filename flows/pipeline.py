"""The pipeline the flows run: stages read from dvc.yaml, settings from params.yaml `pipeline:`, ablation variants.

dvc.yaml is the one table of stage commands: DVC resolves it (templating, `foreach`) and orders it (its
graph); the flow parses each resolved `python -m hicom ...` / `torchrun ... -m hicom ...` command into
the argv an executor runs. `dvc repro` and the flow therefore run the same commands with the same
deps, params and outs, and a stage's cache key is built from exactly what DVC tracks for it.
"""
from __future__ import annotations

import contextlib
import copy
import fnmatch
import glob
import hashlib
import json
import logging
import os
import re
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from hicom.core.errors import ConfigError
from hicom.core.files import atomic_write_text
from hicom.params import Params

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VARIANTS_DIR = "outputs/variants"  # an ablation variant's own outputs: VARIANTS_DIR/<variant>/...
EXECUTORS = ("local", "slurm", "kubernetes")
# Stage exit codes that mean "try again unchanged" (sysexits EX_TEMPFAIL), besides NODE_FAIL/PREEMPTED.
TRANSIENT_EXIT_CODES = frozenset({75})
_GLOB_CHARS = re.compile(r"[*?\[]")


class PipelineError(ConfigError):
    """The pipeline definition (dvc.yaml, `pipeline:` params, a variant) is wrong; the message names what."""


# -- settings ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resources:
    """Where a command runs: torchrun processes come from its dvc.yaml cmd; nodes/GPUs matter on clusters."""

    nodes: int = 1
    processes_per_node: int = 1
    gpus_per_node: int = 0


@dataclass(frozen=True)
class Ablation:
    """A named change (Tables A3-A5): params to set, and stages to skip (their output replaced by a path)."""

    set: dict[str, Any] = field(default_factory=dict)
    skip: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PipelineSettings:
    """params.yaml `pipeline:`, checked strictly (unknown keys and wrong types are errors naming the key)."""

    experiment: str = "hicom-pipeline"
    executor: str = "local"
    schedule_cron: str = "0 3 * * 1"
    schedule_timezone: str = "UTC"
    benchmarks: dict[str, dict] = field(default_factory=dict)
    resources: dict[str, Resources] = field(default_factory=dict)
    retries: int = 2
    retry_delay_s: float = 30.0
    stage_timeout_s: int = 6 * 3600
    timeout_s: int = 24 * 3600
    ablations: dict[str, Ablation] = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: dict) -> PipelineSettings:
        data = params.get("pipeline")
        if data is None:
            return cls()
        _expect(data, dict, "pipeline")
        _known(data, ("experiment", "executor", "schedule", "benchmarks", "resources", "retries", "retry_delay_s",
                      "stage_timeout_s", "timeout_s", "ablations"), "pipeline")
        kwargs: dict[str, Any] = {}
        for key in ("experiment", "executor"):
            if key in data:
                kwargs[key] = _expect(data[key], str, f"pipeline.{key}")
        if kwargs.get("executor", "local") not in EXECUTORS:
            raise PipelineError(f"pipeline.executor: {kwargs['executor']!r} is not one of {', '.join(EXECUTORS)}")
        for key in ("retries", "stage_timeout_s", "timeout_s"):
            if key in data:
                kwargs[key] = _expect(data[key], int, f"pipeline.{key}", minimum=0 if key == "retries" else 1)
        if "retry_delay_s" in data:
            kwargs["retry_delay_s"] = float(_expect(data["retry_delay_s"], (int, float), "pipeline.retry_delay_s",
                                                    minimum=0))
        if "schedule" in data:
            schedule = _expect(data["schedule"], dict, "pipeline.schedule")
            _known(schedule, ("cron", "timezone"), "pipeline.schedule")
            kwargs["schedule_cron"] = _expect(schedule.get("cron", cls.schedule_cron), str, "pipeline.schedule.cron")
            kwargs["schedule_timezone"] = _expect(schedule.get("timezone", cls.schedule_timezone), str,
                                                  "pipeline.schedule.timezone")
            _check_cron(kwargs["schedule_cron"], kwargs["schedule_timezone"])
        if "benchmarks" in data:
            benchmarks = _expect(data["benchmarks"], dict, "pipeline.benchmarks")
            for name, spec in benchmarks.items():
                _expect(spec, dict, f"pipeline.benchmarks.{name}")
                _known(spec, ("data", "protocol"), f"pipeline.benchmarks.{name}")
                _expect(spec.get("data"), str, f"pipeline.benchmarks.{name}.data")
                if "protocol" in spec:  # evaluate --protocol (dvc.yaml passes it where its command names it)
                    _expect(spec["protocol"], str, f"pipeline.benchmarks.{name}.protocol")
            kwargs["benchmarks"] = benchmarks
        if "resources" in data:
            resources = {}
            for command, spec in _expect(data["resources"], dict, "pipeline.resources").items():
                where = f"pipeline.resources.{command}"
                _expect(spec, dict, where)
                _known(spec, ("nodes", "processes_per_node", "gpus_per_node"), where)
                resources[command] = Resources(**{k: _expect(v, int, f"{where}.{k}", minimum=0 if k == "gpus_per_node"
                                                             else 1) for k, v in spec.items()})
            kwargs["resources"] = resources
        if "ablations" in data:
            ablations = {}
            for name, spec in _expect(data["ablations"], dict, "pipeline.ablations").items():
                where = f"pipeline.ablations.{name}"
                _expect(spec, dict, where)
                _known(spec, ("set", "skip"), where)
                sets = _expect(spec.get("set", {}), dict, f"{where}.set")
                skip = _expect(spec.get("skip", {}), dict, f"{where}.skip")
                for stage, path in skip.items():
                    _expect(path, str, f"{where}.skip.{stage}")
                ablations[name] = Ablation(set=dict(sets), skip=dict(skip))
            kwargs["ablations"] = ablations
        return cls(**kwargs)

    def resources_for(self, command: str) -> Resources:
        return self.resources.get(command, Resources())


def _expect(value: Any, types, where: str, minimum: float | None = None):
    """`value` if it has one of `types` (bool is not an int here), else a PipelineError naming `where`."""
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types or not isinstance(value, types):
        names = " or ".join(t.__name__ for t in types)
        raise PipelineError(f"params.yaml: {where}: expected {names}, got {value!r}")
    if minimum is not None and value < minimum:
        raise PipelineError(f"params.yaml: {where}: must be at least {minimum}, got {value!r}")
    return value


def _known(data: dict, keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise PipelineError(f"params.yaml: {where}.{unknown[0]}: unknown key (known: {', '.join(keys)})")


def _check_cron(cron: str, timezone: str) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValueError as exc:
        raise PipelineError(f"params.yaml: pipeline.schedule: {cron!r} ({timezone}) is not a valid cron schedule: "
                            f"{exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}") from None


def load_checked_params(params_file: Path) -> tuple[dict, PipelineSettings]:
    """params.yaml validated as a whole (hicom's schema, then `pipeline:`): fails before any work starts."""
    params = Params.load(params_file).raw
    return params, PipelineSettings.from_params(params)


# -- stages --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stage:
    """One stage command, as the flow runs it.

    argv: what follows `python -m <module>` (relative paths are relative to the project).
    params_file: None for params.yaml; an ablation variant passes its own file with `--params`.
    tracked: its outs are the baseline's, versioned by DVC (dvc commit + push after it runs).
    """

    name: str
    module: str
    argv: tuple[str, ...]
    nproc_per_node: int
    deps: tuple[str, ...]
    params: tuple[str, ...]
    outs: tuple[str, ...]
    persist: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    params_file: str | None = None
    tracked: bool = True

    @property
    def command(self) -> str:
        """The hicom subcommand (train, evaluate, ...), which picks the stage's resources."""
        return self.argv[0]

    def job_argv(self, workdir: Path) -> list[str]:
        """argv with `--params` for a variant and globs expanded as the shell running a dvc.yaml cmd would."""
        argv = ["--params", self.params_file] if self.params_file else []
        for token in self.argv:
            matches = sorted(glob.glob(token, root_dir=workdir)) if _GLOB_CHARS.search(token) else []
            argv.extend(matches or [token])
        return argv


def load_stages(root: Path) -> list[Stage]:
    """The project's dvc.yaml stages in run order (DVC's graph; file order among independent stages)."""
    import networkx as nx
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    dvc_yaml = (root / "dvc.yaml").resolve()
    with Repo(str(root)) as repo:
        stages = [s for s in repo.index.stages if isinstance(s, PipelineStage) and Path(s.path).resolve() == dvc_yaml]
        position = {s: i for i, s in enumerate(stages)}
        graph = repo.index.graph.reverse(copy=True).subgraph(stages)
        ordered = nx.lexicographical_topological_sort(graph, key=lambda s: position[s])
        result = []
        for s in ordered:
            module, nproc, argv = parse_cmd(s.name, s.cmd)
            params = []
            for dep in s.deps:
                if isinstance(dep, ParamsDependency):
                    if Path(dep.def_path).name != "params.yaml":
                        raise PipelineError(f"dvc.yaml stage {s.name!r}: params from {dep.def_path} are not "
                                            "supported (the stage CLIs read params.yaml)")
                    params.extend(dep.params or [])
            result.append(Stage(
                name=s.name, module=module, argv=tuple(argv), nproc_per_node=nproc,
                deps=tuple(str(d.def_path) for d in s.deps if not isinstance(d, ParamsDependency)),
                params=tuple(params), outs=tuple(str(o.def_path) for o in s.outs),
                persist=tuple(str(o.def_path) for o in s.outs if o.persist),
                metrics=tuple(str(o.def_path) for o in s.outs if o.metric)))
    return result


def parse_cmd(stage: str, cmd: str) -> tuple[str, int, list[str]]:
    """(module, processes per node, argv) of `[...]python -m M ARGS` or `[...]torchrun [OPTS] -m M ARGS`."""
    def fail(why: str) -> PipelineError:
        return PipelineError(f"dvc.yaml stage {stage!r}: {why}; the flow runs `python -m hicom ...` or `torchrun "
                             f"--nproc_per_node N -m hicom ...` commands through an executor, got: {cmd}")

    try:
        tokens = shlex.split(cmd)
    except ValueError as exc:
        raise fail(f"cannot split the command ({exc})") from None
    if any(t in ("&&", "||", ";", "|", ">", ">>", "<") for t in tokens):
        raise fail("shell operators are not supported")
    if len(tokens) < 3 or "-m" not in tokens:
        raise fail("no `-m MODULE`")
    launcher = Path(tokens[0]).name
    m = tokens.index("-m")
    if m + 1 >= len(tokens) or m + 2 >= len(tokens):
        raise fail("no command after `-m MODULE`")
    module, argv, options = tokens[m + 1], tokens[m + 2:], tokens[1:m]
    if re.fullmatch(r"python(3(\.\d+)?)?", launcher):
        if options:
            raise fail(f"interpreter options {options} are not supported")
        return module, 1, argv
    if launcher != "torchrun":
        raise fail(f"unknown launcher {tokens[0]!r}")
    nproc = 1
    i = 0
    while i < len(options):
        option = options[i]
        name, _, value = option.partition("=")
        if name in ("--nproc_per_node", "--nproc-per-node"):
            if not value:
                i += 1
                value = options[i] if i < len(options) else ""
            if not value.isdigit() or int(value) < 1:
                raise fail(f"--nproc_per_node {value!r} is not a positive integer")
            nproc = int(value)
        elif option != "--standalone":
            raise fail(f"torchrun option {option!r} is not supported (executors choose how to launch)")
        i += 1
    return module, nproc, argv


# -- variants ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """A pipeline run's changes to the baseline: named ablations plus single `key=value` overrides."""

    ablations: tuple[str, ...] = ()
    overrides: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        if not self.ablations and not self.overrides:
            return "baseline"
        parts = list(self.ablations)
        if self.overrides:
            digest = hashlib.sha256(json.dumps(self.overrides, sort_keys=True, default=str).encode()).hexdigest()
            parts.append(f"set-{digest[:8]}")
        return "+".join(parts)

    @property
    def is_baseline(self) -> bool:
        return self.name == "baseline"


def make_variant(ablations: list[str] | None, overrides: dict[str, Any] | None) -> Variant:
    return Variant(tuple(sorted(set(ablations or ()))), tuple(sorted((overrides or {}).items())))


def get_key(params: dict, key: str, where: str) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PipelineError(f"{where}: {key!r} is not a key of params.yaml")
        node = node[part]
    return node


def _set_key(params: dict, key: str, value: Any, where: str) -> None:
    """Set an existing key, or a new one inside an existing mapping (a field left at its default);
    the variant's params are then validated as a whole, so a misspelt field still fails, by name."""
    parent, _, last = key.rpartition(".")
    node = get_key(params, parent, where) if parent else params
    if not isinstance(node, dict):
        raise PipelineError(f"{where}: {key!r}: {parent!r} is not a mapping in params.yaml")
    node[last] = value


def variant_params(params: dict, settings: PipelineSettings, variant: Variant) -> tuple[dict, dict[str, str]]:
    """The variant's params and the stages it skips ({stage: replacement path}). Unknown names fail here."""
    changed = copy.deepcopy(params)
    skip: dict[str, str] = {}
    sets: list[tuple[str, Any, str]] = []
    for name in variant.ablations:
        if name not in settings.ablations:
            known = ", ".join(sorted(settings.ablations)) or "none"
            raise PipelineError(f"ablation {name!r} is not defined under pipeline.ablations (defined: {known})")
        ablation = settings.ablations[name]
        sets.extend((k, v, f"pipeline.ablations.{name}.set") for k, v in ablation.set.items())
        skip.update(ablation.skip)
    sets.extend((k, v, "override") for k, v in variant.overrides)
    for key, value, where in sets:
        if key == "profile" or key.startswith("pipeline.") or key == "pipeline":
            raise PipelineError(f"{where}: {key!r} cannot vary per run (it shapes dvc.yaml's commands); "
                                "change params.yaml instead")
        _set_key(changed, key, value, where)
    Params(changed, label=f"params.yaml with variant {variant.name!r}")  # validated as a command would read it
    return changed, skip


def plan_variant(stages: list[Stage], base: dict, changed: dict, skip: dict[str, str], variant: Variant,
                 params_file: str) -> list[Stage]:
    """The stages a variant runs: those whose params slice changed, or which read a changed output, get
    `--params params_file` and write under VARIANTS_DIR/<variant>/; the others are the baseline's own
    (same command, same cache key). Skipped stages are dropped; readers of their output read `skip[stage]`."""
    if variant.is_baseline:
        return stages
    names = {s.name for s in stages}
    for name in skip:
        if name not in names:
            raise PipelineError(f"ablation skips stage {name!r}, which dvc.yaml does not define "
                                f"(stages: {', '.join(sorted(names))})")
    prefix = f"{VARIANTS_DIR}/{variant.name}"
    all_outs = [out for stage in stages for out in stage.outs]
    remap: dict[str, str] = {}  # baseline path -> the path this variant reads or writes instead
    planned = []
    for stage in stages:
        if stage.name in skip:
            if len(stage.outs) != 1:
                raise PipelineError(f"ablation skips stage {stage.name!r}, which has {len(stage.outs)} outs; "
                                    "a skipped stage must have exactly one")
            remap[stage.outs[0]] = _remapped(skip[stage.name], remap)
            continue
        argv = tuple(_remap_token(t, remap, all_outs, prefix, stage.name) for t in stage.argv)
        deps = tuple(_remap_token(d, remap, all_outs, prefix, stage.name) for d in stage.deps)
        params_changed = any(get_key(base, k, f"dvc.yaml stage {stage.name!r} params") !=
                             get_key(changed, k, f"dvc.yaml stage {stage.name!r} params") for k in stage.params)
        if not params_changed and argv == stage.argv and deps == stage.deps:
            planned.append(stage)
            continue
        for out in stage.outs:
            remap[out] = _moved(out, prefix)
        planned.append(replace(
            stage, argv=tuple(_remap_token(t, remap, all_outs, prefix, stage.name) for t in stage.argv), deps=deps,
            outs=tuple(remap[o] for o in stage.outs), persist=tuple(remap[o] for o in stage.persist),
            metrics=tuple(remap[o] for o in stage.metrics), params_file=params_file, tracked=False))
    return planned


def _moved(path: str, prefix: str) -> str:
    return f"{prefix}/{path.removeprefix('outputs/')}"


def _remapped(path: str, remap: dict[str, str]) -> str:
    for old in sorted(remap, key=len, reverse=True):
        if path == old or path.startswith(old + "/"):
            return remap[old] + path[len(old):]
    return path


def _remap_token(token: str, remap: dict[str, str], all_outs: list[str], prefix: str, stage: str) -> str:
    """A path at or inside a moved output follows it. A folder above outputs, or a glob over them (expanded
    when the stage runs), moves when every output it covers moved to the variant's directory."""
    direct = _remapped(token, remap)
    if direct != token or "/" not in token:
        return direct
    covered = [out for out in all_outs if _covers(token, out)]
    moved = [out for out in covered if out in remap]
    if not moved:
        return token
    if len(moved) != len(covered) or any(remap[out] != _moved(out, prefix) for out in moved):
        raise PipelineError(f"stage {stage!r}: {token!r} covers outputs this variant moves and outputs it does "
                            "not; list them one by one in dvc.yaml")
    return _moved(token, prefix)


def _covers(token: str, out: str) -> bool:
    """Whether `token` (a path or a shell glob, `*` within one folder) names `out` or a folder above it."""
    depth = token.count("/")
    parts = out.split("/")
    return len(parts) >= depth + 1 and fnmatch.fnmatchcase("/".join(parts[:depth + 1]), token)


def write_variant_params(root: Path, variant: Variant, params: dict) -> str:
    """params.<variant>.yaml beside params.yaml (relative paths inside resolve the same); atomic."""
    name = f"params.{variant.name}.yaml"
    path = root / name
    atomic_write_text(path, f"# Generated by flows/ for the ablation variant {variant.name!r}; do not edit.\n"
                      + yaml.safe_dump(params, sort_keys=False))
    return name


# -- content hashes and cache keys ---------------------------------------------------------------
class ContentHashes:
    """sha256 of files and directory trees, remembered within one pipeline run until a stage rewrites them."""

    def __init__(self, root: Path):
        self.root = root
        self._known: dict[str, str] = {}

    def get(self, path: str) -> str | None:
        """None when the path does not exist."""
        if path not in self._known:
            target = self.root / path
            if target.is_file():
                self._known[path] = _file_sha256(target)
            elif target.is_dir():
                tree = hashlib.sha256()
                for file in sorted(p for p in target.rglob("*") if p.is_file() and not _bytecode(p)):
                    tree.update(f"{file.relative_to(target).as_posix()}\0{_file_sha256(file)}\n".encode())
                self._known[path] = f"{tree.hexdigest()}.dir"
            else:
                return None
        return self._known[path]

    def forget(self, paths) -> None:
        for path in paths:
            for known in [k for k in self._known if k == path or k.startswith(path + "/") or path.startswith(k + "/")]:
                del self._known[known]


def _bytecode(path: Path) -> bool:
    """Python's bytecode cache, written when code is imported: ignored here as in .dvcignore."""
    return path.suffix == ".pyc" or "__pycache__" in path.parts


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(stage: Stage, params: dict, hashes: ContentHashes) -> str:
    """The stage's cache key: its command, its params slice, and the content of every dep (data and code).

    The same inputs DVC keys a stage on; the code version is the content of the code deps dvc.yaml lists.
    """
    deps = {}
    for dep in stage.deps:
        digest = hashes.get(dep)
        if digest is None:
            raise PipelineError(f"stage {stage.name!r}: dependency {dep} does not exist (no earlier stage made it "
                                "and it is not in the project)")
        deps[dep] = digest
    material = {"module": stage.module, "argv": stage.argv, "nproc_per_node": stage.nproc_per_node,
                "params": {k: get_key(params, k, f"stage {stage.name!r} params") for k in stage.params},
                "deps": deps}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


# -- DVC -----------------------------------------------------------------------------------------
# Through DVC's Repo API, the functions its `dvc commit/push/status` commands call (in-process: no
# second of start-up per call). Like the commands, they resolve stages from the working directory, so
# each call runs in the project (the flow runs its stages one at a time, in one thread).
class DvcError(RuntimeError):
    pass


def dvc_remote() -> str | None:
    """$HICOM_DVC_REMOTE names the remote to push to (e.g. the team stack's S3); None: the default remote."""
    return os.environ.get("HICOM_DVC_REMOTE") or None


def commit_and_push(root: Path, stage: Stage) -> dict:
    """Record the stage's outs in dvc.lock and the DVC cache, push them; returns the stage's dvc.lock entry."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    remote = dvc_remote()
    try:
        with _quiet_dvc(), contextlib.chdir(root), Repo(str(root)) as repo:
            repo.commit(stage.name, force=True)
            repo.push(targets=[stage.name], remote=remote)
    except DvcException as exc:
        raise DvcError(f"stage {stage.name!r}: dvc commit/push to {remote or 'the default remote'} failed: "
                       f"{exc}") from exc
    entry = lock_entry(root, stage.name)
    if entry is None:
        raise DvcError(f"stage {stage.name!r}: dvc commit left no entry in {root / 'dvc.lock'}")
    return entry


@contextlib.contextmanager
def _quiet_dvc():
    """DVC's progress lines ("Updating lock file") would repeat in the flow's log; keep its warnings."""
    dvc_logger = logging.getLogger("dvc")
    level = dvc_logger.level
    dvc_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        dvc_logger.setLevel(level)


def restore_outs(root: Path, stage: Stage) -> bool:
    """Put the outs dvc.lock records for `stage` back from the DVC cache or remote; False where DVC cannot."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with _quiet_dvc(), contextlib.chdir(root), Repo(str(root)) as repo:
            repo.pull(targets=[stage.name], remote=dvc_remote(), force=True)
    except DvcException:
        return False
    return True


def lock_entry(root: Path, stage: str) -> dict | None:
    lock = root / "dvc.lock"
    if not lock.is_file():
        return None
    return ((yaml.safe_load(lock.read_text()) or {}).get("stages") or {}).get(stage)


def dvc_status(root: Path) -> dict:
    """`dvc status` as data: {} when every stage's deps, params and outs match dvc.lock."""
    from dvc.repo import Repo

    with contextlib.chdir(root), Repo(str(root)) as repo:
        return repo.status()


def remote_url(root: Path) -> str:
    """Where pushes go: 'name: url', or 'none'."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = dvc_remote() or repo.config["core"].get("remote")
        remote = repo.config["remote"].get(name) if name else None
        return f"{name}: {remote['url']}" if remote else "none"
