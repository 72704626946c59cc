"""How much the global level carries: whether its tokens differ from each other and from question to question.

Collapsed global tokens (all queries returning the same vector) make the global level one token repeated,
and tokens that do not move when the question changes mean the instruction does not steer compression.
Both are reported as a distance over the tokens' norm, so they compare across widths and stages.
"""
from __future__ import annotations

import itertools

import torch


def relative_spread(tokens: torch.Tensor) -> float:
    """Mean pairwise L2 distance between the rows of `tokens` (n, d) over their mean L2 norm; 0 when equal."""
    if tokens.dim() != 2 or tokens.shape[0] < 2:
        raise ValueError(f"relative_spread: needs (n >= 2, d) tokens, got shape {tuple(tokens.shape)}")
    tokens = tokens.float()
    norm = tokens.norm(dim=-1).mean()
    distances = torch.pdist(tokens)
    return float(distances.mean() / norm) if norm > 0 else 0.0


def global_token_spread(model, items) -> dict[str, float] | None:
    """Over visual items (each with its k guides): `global_tokens_spread`, the mean relative spread of one
    compression's global tokens, and `global_tokens_question_spread`, the mean relative distance between the
    global tokens of two different questions about the same item. None for a model without a global level."""
    compressor = getattr(model.projector, "global_compressor", None)
    if compressor is None or not items:
        return None
    n = compressor.cfg.num_queries
    within, across = [], []
    with torch.no_grad():
        outputs = model.encode_visual(items)
    start = 0
    for item in items:
        k = 1 if item.guide_input_ids is None or item.guide_input_ids.dim() == 1 else item.guide_input_ids.shape[0]
        per_question = [tokens[-n:] for tokens in outputs[start:start + k]]
        start += k
        within += [relative_spread(g) for g in per_question]
        for a, b in itertools.combinations(per_question, 2):
            norm = (a.float().norm(dim=-1).mean() + b.float().norm(dim=-1).mean()) / 2
            across.append(float((a.float() - b.float()).norm(dim=-1).mean() / norm) if norm > 0 else 0.0)
    out = {"global_tokens_spread": sum(within) / len(within)}
    if across:
        out["global_tokens_question_spread"] = sum(across) / len(across)
    return out
