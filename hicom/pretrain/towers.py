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
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import SiglipConfig, SiglipModel

from hicom.core.errors import ConfigError
from hicom.core.files import atomic_write_bytes
from hicom.data.synthetic import (CELLS, COLOURS, SHAPES, SIZES, VIDEO_PROMPTS, caption, cell, object_mask, read_world,
                                  render_frame, unnamed_questions)
from hicom.data.video import FramePreprocessor
from hicom.model.checkpoint import save_model
from hicom.model.settings import ModelProfile
from hicom.pretrain.settings import TowerTrainConfig, one_cycle_warmup

COLOUR_NAMES = tuple(COLOURS)
POSITION_BINS = 8  # the row and column heads' resolution: a patch of the tiny towers' 9x9 grid is about 1/9


def _position_bin(v: int, size: int) -> int:
    return min(POSITION_BINS - 1, max(0, v * POSITION_BINS // size))


@lru_cache(maxsize=8)
def _patch_index(size: int, grid: int) -> np.ndarray:
    """(size, size): the raster index of the patch each pixel lands in (frames are resized, so pixel x lands in
    patch x * grid // size)."""
    patch = np.arange(size) * grid // size  # the patch row (column) of each pixel row (column)
    return patch[:, None] * grid + patch[None, :]


def _object_targets(scene, t: int, grid: int) -> list[tuple]:
    """Per object visible in frame t: its weights over the grid x grid patches (the share of its pixels in each,
    summing to 1; frames are resized, so pixel x lands in patch x * grid // size), then the ids of its shape,
    colour, size, the 3x3 cell its centre is in (the world's answer to "where is it?"), and its centre's row and
    column in POSITION_BINS bins (finer, so that a move of a few pixels shows)."""
    patch_of_pixel = _patch_index(scene.size, grid)
    targets = []
    for obj in scene.objects:
        if not obj.visible(t):
            continue
        counts = np.bincount(patch_of_pixel[object_mask(scene, obj, t)], minlength=grid * grid).astype(float)
        if counts.sum() > 0:
            x, y = obj.position(t)
            targets.append((counts / counts.sum(), SHAPES.index(obj.shape),
                            COLOUR_NAMES.index(obj.colour), SIZES.index(obj.size),
                            CELLS.index(cell(scene.size, x, y)), _position_bin(y, scene.size),
                            _position_bin(x, scene.size)))
    return targets


def _pairs(scenes: list, rng: random.Random, n: int, preprocessor: FramePreprocessor, grid: int | None):
    """n random (frame, its caption) pairs, and per visible object (frame index, patch weights, attribute ids) when
    a patch grid is given (only the object-level loss needs them: 35 ms of a 64-frame batch)."""
    frames, texts, objects = [], [], []
    for i in range(n):
        scene = rng.choice(scenes)
        t = rng.randrange(scene.num_frames)
        frames.append(render_frame(scene, t))
        texts.append(caption(scene, t))
        if grid is not None:
            objects += [(i, *target) for target in _object_targets(scene, t, grid)]
    return preprocessor(np.stack(frames)), texts, objects


# Instructions name an object inside a question; the phrases are also asked in these frames, so that an
# instruction's text embedding (the compressors' guide) carries the object it names, not only the question's kind.
QUESTION_FRAMES = ("What colour is {}?", "What shape is {}?", "Where is {} at the start of the video?",
                   "How does {} move?", "When does {} appear?")
QUESTIONS_PER_STEP = 32


def object_phrases() -> tuple[list[str], torch.Tensor]:
    """Noun phrases that name an object by some of its attributes, and per phrase the (shape, colour, size) ids it
    requires (-1: any)."""
    phrases, required = [], []
    for c, colour in enumerate(COLOUR_NAMES):
        phrases.append(f"the {colour} object")
        required.append((-1, c, -1))
        for s, shape in enumerate(SHAPES):
            phrases.append(f"the {colour} {shape}")
            required.append((s, c, -1))
    for s, shape in enumerate(SHAPES):
        phrases.append(f"the {shape}")
        required.append((s, -1, -1))
        for z, size in enumerate(SIZES):
            phrases.append(f"the {size} {shape}")
            required.append((s, -1, z))
    return phrases, torch.tensor(required)


class ObjectHeads(torch.nn.Module):
    """The object-level objectives: linear heads that read an object's shape, colour, size and place from its pooled
    penultimate patch features, and a sigmoid loss between its pooled joint-space patch embeddings and the text
    embeddings of phrases that name it ("the red square", "the square", "the red object").

    Why: the sigmoid loss on whole-frame captions can match a frame to its caption by colours and places alone,
    so captions alone left shape out of the patch features that both compression levels pool, and out of the text
    embedding of an instruction ("What colour is the square?" and "... the circle?" embedded alike), which is all
    the compressors learn which object is asked about from (README, "Where the answer is lost"). SigLIP's own
    towers carry both. The place heads (cell, row, column) are there because a feature pooled over the asked object
    kept what the object is but not where (a probe read its cell at 0.15 against a majority of 0.14), and where it
    starts and how it moves are what two question families ask. Training-only: the heads are not saved.
    """

    def __init__(self, width: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict({"shape": torch.nn.Linear(width, len(SHAPES)),
                                          "colour": torch.nn.Linear(width, len(COLOUR_NAMES)),
                                          "size": torch.nn.Linear(width, len(SIZES)),
                                          "cell": torch.nn.Linear(width, len(CELLS)),
                                          "row": torch.nn.Linear(width, POSITION_BINS),
                                          "column": torch.nn.Linear(width, POSITION_BINS)})
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(10.0)))  # SigLIP's initialisation
        self.logit_bias = torch.nn.Parameter(torch.tensor(-10.0))

    def forward(self, features: torch.Tensor, objects: list) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """features (frames, patches, C), the encoder's penultimate layer -> per attribute (logits, targets)."""
        pooled = _pool(features, objects)
        return {name: (head(pooled), torch.tensor([o[2 + k] for o in objects]))
                for k, (name, head) in enumerate(self.heads.items())}

    def patch_loss(self, features: torch.Tensor, objects: list) -> torch.Tensor:
        """The heads' loss on each patch an object covers, alone, weighted by the object's share of pixels in it.

        Why: the guided local level pools a frame with attention weights, not with these pixel weights, and its
        weights settle on the patches most like the instruction (for "the red object": the red interior of a large
        object). Supervising only the pixel-weighted mean let the shape live in the edge patches that the mean
        includes, so a large object's shape was lost to attention (README, "Where the answer is lost"). Naming
        the object from every patch it covers makes any pooling over it carry what it is and where.
        """
        weights = torch.from_numpy(np.stack([o[1] for o in objects])).to(features.dtype)  # (objects, patches)
        owner, patch = weights.nonzero(as_tuple=True)  # the few patches each object covers, not the whole grid
        frame = torch.tensor([o[0] for o in objects])
        covered = features[frame[owner], patch]  # (covered patches, C)
        share = weights[owner, patch] / len(objects)  # the mean over objects of each one's weighted sum
        loss = features.new_zeros(())
        for k, head in enumerate(self.heads.values()):
            target = torch.tensor([o[2 + k] for o in objects])[owner]
            loss = loss + (torch.nn.functional.cross_entropy(head(covered), target, reduction="none") * share).sum()
        return loss

    def phrase_loss(self, embeds: torch.Tensor, objects: list, phrase_embeds: torch.Tensor,
                    required: torch.Tensor) -> torch.Tensor:
        """Sigmoid loss of every (object, phrase) pair: positive when the phrase names the object."""
        region = torch.nn.functional.normalize(_pool(embeds, objects), dim=-1)
        text = torch.nn.functional.normalize(phrase_embeds, dim=-1)
        logits = region @ text.T * self.logit_scale.exp() + self.logit_bias
        attributes = torch.tensor([o[2:5] for o in objects])  # (objects, 3)
        match = ((required[None] < 0) | (required[None] == attributes[:, None])).all(-1)
        return -torch.nn.functional.logsigmoid(torch.where(match, logits, -logits)).sum() / len(objects)


def _pool(features: torch.Tensor, objects: list) -> torch.Tensor:
    """Per object, its frame's (patches, C) features averaged with its patch weights -> (objects, C)."""
    frame = torch.tensor([o[0] for o in objects])
    weights = torch.from_numpy(np.stack([o[1] for o in objects])).to(features.dtype)
    return torch.einsum("op,opc->oc", weights, features[frame])


def _joint_space_patches(model: SiglipModel, last_hidden_state: torch.Tensor) -> torch.Tensor:
    """Per-patch joint-space embeddings E, as HIComForCausalLM.encode_frames computes them: the last layer through
    the per-token part of the pooling head (layernorm + MLP, residual)."""
    head = model.vision_model.head
    return last_hidden_state + head.mlp(head.layernorm(last_hidden_state))


def unnamed_texts(scenes: list) -> list[str]:
    """Instructions that single out no object by how it looks: the scenes' questions of that kind ("What colour is
    the object that appears in the second half of the video?", "Which colour can be seen in the video?") and the
    video prompts. A frame does not tell which object they are about, so they should weigh every object alike."""
    return sorted({text for scene in scenes for text in unnamed_questions(scene)} | set(VIDEO_PROMPTS))


def _step_phrases(phrases: list[str], required: torch.Tensor, rng: random.Random) -> tuple[list[str], torch.Tensor]:
    """Every phrase, and QUESTIONS_PER_STEP of them asked in a random question frame."""
    picked = [rng.randrange(len(phrases)) for _ in range(QUESTIONS_PER_STEP)]
    texts = phrases + [rng.choice(QUESTION_FRAMES).format(phrases[i]) for i in picked]
    return texts, torch.cat([required, required[picked]])


def _object_loss(heads: ObjectHeads, model: SiglipModel, vision_out, objects: list, phrase_ids: torch.Tensor,
                 required: torch.Tensor, patch_weight: float = 0.0) -> torch.Tensor:
    # hidden_states[-2]: the output of the encoder's second-to-last layer, the features F the compressors get
    features = vision_out.hidden_states[-2]
    heads_loss = sum(torch.nn.functional.cross_entropy(logits, target)
                     for logits, target in heads(features, objects).values())
    if patch_weight > 0:
        heads_loss = heads_loss + patch_weight * heads.patch_loss(features, objects)
    phrase_embeds = model.get_text_features(input_ids=phrase_ids).pooler_output
    embeds = _joint_space_patches(model, vision_out.last_hidden_state)
    return heads_loss + heads.phrase_loss(embeds, objects, phrase_embeds, required)


@torch.no_grad()
def object_accuracy(model: SiglipModel, heads: ObjectHeads, pixel_values: torch.Tensor, objects: list) -> dict:
    """Held-out objects: the share whose attributes the heads read right from the pooled features, and from the
    object's most-covered patch alone (`<name>_peak_patch`)."""
    model.eval()
    features = model.vision_model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-2]
    model.train()
    pooled = {name: logits.argmax(-1).eq(target).float().mean().item()
              for name, (logits, target) in heads(features, objects).items()}
    # the same heads on the one patch that holds most of each object: what a pooling that settles on it keeps
    frame = torch.tensor([o[0] for o in objects])
    peak = torch.from_numpy(np.stack([o[1] for o in objects])).argmax(-1)
    peak_features = features[frame, peak]
    single = {f"{name}_peak_patch": head(peak_features).argmax(-1).eq(torch.tensor([o[2 + k] for o in objects]))
              .float().mean().item() for k, (name, head) in enumerate(heads.heads.items())}
    return {**pooled, **single}


