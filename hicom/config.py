"""Typed configuration: compressor settings, presets and the named profiles of params.yaml.

params.yaml is parsed into these dataclasses once, with strict keys: an unknown field, a
misspelled injection mode or a missing profile is an error that names it, never a default.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from hicom.core.errors import ConfigError
from hicom.model.configuration_hicom import PRESETS, ModelProfile, TowerSpec, _check_keys, compressor_from_preset

PARAMS_FILE = Path(__file__).resolve().parent.parent / "params.yaml"


def load_params(path: str | Path = PARAMS_FILE) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ConfigError(f"{path}: expected a top-level `profiles:` mapping")
    return data


def load_profile(name: str | None = None, params_path: str | Path = PARAMS_FILE) -> ModelProfile:
    """Resolve a named profile from params.yaml (default: its `profile:` key)."""
    params = load_params(params_path)
    name = name or params.get("profile")
    profiles = params["profiles"]
    if name not in profiles:
        raise ConfigError(f"{params_path}: unknown profile {name!r} (defined: {sorted(profiles)})")
    where = f"{Path(params_path).name}:profiles.{name}.model"
    model = profiles[name].get("model")
    if model is None:
        raise ConfigError(f"{where}: missing")
    _check_keys(model, {"preset", "vision", "text", "llm", "compressor", "num_frames", "guide_max_length"}, where)

    def tower(key: str) -> TowerSpec:
        spec = model.get(key)
        if spec is None:
            raise ConfigError(f"{where}.{key}: missing")
        _check_keys(spec, {"config", "path"}, f"{where}.{key}")
        path = spec.get("path")
        if path is not None:  # relative to params.yaml, never to the working directory
            path = str((Path(params_path).resolve().parent / path).resolve())
        return TowerSpec(config=dict(spec.get("config") or {}), path=path)

    preset = model.get("preset", "paper")
    num_frames = model.get("num_frames", 32)
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ConfigError(f"{where}.num_frames: must be a positive integer, got {num_frames!r}")
    return ModelProfile(
        name=name,
        vision=tower("vision"),
        text=tower("text"),
        llm=tower("llm"),
        compressor=compressor_from_preset(preset, model.get("compressor"), f"{where}.compressor"),
        preset=preset,
        num_frames=num_frames,
        guide_max_length=model.get("guide_max_length", 64),
    )


# -- params.yaml validation ---------------------------------------------------------------------
# Every command checks the whole file before it starts work, so a typo fails in a second, naming its
# key, instead of hours later in the stage that reads it. A spec is a type (int, float, str, bool), a
# mapping {key: spec} whose unknown keys are errors, or one of the rules below.


@dataclass(frozen=True)
class _Optional:
    spec: Any  # None is also accepted


@dataclass(frozen=True)
class _Required:
    spec: Any  # the key must be present in its mapping


@dataclass(frozen=True)
class _OneOf:
    choices: tuple


@dataclass(frozen=True)
class _ListOf:
    spec: Any


@dataclass(frozen=True)
class _MapOf:
    spec: Any  # any keys (names chosen by the user, e.g. profiles), each value checked against spec


@dataclass(frozen=True)
class _Open:
    fields: dict  # known keys checked; others allowed (a section whose full shape another module owns)


_ANY_MAPPING = _MapOf(None)  # e.g. a transformers config: its own class validates it
_DECODERS = _OneOf(("decord", "pyav"))
_TOWER_SPEC = {"config": _ANY_MAPPING, "path": _Optional(str)}
_TRAIN_STAGE = {  # hicom.train.config.TrainConfig
    "data": str, "lr_compressor": float, "lr_injection": _Optional(float), "lr_llm": _Optional(float),
    "global_batch": int, "micro_batch": int, "epochs": int, "max_steps": _Optional(int), "warmup_ratio": float,
    "weight_decay": float, "grad_clip": float, "zero_stage": int, "bf16": _OneOf(("auto", True, False)),
    "gradient_checkpointing": bool, "num_frames": int, "max_length": int, "save_steps": int,
    "save_total_limit": int, "seed": int, "num_workers": int, "log_steps": int,
}
_PROFILE = {
    "model": _Required({
        "preset": _OneOf(tuple(PRESETS)), "num_frames": int, "guide_max_length": int, "vision": _TOWER_SPEC,
        "text": _TOWER_SPEC, "llm": _TOWER_SPEC, "compressor": _ANY_MAPPING,
    }),
    "train": {stage: _TRAIN_STAGE for stage in ("common", "align", "cond_pretrain", "sft")},
}
PARAMS_SCHEMA: dict[str, Any] = {
    "profile": _Required(str),
    "profiles": _Required(_MapOf(_PROFILE)),
    "data": {
        "decoder": _DECODERS, "read_timeout_s": float, "tokenizer": {"vocab_size": int},
        "synthetic": {  # hicom.data.synthetic.WorldConfig
            "seed": int, "num_videos": int, "num_frames": int, "fps": int, "size": int, "min_objects": int,
            "max_objects": int, "qa_per_video": int, "mcq_per_video": int, "pairs_per_video": int,
            "test_fraction": float,
        },
    },
    # hicom.model.tiny_towers.TowerTrainConfig, hicom.model.tiny_llm.LLMTrainConfig
    "towers": {"steps": int, "batch_size": int, "lr": float, "eval_pairs": int, "seed": int},
    "llm": {"steps": int, "batch_size": int, "seq_len": int, "lr": float, "held_out": float, "seed": int},
    "curate": {  # hicom.curate.CurateConfig
        "categories": _ListOf(str), "top_per_category": int, "random_extra": int, "frames": int,
        "pairs_per_video": int, "generator": _OneOf(("groundtruth", "openai")), "shard_size": int, "seed": int,
        "decoder": _DECODERS,
        "openai": {"base_url": str, "model": str, "api_key_env": str, "concurrency": int, "max_retries": int,
                   "timeout_s": float, "frames": int, "temperature": float, "retry_backoff_s": float},
    },
    # Sections whose full shape their own modules check: the keys known here are type-checked, others pass.
    "evaluate": _Open({"max_new_tokens": int, "questions_per_batch": int, "seed": int, "dtype": str, "read_timeout_s": float,
                       "barrier_timeout_s": float, "invalid_instructions": _ListOf(str)}),
    "efficiency": _Open({"frames": _ListOf(int), "samples": int, "warmup": int, "repeats": int, "max_new_tokens": int,
                         "prompt_tokens": int, "memory_interval_s": float,
                         "clips": _Open({"count": int, "num_frames": int, "fps": int, "size": int, "seed": int})}),
    "pipeline": _Open({  # flows.pipeline.PipelineSettings checks the rest (hicom never imports flows)
        "experiment": str, "executor": str, "schedule": _Open({"cron": str, "timezone": str}),
        "benchmarks": _MapOf(_Open({"data": str, "protocol": str})),
        "resources": _MapOf(_Open({"nodes": int, "processes_per_node": int, "gpus_per_node": int})),
        "retries": int, "retry_delay_s": float, "stage_timeout_s": int, "timeout_s": int,
        "ablations": _MapOf(_Open({"set": _ANY_MAPPING, "skip": _MapOf(str)})),
    }),
    "registry": {  # hicom.registry.RegistryConfig
        "model_name": str, "efficiency_frames": int, "prompt_template": str,
        "gate": {"accuracy_max_drop": float, "visual_tokens_max_increase": float, "latency_max_increase": float},
    },
}


def validate_params(params: dict, source: str | Path = "params.yaml", profile: str | None = None) -> None:
    """Check params against PARAMS_SCHEMA (and that `profile`, if given, is defined); ConfigError names the key.

    Messages read `params.yaml: pipeline.retries: expected int, got 'x'`.
    """
    label = Path(source).name

    def fail(message: str) -> None:
        raise ConfigError(f"{label}: {message}")

    if not isinstance(params, dict):
        fail(f"expected a mapping at the top level, got {type(params).__name__}")
    unknown = sorted(set(params) - set(PARAMS_SCHEMA))
    if unknown:
        fail(f"{unknown[0]}: unknown top-level key (known: {', '.join(PARAMS_SCHEMA)})")
    try:
        _check_mapping(params, PARAMS_SCHEMA, "")
        for name, spec in params["profiles"].items():
            model = spec["model"]
            try:
                compressor_from_preset(model.get("preset", "paper"), model.get("compressor"),
                                       f"profiles.{name}.model.compressor")
            except ConfigError as exc:  # the compressor's own checks name only the field inside it
                message = str(exc)
                raise ConfigError(message if message.startswith("profiles.") else
                                  f"profiles.{name}.model.{message}") from None
    except ConfigError as exc:
        fail(str(exc))
    defined = sorted(params["profiles"])
    for key, name in (("profile", params["profile"]), ("--profile", profile)):
        if name is not None and name not in params["profiles"]:
            fail(f"{key}: {name!r} is not defined under profiles (defined: {', '.join(defined)})")


def check_section(name: str, data: Any) -> None:
    """Validate one top-level section on its own (for modules given a section without the whole file)."""
    _check(data, PARAMS_SCHEMA[name], name)


def _check(value: Any, spec: Any, where: str) -> None:
    if isinstance(spec, _Required):
        spec = spec.spec
    if isinstance(spec, _Optional):
        if value is not None:
            _check(value, spec.spec, where)
    elif isinstance(spec, _OneOf):
        if not any(type(choice) is type(value) and choice == value for choice in spec.choices):
            choices = ", ".join(str(c).lower() if isinstance(c, bool) else str(c) for c in spec.choices)
            raise ConfigError(f"{where}: expected one of {choices}, got {value!r}")
    elif isinstance(spec, _ListOf):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        for i, item in enumerate(value):
            _check(item, spec.spec, f"{where}[{i}]")
    elif isinstance(spec, _MapOf):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        if spec.spec is not None:
            for key, item in value.items():
                _check(item, spec.spec, f"{where}.{key}")
    elif isinstance(spec, _Open):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _check_mapping(value, spec.fields, where, open_=True)
    elif isinstance(spec, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _check_mapping(value, spec, where)
    elif not _is_instance(value, spec):
        raise ConfigError(f"{where}: expected {spec.__name__}, got {value!r}")


def _check_mapping(data: dict, fields: dict, where: str, open_: bool = False) -> None:
    prefix = f"{where}." if where else ""
    if not open_:
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(fields)})")
    for key, spec in fields.items():
        if key in data:
            _check(data[key], spec, f"{prefix}{key}")
        elif isinstance(spec, _Required):
            raise ConfigError(f"{prefix}{key}: missing")


def _is_instance(value: Any, kind: type) -> bool:
    """bool is never an int or a float; a float may be written as an int, or as a string YAML left unparsed (1e-3)."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        if isinstance(value, (int, float)):
            return True
        try:
            float(value)
            return isinstance(value, str)
        except (TypeError, ValueError):
            return False
    return isinstance(value, kind)
