"""HICom-248K curation: score candidate videos against category descriptions, select, and write
instruction-description pairs for conditional pre-training.

1. Score: SigLIP frame-text similarity (cosine of the towers' pooled embeddings) between each
   video's sampled frames and each category description, averaged over the frames.
2. Select: the top N videos per category (each video counted once, categories in order), plus
   M more drawn at random (seeded) from the rest. The paper: N = 1,500, M = 10,000, 29 categories.
3. Generate ~3 instruction-description pairs per selected video with a pluggable generator:
   `groundtruth` (our synthetic scenes, offline) or `openai` (any OpenAI-compatible chat endpoint,
   e.g. vLLM serving Qwen2-VL-72B). Replies are validated; a malformed one is rejected, not written.
4. Write LLaVA-format JSONL shards and a manifest (counts per category, rejects, content hashes).
"""
from __future__ import annotations

import base64
import concurrent.futures as futures
import hashlib
import io
import json
import math
import os
import random
import re
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hicom.core.files import atomic_write_bytes
from hicom.curate.settings import CurateConfig, OpenAIConfig
from hicom.data.dataset import RejectLog
from hicom.data.video import FramePreprocessor, VideoReadError, read_video


class MalformedReply(ValueError):
    """A generator reply is not a usable list of instruction-description pairs."""



# -- scoring ------------------------------------------------------------------------------------
@torch.no_grad()
def score_videos(videos: list[dict], categories: tuple[str, ...], vision, text, tokenizer,
                 preprocessor: FramePreprocessor, cfg: CurateConfig, rejects: RejectLog,
                 text_max_length: int) -> tuple[list[dict], np.ndarray]:
    """(kept videos, scores (V, C)): mean over frames of cos(frame embedding, category embedding)."""
    ids = tokenizer(list(categories), padding="max_length", truncation=True, max_length=text_max_length,
                    return_tensors="pt")["input_ids"]
    cat = torch.nn.functional.normalize(text(input_ids=ids).pooler_output, dim=-1)
    kept, rows = [], []
    for video in tqdm(videos, desc="curate: scoring", unit="video"):
        try:
            clip = read_video(video["video"], cfg.frames, decoder=cfg.decoder, scale_for=preprocessor)
        except VideoReadError as exc:
            rejects.add(video["id"], str(exc), video["video"], "curate")
            continue
        frames = torch.nn.functional.normalize(vision(pixel_values=preprocessor(clip.frames)).pooler_output, dim=-1)
        rows.append((frames @ cat.T).mean(dim=0))
        kept.append(video)
    scores = torch.stack(rows).numpy() if rows else np.zeros((0, len(categories)))
    return kept, scores


def select_videos(scores: np.ndarray, top_per_category: int, random_extra: int, seed: int) -> list[tuple[int, str]]:
    """(video index, reason) pairs: category index as str for top-N picks, 'random' for the extras."""
    chosen: dict[int, str] = {}
    for c in range(scores.shape[1]):
        order = np.argsort(-scores[:, c], kind="stable")
        picked = 0
        for v in order:
            if picked == top_per_category:
                break
            if int(v) not in chosen:
                chosen[int(v)] = str(c)
                picked += 1
    rest = [v for v in range(scores.shape[0]) if v not in chosen]
    for v in sorted(random.Random(seed).sample(rest, min(random_extra, len(rest)))):
        chosen[v] = "random"
    return sorted(chosen.items())


# -- generators ---------------------------------------------------------------------------------
def parse_pairs(reply: str, max_pairs: int) -> list[tuple[str, str]]:
    """Validate a generator reply: a JSON list of {"instruction", "description"} with real text."""
    text = reply.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedReply(f"reply is not JSON: {exc.msg}") from None
    if not isinstance(data, list) or not data:
        raise MalformedReply("reply must be a non-empty JSON list")
    pairs = []
    for i, item in enumerate(data[:max_pairs]):
        if not isinstance(item, dict):
            raise MalformedReply(f"item {i} is not an object")
        ins, desc = item.get("instruction"), item.get("description")
        if not isinstance(ins, str) or not isinstance(desc, str) or len(ins.split()) < 3 or len(desc.split()) < 2:
            raise MalformedReply(f"item {i} needs an 'instruction' (3+ words) and a 'description' (2+ words)")
        pairs.append((ins.strip(), desc.strip()))
    if len({p[0] for p in pairs}) != len(pairs):
        raise MalformedReply("instructions repeat")
    return pairs


