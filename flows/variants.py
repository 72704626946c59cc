"""Run variants: what an ablation run changes from the baseline (params, skipped stages), and the stages it reruns."""
from __future__ import annotations

import copy
import fnmatch
import hashlib
import json
import posixpath
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from flows.errors import PipelineError
from flows.settings import PipelineSettings, get_key
from flows.stages import Stage
from hicom.core.errors import ConfigError, DataError
from hicom.core.files import atomic_write_text, read_yaml
from hicom.data.mixture import read_mixture
from hicom.params import Params
from hicom.train.config import STAGES

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


@dataclass(frozen=True)
class VariantPlan:
    """What a variant runs: its stages, the params they read, and the files written with those params."""

    stages: list[Stage]
    params: dict  # the variant's params, naming its copies of data mixtures in place of the originals
    mixtures: dict[str, str]  # the variant's copies of data mixtures: path (relative to the project) -> text


def plan_variant(root: Path, stages: list[Stage], base: dict, changed: dict, skip: dict[str, str],
                 variant: RunVariant, params_file: str) -> VariantPlan:
    """The stages a variant runs: those whose params slice changed, or which read a changed output, get
    `--params params_file` and write under VARIANTS_DIR/<variant>/; the others are the baseline's own
    (same command, same cache key). Skipped stages are dropped; readers of their output read `skip[stage]`.
    A stage reads a changed output through a data mixture too (a YAML dep its params name, e.g.
    profiles.tiny.train.sft.data): the variant then reads its own copy of the mixture (`_mixture_copy`)."""
    if variant.is_baseline:
        return VariantPlan(stages, changed, {})
    names = {s.name for s in stages}
    for name in skip:
        if name not in names:
            raise PipelineError(f"ablation skips stage {name!r}, which dvc.yaml does not define "
                                f"(stages: {', '.join(sorted(names))})")
    prefix = f"{VARIANTS_DIR}/{variant.name}"
    all_outs = [out for stage in stages for out in stage.outs]
    params = copy.deepcopy(changed)
    mixtures: dict[str, str] = {}
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
        # found by the values in `changed`, which name the original where an earlier stage's copy replaced it in
        # `params` (a key stages share); while nothing moved, no mixture can name a moved output
        mixture_deps = _mixture_deps(stage, changed, all_outs) if remap else {}
        for dep, keys in mixture_deps.items():
            copied = _mixture_copy(root, dep, keys, stage.name, remap, prefix)
            if copied is None:
                continue  # it names no output this variant moved: the variant reads the original
            path, text = copied
            if mixtures.setdefault(path, text) != text:
                raise PipelineError(f"stage {stage.name!r}: data mixture {dep} is read by stages before and after "
                                    "one whose output it names, so their copies would differ; give the stages "
                                    "their own mixture files")
            deps = tuple(path if d == dep else d for d in deps)
            for key in keys:
                _set_key(params, key, path, f"data mixture of stage {stage.name!r}")
        params_changed = any(get_key(base, k, f"dvc.yaml stage {stage.name!r} params") !=
                             get_key(params, k, f"dvc.yaml stage {stage.name!r} params") for k in stage.params)
        if not params_changed and argv == stage.argv and deps == stage.deps:
            planned.append(stage)
            continue
        for out in stage.outs:
            remap[out] = _moved(out, prefix)
        planned.append(replace(
            stage, argv=tuple(_remap_token(t, remap, all_outs, prefix, stage.name) for t in stage.argv), deps=deps,
            outs=tuple(remap[o] for o in stage.outs), persist=tuple(remap[o] for o in stage.persist),
            metrics=tuple(remap[o] for o in stage.metrics), params_file=params_file, tracked=False))
    for written in (params_file, *mixtures):  # written before the stages run, so no stage may clear them
        for stage in planned:
            out = next((o for o in stage.outs if written == o or written.startswith(o + "/")), None)
            if out is not None:
                raise PipelineError(f"stage {stage.name!r} of variant {variant.name!r} writes {out}, which holds the "
                                    f"variant's {written}; rename that output in dvc.yaml")
    return VariantPlan(planned, params, mixtures)


