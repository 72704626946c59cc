"""Training stages (Table A1) and their typed settings from params.yaml.

What a stage trains and whether it is guided is fixed here, per the paper; how (learning rates,
batch sizes, ZeRO stage, data) comes from the profile's `train:` section.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from hicom.config import PARAMS_FILE, load_params
from hicom.core.errors import ConfigError


@dataclass(frozen=True)
class StageSpec:
    name: str
    paper_name: str
    guided: bool  # instruction guidance: off in alignment, on afterwards
    trains_llm: bool  # the LLM trains only in instruction tuning; the towers never do


STAGES = {
    "align": StageSpec("align", "alignment (stage 1, image-caption pairs)", guided=False, trains_llm=False),
    "cond_pretrain": StageSpec("cond_pretrain", "conditional pre-training (stage 2, HICom-248K)", guided=True,
                               trains_llm=False),
    "sft": StageSpec("sft", "instruction tuning (stage 3, mixed video/image QA)", guided=True, trains_llm=True),
}


@dataclass(frozen=True)
class TrainConfig:
    data: str  # mixture YAML (relative to params.yaml)
    lr_compressor: float
    lr_injection: float | None = None  # None: injection parameters frozen (or none exist)
    lr_llm: float | None = None
    global_batch: int = 256
    micro_batch: int = 1
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps; None: as many as the epochs give
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    zero_stage: int = 2
    bf16: str | bool = "auto"  # auto: on where the accelerator supports it
    gradient_checkpointing: bool = False
    num_frames: int = 32
    max_length: int = 4096
    save_steps: int = 500
    save_total_limit: int = 3
    seed: int = 0
    num_workers: int = 0
    log_steps: int = 1

    def __post_init__(self):
        for name in ("lr_compressor", "lr_injection", "lr_llm", "warmup_ratio", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if value is None and name.startswith("lr_") and name != "lr_compressor":
                continue
            try:  # YAML reads 1e-3 (no dot) as a string
                object.__setattr__(self, name, float(value))
            except (TypeError, ValueError):
                raise ConfigError(f"train.{name}: expected a number, got {value!r}") from None
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"train.zero_stage: {self.zero_stage!r} is not one of 0, 1, 2, 3")
        for name in ("global_batch", "micro_batch", "epochs", "num_frames", "max_length", "save_steps",
                     "save_total_limit"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"train.{name}: must be a positive integer, got {value!r}")
        if self.bf16 not in ("auto", True, False):
            raise ConfigError(f"train.bf16: must be auto, true or false, got {self.bf16!r}")


def load_train_config(profile: str, stage: str, params_path: str | Path = PARAMS_FILE,
                      overrides: dict | None = None) -> TrainConfig:
    """profiles.<profile>.train.common merged with profiles.<profile>.train.<stage> and overrides."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r} (choose one of: {', '.join(STAGES)})")
    params = load_params(params_path)
    if profile not in params["profiles"]:
        raise ConfigError(f"{params_path}: unknown profile {profile!r} (defined: {sorted(params['profiles'])})")
    train = params["profiles"][profile].get("train") or {}
    if stage not in train:
        raise ConfigError(f"{params_path}: profiles.{profile}.train.{stage} is missing")
    merged = {**(train.get("common") or {}), **train[stage], **(overrides or {})}
    allowed = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise ConfigError(f"profiles.{profile}.train.{stage}: unknown field(s) {unknown}")
    if "data" not in merged or "lr_compressor" not in merged:
        raise ConfigError(f"profiles.{profile}.train.{stage}: needs `data` and `lr_compressor`")
    merged["data"] = str((Path(params_path).resolve().parent / merged["data"]).resolve())
    return TrainConfig(**merged)