class GroundTruthGenerator:
    """Pairs from the synthetic scenes' ground truth (the offline default)."""

    name = "groundtruth"

    def __init__(self, scenes_file: str | Path, pairs_per_video: int, seed: int):
        from hicom.data.synthetic import Scene

        self.scenes = {}
        for line in Path(scenes_file).read_text().splitlines():
            if line.strip():
                scene = Scene.from_dict(json.loads(line))
                self.scenes[scene.id] = scene
        self.pairs_per_video = pairs_per_video
        self.seed = seed

    def generate(self, videos: list[dict], rejects: RejectLog) -> dict[str, list[tuple[str, str]]]:
        from hicom.data.synthetic import instruction_pairs

        out = {}
        for video in videos:
            scene = self.scenes.get(video["id"])
            if scene is None:
                rejects.add(video["id"], "no ground-truth scene for this video", video["video"], "curate")
                continue
            out[video["id"]] = instruction_pairs(scene, random.Random(f"{self.seed}:{video['id']}"),
                                                 self.pairs_per_video)
        return out


PROMPT = ("These are {n} frames sampled uniformly from one video. Write {k} different pairs of an "
          "instruction and a description. Each instruction asks about specific content of the video "
          "(an object, an action, a moment, an attribute); its description answers it in one to three "
          "sentences, using only what the frames show. Reply with a JSON list only: "
          '[{{"instruction": "...", "description": "..."}}, ...]')


class OpenAIGenerator:
    """Any OpenAI-compatible chat endpoint; concurrent, retried, cached on disk, validated."""

    name = "openai"

    def __init__(self, cfg: OpenAIConfig, pairs_per_video: int, cache_dir: str | Path, decoder: str = "decord"):
        self.cfg = cfg
        self.pairs = pairs_per_video
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.decoder = decoder

    def _messages(self, video: dict) -> tuple[list[dict], str]:
        from PIL import Image

        clip = read_video(video["video"], self.cfg.frames, decoder=self.decoder)
        content = []
        digest = hashlib.sha256(clip.frames.tobytes())
        for frame in clip.frames:
            buf = io.BytesIO()
            Image.fromarray(frame).save(buf, format="JPEG", quality=90)
            url = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
            content.append({"type": "image_url", "image_url": {"url": url}})
        prompt = PROMPT.format(n=len(clip.frames), k=self.pairs)
        content.append({"type": "text", "text": prompt})
        digest.update(f"{self.cfg.model}\n{prompt}\n{self.cfg.temperature}".encode())
        return [{"role": "user", "content": content}], digest.hexdigest()

    def _post(self, messages: list[dict]) -> str:
        import httpx

        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.cfg.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = {"model": self.cfg.model, "messages": messages, "temperature": self.cfg.temperature}
        delay = self.cfg.retry_backoff_s
        for attempt in range(self.cfg.max_retries + 1):
            try:
                resp = httpx.post(f"{self.cfg.base_url.rstrip('/')}/chat/completions", json=body,
                                  headers=headers, timeout=self.cfg.timeout_s)
                if resp.status_code in (429, 500, 502, 503, 504):
                    raise httpx.HTTPStatusError(f"status {resp.status_code}", request=resp.request, response=resp)
                resp.raise_for_status()
                return resp.json()["choices"][0]["message"]["content"]
            except (httpx.TransportError, httpx.HTTPStatusError) as exc:
                retryable = not isinstance(exc, httpx.HTTPStatusError) or exc.response.status_code in (
                    429, 500, 502, 503, 504)
                if not retryable or attempt == self.cfg.max_retries:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    def _one(self, video: dict) -> list[tuple[str, str]]:
        messages, key = self._messages(video)
        cached = self.cache_dir / f"{key}.json"
        if cached.is_file():
            reply = json.loads(cached.read_text())["reply"]
        else:
            reply = self._post(messages)
            parse_pairs(reply, self.pairs)  # only a valid reply is cached
            atomic_write_bytes(cached, json.dumps({"id": video["id"], "reply": reply}).encode())
        return parse_pairs(reply, self.pairs)

    def generate(self, videos: list[dict], rejects: RejectLog) -> dict[str, list[tuple[str, str]]]:
        import httpx

        out = {}
        with futures.ThreadPoolExecutor(max_workers=self.cfg.concurrency) as pool:
            jobs = {pool.submit(self._one, v): v for v in videos}
            for job in tqdm(futures.as_completed(jobs), total=len(jobs), desc="curate: generating", unit="video"):
                video = jobs[job]
                try:
                    out[video["id"]] = job.result()
                except (MalformedReply, VideoReadError, httpx.HTTPError, KeyError) as exc:
                    rejects.add(video["id"], f"{type(exc).__name__}: {exc}", video["video"], "curate")
        return out