def _mixture_deps(stage: Stage, params: dict, all_outs: list[str]) -> dict[str, list[str]]:
    """The stage's data mixtures: {dep: the params keys naming it} for each YAML dep in the project, made by no
    stage, that is the value of a key in the stage's params slices (paths in params are relative to params.yaml,
    as deps are to dvc.yaml: both to the project)."""
    named: dict[str, list[str]] = {}

    def collect(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                collect(f"{key}.{k}", v)
        elif isinstance(value, str):
            named.setdefault(posixpath.normpath(value), []).append(key)

    for key in stage.params:
        collect(key, get_key(params, key, f"dvc.yaml stage {stage.name!r} params"))
    mixtures = {}
    for dep in stage.deps:
        source = posixpath.normpath(dep)
        if (source in named and source.endswith((".yaml", ".yml")) and not posixpath.isabs(source)
                and not source.startswith("../") and not any(dep == o or dep.startswith(o + "/") for o in all_outs)):
            mixtures[dep] = named[source]
    return mixtures


def _mixture_copy(root: Path, dep: str, keys: list[str], stage: str, remap: dict[str, str],
                  prefix: str) -> tuple[str, str] | None:
    """(path, text) of the variant's copy of the data mixture `dep` (hicom.data.mixture: json_path and data_root
    relative to the file) when an entry names an output the variant moved (`remap`), else None. The copy, at
    <prefix>/<dep>, names the moved outputs' new places; its relative paths become absolute, as in the variant's
    params file (`_relocated`: a `..` from inside a symlinked outputs/ would leave the project); other fields are
    kept."""
    where = f"stage {stage!r}: data mixture {dep} (params {', '.join(keys)})"
    try:
        read_mixture(root / dep)  # the format as training reads it
    except DataError as exc:
        raise PipelineError(f"{where}: {exc}") from None
    data = read_yaml(root / dep, PipelineError, "data mixture")
    folder, path = posixpath.dirname(posixpath.normpath(dep)), posixpath.normpath(f"{prefix}/{dep}")
    moved = False
    entries = []
    for item in data["datasets"]:
        item = dict(item)
        for field in ("json_path", "data_root"):  # an absent data_root is json_path's folder, and moves with it
            if field in item and not posixpath.isabs(str(item[field])):
                original = posixpath.normpath(posixpath.join(folder, str(item[field])))
                target = _remapped(original, remap)
                moved |= target != original
                item[field] = str(root / target)
        entries.append(item)
    if not moved:
        return None
    text = (f"# Generated by flows/ from {dep} for a run variant: its paths name the variant's outputs; do not edit.\n"
            + yaml.safe_dump({**data, "datasets": entries}, sort_keys=False))
    return path, text


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


def variant_params_file(variant: RunVariant) -> str:
    """Where a variant's params file goes (relative to the project): under outputs/, which every executor's stages
    see. A Kubernetes stage pod mounts only outputs/ from the shared volume, not the flow pod's project folder."""
    return f"{VARIANTS_DIR}/{variant.name}/params.yaml"


def write_variant_params(root: Path, variant: RunVariant, params: dict, mixtures: dict[str, str]) -> str:
    """The variant's params file (`variant_params_file`), after the variant's copies of data mixtures it names
    (VariantPlan.mixtures); each file atomic. Its paths are made absolute (`_relocated`)."""
    for path, text in mixtures.items():
        atomic_write_text(root / path, text)
    name = variant_params_file(variant)
    atomic_write_text(root / name, f"# Generated by flows/ for the ablation variant {variant.name!r}; do not edit.\n"
                      + yaml.safe_dump(_relocated(root, params, name), sort_keys=False))
    return name


def _relocated(root: Path, params: dict, path: str) -> dict:
    """params (paths relative to the project, as in params.yaml) as a file at `path` must say them: hicom.params
    resolves the towers' paths and the training stages' data mixtures relative to the params file, so relative
    ones become absolute (the project's path is the same in the flow and in its stages: one file system, or on
    Kubernetes the image's project folder). Not relative to `path`: Path.resolve() would take `..` from the target
    of a symlinked outputs/. Every profile and training stage must then resolve as in params.yaml."""
    moved = copy.deepcopy(params)
    for profile in moved.get("profiles", {}).values():
        places = [(tower, "path") for tower in (profile.get("model", {}).get(k) for k in ("vision", "text", "llm"))
                  if isinstance(tower, dict)]
        places += [(stage, "data") for stage in profile.get("train", {}).values() if isinstance(stage, dict)]
        for mapping, key in places:
            value = mapping.get(key)
            if isinstance(value, str) and not posixpath.isabs(value):
                mapping[key] = str(root / value)
    before = _resolved(Params(params, root / "params.yaml", label="params"))
    after = _resolved(Params(moved, root / path, label="params"))
    for key in before:
        if before[key] != after[key]:
            raise PipelineError(f"{path}: {key} resolves otherwise there than in params.yaml: hicom reads a path "
                                "in it relative to the params file, which flows/variants.py does not make absolute")
    return moved


def _resolved(params: Params) -> dict[str, str]:
    """Each profile's model and training stages as hicom reads them (paths resolved), or the error it would meet."""
    resolved = {}
    for name, profile in params.raw.get("profiles", {}).items():
        reads = [(f"profiles.{name}.model", params.profile, (name,))]
        reads += [(f"profiles.{name}.train.{stage}", params.train, (name, stage))
                  for stage in profile.get("train", {}) if stage in STAGES]
        for key, read, args in reads:
            try:
                resolved[key] = repr(read(*args))
            except ConfigError as exc:
                resolved[key] = f"error: {exc}"
    return resolved
