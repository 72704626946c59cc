"""Contrastive pre-training of the tiny SigLIP towers on synthetic frames and captions.

A randomly initialised SigLIP makes text-patch similarity meaningless, and with it instruction
injection and curation scoring. This stage stands in for downloading SigLIP: it trains the tiny
vision and text towers with SigLIP's sigmoid loss on (frame, caption-of-that-frame) pairs from
the synthetic world, checks text->frame retrieval on held-out scenes, and saves a checkpoint that
loads like any local SigLIP directory (model, tokenizer, preprocessor config).
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import SiglipConfig, SiglipModel

from hicom.core.errors import ConfigError
from hicom.core.files import atomic_write_bytes
from hicom.data.synthetic import caption, read_world, render_frame
from hicom.data.video import FramePreprocessor
from hicom.model.checkpoint import save_model
from hicom.model.configuration_hicom import ModelProfile
from hicom.pretrain.settings import TowerTrainConfig


def _pairs(scenes: list, rng: random.Random, n: int, preprocessor: FramePreprocessor):
    frames, texts = [], []
    for _ in range(n):
        scene = rng.choice(scenes)
        t = rng.randrange(scene.num_frames)
        frames.append(render_frame(scene, t))
        texts.append(caption(scene, t))
    return preprocessor(np.stack(frames)), texts


@torch.no_grad()
def retrieval_top1(model: SiglipModel, pixel_values: torch.Tensor, text_ids: torch.Tensor) -> float:
    """Text -> frame: share of captions whose best-scoring frame is their own."""
    model.eval()
    img = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)
    txt = torch.nn.functional.normalize(model.get_text_features(input_ids=text_ids).pooler_output, dim=-1)
    model.train()
    return (txt @ img.T).argmax(dim=1).eq(torch.arange(len(txt))).float().mean().item()


def pretrain_towers(profile: ModelProfile, world_dir: str | Path, tokenizer, out_dir: str | Path,
                    cfg: TowerTrainConfig = TowerTrainConfig(), log=print) -> dict:
    text_cfg = dict(profile.text.config)
    if len(tokenizer) > text_cfg.get("vocab_size", 0) or text_cfg.get("pad_token_id") != tokenizer.pad_token_id:
        raise ConfigError(f"profile {profile.name!r} text tower (vocab_size={text_cfg.get('vocab_size')}, "
                          f"pad_token_id={text_cfg.get('pad_token_id')}) does not fit the tokenizer "
                          f"({len(tokenizer)} tokens, pad id {tokenizer.pad_token_id})")
    scenes, test_ids = read_world(world_dir)
    train = [s for s in scenes if s.id not in test_ids]
    held_out = [s for s in scenes if s.id in test_ids]
    if not train or not held_out:
        raise ValueError(f"{world_dir}: need both training scenes and held-out test scenes")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = SiglipModel(SiglipConfig(vision_config=profile.vision.config, text_config=text_cfg))
    with torch.no_grad():  # SigLIP's initialisation: t' = log 10, b = -10. With transformers' zeros the
        model.logit_scale.fill_(math.log(10.0))  # easy minimum is to push every pair apart, which
        model.logit_bias.fill_(-10.0)  # collapses all embeddings to one point.
    preprocessor = FramePreprocessor(image_size=model.config.vision_config.image_size)
    max_len = text_cfg.get("max_position_embeddings", 64)

    def tokenize(texts):
        return tokenizer(texts, padding="max_length", truncation=True, max_length=max_len,
                         return_tensors="pt")["input_ids"]

    eval_px, eval_txt = _pairs(held_out, random.Random(cfg.seed + 1), cfg.eval_pairs, preprocessor)
    eval_ids = tokenize(eval_txt)
    before = retrieval_top1(model, eval_px, eval_ids)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    start = time.perf_counter()
    losses = []
    for _ in tqdm(range(cfg.steps), desc="towers: sigmoid pre-training", unit="step"):
        px, texts = _pairs(train, rng, cfg.batch_size, preprocessor)
        loss = model(input_ids=tokenize(texts), pixel_values=px, return_loss=True).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    after = retrieval_top1(model, eval_px, eval_ids)
    save_model(model, out_dir, tokenizer=tokenizer)
    preprocessor.save_pretrained(out_dir)
    result = {"steps": cfg.steps, "loss_first": losses[0], "loss_last": sum(losses[-10:]) / len(losses[-10:]),
              "retrieval_top1_before": before, "retrieval_top1_after": after, "chance": 1 / cfg.eval_pairs,
              "seconds": time.perf_counter() - start}
    log(f"towers: text->frame top-1 on {cfg.eval_pairs} held-out frames: {after:.3f} "
        f"(random init {before:.3f}, chance {1 / cfg.eval_pairs:.3f}); loss {losses[0]:.3f} -> "
        f"{result['loss_last']:.3f} in {result['seconds']:.0f}s")
    atomic_write_bytes(Path(out_dir) / "pretrain_metrics.json", json.dumps(result, indent=2).encode())
    return result