# -- output -------------------------------------------------------------------------------------
def to_sample(video: dict, pairs: list[tuple[str, str]], data_root: Path) -> dict:
    conversations = []
    for i, (instruction, description) in enumerate(pairs):
        conversations.append({"from": "human", "value": ("<video>\n" if i == 0 else "") + instruction})
        conversations.append({"from": "gpt", "value": description})
    rel = os.path.relpath(Path(video["video"]).resolve(), Path(data_root).resolve())
    return {"id": video["id"], "video": rel, "conversations": conversations}


def write_shards(samples: list[dict], out_dir: Path, shard_size: int, stem: str = "cond_pretrain") -> dict[str, dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{stem}-*.jsonl"):  # a rerun replaces the whole shard set
        old.unlink()
    shards = {}
    n_shards = max(1, math.ceil(len(samples) / shard_size))
    for s in range(n_shards):
        rows = samples[s * shard_size:(s + 1) * shard_size]
        data = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows).encode()
        name = f"{stem}-{s:05d}-of-{n_shards:05d}.jsonl"
        atomic_write_bytes(out_dir / name, data)
        shards[name] = {"samples": len(rows), "sha256": hashlib.sha256(data).hexdigest()}
    return shards


def run_curation(videos: list[dict], cfg: CurateConfig, out_dir: str | Path, vision, text, tokenizer,
                 preprocessor: FramePreprocessor, generator, data_root: str | Path, text_max_length: int) -> dict:
    """The whole stage; returns the manifest (also written as out_dir/manifest.json)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rejects = RejectLog(out_dir / "rejects.jsonl")
    rejects.path.unlink(missing_ok=True)  # this run's rejects only
    kept, scores = score_videos(videos, cfg.categories, vision, text, tokenizer, preprocessor, cfg, rejects,
                                text_max_length)
    picks = select_videos(scores, cfg.top_per_category, cfg.random_extra, cfg.seed)
    chosen = [kept[v] for v, _ in picks]
    pairs = generator.generate(chosen, rejects)
    samples, per_category = [], {c: 0 for c in cfg.categories}
    per_category["random"] = 0
    for (v, reason), video in zip(picks, chosen):
        if video["id"] not in pairs:
            continue
        samples.append(to_sample(video, pairs[video["id"]], Path(data_root)))
        per_category["random" if reason == "random" else cfg.categories[int(reason)]] += 1
    shards = write_shards(samples, out_dir, cfg.shard_size)
    np.save(out_dir / "scores.npy", scores)
    manifest = {
        "generator": generator.name,
        "candidates": len(videos),
        "scored": len(kept),
        "selected": len(picks),
        "written": len(samples),
        "pairs": sum(len(s["conversations"]) // 2 for s in samples),
        "per_category": per_category,
        "rejects": len(rejects.read()),
        "shards": shards,
        "data_root": str(data_root),
        "config": {k: v for k, v in cfg.__dict__.items() if k != "openai"} | {"openai": cfg.openai.__dict__},
    }
    atomic_write_bytes(out_dir / "manifest.json", json.dumps(manifest, indent=2, default=list).encode())
    return manifest
