"""Instruction injection: how the instruction enters a compressor's queries.

Every parameter of an injector lives under a module named `guide_injector`, so the optimizer
can give injection its own learning rate (Table A1) by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hicom.model.configuration_hicom import Injection


@dataclass
class Guide:
    """The encoded instruction(s) about one visual item: a single one, or k of them stacked.

    pooled: (d_t,) or (k, d_t)        SigLIP text-head output (the joint-space sentence embedding).
    tokens: (L, d_t) or (k, L, d_t)   per-token states through the text head; only `fine` needs them.
    mask:   (L,) or (k, L)            True for real tokens, False for padding.

    k stacked guides let a compressor share its guide-independent work (gathering the groups,
    the global keys and values) between the k questions about one video.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def batched(self) -> bool:
        return self.pooled.dim() == 2

    def __getitem__(self, index: int | slice) -> Guide:
        """One guide (int) or a stack of some of them (slice), from stacked guides."""
        if not self.batched:
            raise TypeError("a single Guide cannot be indexed; only stacked guides can")
        return Guide(self.pooled[index], None if self.tokens is None else self.tokens[index],
                     None if self.mask is None else self.mask[index])

    def stacked(self) -> Guide:
        """These guides with a leading k dimension (k = 1 for a single guide)."""
        if self.batched:
            return self
        return Guide(self.pooled[None], None if self.tokens is None else self.tokens[None],
                     None if self.mask is None else self.mask[None])


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Two-layer GELU MLP; index names 0/2 match the release's readout keys."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class GuideInjector(nn.Module):
    """Maps visual queries q (n, d) and one or k stacked guides to instruction-aware queries."""

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
        """query (n, d), shared by every guide -> (n, d) for a single guide, (k, n, d) for k stacked ones."""
        if self.mode is Injection.OFF:
            return query
        if guide is None:
            raise ValueError(f"injection mode {self.mode.value!r} needs an instruction, but none was given")
        if query.dim() != 2:
            raise ValueError(f"query: expected (queries, width), got shape {tuple(query.shape)}")
        out = self._inject(query, guide.stacked())
        return out if guide.batched else out[0]

    def _inject(self, query: torch.Tensor, guide: Guide) -> torch.Tensor:
        k = guide.pooled.shape[0]
        if self.mode is Injection.DIRECT:
            g = self.text_proj(guide.pooled.to(query.dtype))  # (k, d)
            return g[:, None, :].expand(k, *query.shape)
        if self.mode is Injection.COARSE:
            g = self.text_proj(guide.pooled.to(query.dtype))  # (k, d)
            gamma, beta = self.coarse_proj(g)[:, None, :].chunk(2, dim=-1)
            return self.norm(query * (1 + gamma) + beta)
        # fine: every query attends over its instruction's token states
        if guide.tokens is None:
            raise ValueError("injection mode 'fine' needs the instruction's token states (Guide.tokens)")
        tokens = self.text_proj(guide.tokens.to(query.dtype))  # (k, L, d)
        flat = query.expand(k, *query.shape)
        pad = None if guide.mask is None else ~guide.mask.bool()
        attended, _ = self.cross_attn(flat, tokens, tokens, key_padding_mask=pad, need_weights=False)
        return self.norm(flat + attended)
