"""Factories: a named profile -> HIComConfig -> model, on a real device or on `meta`."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

import torch
from transformers import (
    Qwen2Config,
    Qwen2ForCausalLM,
    SiglipTextConfig,
    SiglipTextModel,
    SiglipVisionConfig,
    SiglipVisionModel,
)

from hicom.core.errors import ConfigError
from hicom.model.compressor import build_projector
from hicom.model.configuration_hicom import HIComConfig
from hicom.model.modeling_hicom import HIComForCausalLM
from hicom.model.settings import CompressorConfig, ModelProfile, TowerSpec

# component attribute -> (profile field, config class, model class)
TOWERS = {
    "vision_tower": ("vision", SiglipVisionConfig, SiglipVisionModel),
    "text_tower": ("text", SiglipTextConfig, SiglipTextModel),
    "language_model": ("llm", Qwen2Config, Qwen2ForCausalLM),
}


@contextlib.contextmanager
def quiet_transformers():
    """transformers at error level for a block (its load reports list every unused key)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _tower_config(cls, spec: TowerSpec, where: str):
    try:
        return cls(**spec.config)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}.config: {exc}") from exc


def make_config(profile: ModelProfile, compressor: CompressorConfig | None = None) -> HIComConfig:
    compressor = compressor or profile.compressor
    text = _tower_config(SiglipTextConfig, profile.text, f"{profile.name}.text") if compressor.uses_instruction else None
    return HIComConfig(
        vision_config=_tower_config(SiglipVisionConfig, profile.vision, f"{profile.name}.vision"),
        text_tower_config=text,
        llm_config=_tower_config(Qwen2Config, profile.llm, f"{profile.name}.llm"),
        compressor=compressor.to_dict(),
        guide_max_length=profile.guide_max_length,
    )


def _check_matches(declared: dict, loaded, where: str) -> None:
    """A checkpoint whose architecture disagrees with the profile is an error, not a surprise later."""
    for key, value in declared.items():
        actual = getattr(loaded, key, None)
        if actual is not None and actual != value:
            raise ConfigError(f"{where}: profile says {key}={value!r} but the checkpoint has {key}={actual!r}")


def build_model(profile: ModelProfile, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                compressor: CompressorConfig | None = None) -> HIComForCausalLM:
    """Build the model of a profile.

    device="meta": shapes and parameter counts only, no memory. Towers with a `path` are loaded
    with `from_pretrained` from that local directory; the others are built from their config
    (random init). The compressor always starts fresh (load one with `load_compressor`).
    """
    config = make_config(profile, compressor)
    paths = {attr: getattr(profile, field).path for attr, (field, _, _) in TOWERS.items()}
    if str(device) == "meta" or not any(paths.values()):
        with torch.device(device):
            model = HIComForCausalLM(config)
        return model if dtype is None else model.to(dtype)
    with torch.device("meta"):
        model = HIComForCausalLM(config)
    for attr, (field, _, model_cls) in TOWERS.items():
        if getattr(model, attr) is None:
            continue
        spec: TowerSpec = getattr(profile, field)
        sub_config = getattr(model, attr).config
        if spec.path:
            if not Path(spec.path).is_dir():
                raise ConfigError(f"{profile.name}.{field}.path: {spec.path}: pretrained directory not found "
                                  f"(put a local checkpoint there; nothing is downloaded)")
            with quiet_transformers():  # a SigLIP directory holds both towers: the other's keys are expected
                sub = model_cls.from_pretrained(spec.path, dtype=dtype)
            _check_matches(spec.config, sub.config, f"{profile.name}.{field} ({spec.path})")
        else:
            sub = model_cls(sub_config)
        setattr(model, attr, sub.to(device))
    model.config.vision_config = model.vision_tower.config
    model.config.llm_config = model.language_model.config
    if model.text_tower is not None:
        model.config.text_tower_config = model.text_tower.config
    text_cfg = model.config.text_tower_config
    text_dim = (text_cfg.projection_size or text_cfg.hidden_size) if text_cfg is not None else None
    with torch.device(device):
        model.projector = build_projector(config.compressor_config, model.config.vision_config.hidden_size,
                                          text_dim or model.config.vision_config.hidden_size,
                                          model.config.llm_config.hidden_size)
    return model if dtype is None else model.to(dtype)


def baseline_of(profile: ModelProfile) -> ModelProfile:
    """The same profile with the LLaVA-OneVision projector in place of HICom's compressor."""
    return dataclasses.replace(profile, compressor=CompressorConfig(kind="llava_ov", local=None, global_=None))
