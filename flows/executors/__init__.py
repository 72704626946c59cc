"""Executor kinds: the one table of where a stage can run, read by the CLI, the settings check and the flow.

Each kind names its class by import path, imported only when used (the cluster clients are slow imports).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from flows.errors import PipelineError
from flows.executors.base import Executor


@dataclass(frozen=True)
class ExecutorKind:
    """How to make one kind of executor, and how it is polled."""

    cls: str  # "module:Class"
    any_module: bool  # whether it runs any `-m` module (a stand-in locally) or `python -m hicom` only
    poll_interval_s: float

    def make(self, kind: str, module: str) -> Executor:
        if not self.any_module and module != "hicom":
            raise PipelineError(f"executor {kind!r} runs `python -m hicom` stages only, not {module!r}")
        module_path, _, name = self.cls.partition(":")
        executor_class = getattr(importlib.import_module(module_path), name)
        return executor_class(module=module) if self.any_module else executor_class()


EXECUTORS: dict[str, ExecutorKind] = {
    "local": ExecutorKind("flows.executors.local:LocalExecutor", any_module=True, poll_interval_s=1.0),
    "slurm": ExecutorKind("flows.executors.slurm:SlurmExecutor", any_module=False, poll_interval_s=15.0),
    "kubernetes": ExecutorKind("flows.executors.k8s:KubernetesExecutor", any_module=False, poll_interval_s=15.0),
}


def executor_kind(kind: str) -> ExecutorKind:
    """The registry entry of `kind`; an unknown kind is a PipelineError listing the known ones."""
    if kind not in EXECUTORS:
        raise PipelineError(f"executor {kind!r} is not one of {', '.join(EXECUTORS)}")
    return EXECUTORS[kind]


def make_executor(kind: str, module: str) -> Executor:
    """The executor for `kind`; cluster executors run hicom only (a stand-in module runs locally)."""
    return executor_kind(kind).make(kind, module)
