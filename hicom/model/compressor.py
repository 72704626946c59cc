"""Visual-token compressors: HICom's local + global levels and the LLaVA-OneVision baseline.

Each compressor maps the frozen vision features of one visual item to LLM-width tokens:
    F: (T, H, W, C)  penultimate-layer SigLIP features
    E: (T, H, W, C)  per-patch joint-space embeddings (only when an instruction is injected)
    guide: Guide     the encoded instruction, or k stacked ones (k questions about the item)
With k stacked guides the output is (k, N, D) and the guide-independent work (gathering the
local groups, the global level's keys and values or context) is done once for all k.

Or of B items of the same shape and modality in one call (per-call overhead dominates the tiny
profile's small items): F and E (B, T, H, W, C), guides per item (`Guide.stack`, pooled (B, k, d_t))
-> (B, k, N, D), or (B, N, D) without guides. Internally every level works on the item dimension
only; one item is the case B = 1.

Module and parameter names follow the public release (`local_compressor.readout.0`,
`global_compressor.attn_layer.q_proj`, ...) so its projector checkpoint maps onto ours.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as nnf
from einops import rearrange
from torch import nn

from hicom.model.injection import Guide, GuideInjector, mlp
from hicom.model.settings import CompressorConfig, GlobalConfig, Injection, LocalConfig


def check_features(features: torch.Tensor, dim: int, name: str = "features") -> None:
    """Fail early, with the offending shape, on input the compressors cannot take: one item's features
    (frames, height, width, channels) or B items' (items, frames, height, width, channels)."""
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name}: expected a tensor, got {type(features).__name__}")
    if features.dim() not in (4, 5):
        raise ValueError(f"{name}: expected rank 4 (frames, height, width, channels) or rank 5 (items, frames, "
                         f"height, width, channels), got shape {tuple(features.shape)}")
    if features.dim() == 5 and features.shape[0] == 0:
        raise ValueError(f"{name}: zero items, got shape {tuple(features.shape)}")
    if features.shape[-4] == 0:
        raise ValueError(f"{name}: zero frames; a visual item needs at least one frame, "
                         f"got shape {tuple(features.shape)}")
    if features.shape[-1] != dim:
        raise ValueError(f"{name}: expected {dim} channels, got shape {tuple(features.shape)}")


