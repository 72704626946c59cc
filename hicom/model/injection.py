"""Instruction injection: how the instruction enters a compressor's queries.

Every parameter of an injector lives under a module named `guide_injector`, so the optimizer
can give injection its own learning rate (Table A1) by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hicom.model.settings import Injection


@dataclass
class Guide:
    """The encoded instruction(s): one, k stacked about one visual item, or k per item for B items.

    pooled: (d_t,) | (k, d_t) | (B, k, d_t)           SigLIP text-head output (the joint-space sentence embedding).
    tokens: (L, d_t) | (k, L, d_t) | (B, k, L, d_t)   per-token states through the text head; only `fine` needs them.
    mask:   (L,) | (k, L) | (B, k, L)                 True for real tokens, False for padding.

    k stacked guides let a compressor share its guide-independent work (gathering the groups,
    the global keys and values) between the k questions about one video. The per-item form
    (`Guide.stack`) lets one projector call compress B items of the same shape, each with its own
    k guides: a micro-batch of short clips is otherwise dominated by per-call overhead.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def batched(self) -> bool:
        """k guides stacked about one item: pooled (k, d_t)."""
        return self.pooled.dim() == 2

    @property
    def per_item(self) -> bool:
        """k guides for each of B items: pooled (B, k, d_t)."""
        return self.pooled.dim() == 3

    def __getitem__(self, index: int | slice) -> Guide:
        """Along the leading dimension: one guide or a stack of some (stacked guides), one item's k guides or
        some items' (per-item guides)."""
        if self.pooled.dim() < 2:
            raise TypeError("a single Guide cannot be indexed; only stacked guides can")
        return Guide(self.pooled[index], None if self.tokens is None else self.tokens[index],
                     None if self.mask is None else self.mask[index])

    def stacked(self) -> Guide:
        """These guides of one item with a leading k dimension (k = 1 for a single guide)."""
        if self.per_item:
            raise TypeError(f"per-item guides (pooled {tuple(self.pooled.shape)}) are not one item's guides")
        if self.batched:
            return self
        return Guide(self.pooled[None], None if self.tokens is None else self.tokens[None],
                     None if self.mask is None else self.mask[None])

    def as_items(self) -> Guide:
        """The per-item form: per-item guides as they are, one item's guides as a batch of one item."""
        if self.per_item:
            return self
        g = self.stacked()
        return Guide(g.pooled[None], None if g.tokens is None else g.tokens[None],
                     None if g.mask is None else g.mask[None])

    @classmethod
    def stack(cls, guides: list[Guide]) -> Guide:
        """Per-item guides (pooled (B, k, d_t)) from B items' guides, each single or k stacked with the same k and
        the same shapes, so that one projector call compresses all B items."""
        if not guides:
            raise ValueError("Guide.stack: no guides to stack")
        items = [g.stacked() for g in guides]
        first = items[0]
        for i, g in enumerate(items[1:], start=1):
            for field in ("pooled", "tokens", "mask"):
                a, b = (None if x is None else tuple(x.shape) for x in (getattr(first, field), getattr(g, field)))
                if a != b:
                    raise ValueError(f"Guide.stack: guide {i}'s {field} has shape {b}, guide 0's {a}; only guides "
                                     "of equal shapes (the same k) stack")
        return cls(torch.stack([g.pooled for g in items]),
                   None if first.tokens is None else torch.stack([g.tokens for g in items]),
                   None if first.mask is None else torch.stack([g.mask for g in items]))


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Two-layer GELU MLP; index names 0/2 match the release's readout keys."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class GuideInjector(nn.Module):
    """Maps visual queries and the guides to instruction-aware queries.

    Per-item guides (pooled (B, k, d_t)): query (n, d), shared by every item (the global level's learnable
    queries), or (B, n, d), one set per item (the local level's group means) -> (B, k, n, d).
    One item's guides: query (n, d) -> (n, d) for a single guide, (k, n, d) for k stacked ones; the case
    B = 1 of the above. Mode `off` returns the query unchanged.
    """

    def __init__(self, mode: Injection, query_dim: int, text_dim: int, head_dim: int = 128):
        super().__init__()
        self.mode = Injection(mode)
        self.query_dim = query_dim
        # Every injecting mode reads the instruction at the queries' width: text_proj maps it there
        # (the release keeps it as-is when the widths match). A mode that injects nothing has no
        # projection, so no parameter of an injector goes without a gradient.
        needs_proj = self.mode is not Injection.OFF and text_dim != query_dim
        self.text_proj = mlp(text_dim, query_dim, query_dim) if needs_proj else nn.Identity()
        if self.mode is Injection.COARSE:
            self.coarse_proj = mlp(query_dim, 2 * query_dim, 2 * query_dim)
            self.norm = nn.LayerNorm(query_dim, eps=1e-6)
        elif self.mode is Injection.FINE:
            if query_dim % head_dim:
                head_dim = query_dim  # one head when the width is not a multiple of the head size
            self.cross_attn = nn.MultiheadAttention(query_dim, query_dim // head_dim, batch_first=True)
            self.norm = nn.LayerNorm(query_dim, eps=1e-6)

    @property
    def needs_tokens(self) -> bool:
        return self.mode is Injection.FINE

    def forward(self, query: torch.Tensor, guide: Guide | None) -> torch.Tensor:
        if self.mode is Injection.OFF:
            return query
        if guide is None:
            raise ValueError(f"injection mode {self.mode.value!r} needs an instruction, but none was given")
        if not guide.per_item:
            if query.dim() != 2:
                raise ValueError(f"query: expected (queries, width), got shape {tuple(query.shape)}")
            out = self._inject(query, guide.as_items())[0]
            return out if guide.batched else out[0]
        items = guide.pooled.shape[0]
        if query.dim() not in (2, 3) or (query.dim() == 3 and query.shape[0] != items):
            raise ValueError(f"query: expected (queries, width) or ({items} items, queries, width) for guides "
                             f"with pooled shape {tuple(guide.pooled.shape)}, got shape {tuple(query.shape)}")
        return self._inject(query, guide)

    def _inject(self, query: torch.Tensor, guide: Guide) -> torch.Tensor:
        """query (n, d) or (B, n, d), guides pooled (B, k, d_t) -> (B, k, n, d)."""
        b, k = guide.pooled.shape[:2]
        n, d = query.shape[-2:]
        shared = query if query.dim() == 3 else query[None]  # (B or 1, n, d)
        if self.mode is Injection.DIRECT:
            g = self.text_proj(guide.pooled.to(query.dtype))  # (B, k, d)
            return g[:, :, None, :].expand(b, k, n, d)
        if self.mode is Injection.COARSE:
            g = self.text_proj(guide.pooled.to(query.dtype))  # (B, k, d)
            gamma, beta = self.coarse_proj(g)[:, :, None, :].chunk(2, dim=-1)  # (B, k, 1, d) each
            return self.norm(shared[:, None] * (1 + gamma) + beta)
        # fine: every query attends over its instruction's token states
        if guide.tokens is None:
            raise ValueError("injection mode 'fine' needs the instruction's token states (Guide.tokens)")
        tokens = self.text_proj(guide.tokens.to(query.dtype)).flatten(0, 1)  # (B k, L, d)
        flat = shared[:, None].expand(b, k, n, d).reshape(b * k, n, d)
        pad = None if guide.mask is None else ~guide.mask.bool().flatten(0, 1)
        attended, _ = self.cross_attn(flat, tokens, tokens, key_padding_mask=pad, need_weights=False)
        return self.norm(flat + attended).reshape(b, k, n, d)
