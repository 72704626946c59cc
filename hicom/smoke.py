"""A forward/backward check of a profile's model on a procedurally drawn clip.

It trains only the compressor (towers and LLM frozen, as in the first two stages) for a few
steps on one clip and one answer, and reports the loss before and after: a quick end-to-end
proof that visual tokens reach the LLM and gradients reach the compressor.
"""
from __future__ import annotations

import time

import torch

from hicom.core.types import IGNORE_INDEX, VIDEO_TOKEN_ID, VisualItem
from hicom.model.build import build_model
from hicom.model.settings import ModelProfile


def moving_square_clip(frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """(frames, 3, size, size) in SigLIP's normalised range: a coloured square crossing a grey field."""
    gen = torch.Generator().manual_seed(seed)
    colour = torch.rand(3, generator=gen)
    side = max(2, size // 5)
    clip = torch.full((frames, 3, size, size), 0.5)
    for t in range(frames):
        x = int((size - side) * t / max(frames - 1, 1))
        y = (size - side) // 2
        clip[t, :, y:y + side, x:x + side] = colour[:, None, None]
    return (clip - 0.5) / 0.5


def run_smoke(profile: ModelProfile, steps: int = 5, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    start = time.perf_counter()
    model = build_model(profile)
    model.set_trainable(projector=True, language_model=False)
    vcfg = model.config.vision_config
    clip = moving_square_clip(profile.num_frames, vcfg.image_size, seed)
    vocab = model.config.llm_config.vocab_size
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(1, vocab, (6,), generator=gen)
    answer = torch.randint(1, vocab, (4,), generator=gen)
    input_ids = torch.cat([prompt[:2], torch.tensor([VIDEO_TOKEN_ID]), prompt[2:], answer]).unsqueeze(0)
    labels = torch.cat([torch.full((7,), IGNORE_INDEX), answer]).unsqueeze(0)
    guide = None
    if model.text_tower is not None:
        tcfg = model.config.text_tower_config
        guide = torch.randint(2, tcfg.vocab_size, (model.config.guide_max_length,), generator=gen)
    item = VisualItem(clip, "video", guide)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = model(input_ids=input_ids, labels=labels, visual_items=[item]).loss
        loss.backward()
        grad_ok = all(p.grad is not None for p in model.projector.parameters())
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return {
        "frames": profile.num_frames,
        "visual_tokens": model.num_visual_tokens(profile.num_frames),
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "frozen_params": sum(p.numel() for p in model.parameters() if not p.requires_grad),
        "compressor_grads": grad_ok,
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "seconds": time.perf_counter() - start,
    }
