"""HICom's settings: the compressor's settings and presets, and the profile dataclasses a model is built from.

Plain dataclasses, no transformers import: params.yaml is read by every command, the light ones (promote,
compare, pipeline-report) included, and those must not pay for importing torch. HIComConfig, the
PreTrainedConfig saved with a model, is in configuration_hicom. Strict: an unknown field or a misspelled
injection mode is an error that names it, never a default.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hicom.core.errors import ConfigError


class Injection(str, Enum):
    """How the instruction enters a compressor's queries (DESIGN.md section 3)."""

    OFF = "off"  # unconditional queries
    DIRECT = "direct"  # the query is replaced by the projected instruction
    COARSE = "coarse"  # FiLM: LN(q * (1 + gamma) + beta), gamma/beta from the instruction
    FINE = "fine"  # the query cross-attends to the instruction's token states

    @classmethod
    def parse(cls, value: Any, where: str) -> "Injection":
        if isinstance(value, cls):
            return value
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ConfigError(f"{where}: unknown injection mode {value!r} (choose one of: {choices})") from None


POS_EMBED_KINDS = ("split_concat", "sum")
QUERY_INITS = ("normal", "zeros")
COMPRESSOR_KINDS = ("hicom", "llava_ov")


@dataclass(frozen=True)
class LocalConfig:
    """Local level: attention pooling inside kt x ks x ks groups (the release's `local43`)."""

    temporal_kernel: int = 4
    spatial_kernel: int = 3
    injection: Injection = Injection.DIRECT
    grouping: bool = True  # False: every query pools over the whole clip (Table A3 "w/o group")

    def __post_init__(self):
        for name in ("temporal_kernel", "spatial_kernel"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"compressor.local.{name}: must be a positive integer, got {value!r}")
        object.__setattr__(self, "injection", Injection.parse(self.injection, "compressor.local.injection"))


@dataclass(frozen=True)
class GlobalConfig:
    """Global level: learnable queries cross-attending over all tokens (the release's `global32`)."""

    num_queries: int = 32
    head_dim: int = 128
    injection: Injection = Injection.COARSE
    pos_embed: str = "split_concat"  # paper: t/h/w sin-cos over 3/8, 3/8, 2/8 channels; "sum": release
    query_init: str = "normal"  # release: "zeros" (all queries equal at start)

    def __post_init__(self):
        if not isinstance(self.num_queries, int) or self.num_queries < 1:
            raise ConfigError(f"compressor.global.num_queries: must be a positive integer, got {self.num_queries!r}")
        if not isinstance(self.head_dim, int) or self.head_dim < 1:
            raise ConfigError(f"compressor.global.head_dim: must be a positive integer, got {self.head_dim!r}")
        if self.pos_embed not in POS_EMBED_KINDS:
            raise ConfigError(f"compressor.global.pos_embed: {self.pos_embed!r} is not one of {POS_EMBED_KINDS}")
        if self.query_init not in QUERY_INITS:
            raise ConfigError(f"compressor.global.query_init: {self.query_init!r} is not one of {QUERY_INITS}")
        object.__setattr__(self, "injection", Injection.parse(self.injection, "compressor.global.injection"))


@dataclass(frozen=True)
class CompressorConfig:
    """Which projector sits between the vision tower and the LLM, and how it is set up."""

    kind: str = "hicom"
    local: LocalConfig | None = field(default_factory=LocalConfig)
    global_: GlobalConfig | None = field(default_factory=GlobalConfig)
    baseline_pool: int = 2  # llava_ov: spatial pooling factor per frame (27x27 -> 14x14)
    # Standardise the vision features per channel before compressing them, with statistics fitted once on
    # training clips (compressor.FeatureStandardizer). Off for released towers; on for the tiny ones.
    standardize: bool = False

    def __post_init__(self):
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"compressor.standardize: must be true or false, got {self.standardize!r}")
        if self.kind not in COMPRESSOR_KINDS:
            raise ConfigError(f"compressor.kind: {self.kind!r} is not one of {COMPRESSOR_KINDS}")
        if self.kind == "hicom" and self.local is None and self.global_ is None:
            raise ConfigError("compressor: hicom needs at least one of `local` and `global`")

    @property
    def uses_instruction(self) -> bool:
        if self.kind != "hicom":
            return False
        levels = [lvl for lvl in (self.local, self.global_) if lvl is not None]
        return any(lvl.injection is not Injection.OFF for lvl in levels)

    def to_dict(self) -> dict:
        def plain(obj):
            if obj is None:
                return None
            return {k: (v.value if isinstance(v, Enum) else v) for k, v in dataclasses.asdict(obj).items()}

        out = {"kind": self.kind, "local": plain(self.local), "global": plain(self.global_),
               "baseline_pool": self.baseline_pool}
        if self.standardize:  # only when on, so configs saved before the option existed still compare equal
            out["standardize"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict, where: str = "compressor") -> "CompressorConfig":
        data = dict(data)
        _check_keys(data, {"kind", "local", "global", "baseline_pool", "standardize"}, where)
        local = data.get("local", {})
        glob = data.get("global", {})
        return cls(
            kind=data.get("kind", "hicom"),
            local=None if local is None else _build(LocalConfig, local, f"{where}.local"),
            global_=None if glob is None else _build(GlobalConfig, glob, f"{where}.global"),
            baseline_pool=data.get("baseline_pool", 2),
            standardize=data.get("standardize", False),
        )


# Presets fix the injection semantics; profiles fix the sizes.
PRESETS: dict[str, dict] = {
    # Paper intent: guided pooling at the local level; FiLM-injected learnable queries at the
    # global level, so the 32 global tokens stay distinct and depend on the instruction.
    "paper": {"local": {"injection": "direct"},
              "global": {"injection": "coarse", "pos_embed": "split_concat", "query_init": "normal"}},
    # The public checkpoint: direct/direct (the `_coarse` suffix was ignored), summed 3D
    # position embedding, zero-initialised queries. All 32 global tokens come out identical.
    "release": {"local": {"injection": "direct"},
                "global": {"injection": "direct", "pos_embed": "sum", "query_init": "zeros"}},
    # Stage-1 style: no instruction anywhere.
    "unconditional": {"local": {"injection": "off"}, "global": {"injection": "off"}},
}


@dataclass(frozen=True)
class TowerSpec:
    """A pretrained component: where its weights live (optional) and its architecture config."""

    config: dict = field(default_factory=dict)
    path: str | None = None  # a local directory with config.json + weights; None: build from config


@dataclass(frozen=True)
class ModelProfile:
    """Everything needed to build one HICom (or baseline) model."""

    name: str
    vision: TowerSpec
    text: TowerSpec
    llm: TowerSpec
    compressor: CompressorConfig
    preset: str
    num_frames: int
    guide_max_length: int

    def with_compressor(self, compressor: CompressorConfig) -> "ModelProfile":
        return dataclasses.replace(self, compressor=compressor)


def _check_keys(data: dict, allowed: set[str], where: str) -> None:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown} (allowed: {sorted(allowed)})")


def _build(cls, data: dict, where: str):
    _check_keys(data, {f.name for f in dataclasses.fields(cls)}, where)
    return cls(**data)


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def compressor_from_preset(preset: str, overrides: dict | None = None, where: str = "compressor") -> CompressorConfig:
    if preset not in PRESETS:
        raise ConfigError(f"preset: unknown preset {preset!r} (choose one of: {sorted(PRESETS)})")
    return CompressorConfig.from_dict(_merge(PRESETS[preset], overrides or {}), where)
