"""params.yaml `pipeline:` as checked settings, and params.yaml loaded and validated once for a flow."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.errors import PipelineError
from flows.executors import EXECUTORS
from hicom.evaluate.benchmarks import BENCHMARKS
from hicom.params import Params

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Resources:
    """Where a command runs: torchrun processes come from its dvc.yaml cmd; nodes/GPUs matter on clusters."""

    nodes: int = 1
    processes_per_node: int = 1
    gpus_per_node: int = 0
    # torch's intra-op threads in each of the command's processes (OMP_NUM_THREADS). None (params.yaml "auto"): on
    # the local executor this machine's cores over the stage's processes, so processes x threads never exceeds the
    # cores (left alone, torch takes every core in each process and torchrun gives each process one); on a cluster
    # the allocation is shared among the node's processes: Slurm's cpus_per_task (infra/slurm/stage.sbatch.j2), a
    # Kubernetes pod's CPU request (flows/executors/k8s.py).
    threads_per_process: int | None = None

    def thread_env(self, processes: int, local: bool) -> dict[str, str]:
        """The environment that sets the thread count of a stage's `processes` processes ({} where none is set)."""
        threads = self.threads_per_process
        if threads is None and local:
            threads = max(1, len(os.sched_getaffinity(0)) // processes)
        return {} if threads is None else {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


@dataclass(frozen=True)
class Ablation:
    """A named change (Tables A3-A5): params to set, and stages to skip (their output replaced by a path)."""

    set: dict[str, Any] = field(default_factory=dict)
    skip: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepClaim:
    """A claim of the paper the sweep judges: removing what it credits (`ablation`) should cost accuracy."""

    ablation: str
    says: str
    on_binding: bool = False  # also judged on the binding (clutter) families, and binding vs the other families


@dataclass(frozen=True)
class AblationSweep:
    """params.yaml `pipeline.ablation_sweep` (`make ablations`): which runs, seeds and claims."""

    benchmark: str = "synthetic"  # a key of pipeline.benchmarks: the results the comparison reads
    seeds: tuple[int, ...] = (0, 1, 2)  # profiles.<profile>.train.common.seed of each run
    claims: dict[str, SweepClaim] = field(default_factory=dict)  # "A3" -> its ablation
    token_variants: tuple[str, ...] = ()  # accuracy vs visual tokens: "baseline" or pipeline.ablations names
    token_seeds: tuple[int, ...] = (0,)
    breakdown: str = "family"  # the results.json breakdown (and question field) that names a question's family
    binding_families: tuple[str, ...] = ()  # the object-binding (clutter) families
    skip_stages: tuple[str, ...] = ()  # dvc.yaml stages a sweep run leaves out (the comparison does not read them)
    # params set in every run of the sweep, the baseline's included (e.g. a shorter training schedule, so that the
    # sweep fits its time); an ablation of the sweep may not set the same key (it would be overridden)
    set: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_params(cls, data: Any, benchmarks: dict, ablations: dict) -> AblationSweep:
        where = "pipeline.ablation_sweep"
        _expect(data, dict, where)
        _known(data, ("benchmark", "seeds", "claims", "token_variants", "token_seeds", "breakdown",
                      "binding_families", "skip_stages", "set"), where)
        kwargs: dict[str, Any] = {}
        benchmark = _expect(data.get("benchmark", cls.benchmark), str, f"{where}.benchmark")
        if benchmark not in benchmarks:
            raise PipelineError(f"params.yaml: {where}.benchmark: {benchmark!r} is not in pipeline.benchmarks "
                                f"({', '.join(benchmarks) or 'none'})")
        kwargs["benchmark"] = benchmark
        for key in ("seeds", "token_seeds"):
            if key in data:
                seeds = _expect(data[key], list, f"{where}.{key}")
                if not seeds:
                    raise PipelineError(f"params.yaml: {where}.{key}: give at least one seed")
                for i, seed in enumerate(seeds):
                    _expect(seed, int, f"{where}.{key}[{i}]", minimum=0)
                if len(set(seeds)) != len(seeds):
                    raise PipelineError(f"params.yaml: {where}.{key}: seeds repeat ({seeds})")
                kwargs[key] = tuple(seeds)

        def variant(name: Any, key: str) -> str:
            _expect(name, str, key)
            if name != "baseline" and name not in ablations:
                raise PipelineError(f"params.yaml: {key}: {name!r} is neither 'baseline' nor defined under "
                                    f"pipeline.ablations ({', '.join(sorted(ablations)) or 'none'})")
            return name

        claims = {}
        for name, spec in _expect(data.get("claims", {}), dict, f"{where}.claims").items():
            key = f"{where}.claims.{name}"
            _expect(spec, dict, key)
            _known(spec, ("ablation", "says", "on_binding"), key)
            if "ablation" not in spec:
                raise PipelineError(f"params.yaml: {key}.ablation: missing (the pipeline.ablations name to judge)")
            ablation = variant(spec["ablation"], f"{key}.ablation")
            if ablation == "baseline":
                raise PipelineError(f"params.yaml: {key}.ablation: the baseline cannot be judged against itself")
            claims[str(name)] = SweepClaim(ablation, _expect(spec.get("says", ablation), str, f"{key}.says"),
                                           _expect(spec.get("on_binding", False), bool, f"{key}.on_binding"))
        kwargs["claims"] = claims
        if "token_variants" in data:
            names = _expect(data["token_variants"], list, f"{where}.token_variants")
            kwargs["token_variants"] = tuple(variant(n, f"{where}.token_variants[{i}]") for i, n in enumerate(names))
        kwargs["breakdown"] = _expect(data.get("breakdown", cls.breakdown), str, f"{where}.breakdown")
        for key in ("binding_families", "skip_stages"):
            if key in data:
                values = _expect(data[key], list, f"{where}.{key}")
                kwargs[key] = tuple(_expect(v, str, f"{where}.{key}[{i}]") for i, v in enumerate(values))
        if any(c.on_binding for c in claims.values()) and not kwargs.get("binding_families"):
            raise PipelineError(f"params.yaml: {where}.binding_families: a claim is judged on the binding families "
                                "(on_binding: true) but none are named")
        sets = dict(_expect(data.get("set", {}), dict, f"{where}.set"))
        swept = [c.ablation for c in claims.values()] + list(kwargs.get("token_variants", ()))
        for key in sets:
            _expect(key, str, f"{where}.set")
            if key == "profile" or key.split(".")[0] == "pipeline":
                raise PipelineError(f"params.yaml: {where}.set.{key}: cannot vary per run (it shapes dvc.yaml's "
                                    "commands); change params.yaml instead")
            for name in swept:
                if name != "baseline" and key in ablations[name].set:
                    raise PipelineError(f"params.yaml: {where}.set.{key}: pipeline.ablations.{name} sets it too, "
                                        "and the sweep's value would override the ablation's")
        kwargs["set"] = sets
        return cls(**kwargs)


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
    clusters: dict[str, dict] = field(default_factory=dict)  # executor kind -> its settings (python, setup, ...)
    ablation_sweep: AblationSweep | None = None  # `make ablations` (None: not configured)

    @classmethod
    def from_params(cls, params: dict) -> PipelineSettings:
        data = params.get("pipeline")
        if data is None:
            return cls()
        _expect(data, dict, "pipeline")
        _known(data, ("experiment", "executor", "schedule", "benchmarks", "resources", "retries", "retry_delay_s",
                      "stage_timeout_s", "timeout_s", "ablations", "clusters", "ablation_sweep"), "pipeline")
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
                if name not in BENCHMARKS:
                    raise PipelineError(f"params.yaml: pipeline.benchmarks.{name}: unknown benchmark "
                                        f"(known: {', '.join(BENCHMARKS)})")
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
                _known(spec, ("nodes", "processes_per_node", "gpus_per_node", "threads_per_process"), where)
                spec = {k: v for k, v in spec.items() if not (k == "threads_per_process" and v == "auto")}
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
        if "clusters" in data:
            clusters = {}
            for kind, spec in _expect(data["clusters"], dict, "pipeline.clusters").items():
                if kind not in EXECUTORS:
                    raise PipelineError(f"params.yaml: pipeline.clusters.{kind}: not an executor (known: "
                                        f"{', '.join(EXECUTORS)})")
                clusters[kind] = dict(_expect(spec, dict, f"pipeline.clusters.{kind}"))
            kwargs["clusters"] = clusters
        if "ablation_sweep" in data:
            kwargs["ablation_sweep"] = AblationSweep.from_params(data["ablation_sweep"], kwargs.get("benchmarks", {}),
                                                                 kwargs.get("ablations", {}))
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


def get_key(params: dict, key: str, where: str) -> Any:
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise PipelineError(f"{where}: {key!r} is not a key of params.yaml")
        node = node[part]
    return node
