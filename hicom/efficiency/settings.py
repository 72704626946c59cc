"""params.yaml `efficiency:`: what to measure and on which clips; strict keys, every count checked."""
from __future__ import annotations

from dataclasses import dataclass, field

from hicom.core.errors import ConfigError
from hicom.data.synthetic import WorldConfig


@dataclass(frozen=True)
class ClipSettings:
    """Synthetic clips rendered when no video paths are given (hicom.data.synthetic scenes, lossless mp4)."""

    count: int = 4
    num_frames: int = 128
    fps: int = 8
    size: int = 128
    seed: int = 0

    def __post_init__(self):
        self.world_config()  # the synthetic world's own checks, reported under this section's name

    def world_config(self) -> WorldConfig:
        try:
            return WorldConfig(seed=self.seed, num_videos=self.count, num_frames=self.num_frames, fps=self.fps,
                               size=self.size)
        except ValueError as exc:
            raise ConfigError(str(exc).replace("data.synthetic", "efficiency.clips").replace("num_videos", "count")) from None


@dataclass(frozen=True)
class EfficiencySettings:
    """params.yaml `efficiency:`; strict keys, every count checked."""

    frames: tuple[int, ...] = (32, 64, 128)
    samples: int = 8  # questions per model and frame count for the s/video throughput
    warmup: int = 1
    repeats: int = 5
    max_new_tokens: int = 4  # tokens generated per question in the throughput (an MCQ answer)
    prompt_tokens: int = 64  # text tokens of the random prompt used when no tokenizer is given
    memory_interval_s: float = 0.002  # psutil sampling interval for the CPU peak-memory estimate
    clips: ClipSettings = field(default_factory=ClipSettings)

    def __post_init__(self):
        frames = tuple(self.frames)
        if not frames or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in frames):
            raise ConfigError(f"efficiency.frames: must be a non-empty list of positive integers, got {self.frames!r}")
        object.__setattr__(self, "frames", frames)
        for name, low in (("samples", 1), ("warmup", 0), ("repeats", 1), ("max_new_tokens", 1),
                          ("prompt_tokens", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"efficiency.{name}: must be an integer >= {low}, got {value!r}")
        if not (isinstance(self.memory_interval_s, (int, float)) and self.memory_interval_s > 0):
            raise ConfigError(f"efficiency.memory_interval_s: must be > 0, got {self.memory_interval_s!r}")

