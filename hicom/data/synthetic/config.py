"""How big the synthetic world is and how it looks: WorldConfig, validated on construction."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

NUMBERS = ("none", "one", "two", "three", "four", "five", "six")  # how captions and questions count objects
MAX_OBJECTS = len(NUMBERS) - 1  # a scene holds no more objects than there are number words


@dataclass(frozen=True)
class WorldConfig:
    """How many clips, how they look, and how much text each one yields; validated on construction."""

    seed: int = 0
    num_videos: int = 200
    num_frames: int = 24  # frames per clip
    fps: int = 8
    size: int = 64  # square frame side in pixels
    min_objects: int = 2
    max_objects: int = 4
    qa_per_video: int = 3  # QA turns per video for instruction tuning
    mcq_per_video: int = 2  # multiple-choice turns (answered with a letter) per train video, in sft_mcq.jsonl
    pairs_per_video: int = 3  # instruction-description pairs per video (conditional pre-training)
    test_fraction: float = 0.2  # share of videos held out for the MCQ test split (never in train files)
    test_per_family: int = 2  # held-out questions per clip and tested question family (distinct texts)

    def __post_init__(self):
        where = "data.synthetic"
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "test_fraction":
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                    raise ValueError(f"{where}.test_fraction: must be a number in [0, 1), got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{where}.{f.name}: must be an integer, got {value!r}")
        minimum = {"num_videos": 1, "num_frames": 8, "fps": 1, "size": 32, "min_objects": 1,
                   "qa_per_video": 1, "pairs_per_video": 1, "mcq_per_video": 0,
                   "test_per_family": 1}
        for name, low in minimum.items():
            if getattr(self, name) < low:
                raise ValueError(f"{where}.{name}: must be >= {low}, got {getattr(self, name)!r}")
        if self.size % 2:
            raise ValueError(f"{where}.size: must be even (yuv420p video), got {self.size!r}")
        if not self.min_objects <= self.max_objects <= MAX_OBJECTS:
            raise ValueError(f"{where}.max_objects: must be in [min_objects={self.min_objects}, {MAX_OBJECTS}], "
                             f"got {self.max_objects!r}")

    @property
    def num_test(self) -> int:
        """Held-out clips; at least one clip always stays in train."""
        return min(round(self.num_videos * self.test_fraction), self.num_videos - 1)