def window_indices(length: int, kernel: int) -> torch.Tensor:
    """Index windows that tile an axis of `length` with ceil(length / kernel) windows.

    Each window holds min(kernel, length) consecutive indices; window starts are evenly spaced
    so every index is covered and, when the kernel does not divide the length, neighbouring
    windows overlap by the smallest amount. (The release's balanced division crashes for
    T in {5, 6, 9} at kernel 4.) Returns a (num_windows, window) long tensor.
    """
    if length < 1 or kernel < 1:
        raise ValueError(f"window_indices: length and kernel must be >= 1, got {length} and {kernel}")
    size = min(kernel, length)
    count = math.ceil(length / kernel)
    if count == 1:
        starts = [0]
    else:
        span = length - size  # the last window ends exactly at the axis end
        starts = [(i * span + (count - 1) // 2) // (count - 1) for i in range(count)]
    return torch.tensor(starts).unsqueeze(1) + torch.arange(size).unsqueeze(0)


def sincos_1d(positions: torch.Tensor, dim: int, interleaved: bool = False) -> torch.Tensor:
    """Transformer sin-cos embedding of integer positions -> (len, dim)."""
    half = dim // 2
    freq = 1.0 / (10000 ** (torch.arange(half, dtype=torch.float32, device=positions.device) / half))
    angles = positions.float().unsqueeze(1) * freq.unsqueeze(0)
    if interleaved:  # release layout: sin on even channels, cos on odd ones
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def position_embedding_3d(t: int, h: int, w: int, dim: int, kind: str, device=None) -> torch.Tensor:
    """3D sin-cos position embedding -> (t, h, w, dim).

    split_concat (paper): time, height and width get 3/8, 3/8 and 2/8 of the channels, concatenated.
    sum (release): three full-width embeddings summed, which is symmetric under swapping axes.
    """
    axes = [torch.arange(n, device=device) for n in (t, h, w)]
    if kind == "sum":
        et, eh, ew = (sincos_1d(a, dim, interleaved=True) for a in axes)
        return et[:, None, None] + eh[None, :, None] + ew[None, None, :]
    d_t = d_h = 2 * ((3 * dim) // 16)
    d_w = dim - d_t - d_h
    if min(d_t, d_w) <= 0 or d_w % 2:
        raise ValueError(f"split_concat position embedding needs a width divisible by 16, got {dim}")
    et, eh, ew = sincos_1d(axes[0], d_t), sincos_1d(axes[1], d_h), sincos_1d(axes[2], d_w)
    return torch.cat([
        et[:, None, None, :].expand(t, h, w, d_t),
        eh[None, :, None, :].expand(t, h, w, d_h),
        ew[None, None, :, :].expand(t, h, w, d_w),
    ], dim=-1)


class FeatureStandardizer(nn.Module):
    """Per-channel standardisation of the frozen vision features: (F - mean) / std.

    Why: a small tower trained briefly (the tiny profile's) puts most of each patch feature's norm into
    one component that every patch of every clip shares, so pooled or attended tokens barely differ
    from clip to clip and the LLM learns to answer from the question alone. The statistics are
    buffers, fitted once on training clips by the first stage that trains the compressor (`fit`),
    saved with it and loaded with it; before fitting it is the identity.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @property
    def fitted(self) -> bool:
        """Whether statistics were fitted: an unfitted one (mean 0, std 1) is the identity, so the statistics
        themselves tell, and no flag has to be saved beside them."""
        return bool(self.mean.ne(0).any() or self.std.ne(1).any())

    @torch.no_grad()
    def fit(self, features: list[torch.Tensor]) -> dict:
        """Fit on the (..., C) features of some training items; returns what it fitted, for the run's log."""
        flat = torch.cat([f.reshape(-1, f.shape[-1]).float() for f in features]) if features else None
        if flat is None or flat.shape[0] < 2:
            raise ValueError("FeatureStandardizer.fit: needs the features of at least one visual item (2+ patches)")
        if flat.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"FeatureStandardizer.fit: features have {flat.shape[-1]} channels, "
                             f"expected {self.mean.shape[0]}")
        self.mean.copy_(flat.mean(0))
        self.std.copy_(flat.std(0).clamp_min(1e-6))
        return {"items": len(features), "patches": int(flat.shape[0]), "mean_norm": float(self.mean.norm()),
                "std_mean": float(self.std.mean())}

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (features - self.mean.to(features.dtype)) / self.std.to(features.dtype)


def gather_groups(x: torch.Tensor, windows: list[torch.Tensor]) -> torch.Tensor:
    """x (B, T, H, W, C) and the (count, size) windows of the T, H and W axes -> (B, groups, window tokens, C),
    groups in raster order (t, h, w), each group's tokens in raster order too.

    An axis that its windows tile exactly (count * size == length: window_indices then gives
    arange(length) in rows) is only reshaped; one with overlapping windows is gathered first with
    index_select, which is much cheaper, forward and backward, than one advanced index over all three axes.
    """
    for axis, win in zip((1, 2, 3), windows):
        if win.numel() != x.shape[axis]:
            x = x.index_select(axis, win.flatten())
    (a, i), (b, j), (c, k) = (tuple(win.shape) for win in windows)
    x = x.reshape(x.shape[0], a, i, b, j, c, k, x.shape[-1])
    return rearrange(x, "n a i b j c k d -> n (a b c) (i j k) d")


class LocalCompressor(nn.Module):
    """One query per kt x ks x ks group pools the group's tokens (keys E, values F)."""

    def __init__(self, cfg: LocalConfig, vision_dim: int, text_dim: int, llm_dim: int):
        super().__init__()
        self.cfg = cfg
        self.dim = vision_dim
        self.guide_injector = GuideInjector(cfg.injection, vision_dim, text_dim)
        self.readout = mlp(vision_dim, llm_dim, llm_dim)

    def grid(self, t: int, h: int, w: int, is_image: bool = False) -> tuple[int, int, int]:
        kt = 1 if (is_image or t == 1) else self.cfg.temporal_kernel
        ks = self.cfg.spatial_kernel
        return math.ceil(t / kt), math.ceil(h / ks), math.ceil(w / ks)

    def forward(self, features: torch.Tensor, embeds: torch.Tensor | None, guide: Guide | None,
                is_image: bool = False, guided: bool = True) -> torch.Tensor:
        """B items' F and E (B, T, H, W, C), per-item guides or None -> (B, k, groups, D): k = the guides per
        item, or 1 when none are injected."""
        b, t, h, w, _ = features.shape
        kt = 1 if (is_image or t == 1) else self.cfg.temporal_kernel
        ks = self.cfg.spatial_kernel
        guided = guided and self.cfg.injection is not Injection.OFF
        keys_src = embeds if (guided and embeds is not None) else features
        windows = [window_indices(n, k).to(features.device) for n, k in ((t, kt), (h, ks), (w, ks))]
        values = gather_groups(features, windows)  # (B, groups, window, C)
        keys = values if keys_src is features else gather_groups(keys_src, windows)

        base = values.mean(dim=2)  # unconditional query: the group mean (the release point-samples)
        query = self.guide_injector(base, guide) if guided else base[:, None]  # (B, k, groups, C)
        scale = 1.0 / math.sqrt(self.dim)
        if self.cfg.grouping:
            weights = torch.einsum("bngc,bgkc->bngk", query, keys).mul(scale).softmax(dim=-1)
            pooled = torch.einsum("bngk,bgkc->bngc", weights, values)
        else:  # ablation: every query pools over its own item's whole clip
            all_keys = keys_src.reshape(b, -1, self.dim)
            all_values = features.reshape(b, -1, self.dim)
            weights = torch.einsum("bngc,bmc->bngm", query, all_keys).mul(scale).softmax(dim=-1)
            pooled = torch.einsum("bngm,bmc->bngc", weights, all_values)
        return self.readout(pooled)


class CrossAttention(nn.Module):
    """Multi-head cross-attention with the release's q/k/v/out projection names."""

    def __init__(self, dim: int, head_dim: int):
        super().__init__()
        if dim % head_dim:
            raise ValueError(f"compressor.global.head_dim={head_dim} does not divide the vision width {dim}")
        self.heads = dim // head_dim
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """query (B, k, n, dim) over each item's context (B, m, dim) -> (B, k, n, dim).

        Attention treats every query row alone, so an item's k x n queries attend as one sequence of k * n.
        Two exact forms of the same attention; the one with fewer multiply-adds runs:
        - projected: the m context tokens to keys and values (2 m dim^2), then attention at the head width;
        - folded, where the queries are few against the width (k n (heads - 1) < dim; the global level's 16
          queries at every preset, k = 1): a head's logit q . (W_k x + b_k) is (W_k^T q) . x + q . b_k, and its
          output sum_x a_x (W_v x + b_v) is W_v (sum_x a_x x) + b_v (the weights sum to 1), so attention runs on
          the context itself at full width and the context is never projected. On the tiny profile's
          instruction-tuning micro-batch (32 items of 648 tokens) that halves this layer's forward and backward.
        """
        k, n = query.shape[1], query.shape[2]
        q = rearrange(self.q_proj(query), "b k n (h d) -> b h (k n) d", h=self.heads)
        if k * n * (self.heads - 1) < context.shape[-1]:
            out = self._folded(q, context)
        else:
            key = rearrange(self.k_proj(context), "b m (h d) -> b h m d", h=self.heads)
            value = rearrange(self.v_proj(context), "b m (h d) -> b h m d", h=self.heads)
            out = nnf.scaled_dot_product_attention(q, key, value)
        return self.out_proj(rearrange(out, "b h (k n) d -> b k n (h d)", k=k))

    def _folded(self, q: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Per-head queries q (B, heads, r, d) over context (B, m, dim), the key and value projections folded in
        -> (B, heads, r, d). The key bias's logit, the same for every context token, is kept: it is the exact
        logit, and it keeps b_k's gradient (zero up to rounding, as in the projected form)."""
        heads, d = self.heads, q.shape[-1]
        scale = d ** -0.5
        w_k = self.k_proj.weight.view(heads, d, -1)
        w_v = self.v_proj.weight.view(heads, d, -1)
        rows = torch.einsum("bhrd,hdc->bhrc", q, w_k).mul(scale).flatten(1, 2)  # (B, heads * r, dim)
        bias = torch.einsum("bhrd,hd->bhr", q, self.k_proj.bias.view(heads, d)).mul(scale).flatten(1, 2)
        weights = (torch.bmm(rows, context.transpose(1, 2)) + bias[..., None]).softmax(dim=-1)
        mixed = torch.bmm(weights, context).unflatten(1, (heads, -1))  # (B, heads, r, dim)
        return torch.einsum("bhrc,hdc->bhrd", mixed, w_v) + self.v_proj.bias.view(heads, 1, d)


class GlobalCompressor(nn.Module):
    """Learnable queries, instruction-injected, cross-attend over every token + 3D position."""

    def __init__(self, cfg: GlobalConfig, vision_dim: int, text_dim: int, llm_dim: int):
        super().__init__()
        self.cfg = cfg
        self.query = nn.Parameter(torch.zeros(cfg.num_queries, vision_dim))
        self.reset_query()
        self.guide_injector = GuideInjector(cfg.injection, vision_dim, text_dim, cfg.head_dim)
        self.attn_layer = CrossAttention(vision_dim, cfg.head_dim)
        self.readout = mlp(vision_dim, llm_dim, llm_dim)

    def reset_query(self, init=nn.init) -> None:
        """Release: zeros (uniform attention at start). Paper preset: small random, so queries differ."""
        if self.cfg.query_init == "normal":
            init.trunc_normal_(self.query, std=0.02)
        else:
            init.zeros_(self.query)

    def forward(self, features: torch.Tensor, guide: Guide | None, guided: bool = True) -> torch.Tensor:
        """B items' F (B, T, H, W, C), per-item guides or None -> (B, k, num_queries, D): k = the guides per
        item, or 1 when none are injected."""
        b, t, h, w, c = features.shape
        pos = position_embedding_3d(t, h, w, c, self.cfg.pos_embed, device=features.device)  # once per call
        context = (features + pos.to(features.dtype)).reshape(b, -1, c)
        query = self.guide_injector(self.query, guide) if guided else self.query
        if query.dim() == 2:  # nothing injected: the learnable queries, shared by every item
            query = query.expand(b, 1, *query.shape)
        return self.readout(query + self.attn_layer(query, context))


def batch_of_items(features: torch.Tensor, embeds: torch.Tensor | None, guide: Guide | None, vision_dim: int):
    """Check a projector's input and bring it to the per-item form: (features (B, T, H, W, C), embeds or None,
    per-item guides or None, single) - one item's input (rank-4 features) as B = 1, `single` True."""
    check_features(features, vision_dim)
    if embeds is not None and embeds.shape != features.shape:
        raise ValueError(f"embeds: shape {tuple(embeds.shape)} differs from features {tuple(features.shape)}")
    single = features.dim() == 4
    if single:
        if guide is not None and guide.per_item:
            raise ValueError(f"guide: per-item guides (pooled {tuple(guide.pooled.shape)}) need features of B "
                             f"items (B, T, H, W, C), got shape {tuple(features.shape)}")
        return features[None], None if embeds is None else embeds[None], \
            None if guide is None else guide.as_items(), True
    if guide is not None and not (guide.per_item and guide.pooled.shape[0] == features.shape[0]):
        raise ValueError(f"guide: features of {features.shape[0]} items (shape {tuple(features.shape)}) need "
                         f"per-item guides (Guide.stack) with pooled ({features.shape[0]}, k, width), got pooled "
                         f"shape {tuple(guide.pooled.shape)}")
    return features, embeds, guide, False


class HIComCompressor(nn.Module):
    """[local tokens (raster order); global tokens] for one visual item: (N, D), or (k, N, D) for k stacked guides;
    for B items of one shape (rank-5 features): (B, N, D) without guides, (B, k, N, D) with per-item guides."""

    def __init__(self, cfg: CompressorConfig, vision_dim: int, text_dim: int, llm_dim: int):
        super().__init__()
        self.cfg = cfg
        self.vision_dim = vision_dim
        # False: every level runs unconditionally (alignment stage); the injectors keep their
        # parameters, so the same checkpoint loads strictly in the guided stages that follow.
        self.guided = True
        self.standardizer = FeatureStandardizer(vision_dim) if cfg.standardize else None
        self.local_compressor = LocalCompressor(cfg.local, vision_dim, text_dim, llm_dim) if cfg.local else None
        self.global_compressor = GlobalCompressor(cfg.global_, vision_dim, text_dim, llm_dim) if cfg.global_ else None

    @property
    def uses_instruction(self) -> bool:
        return self.guided and self.cfg.uses_instruction

    @property
    def needs_embeds(self) -> bool:
        return self.guided and self.local_compressor is not None and self.cfg.local.injection is not Injection.OFF

    @property
    def needs_guide_tokens(self) -> bool:
        return self.guided and any(m is not None and m.guide_injector.needs_tokens
                                   for m in (self.local_compressor, self.global_compressor))

    def num_tokens(self, t: int, h: int, w: int, is_image: bool = False) -> int:
        n = 0
        if self.local_compressor is not None:
            n += math.prod(self.local_compressor.grid(t, h, w, is_image))
        if self.global_compressor is not None:
            n += self.cfg.global_.num_queries
        return n

    def forward(self, features: torch.Tensor, embeds: torch.Tensor | None = None, guide: Guide | None = None,
                is_image: bool = False) -> torch.Tensor:
        original = guide
        features, embeds, guide, single = batch_of_items(features, embeds, guide, self.vision_dim)
        if self.standardizer is not None:
            features = self.standardizer(features)
        parts = []
        if self.local_compressor is not None:
            parts.append(self.local_compressor(features, embeds, guide, is_image, self.guided))
        if self.global_compressor is not None:
            parts.append(self.global_compressor(features, guide, self.guided))
        k = 1 if guide is None else guide.pooled.shape[1]
        out = torch.cat([part.expand(-1, k, -1, -1) for part in parts], dim=2)  # a level without injection: k copies
        if single:
            out = out[0]
            return out if original is not None and original.batched else out[0]
        return out if original is not None else out[:, 0]


class LlavaOVProjector(nn.Module):
    """LLaVA-OneVision baseline: 2-layer MLP, then 2x2 bilinear pooling per video frame."""

    needs_embeds = False
    needs_guide_tokens = False
    uses_instruction = False

    def __init__(self, cfg: CompressorConfig, vision_dim: int, llm_dim: int):
        super().__init__()
        self.cfg = cfg
        self.vision_dim = vision_dim
        self.standardizer = FeatureStandardizer(vision_dim) if cfg.standardize else None
        self.readout = mlp(vision_dim, llm_dim, llm_dim)

    def num_tokens(self, t: int, h: int, w: int, is_image: bool = False) -> int:
        if is_image:
            return t * h * w
        p = self.cfg.baseline_pool
        return t * math.ceil(h / p) * math.ceil(w / p)

    def forward(self, features: torch.Tensor, embeds=None, guide=None, is_image: bool = False) -> torch.Tensor:
        """One item's F (T, H, W, C) -> (N, D); B items' (B, T, H, W, C) -> (B, N, D). Any guide is ignored."""
        check_features(features, self.vision_dim)
        single = features.dim() == 4
        features = features[None] if single else features
        if self.standardizer is not None:
            features = self.standardizer(features)
        x = self.readout(features)  # (B, T, H, W, D)
        b, t, h, w, d = x.shape
        if is_image:
            out = x.reshape(b, -1, d)
        else:
            p = self.cfg.baseline_pool
            x = nnf.interpolate(rearrange(x, "b t h w d -> (b t) d h w"), size=(math.ceil(h / p), math.ceil(w / p)),
                                mode="bilinear", align_corners=False)
            out = rearrange(x, "(b t) d h w -> b (t h w) d", b=b)
        return out[0] if single else out


def build_projector(cfg: CompressorConfig, vision_dim: int, text_dim: int, llm_dim: int) -> nn.Module:
    if cfg.kind == "llava_ov":
        return LlavaOVProjector(cfg, vision_dim, llm_dim)
    return HIComCompressor(cfg, vision_dim, text_dim, llm_dim)

