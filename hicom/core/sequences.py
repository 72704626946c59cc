"""Where a spliced training sequence (text with visual tokens in place of its placeholders) may be cut to fit a
length limit. Shared by the model, which cuts, and the dataset, which drops a turn that cannot fit before it
reaches the model."""
from __future__ import annotations

import torch

from hicom.core.types import IGNORE_INDEX


class SequenceTooLongError(ValueError):
    """A spliced sequence cannot be cut to the length limit without losing visual tokens or every answer."""


def find_cut(labels: torch.Tensor, visual_end: int, max_length: int) -> int:
    """Where to cut a spliced sequence of len(labels) so it fits in max_length.

    The cut never splits a supervised answer (a run of labels != IGNORE_INDEX), never drops
    visual tokens (all of them end before `visual_end`), and ends right after the last answer kept.
    """
    length = labels.shape[0]
    if length <= max_length:
        return length
    if visual_end > max_length:
        raise SequenceTooLongError(
            f"sequence of {length} tokens: its visual tokens end at position {visual_end}, past max_length={max_length}")
    supervised = labels != IGNORE_INDEX
    if not bool(supervised.any()):
        raise SequenceTooLongError(
            f"sequence of {length} tokens exceeds max_length={max_length} and has no answer to cut after")
    for cut in range(max_length, visual_end - 1, -1):
        if not (supervised[cut - 1] and supervised[cut]) and bool(supervised[:cut].any()):
            last_answer_end = int(torch.nonzero(supervised[:cut]).max()) + 1
            return max(last_answer_end, visual_end)  # end on an answer, not on a dangling prompt
    raise SequenceTooLongError(
        f"sequence of {length} tokens: no whole answer fits in max_length={max_length}")
