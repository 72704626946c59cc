"""Cost of a video's later questions relative to its first, in the evaluation loop, per protocol; and likelihood
scoring from the prompt's key/value cache against scoring every option's whole sequence.

    python bench/eval_cache_bench.py [--videos 6] [--repeats 8] [--frames 8] [--max-new-tokens 2] [--threads 1]

The evaluation decodes each video and runs the vision tower once, then answers all its questions from
those features in batches, so a later question pays only for the instruction tower, the compressor and its
share of the LLM. This script runs the real loop (hicom.evaluate.mcq.run_shard) on the tiny profile with a
random-init model, on synthetic clips rendered here, in three arms over the same clips:

    generate                      greedy replies (--max-new-tokens), the benchmarks' protocol
    likelihood                    option likelihood, the pipeline's protocol (option_scores: each question's
                                  prompt runs once, its options are scored from the prompt's key/value cache)
    likelihood, whole sequences   the same scores by the plain route (whole_sequence_option_scores: every
                                  option's whole sequence, one question at a time: the code before the cache)

each asked 1, 3 and 8 questions per video (8: evaluate's questions_per_batch, about what the synthetic test
asks a clip). Reported, with T(n) the median time per video (sum of its questions' seconds, as run_shard
returns them):

    later-question cost   ((T(3) - T(1)) / 2) / T(1): the 2nd/3rd question relative to the 1st
                          (goals: generate <= 0.30; likelihood <= 0.25)
    evaluation speed-up   T(8) whole sequences / T(8) likelihood: a whole evaluation, the cache against the
                          plain route (goal >= 2x)

Each repeat runs every arm and count in fresh output folders, in an order that rotates per repeat so drift
hits all alike; the first repeat is a warm-up. All numbers come from this one run.

--max-new-tokens 2: a model that follows the answer format replies with a letter and the end-of-turn
token; a random model never stops, so a larger budget would charge it tokens a trained model does
not generate. The tiny vision tower is very small, so at this size the shared work is a smaller
share of a question than on the paper's model (a 400M-parameter tower on 32 frames of 384px).
"""
from __future__ import annotations

import argparse
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
from hicom.evaluate import mcq
from hicom.evaluate.readers import Sample
from hicom.evaluate.settings import EvalConfig
from hicom.model.build import build_model
from hicom.params import Params

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goals import Goal, record  # noqa: E402

QUESTIONS = ("What colour is the circle?", "Which object moves to the left?", "How many objects appear?",
             "What shape is the red object?", "Where is the square at the start of the video?",
             "How does the blue object move?", "Which colour can be seen in the video?",
             "What colour is the object that appears in the second half of the video?")
OPTIONS = ["red", "green", "blue", "white"]
ARMS = {  # name: (protocol, the likelihood scorer run_shard calls)
    "generate": ("generate", mcq.option_scores),
    "likelihood": ("likelihood", mcq.option_scores),
    "likelihood, whole sequences": ("likelihood", mcq.whole_sequence_option_scores),
}
COUNTS = (1, 3, 8)
GOALS = {"generate": 0.30, "likelihood": 0.25}
SPEEDUP_GOAL = 2.0


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
    runs = [(arm, asked) for arm in ARMS for asked in COUNTS]
    per_video: dict[tuple[str, int], list[float]] = {run: [] for run in runs}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clips = []
        for v in range(args.videos):
            path = root / "videos" / f"clip{v}.mp4"
            write_video(make_scene(random.Random(f"bench{v}"), world, f"clip{v}"), path)
            clips.append(path)
        started = time.perf_counter()
        for repeat in range(args.repeats):
            for arm, asked in runs[repeat % len(runs):] + runs[:repeat % len(runs)]:
                protocol, scorer = ARMS[arm]
                samples = [Sample(id=f"clip{v}/{q}", video=path, question=QUESTIONS[q], options=OPTIONS, answer="A")
                           for v, path in enumerate(clips) for q in range(asked)]
                out = root / f"run{repeat}-{arm.replace(' ', '')}-{asked}"
                job = mcq.Job(benchmark="synthetic", samples=samples, out=out, frames=frames, decoder="decord",
                              config=EvalConfig(max_new_tokens=args.max_new_tokens), model_version="bench",
                              variants=[mcq.Variant(protocol=protocol)])
                default, mcq.option_scores = mcq.option_scores, scorer
                try:
                    counts = mcq.run_shard(model, job, tokenizer, guide_tokenizer, preprocessor)
                finally:
                    mcq.option_scores = default
                if repeat == 0:
                    continue  # warm-up: first calls pay one-off allocations
                ids = {mcq.key_of(job, sample, variant): sample.id for sample in samples for variant in job.variants}
                seconds: dict[str, float] = {}
                for key, spent in counts["seconds"].items():
                    video = ids[key].split("/")[0]
                    seconds[video] = seconds.get(video, 0.0) + spent
                per_video[arm, asked] += seconds.values()
        wall = time.perf_counter() - started
    median = {run: statistics.median(values) for run, values in per_video.items()}
    print(f"eval cache bench: tiny profile, {frames} frames, {args.videos} videos, {args.repeats - 1} timed repeats "
          f"(+1 warm-up), max_new_tokens={args.max_new_tokens}, {args.threads} thread(s), torch {torch.__version__}; "
          f"{wall:.1f}s")
    goals = []
    for arm in ARMS:
        times = ", ".join(f"{asked} question(s) {1000 * median[arm, asked]:.1f} ms" for asked in COUNTS)
        ratio = (median[arm, 3] - median[arm, 1]) / 2 / median[arm, 1]
        goal = GOALS.get(arm)
        verdict = f" (goal <= {goal:.2f}: {'met' if ratio <= goal else 'NOT met'})" if goal is not None else ""
        print(f"  {arm}: per video (decode + vision tower + answers), median: {times}")
        print(f"    2nd/3rd question cost relative to the 1st = {ratio:.2f}{verdict}")
        if goal is not None:
            goals.append(Goal(f"{arm}: 2nd/3rd question cost relative to the 1st", ratio, "<=", goal,
                              detail=f"medians of {args.videos} videos x {args.repeats - 1} repeats"))
    speedup = median["likelihood, whole sequences", 8] / median["likelihood", 8]
    print(f"  likelihood evaluation of 8 questions a video, whole sequences / prompt cache = {speedup:.2f}x "
          f"(goal >= {SPEEDUP_GOAL:.0f}x: {'met' if speedup >= SPEEDUP_GOAL else 'NOT met'})")
    goals.append(Goal("likelihood, 8 questions a video: whole sequences / prompt cache", speedup, ">=", SPEEDUP_GOAL,
                      "x", f"{1000 * median['likelihood', 8]:.1f} vs {1000 * median['likelihood, whole sequences', 8]:.1f} ms"))
    record("eval_cache_bench", goals)
    return 0


if __name__ == "__main__":
    sys.exit(main())
