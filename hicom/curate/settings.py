"""params.yaml `curate:`: which videos to select and how their instruction-description pairs are written."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hicom.core.errors import ConfigError
from hicom.core.sections import check_numbers
from hicom.data.settings import DECODERS

GENERATORS = ("groundtruth", "openai")


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "Qwen2-VL-72B-Instruct"
    api_key_env: str = "OPENAI_API_KEY"  # the key is read from this variable, never from params
    concurrency: int = 8
    max_retries: int = 4
    timeout_s: float = 120.0
    frames: int = 8  # frames sent per video
    temperature: float = 0.2
    retry_backoff_s: float = 1.0  # first wait before a retry; doubles up to 30 s

    def __post_init__(self):
        check_numbers("curate.openai", self, at_least_1=("concurrency", "frames"), at_least_0=(
            "max_retries", "temperature", "retry_backoff_s"), above_0=("timeout_s",))


@dataclass(frozen=True)
class CurateConfig:
    categories: tuple[str, ...]
    top_per_category: int = 1500
    random_extra: int = 10000
    frames: int = 8  # frames scored per video
    pairs_per_video: int = 3
    generator: Literal[GENERATORS] = "groundtruth"
    shard_size: int = 5000
    seed: int = 0
    decoder: Literal[DECODERS] = "decord"
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)

    def __post_init__(self):
        if not self.categories:
            raise ConfigError("curate.categories: at least one category description is needed")
        check_numbers("curate", self, at_least_1=("frames", "pairs_per_video", "shard_size"),
                      at_least_0=("top_per_category", "random_extra", "seed"))
