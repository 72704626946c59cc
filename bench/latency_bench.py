"""End-to-end per-question latency, LLaVA-OV baseline / HICom, at 32 frames on a mid-size model.

    python bench/latency_bench.py [--profile mid] [--frames 32] [--samples 3] [--warmup 1] [--repeats 3] [--threads 1]

Builds the profile's model from its config (random init: timings need no trained weights) and its
baseline counterpart (the same vision tower and LLM modules, the LLaVA-OV projector), renders
synthetic clips at the tower's input size, and measures both with hicom.efficiency, the code behind
`python -m hicom profile`:

    components   median over --repeats (after --warmup) of the vision encoder, the compressor
                 (including the text encoder for the instruction) and the LLM's time to first token
    question     end to end: read the mp4 (decoder of params.yaml), preprocess, HIComForCausalLM.generate
                 (vision, compressor, splice, prefill, a few answer tokens); median over --samples

The two models alternate at every repeat and sample, so drift on a busy machine hits both alike,
and every number is measured in this one run. Prints the baseline/HICom ratio of the end-to-end
latency (project target: at least 4x; the paper measured 2.8x end to end on a GPU with the 7B
model, and an LLM-prefill FLOP ratio of about 9x) beside the prefill time, FLOP and token ratios,
and each component's share of a question. Writes outputs/reports/latency_bench/ (profile.json,
table.md, latency_breakdown.png).

Threads: 1 by default, as bench/train_bench.py: with more intra-op threads than idle cores the
timings get slower and far noisier.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import torch

from hicom.data.video import FramePreprocessor
from hicom.efficiency.fields import MODELS
from hicom.efficiency.inputs import model_pair, random_prompt, render_clips
from hicom.efficiency.outputs import write_outputs
from hicom.efficiency.run import measure_efficiency
from hicom.efficiency.settings import ClipSettings
from hicom.model.build import build_model
from hicom.params import Params

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "outputs" / "reports" / "latency_bench"
TARGET = 4.0


def shares(row: dict) -> dict[str, float]:
    """Each part's share of the mean question, timed inside those same questions (hicom.efficiency)."""
    names = {"load": "video loading", "vision": "vision encoder", "compressor": "compressor (incl. text encoder)",
             "llm": "LLM (prefill + answer tokens)", "other": "other (splice, generate glue)"}
    parts = row["question_parts_ms"]
    total = sum(parts.values())
    return {names[part]: ms / total for part, ms in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mid", help="params.yaml profile (default: mid)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--samples", type=int, default=3, help="end-to-end questions per model (default 3)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed component repeats per model (default 3)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if min(args.frames, args.samples, args.repeats, args.threads) < 1 or args.warmup < 0:
        parser.error("--frames, --samples, --repeats and --threads must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    began = time.perf_counter()

    params = Params.load()
    profile = params.profile(args.profile)
    base = params.efficiency
    image_size = profile.vision.config["image_size"]
    settings = dataclasses.replace(base, frames=(args.frames,), samples=args.samples, warmup=args.warmup,
                                   repeats=args.repeats,
                                   clips=ClipSettings(count=min(args.samples, 2), num_frames=max(64, args.frames),
                                                      fps=8, size=image_size + image_size % 2))
    decoder = params.data.decoder
    torch.manual_seed(0)
    models = model_pair(build_model(profile), torch.device("cpu"), torch.float32)
    print(f"latency_bench: profile {profile.name!r} at {args.frames} frames, {args.threads} thread(s), "
          f"{args.repeats} repeats after {args.warmup} warm-up, {args.samples} questions per model")
    with tempfile.TemporaryDirectory(prefix="latency_bench_") as tmp:
        c = settings.clips
        clips = render_clips(c, Path(tmp))
        result = measure_efficiency(models, profile_name=profile.name,
                                    model_source=f"profile {profile.name!r}, random init",
                                    clips=clips, clips_source=f"{c.count} synthetic clips ({c.num_frames} frames, "
                                                              f"{c.size}x{c.size}, lossless mp4)",
                                    prompt=random_prompt(models["hicom"].config, settings.prompt_tokens),
                                    preprocessor=FramePreprocessor(image_size), settings=settings, decoder=decoder,
                                    device=torch.device("cpu"), log=lambda msg: print(f"  {msg}"))
    write_outputs(result, OUT)

    rows = {r["model"]: r for r in result["rows"]}
    ratio = result["ratios"][0]
    print()
    print(f"{'':20}{'visual tokens':>14}{'vision ms':>11}{'compressor ms':>15}{'LLM TTFT ms':>13}"
          f"{'question ms':>13}{'prefill GFLOPs':>16}")
    for name in ("llava_ov", "hicom"):
        r = rows[name]
        print(f"{MODELS[name]:20}{r['visual_tokens']:>14}{r['vision_ms']:>11.1f}{r['compressor_ms']:>15.1f}"
              f"{r['llm_ttft_ms']:>13.1f}{r['e2e_ms']:>13.1f}{r['llm_prefill_flops'] / 1e9:>16.1f}")
    print()
    print(f"share of a question (mean of {args.samples}):")
    for name in ("llava_ov", "hicom"):
        print(f"  {MODELS[name]:18}: " + ", ".join(f"{part} {share:.0%}" for part, share in shares(rows[name]).items()))
    print()
    print(f"baseline / HICom: visual tokens {ratio['visual_tokens']:.2f}x, LLM prefill tokens "
          f"{ratio['llm_prefill_tokens']:.2f}x, prefill FLOPs {ratio['llm_prefill_flops']:.2f}x, "
          f"LLM time to first token {ratio['llm_ttft_ms']:.2f}x")
    e2e = ratio["e2e_ms"]
    print(f"end-to-end per-question latency baseline / HICom: {e2e:.2f}x (target >= {TARGET:g}x: "
          f"{'met' if e2e >= TARGET else 'NOT met'}; paper: 2.8x on a GPU, 7B)")
    print(f"latency_bench: wrote {OUT.relative_to(ROOT)}/ ({time.perf_counter() - began:.0f}s)")


if __name__ == "__main__":
    main()
