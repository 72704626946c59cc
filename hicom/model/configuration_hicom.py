"""HIComConfig, the PreTrainedConfig saved with a model, beside its model (transformers'
configuration_*/modeling_* pairing). The settings it is built from are in hicom.model.settings.
"""
from __future__ import annotations

from huggingface_hub.dataclasses import strict
from transformers import (
    PreTrainedConfig,
    Qwen2Config,
    SiglipTextConfig,
    SiglipVisionConfig,
)
from transformers.configuration_utils import SubConfigSpec

from hicom.model.settings import CompressorConfig


@strict
class HIComConfig(PreTrainedConfig):
    model_type = "hicom"
    sub_configs_defaults = {
        "vision_config": SubConfigSpec(config_class=SiglipVisionConfig),
        "text_tower_config": SubConfigSpec(config_class=SiglipTextConfig, optional=True),
        "llm_config": SubConfigSpec(config_class=Qwen2Config),
    }
    vision_config: dict | PreTrainedConfig | None = None
    text_tower_config: dict | PreTrainedConfig | None = None
    llm_config: dict | PreTrainedConfig | None = None
    compressor: dict | None = None
    guide_max_length: int = 64
    max_length: int = 4096
    tie_word_embeddings: bool = False

    @property
    def compressor_config(self) -> CompressorConfig:
        return CompressorConfig.from_dict(self.compressor or {}, "config.compressor")
