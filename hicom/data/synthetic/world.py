"""The world on disk: every clip, alignment frame, ground-truth scene and JSONL file, plus the manifest."""
from __future__ import annotations

import json
import multiprocessing
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from hicom.core.errors import ConfigError, DataError
from hicom.core.files import (
    atomic_write_bytes,
    atomic_write_json,
    iter_jsonl,
    read_json_object,
    sha256_bytes,
)
from hicom.data.synthetic.config import WorldConfig
from hicom.data.synthetic.language import (
    IMAGE_PROMPTS,
    VIDEO_PROMPTS,
    caption,
    held_out_questions,
    instruction_pairs,
    mcq_prompt,
    mcq_turns,
    qa_turns,
)
from hicom.data.synthetic.render import write_image, write_video
from hicom.data.synthetic.scenes import Scene, make_scene

TRAIN_FILES = ("align_images.jsonl", "align_videos.jsonl", "cond_pretrain.jsonl", "sft.jsonl", "sft_mcq.jsonl")
TEST_FILE = "mcq_test.jsonl"


def _rng(cfg: WorldConfig, scene_id: str, purpose: str) -> random.Random:
    """An independent stream per scene and purpose, so adding one kind of sample never shifts another."""
    return random.Random(f"{cfg.seed}/{scene_id}/{purpose}")


def _scene_id(i: int) -> str:
    return f"syn{i:05d}"


def _image_frames(cfg: WorldConfig, scene: Scene) -> list[int]:
    """One frame from each half of the clip."""
    rng = _rng(cfg, scene.id, "images")
    half = scene.num_frames // 2
    return [rng.randrange(0, half), rng.randrange(half, scene.num_frames)]


def _conversation(tag: str, pairs: list[tuple[str, str]]) -> list[dict]:
    turns = []
    for i, (human, gpt) in enumerate(pairs):
        turns += [{"from": "human", "value": (tag + "\n" if i == 0 else "") + human}, {"from": "gpt", "value": gpt}]
    return turns


def _records(cfg: WorldConfig, scenes: list[Scene], test_ids: set[str]) -> dict[str, list[dict]]:
    """Every JSONL file's records, built from ground truth only."""
    out: dict[str, list[dict]] = {name: [] for name in ("scenes.jsonl", *TRAIN_FILES, TEST_FILE)}
    for scene in scenes:
        out["scenes.jsonl"].append(scene.to_dict())
        video = f"videos/{scene.id}.mp4"
        if scene.id in test_ids:
            questions = held_out_questions(scene, _rng(cfg, scene.id, "mcq"), cfg.test_per_family)
            out[TEST_FILE] += [{"id": f"{scene.id}_q{i}", "video": video, **q,
                                "prompt": mcq_prompt(q["question"], q["options"])} for i, q in enumerate(questions)]
            continue
        prompts = _rng(cfg, scene.id, "prompts")
        for t in _image_frames(cfg, scene):
            out["align_images.jsonl"].append({
                "id": f"{scene.id}_f{t}", "image": f"images/{scene.id}_f{t}.png",
                "conversations": _conversation("<image>", [(prompts.choice(IMAGE_PROMPTS), caption(scene, t))])})
        out["align_videos.jsonl"].append({
            "id": scene.id, "video": video,
            "conversations": _conversation("<video>", [(prompts.choice(VIDEO_PROMPTS), caption(scene))])})
        pairs = instruction_pairs(scene, _rng(cfg, scene.id, "pairs"), cfg.pairs_per_video)
        out["cond_pretrain.jsonl"].append(
            {"id": scene.id, "video": video, "conversations": _conversation("<video>", pairs)})
        turns = qa_turns(scene, _rng(cfg, scene.id, "qa"), cfg.qa_per_video)
        out["sft.jsonl"].append({"id": scene.id, "video": video, "conversations": _conversation("<video>", turns)})
        choices = mcq_turns(scene, _rng(cfg, scene.id, "sft_mcq"), cfg.mcq_per_video)
        if choices:
            out["sft_mcq.jsonl"].append({"id": f"{scene.id}_mcq", "video": video, "conversations": _conversation(
                "<video>", [(mcq_prompt(q["question"], q["options"]), q["answer"]) for q in choices])})
    return out


def _jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _write_media(job: tuple[Scene, Path, list[int]]) -> None:
    """One scene's clip and its alignment frames (a worker process's unit of work)."""
    scene, out_dir, image_frames = job
    write_video(scene, out_dir / "videos" / f"{scene.id}.mp4")
    for t in image_frames:
        write_image(scene, t, out_dir / "images" / f"{scene.id}_f{t}.png")


def generate_world(cfg: WorldConfig, out_dir, progress: bool = True, workers: int = 1) -> dict:
    """Write clips, frames, ground truth and every training/test JSONL under out_dir; returns the manifest.

    The manifest is written last, so its presence means the world is complete. Files from an earlier,
    larger world in the same directory are not removed; the manifest lists what belongs to this one.
    `workers` > 1 renders and encodes the scenes in that many processes: each file depends on its scene
    alone (lossless, single-threaded x264), so the files are the same bytes whatever the count.
    """
    if workers < 1:
        raise ConfigError(f"synth: workers must be >= 1, got {workers}")
    out_dir = Path(out_dir)
    ids = [_scene_id(i) for i in range(cfg.num_videos)]
    scenes = [make_scene(_rng(cfg, sid, "scene"), cfg, sid) for sid in ids]
    test_ids = set(random.Random(f"{cfg.seed}/split").sample(ids, cfg.num_test))
    # alignment frames are training data
    jobs = [(scene, out_dir, [] if scene.id in test_ids else _image_frames(cfg, scene)) for scene in scenes]
    bar = tqdm(total=len(jobs), desc="synthetic clips", unit="clip", disable=not progress)
    if workers == 1:
        for job in jobs:
            _write_media(job)
            bar.update()
    else:  # spawned, not forked: the caller may hold threads (a flow, torch) that a fork would copy mid-lock
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for _ in pool.map(_write_media, jobs, chunksize=max(1, len(jobs) // (8 * workers))):
                bar.update()
    bar.close()
    files, counts = {}, {}
    for name, records in _records(cfg, scenes, test_ids).items():
        data = _jsonl_bytes(records)
        atomic_write_bytes(out_dir / name, data)
        files[name], counts[name] = sha256_bytes(data), len(records)
    manifest = {"config": asdict(cfg), "num_videos": cfg.num_videos,
                "splits": {"train": cfg.num_videos - len(test_ids), "test": len(test_ids)},
                "test_ids": sorted(test_ids), "counts": counts, "files": files}
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest


def read_world(world_dir) -> tuple[list[Scene], set[str]]:
    """A generated world's scenes (ground truth) and the ids of its held-out test scenes."""
    world_dir = Path(world_dir)
    manifest = world_dir / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest}: not a generated synthetic world (no manifest)")
    scenes = [Scene.from_dict(record) for _, record in iter_jsonl(world_dir / "scenes.jsonl", DataError)]
    return scenes, set(read_json_object(manifest, DataError)["test_ids"])
