"""Language-model pre-training of the tiny Qwen2 on the synthetic world's text.

The paper starts every stage from Qwen2.5-7B-Instruct, an LLM that already knows the language of
its captions and answers. The tiny profile has no such base, so without this stage alignment and
conditional pre-training would tune a compressor for an LLM that predicts noise. This stage
stands in for the download: it trains the tiny Qwen2 on the chat-formatted text of the training
scenes (never the held-out test scenes), reports held-out perplexity, and saves a checkpoint that
loads like any local LLM directory.
"""
from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import Qwen2Config, Qwen2ForCausalLM

from hicom.core.errors import ConfigError
from hicom.core.files import atomic_write_bytes
from hicom.data.conversation import normalise_turns
from hicom.data.mixture import read_annotations
from hicom.data.synthetic import TRAIN_FILES
from hicom.model.checkpoint import save_model
from hicom.model.settings import ModelProfile
from hicom.pretrain.settings import LLMTrainConfig, one_cycle_warmup


def world_dialogues(world_dir: Path, tokenizer) -> list[str]:
    """Every training conversation of a world, rendered in the chat format, visual tags removed."""
    texts = []
    for name in TRAIN_FILES:
        path = world_dir / name
        if not path.is_file():
            continue
        for sample in read_annotations(path):
            messages = normalise_turns(sample["conversations"], None, str(sample.get("id")))
            texts.append(tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def pretrain_llm(profile: ModelProfile, world_dir: str | Path, tokenizer, out_dir: str | Path,
                 cfg: LLMTrainConfig = LLMTrainConfig(), log=print) -> dict:
    llm_cfg = dict(profile.llm.config)
    if len(tokenizer) > llm_cfg.get("vocab_size", 0):
        raise ConfigError(f"profile {profile.name!r} LLM vocab_size={llm_cfg.get('vocab_size')} is smaller than "
                          f"the tokenizer ({len(tokenizer)} tokens)")
    texts = world_dialogues(Path(world_dir), tokenizer)
    if not texts:
        raise ConfigError(f"{world_dir}: no training conversations found ({', '.join(TRAIN_FILES)})")
    rng = random.Random(cfg.seed)
    rng.shuffle(texts)
    ids = [i for t in texts for i in tokenizer(t, add_special_tokens=False)["input_ids"]]
    blocks = torch.tensor(ids[:len(ids) // cfg.seq_len * cfg.seq_len]).view(-1, cfg.seq_len)
    n_eval = max(1, int(len(blocks) * cfg.held_out))
    eval_blocks, train_blocks = blocks[:n_eval], blocks[n_eval:]
    torch.manual_seed(cfg.seed)
    model = Qwen2ForCausalLM(Qwen2Config(**llm_cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0, foreach=True)  # as in towers.py
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=one_cycle_warmup(cfg.steps, 0.05))

    @torch.no_grad()
    def perplexity() -> float:
        model.eval()
        loss = model(input_ids=eval_blocks, labels=eval_blocks).loss.item()
        model.train()
        return math.exp(loss)

    before = perplexity()
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in tqdm(range(cfg.steps), desc="llm: language-model pre-training", unit="step"):
        batch = train_blocks[torch.randint(len(train_blocks), (cfg.batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        sched.step()
        opt.zero_grad()
    after = perplexity()
    save_model(model, out_dir, tokenizer=tokenizer)
    seconds = time.perf_counter() - start
    # no wall time in the outputs: a rerun that trains the same weights writes the same bytes (as the towers)
    result = {"steps": cfg.steps, "tokens": len(ids), "perplexity_before": before, "perplexity_after": after}
    atomic_write_bytes(Path(out_dir) / "pretrain_metrics.json", json.dumps(result, indent=2).encode())
    log(f"llm: held-out perplexity {after:.2f} (random init {before:.1f}) after {cfg.steps} steps on "
        f"{len(ids):,} tokens in {seconds:.0f}s")
    return result
