"""Cost of the 2nd and 3rd question on a video relative to the 1st, in the evaluation loop.

    python bench/eval_cache_bench.py [--videos 6] [--repeats 8] [--frames 8] [--max-new-tokens 2] [--threads 1]

Video-MME asks three questions per video. The evaluation decodes each video and runs the vision
tower once, then answers all its questions from those features in one batch, so a later question
pays only for the instruction tower, the compressor and its share of the LLM. This script runs the
real loop (hicom.evaluate.mcq.run_shard) on the tiny profile with a random-init model, on
synthetic clips rendered here, in two arms over the same clips:

    1 question   each video asked its first question only
    3 questions  each video asked all three

and reports the marginal cost of questions 2-3, ((T3 - T1) / 2) / T1, with T the median time per
video (sum of its prediction records' seconds). Each repeat runs both arms in fresh output folders,
in alternating order so drift hits both alike; the first repeat is a warm-up. All numbers come from
this one run. Target: at most 0.30.

--max-new-tokens 2: a model that follows the answer format replies with a letter and the end-of-turn
token; a random model never stops, so a larger budget would charge it tokens a trained model does
not generate. The tiny vision tower is very small, so at this size the shared work is a smaller
share of a question than on the paper's model (a 400M-parameter tower on 32 frames of 384px).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hicom.data.synthetic import WorldConfig, make_scene, write_video
from hicom.data.tokenizer import train_tokenizer
from hicom.data.video import FramePreprocessor
from hicom.evaluate.mcq import Job, Variant, run_shard
from hicom.evaluate.readers import Sample
from hicom.evaluate.settings import EvalConfig
from hicom.model.build import build_model
from hicom.params import Params

QUESTIONS = ("What colour is the circle?", "Which object moves to the left?", "How many objects appear?")
OPTIONS = ["red", "green", "blue", "white"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=8)
    ap.add_argument("--frames", type=int, default=None, help="default: the tiny profile's num_frames")
    ap.add_argument("--max-new-tokens", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    profile = Params.load().profile("tiny")
    frames = args.frames or profile.num_frames
    model = build_model(profile).eval()
    texts = [*QUESTIONS, *OPTIONS, "Answer with the option's letter from the given choices directly."]
    tokenizer = train_tokenizer(texts * 20, 300)
    guide_tokenizer = tokenizer  # the random text tower reads any ids below its vocabulary size
    preprocessor = FramePreprocessor(model.config.vision_config.image_size)
    world = WorldConfig()
    per_video: dict[int, list[float]] = {1: [], 3: []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = []
        for v in range(args.videos):
            path = root / "videos" / f"clip{v}.mp4"
            write_video(make_scene(random.Random(f"bench{v}"), world, f"clip{v}"), path)
            clips.append(path)
        started = time.perf_counter()
        for repeat in range(args.repeats):
            for asked in ((1, 3) if repeat % 2 else (3, 1)):
                samples = [Sample(id=f"clip{v}/{q}", video=path, question=QUESTIONS[q], options=OPTIONS, answer="A")
                           for v, path in enumerate(clips) for q in range(asked)]
                out = root / f"run{repeat}-{asked}"
                job = Job(benchmark="synthetic", samples=samples, out=out, frames=frames, decoder="decord",
                          config=EvalConfig(max_new_tokens=args.max_new_tokens), model_version="bench",
                          variants=[Variant()])
                run_shard(model, job, tokenizer, guide_tokenizer, preprocessor)
                if repeat == 0:
                    continue  # warm-up: first calls pay one-off allocations
                seconds: dict[str, float] = {}
                for line in (out / "parts" / "rank0.jsonl").read_text().splitlines():
                    record = json.loads(line)
                    video = record["id"].split("/")[0]
                    seconds[video] = seconds.get(video, 0.0) + record["seconds"]
                per_video[asked] += seconds.values()
        wall = time.perf_counter() - started
    one, three = statistics.median(per_video[1]), statistics.median(per_video[3])
    ratio = (three - one) / 2 / one
    print(f"eval cache bench: tiny profile, {frames} frames, {args.videos} videos, {args.repeats - 1} timed repeats "
          f"(+1 warm-up), max_new_tokens={args.max_new_tokens}, {args.threads} thread(s), torch {torch.__version__}; "
          f"{wall:.1f}s")
    print(f"  per video, 1 question  (decode + vision tower + 1 answer):  median {1000 * one:.1f} ms")
    print(f"  per video, 3 questions (decode + vision tower + 3 answers): median {1000 * three:.1f} ms")
    print(f"  2nd/3rd question cost relative to the 1st = {ratio:.2f} (target <= 0.30): "
          f"{'met' if ratio <= 0.30 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
