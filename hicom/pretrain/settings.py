"""params.yaml `towers:` and `llm:`: the tiny profile's pre-training of its SigLIP towers and its LLM."""
from __future__ import annotations

from dataclasses import dataclass

from hicom.core.errors import ConfigError
from hicom.core.sections import check_numbers


def one_cycle_warmup(steps: int, fraction: float) -> float:
    """The warm-up fraction (OneCycleLR's pct_start) for `steps` steps: `fraction`, except where the warm-up would end
    at step 0 (fraction * steps == 1: towers.steps 10, llm.steps 20), which torch's OneCycleLR divides by; two
    steps of warm-up there."""
    return 2 / steps if steps > 2 and float(fraction * steps) == 1 else fraction


@dataclass(frozen=True)
class TowerTrainConfig:
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    eval_pairs: int = 64  # held-out frames per retrieval check (chance = 1 / eval_pairs)
    # Weight of the object-level loss (hicom.pretrain.towers.ObjectHeads): each visible object's pooled patch
    # features name its shape, colour, size and place, and its pooled joint-space embeddings match phrases naming it.
    # 0: off (params.yaml's towers section sets it).
    object_loss: float = 0.0
    # Weight, inside the object-level loss, of the same heads read from each patch an object covers alone
    # (ObjectHeads.patch_loss), so that an attention-weighted pooling over the object keeps its shape. 0: off.
    patch_loss: float = 0.0
    # Also match every object to the instructions that single out none ("What colour is the object that appears in
    # the second half of the video?"): the tiny profile's local level pools each frame with the guide's text
    # embedding as its query, and such a text had drifted to one colour, which the pooling then kept.
    unnamed_texts: bool = False
    seed: int = 0

    def __post_init__(self):
        check_numbers("towers", self, at_least_1=("steps", "batch_size", "eval_pairs"), at_least_0=("seed",
                      "object_loss", "patch_loss"), above_0=("lr",))
        if self.unnamed_texts and self.object_loss == 0:
            raise ConfigError("towers.unnamed_texts: true needs towers.object_loss > 0 (the texts are matched to the "
                              "objects inside the object-level loss), got object_loss 0")


@dataclass(frozen=True)
class LLMTrainConfig:
    steps: int = 400
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 2.0e-3
    held_out: float = 0.05  # share of text blocks kept for perplexity
    seed: int = 0

    def __post_init__(self):
        check_numbers("llm", self, at_least_1=("steps", "batch_size", "seq_len"), at_least_0=("seed",),
                      above_0=("lr",), fraction=("held_out",))