@torch.no_grad()
def retrieval_top1(model: SiglipModel, pixel_values: torch.Tensor, text_ids: torch.Tensor) -> float:
    """Text -> frame: share of captions whose best-scoring frame is their own."""
    model.eval()
    img = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixel_values).pooler_output, dim=-1)
    txt = torch.nn.functional.normalize(model.get_text_features(input_ids=text_ids).pooler_output, dim=-1)
    model.train()
    return (txt @ img.T).argmax(dim=1).eq(torch.arange(len(txt))).float().mean().item()


class PaddedIds:
    """Token ids of texts, each padded to max_length (so a row does not depend on the others), remembered per text.

    Why: every towers step embeds the same phrases and unnamed texts again (62 of its 158 texts; its 32 questions
    come from 210, and a caption recurs when its frame is drawn again), and tokenising all of them cost 8-9 ms of a
    step of about 185 ms. Only texts not seen before go to the tokenizer, in one call.
    """

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length
        self.known: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), max_length) int64 ids."""
        new = [text for text in dict.fromkeys(texts) if text not in self.known]
        if new:
            ids = self.tokenizer(new, padding="max_length", truncation=True, max_length=self.max_length,
                                 return_tensors="np")["input_ids"]
            self.known.update(zip(new, ids.astype(np.int64)))
        return torch.from_numpy(np.stack([self.known[text] for text in texts]))


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

    tokenize = PaddedIds(tokenizer, max_len)

    vision = model.config.vision_config
    heads = ObjectHeads(vision.hidden_size) if cfg.object_loss > 0 else None
    grid = vision.image_size // vision.patch_size if heads is not None else None
    eval_px, eval_txt, eval_objects = _pairs(held_out, random.Random(cfg.seed + 1), cfg.eval_pairs, preprocessor, grid)
    eval_ids = tokenize(eval_txt)
    before = retrieval_top1(model, eval_px, eval_ids)
    phrases, phrase_required = object_phrases()
    # every object matches an instruction that names none (required -1: any shape, colour and size)
    unnamed = unnamed_texts(train) if cfg.unnamed_texts else []
    unnamed_required = torch.full((len(unnamed), 3), -1, dtype=phrase_required.dtype)
    trained = list(model.parameters()) + (list(heads.parameters()) if heads is not None else [])
    # foreach: the same bits as the default per-tensor loop on the CPU (here and in the clipping below), 1.4 ms less
    # a step (docs/timings.md)
    opt = torch.optim.AdamW(trained, lr=cfg.lr, weight_decay=0.0, foreach=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=one_cycle_warmup(cfg.steps, 0.1))
    start = time.perf_counter()
    losses, object_losses = [], []
    for _ in tqdm(range(cfg.steps), desc="towers: sigmoid pre-training", unit="step"):
        px, texts, objects = _pairs(train, rng, cfg.batch_size, preprocessor, grid)
        out = model(input_ids=tokenize(texts), pixel_values=px, return_loss=True,
                    output_hidden_states=heads is not None)
        loss = out.loss
        if heads is not None and objects:
            texts, required = _step_phrases(phrases, phrase_required, rng)
            texts, required = texts + unnamed, torch.cat([required, unnamed_required])
            object_loss = _object_loss(heads, model, out.vision_model_output, objects, tokenize(texts), required,
                                       cfg.patch_loss)
            (loss + cfg.object_loss * object_loss).backward()
            object_losses.append(object_loss.item())
        else:
            loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0, foreach=True)
        opt.step()
        sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    after = retrieval_top1(model, eval_px, eval_ids)
    save_model(model, out_dir, tokenizer=tokenizer)
    preprocessor.save_pretrained(out_dir)
    seconds = time.perf_counter() - start
    # Only what the inputs decide goes into the outputs (no wall time): a rerun that trains the same weights then
    # writes the same bytes, so the stages after it keep their cache keys (flows/hashes.py, dvc.lock).
    result = {"steps": cfg.steps, "loss_first": losses[0], "loss_last": sum(losses[-10:]) / len(losses[-10:]),
              "retrieval_top1_before": before, "retrieval_top1_after": after, "chance": 1 / cfg.eval_pairs}
    log(f"towers: text->frame top-1 on {cfg.eval_pairs} held-out frames: {after:.3f} "
        f"(random init {before:.3f}, chance {1 / cfg.eval_pairs:.3f}); loss {losses[0]:.3f} -> "
        f"{result['loss_last']:.3f} in {seconds:.0f}s")
    if heads is not None:
        accuracy = object_accuracy(model, heads, eval_px, eval_objects)
        result.update({"object_loss_first": object_losses[0], "object_loss_last": sum(object_losses[-10:]) / len(
            object_losses[-10:]), "heldout_objects": len(eval_objects),
            **{f"object_{name}_accuracy": value for name, value in accuracy.items()}})
        log(f"towers: {len(eval_objects)} held-out objects read from their pooled patch features: "
            + ", ".join(f"{name} {value:.3f}" for name, value in accuracy.items())
            + f" (chance: shape {1 / len(SHAPES):.2f}, colour {1 / len(COLOURS):.2f}, size {1 / len(SIZES):.2f}, "
              f"cell {1 / len(CELLS):.2f}, row and column {1 / POSITION_BINS:.2f})")
    atomic_write_bytes(Path(out_dir) / "pretrain_metrics.json", json.dumps(result, indent=2).encode())
    return result
