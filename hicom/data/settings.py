"""params.yaml `data:`: how videos are read, the synthetic world and the tiny tokenizer's size."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from hicom.data.synthetic import WorldConfig

DECODERS = ("decord", "pyav")  # video readers; hicom.data.video implements both


@dataclass(frozen=True)
class TokenizerSettings:
    vocab_size: int = 1024  # the tiny profile's BPE; must not exceed the tiny towers' / LLM's vocab_size


@dataclass(frozen=True)
class DataSettings:
    decoder: Literal[DECODERS] = "decord"
    read_timeout_s: float = 60.0
    synthetic: WorldConfig = field(default_factory=WorldConfig)
    tokenizer: TokenizerSettings = field(default_factory=TokenizerSettings)
