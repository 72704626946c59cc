"""Training stages (Table A1) and their typed settings (params.yaml `profiles.NAME.train`, read by hicom.params).

What a stage trains and whether it is guided is fixed here, per the paper; how (learning rates,
batch sizes, ZeRO stage, data) comes from the profile's `train:` section.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from hicom.core.errors import ConfigError
from hicom.core.sections import check_numbers


@dataclass(frozen=True)
class StageSpec:
    name: str
    paper_name: str
    guided: bool  # instruction guidance: off in alignment, on afterwards
    trains_llm: bool  # the paper trains the LLM only in instruction tuning (see trains_llm()); the towers never


STAGES = {
    "align": StageSpec("align", "alignment (stage 1, image-caption pairs)", guided=False, trains_llm=False),
    "cond_pretrain": StageSpec("cond_pretrain", "conditional pre-training (stage 2, HICom-248K)", guided=True,
                               trains_llm=False),
    "sft": StageSpec("sft", "instruction tuning (stage 3, mixed video/image QA)", guided=True, trains_llm=True),
}


def trains_llm(stage: StageSpec, cfg: TrainConfig) -> bool:
    """Whether the LLM trains in this stage: always in instruction tuning, and in an earlier stage when its
    settings give the LLM a learning rate. The paper's stages 1-2 freeze a 7B LLM that already reads projected
    features; a tiny stand-in LLM frozen there is barely steered by the visual tokens (README, "Where the answer
    is lost"; no profile sets one, as it did not raise the tiny pipeline's accuracy reproducibly)."""
    return stage.trains_llm or cfg.lr_llm is not None


@dataclass(frozen=True)
class TrainConfig:
    """One stage's settings: the profile's train.common merged with train.<stage> (hicom.params.Params.train)."""

    data: str  # mixture YAML (relative to params.yaml)
    lr_compressor: float
    lr_injection: float | None = None  # None: injection parameters frozen (or none exist)
    lr_llm: float | None = None
    global_batch: int = 256
    micro_batch: int = 1
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps (>= 1); None: as many as the epochs give
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # 0: no clipping
    zero_stage: int = 2
    bf16: Literal["auto", True, False] = "auto"  # auto: on where the accelerator supports it
    gradient_checkpointing: bool = False
    num_frames: int = 32
    max_length: int = 4096
    save_steps: int = 500
    save_total_limit: int = 3
    # False: a completed stage deletes its checkpoints; its outputs are the final weights and their records, which a
    # rerun that trains the same weights writes byte for byte (so the stages after it stay cached), and DVC does not
    # cache optimizer states. True keeps the last save_total_limit, e.g. to train on from the final optimizer state.
    keep_checkpoints: bool = False
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
        check_numbers("train", self, at_least_1=("global_batch", "micro_batch", "epochs", "num_frames", "max_length",
                                                 "save_steps", "save_total_limit", "max_steps", "log_steps"),
                      at_least_0=("num_workers", "seed", "weight_decay", "grad_clip"),
                      above_0=("lr_compressor", "lr_injection", "lr_llm"), fraction=("warmup_ratio",))
