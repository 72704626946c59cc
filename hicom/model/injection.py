"""Instruction injection: how the instruction enters a compressor's queries.

Every parameter of an injector lives under a module named `guide_injector`, so the optimizer
can give injection its own learning rate (Table A1) by name.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hicom.config import Injection


@dataclass
class Guide:
    """The encoded instruction for one visual item.

    pooled: (d_t,) SigLIP text-head output (the joint-space sentence embedding).
    tokens: (L, d_t) per-token states through the text head; only the `fine` mode needs them.
    mask:   (L,) True for real tokens, False for padding.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor | None = None
    mask: torch.Tensor | None = None


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Two-layer GELU MLP; index names 0/2 match the release's readout keys."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class GuideInjector(nn.Module):
    """Maps visual queries q (..., d) and a Guide to instruction-aware queries (..., d)."""

    def __init__(self, mode: Injection, query_dim: int, text_dim: int, head_dim: int = 128):
        super().__init__()
        self.mode = Injection(mode)
        self.query_dim = query_dim
        # The release keeps the text embedding as-is when its width matches the queries.
        self.text_proj = mlp(text_dim, query_dim, query_dim) if text_dim != query_dim else nn.Identity()
        if self.mode is Injection.COARSE:
            self.coarse_proj = mlp(text_dim, 2 * query_dim, 2 * query_dim)
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
        if self.mode is Injection.DIRECT:
            g = self.text_proj(guide.pooled.to(query.dtype))
            return g.expand_as(query)
        if self.mode is Injection.COARSE:
            gamma, beta = self.coarse_proj(guide.pooled.to(query.dtype)).chunk(2, dim=-1)
            return self.norm(query * (1 + gamma) + beta)
        # fine: every query attends over the instruction's token states
        if guide.tokens is None:
            raise ValueError("injection mode 'fine' needs the instruction's token states (Guide.tokens)")
        tokens = self.text_proj(guide.tokens.to(query.dtype)).unsqueeze(0)
        flat = query.reshape(1, -1, self.query_dim)
        pad = None if guide.mask is None else ~guide.mask.bool().unsqueeze(0)
        attended, _ = self.cross_attn(flat, tokens, tokens, key_padding_mask=pad, need_weights=False)
        return self.norm(flat + attended).reshape(query.shape)
