"""params.yaml, read and validated once per command, as one `Params` object of typed sections.

Every command checks the whole file before it starts work, so a typo fails in a second, naming its key,
instead of hours later in the stage that reads it. Each section is the settings dataclass of the code
that uses it, built by hicom.core.sections (keys and types from its fields, value rules from its
__post_init__). `pipeline:` belongs to flows/ (hicom never imports flows): kept here as a raw mapping.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hicom.core.errors import ConfigError
from hicom.core.files import read_yaml
from hicom.core.sections import build_section, check_section
from hicom.curate.settings import CurateConfig
from hicom.data.settings import DataSettings
from hicom.efficiency.settings import EfficiencySettings
from hicom.evaluate.settings import EvalConfig
from hicom.gate.settings import RegistryConfig
from hicom.model.settings import PRESETS, CompressorConfig, ModelProfile, TowerSpec, compressor_from_preset
from hicom.pretrain.settings import LLMTrainConfig, TowerTrainConfig
from hicom.train.config import STAGES, TrainConfig

PARAMS_FILE = Path(__file__).resolve().parent.parent / "params.yaml"
PRESET_NAMES = tuple(PRESETS)
TRAIN_KEYS = ("common", *STAGES)  # profiles.NAME.train: settings shared by the stages, then per stage
# Top-level sections of settings dataclasses (besides `profile`, `profiles` and flows' `pipeline`).
SECTIONS: dict[str, type] = {
    "data": DataSettings, "towers": TowerTrainConfig, "llm": LLMTrainConfig, "curate": CurateConfig,
    "evaluate": EvalConfig, "efficiency": EfficiencySettings, "registry": RegistryConfig,
}
TOP_LEVEL_KEYS = ("profile", "profiles", *SECTIONS, "pipeline")


@dataclass(frozen=True)
class ModelSection:
    """profiles.NAME.model as written in params.yaml; Params.profile gives it resolved, as a ModelProfile."""

    vision: TowerSpec | None = None  # None: Params.profile names it missing (a flow's params may leave towers out)
    text: TowerSpec | None = None
    llm: TowerSpec | None = None
    preset: Literal[PRESET_NAMES] = "paper"
    num_frames: int = 32
    guide_max_length: int = 64
    compressor: dict[str, Any] = field(default_factory=dict)  # overrides of the preset's compressor

    def __post_init__(self):
        if self.num_frames < 1:
            raise ConfigError(f"num_frames: must be a positive integer, got {self.num_frames!r}")


class Params:
    """The parsed params file: `profile(name)`, `train(profile, stage)` and one attribute per section.

    raw: the mapping as parsed (flows build ablation variants from a copy, then parse that)."""

    def __init__(self, raw: Any, path: Path = PARAMS_FILE, label: str | None = None):
        self.raw, self.path, self.label = raw, Path(path), label or Path(path).name
        try:
            self._parse(raw)
        except ConfigError as exc:
            raise ConfigError(f"{self.label}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path = PARAMS_FILE, profile: str | None = None) -> Params:
        """Read and validate the file once; `profile` (a --profile given on the command line) must be defined."""
        path = Path(path)
        params = cls(read_yaml(path, ConfigError, "params file"), path)
        if profile is not None:
            params._require_profile(profile, "--profile")
        return params

    def _parse(self, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a mapping at the top level, got {type(raw).__name__}")
        unknown = [key for key in raw if key not in TOP_LEVEL_KEYS]
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown top-level key (known: {', '.join(TOP_LEVEL_KEYS)})")
        for key in ("profile", "profiles"):
            if key not in raw:
                raise ConfigError(f"{key}: missing")
        if not isinstance(raw["profile"], str):
            raise ConfigError(f"profile: expected str, got {raw['profile']!r}")
        if not isinstance(raw["profiles"], dict):
            raise ConfigError(f"profiles: expected a mapping, got {raw['profiles']!r}")
        self._profiles = {name: self._parse_profile(name, spec) for name, spec in raw["profiles"].items()}
        self._train = {name: self._parse_train(name, spec.get("train")) for name, spec in raw["profiles"].items()}
        self._sections = {name: build_section(cls, raw[name], name) for name, cls in SECTIONS.items()
                          if name in raw}
        self.pipeline: dict = raw.get("pipeline") or {}
        if not isinstance(self.pipeline, dict):
            raise ConfigError(f"pipeline: expected a mapping, got {self.pipeline!r}")
        self._require_profile(raw["profile"], "profile", prefixed=False)

    def _parse_profile(self, name: str, spec: Any) -> tuple[ModelSection, CompressorConfig]:
        where = f"profiles.{name}"
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: expected a mapping, got {spec!r}")
        unknown = sorted(set(spec) - {"model", "train"})
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: model, train)")
        if "model" not in spec:
            raise ConfigError(f"{where}.model: missing")
        try:
            model = build_section(ModelSection, spec["model"], f"{where}.model")
            compressor = compressor_from_preset(model.preset, model.compressor, f"{where}.model.compressor")
        except ConfigError as exc:  # the model's and compressor's own checks name only the field inside them
            message = str(exc)
            raise ConfigError(message if message.startswith("profiles.") else f"{where}.model.{message}") from None
        return model, compressor

    @staticmethod
    def _parse_train(name: str, train: Any) -> dict[str, dict]:
        """Each stage's keys and types (a stage alone need not be complete: Params.train merges it with common)."""
        where = f"profiles.{name}.train"
        if train is None:
            return {}
        if not isinstance(train, dict):
            raise ConfigError(f"{where}: expected a mapping, got {train!r}")
        unknown = [key for key in train if key not in TRAIN_KEYS]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(TRAIN_KEYS)})")
        return {stage: check_section(TrainConfig, spec, f"{where}.{stage}") for stage, spec in train.items()}

    def _require_profile(self, name: str, key: str, prefixed: bool = True) -> None:
        if name not in self._profiles:
            message = f"{key}: {name!r} is not defined under profiles (defined: {', '.join(sorted(self._profiles))})"
            raise ConfigError(f"{self.label}: {message}" if prefixed else message)

    # -- what commands read ---------------------------------------------------------------------------
    @property
    def default_profile(self) -> str:
        return self.raw["profile"]

    def profile(self, name: str | None = None) -> ModelProfile:
        """The named profile's model (default: params.yaml's `profile:`), tower paths resolved."""
        name = name or self.default_profile
        self._require_profile(name, "profile")
        model, compressor = self._profiles[name]
        base = self.path.resolve().parent  # tower paths are relative to params.yaml, never to the cwd

        def tower(key: str) -> TowerSpec:
            spec = getattr(model, key)
            if spec is None:
                raise ConfigError(f"{self.label}: profiles.{name}.model.{key}: missing")
            return TowerSpec(config=dict(spec.config), path=None if spec.path is None else str((base / spec.path).resolve()))

        return ModelProfile(name=name, vision=tower("vision"), text=tower("text"), llm=tower("llm"),
                            compressor=compressor, preset=model.preset, num_frames=model.num_frames,
                            guide_max_length=model.guide_max_length)

    def train(self, profile: str, stage: str, overrides: dict | None = None) -> TrainConfig:
        """profiles.<profile>.train.common merged with profiles.<profile>.train.<stage> and overrides."""
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r} (choose one of: {', '.join(STAGES)})")
        self._require_profile(profile, "profile")
        train = self._train[profile]
        where = f"profiles.{profile}.train.{stage}"
        if stage not in train:
            raise ConfigError(f"{self.label}: {where} is missing")
        merged = {**train.get("common", {}), **train[stage], **(overrides or {})}
        cfg = build_section(TrainConfig, merged, where)
        return dataclasses.replace(cfg, data=str((self.path.resolve().parent / cfg.data).resolve()))

    def _section(self, name: str):
        """A section as given, or its dataclass's defaults when params.yaml leaves it out."""
        if name not in self._sections:
            try:
                self._sections[name] = build_section(SECTIONS[name], {}, name)
            except ConfigError as exc:  # a required field (curate.categories) has no default
                raise ConfigError(f"{self.label}: {exc}") from None
        return self._sections[name]

    @property
    def data(self) -> DataSettings:
        return self._section("data")

    @property
    def towers(self) -> TowerTrainConfig:
        return self._section("towers")

    @property
    def llm(self) -> LLMTrainConfig:
        return self._section("llm")

    @property
    def curate(self) -> CurateConfig:
        return self._section("curate")

    @property
    def evaluate(self) -> EvalConfig:
        return self._section("evaluate")

    @property
    def efficiency(self) -> EfficiencySettings:
        return self._section("efficiency")

    @property
    def registry(self) -> RegistryConfig:
        return self._section("registry")
