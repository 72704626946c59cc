"""Types and constants that the model, the data pipeline and evaluation all speak."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: the orchestration reads these constants without importing torch
    import torch

IGNORE_INDEX = -100  # label of a position that is not supervised
IMAGE_TOKEN_ID = -200  # placeholder ids in a prompt, replaced by visual tokens; never in the vocabulary
VIDEO_TOKEN_ID = -201
PLACEHOLDER_IDS = {"image": IMAGE_TOKEN_ID, "video": VIDEO_TOKEN_ID}
TAGS = {"image": "<image>", "video": "<video>"}  # where a conversation's text places its image or video


@dataclass
class VisualItem:
    """One image or video of a batch, in the order its placeholder appears."""

    pixel_values: torch.Tensor | None  # (T, 3, S, S), T >= 1; None when features come from the cache
    modality: str = "video"  # "video" | "image"
    # (L,) the SigLIP-tokenised instruction padded to max length, or (k, L): k questions about this
    # item, each filling its own placeholder (the item is encoded once, compressed for all k in one call)
    guide_input_ids: torch.Tensor | None = None
    # Frozen-tower outputs computed earlier (the feature cache): F and E, each (T, g, g, C).
    features: torch.Tensor | None = None
    embeds: torch.Tensor | None = None
    cache_key: str | None = None  # where to store this item's features after computing them
    # Frozen instruction-tower outputs for its k guides, computed earlier (the feature cache):
    # pooled (k, d) and, where `fine` injection needs them, per-token states (k, L, d).
    guide_pooled: torch.Tensor | None = None
    guide_tokens: torch.Tensor | None = None
    guide_cache_key: str | None = None  # where to store the encoded guides after computing them
