"""params.yaml `data:`: how videos are read, the synthetic world and the tiny tokenizer's size."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hicom.core.sections import check_numbers
from hicom.data.synthetic import WorldConfig

DECODERS = ("decord", "pyav")  # video readers; hicom.data.video implements both


@dataclass(frozen=True)
class TokenizerSettings:
    vocab_size: int = 1024  # the tiny profile's BPE; must not exceed the tiny towers' / LLM's vocab_size

    def __post_init__(self):
        check_numbers("data.tokenizer", self, at_least_1=("vocab_size",))


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on one visual input, checked before its frames are decoded: a bigger one is rejected, named.

    A 200 KB mp4 can hold one 8192x8192 frame; sampled 8 times it takes 1.6 GB and seconds per read.
    """

    max_frame_pixels: int = 3840 * 2160  # a frame's width x height (4K UHD)
    max_duration_s: float = 4 * 3600.0
    max_file_bytes: int = 8 * 1024 ** 3

    def __post_init__(self):
        check_numbers("data.limits", self, above_0=("max_frame_pixels", "max_duration_s", "max_file_bytes"))


@dataclass(frozen=True)
class DataSettings:
    decoder: Literal[DECODERS] = "decord"
    read_timeout_s: float = 60.0
    limits: ReadLimits = field(default_factory=ReadLimits)
    synthetic: WorldConfig = field(default_factory=WorldConfig)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)

    def __post_init__(self):
        check_numbers("data", self, above_0=("read_timeout_s",))
