"""params.yaml `registry:`: the registered model's name, the served prompt layout and the promotion gate's tolerances."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hicom.core.errors import ConfigError
from hicom.evaluate.benchmarks import (
    BENCHMARKS,  # module level: every command validates this at start
)


@dataclass(frozen=True)
class GateConfig:
    """How much worse than the champion a challenger may be and still be promoted, and on how many questions."""

    accuracy_margin: float = 0.05  # per benchmark: the paired interval's low end must be above -margin
    min_questions: int = 50  # a benchmark's question set must be at least this large to decide on
    visual_tokens_max_increase: float = 0.0  # relative
    latency_max_increase: float = 0.25  # relative

    def __post_init__(self):
        if not 0 < self.accuracy_margin < 1:
            raise ConfigError(f"registry.gate.accuracy_margin: must be above 0 and below 1 (an accuracy difference), "
                              f"got {self.accuracy_margin!r}")
        if self.min_questions < 1:
            raise ConfigError(f"registry.gate.min_questions: must be at least 1, got {self.min_questions!r}")


@dataclass(frozen=True)
class RegistryConfig:
    """params.yaml `registry:`."""

    model_name: str = "hicom-video-qa"
    efficiency_frames: int = 32  # the profile row (HICom at this many frames) that gives tokens and latency
    prompt_template: str = "synthetic"  # how the served model lays out options (hicom.evaluate.benchmarks.BENCHMARKS)
    gate: GateConfig = dataclasses.field(default_factory=GateConfig)

    def __post_init__(self):
        if self.prompt_template not in BENCHMARKS:
            raise ConfigError(f"registry.prompt_template: {self.prompt_template!r} is not one of {sorted(BENCHMARKS)}")
