"""Executor kinds: the one table of where a stage can run, read by the CLI, the settings check and the flow.

Each kind names its class by import path, imported only when used (the cluster clients are slow imports).
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

from flows.errors import PipelineError
from flows.executors.base import Executor


@dataclass(frozen=True)
class ExecutorKind:
    """How to make one kind of executor, and how it is polled."""

    cls: str  # "module:Class"
    any_module: bool  # whether it runs any `-m` module (a stand-in locally) or `python -m hicom` only
    poll_interval_s: float
    settings_cls: str | None = None  # "module:Class" of a cluster's settings (params.yaml pipeline.clusters.KIND)

    def settings(self, kind: str, options: dict[str, Any] | None) -> Any:
        """The cluster's settings from params.yaml's pipeline.clusters.<kind> (YAML lists become tuples); an
        unknown key fails naming it and the known ones."""
        options = options or {}
        if self.settings_cls is None:
            if options:
                raise PipelineError(f"params.yaml: pipeline.clusters.{kind}: executor {kind!r} takes no settings")
            return None
        settings_class = _load(self.settings_cls)
        known = [f.name for f in dataclasses.fields(settings_class)]
        for key in options:
            if key not in known:
                raise PipelineError(f"params.yaml: pipeline.clusters.{kind}.{key}: unknown key (known: "
                                    f"{', '.join(known)})")
        return settings_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})

    def make(self, kind: str, module: str, options: dict[str, Any] | None = None) -> Executor:
        if not self.any_module and module != "hicom":
            raise PipelineError(f"executor {kind!r} runs `python -m hicom` stages only, not {module!r}")
        executor_class = _load(self.cls)
        settings = self.settings(kind, options)
        return executor_class(module=module) if self.any_module else executor_class(settings=settings)


def _load(path: str):
    module_path, _, name = path.partition(":")
    return getattr(importlib.import_module(module_path), name)


EXECUTORS: dict[str, ExecutorKind] = {
    "local": ExecutorKind("flows.executors.local:LocalExecutor", any_module=True, poll_interval_s=1.0),
    "slurm": ExecutorKind("flows.executors.slurm:SlurmExecutor", any_module=False, poll_interval_s=15.0,
                          settings_cls="flows.executors.slurm:SlurmSettings"),
    "kubernetes": ExecutorKind("flows.executors.k8s:KubernetesExecutor", any_module=False, poll_interval_s=15.0,
                               settings_cls="flows.executors.k8s:KubernetesSettings"),
}


def executor_kind(kind: str) -> ExecutorKind:
    """The registry entry of `kind`; an unknown kind is a PipelineError listing the known ones."""
    if kind not in EXECUTORS:
        raise PipelineError(f"executor {kind!r} is not one of {', '.join(EXECUTORS)}")
    return EXECUTORS[kind]


def make_executor(kind: str, module: str, options: dict[str, Any] | None = None) -> Executor:
    """The executor for `kind`, with its cluster settings (params.yaml pipeline.clusters.<kind>); cluster executors
    run hicom only (a stand-in module runs locally)."""
    return executor_kind(kind).make(kind, module, options)
