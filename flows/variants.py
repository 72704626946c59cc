"""Run variants: what an ablation run changes from the baseline (params, skipped stages), and the stages it reruns."""
from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from flows.errors import PipelineError
from flows.settings import PipelineSettings, get_key
from flows.stages import Stage
from hicom.core.files import atomic_write_text
from hicom.params import Params

VARIANTS_DIR = "outputs/variants"  # a run variant's own outputs: VARIANTS_DIR/<variant>/...


@dataclass(frozen=True)
class RunVariant:
    """What one pipeline run changes from the baseline: named ablations plus single `key=value` overrides
    (not hicom.evaluate's prompt variants)."""

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


def make_variant(ablations: list[str] | None, overrides: dict[str, Any] | None) -> RunVariant:
    return RunVariant(tuple(sorted(set(ablations or ()))), tuple(sorted((overrides or {}).items())))


def _set_key(params: dict, key: str, value: Any, where: str) -> None:
    """Set an existing key, or a new one inside an existing mapping (a field left at its default);
    the variant's params are then validated as a whole, so a misspelt field still fails, by name."""
    parent, _, last = key.rpartition(".")
    node = get_key(params, parent, where) if parent else params
    if not isinstance(node, dict):
        raise PipelineError(f"{where}: {key!r}: {parent!r} is not a mapping in params.yaml")
    node[last] = value


def variant_params(params: dict, settings: PipelineSettings, variant: RunVariant) -> tuple[dict, dict[str, str]]:
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


def plan_variant(stages: list[Stage], base: dict, changed: dict, skip: dict[str, str], variant: RunVariant,
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


def write_variant_params(root: Path, variant: RunVariant, params: dict) -> str:
    """params.<variant>.yaml beside params.yaml (relative paths inside resolve the same); atomic."""
    name = f"params.{variant.name}.yaml"
    path = root / name
    atomic_write_text(path, f"# Generated by flows/ for the ablation variant {variant.name!r}; do not edit.\n"
                      + yaml.safe_dump(params, sort_keys=False))
    return name

