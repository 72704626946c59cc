"""End-to-end per-question latency, LLaVA-OV baseline / HICom, at 32 frames on a mid-size model, beside FLOP ratios.

    python bench/latency_bench.py [--profile mid] [--frames 32] [--samples 7] [--warmup 1] [--repeats 3] [--threads 1]
                                  [--device cpu] [--dtype float32] [--flops-profile paper-7b]

Builds the profile's model from its config on the device (random init, also where the profile names
checkpoints: timings need no trained weights, so paper-7b runs on a GPU without its 16 GB of weights) and its
baseline counterpart (the same vision tower and LLM modules, the LLaVA-OV projector), renders
synthetic clips at the tower's input size, and measures both with hicom.efficiency, the code behind
`python -m hicom profile`:

    question     end to end: read the mp4 (decoder of params.yaml), preprocess, HIComForCausalLM.generate
                 (vision, compressor, splice, prefill, a few answer tokens); --samples questions per model
                 (at least 7 by default), each timed in wall time and in the process's CPU time (every
                 thread) over the same span
    components   median over --repeats (after --warmup) of the vision encoder, the compressor
                 (including the text encoder for the instruction) and the LLM's time to first token

Order: the models alternate at every repeat and question, and the one that goes first rotates from
round to round (hicom.efficiency.run._in_turn), so neither always runs first on a cold cache and drift
on a busy machine hits both alike; every number is measured in this one run.

Prints, per model: the components' medians; the end-to-end wall time per question as median, min-max
and interquartile range over the questions, the CPU time beside it (median, and CPU / wall: below 1
the process waited, e.g. for cores a busy machine did not give it; above 1 other threads worked, e.g.
the video decoder's); each part's share of a question. Then the baseline / HICom ratios: of the median
end-to-end wall time (the goal, issue 16: at least 5x on `mid` at 32 frames; the paper measured 2.8x end to end
on a GPU with the 7B model), with the
spread of the per-round ratios, of the median CPU time, and of visual tokens, prefill tokens, prefill
FLOPs and LLM time to first token. Then the ceiling: the baseline's median question over HICom's vision encoder
and LLM time to first token (the components' medians), the ratio were everything else in HICom's question free.
HICom runs the whole tower (the last layer and the pooling head's MLP give the joint-space embeddings its
instruction needs), where the baseline stops at the penultimate layer, as LLaVA-OneVision does.

FLOPs: one question up to its first token, counted by hicom.efficiency.flops.question_flops
(FlopCounterMode, attention dense, as the measured prefill FLOPs are counted) on models built on the
meta device (no memory): vision tower + compressor (incl. text tower) + LLM prefill of the prompt's
text tokens and the visual tokens. Printed for the measured profile (so its latency ratio can be read
against its FLOP ratio; its meta-device prefill count is checked against the measured one) and for
--flops-profile (paper-7b: end to end about 3.8x, LLM prefill about 9.9x; mid: 8.1x and 21x).

Writes outputs/reports/latency_bench/ (profile.json, table.md, latency_breakdown.png) and records the
end-to-end ratio against its goal with bench/goals.py (the FLOP ratios in its detail: they have no goal).

Device and dtype: the CPU in fp32 by default, where the goal is set; `--device cuda --dtype bfloat16` measures
the same pair as the paper serves it (its 2.8x), `--dtype bfloat16` on the CPU where it has bf16 matrix units.

Threads: 1 by default, as bench/train_bench.py: with more intra-op threads than idle cores the
timings get slower and far noisier.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from hicom.core.errors import ConfigError
from hicom.data.video import FramePreprocessor
from hicom.efficiency.fields import MODELS
from hicom.efficiency.flops import question_flops
from hicom.efficiency.inputs import model_pair, random_prompt, render_clips, resolve_device, resolve_dtype
from hicom.efficiency.outputs import write_outputs
from hicom.efficiency.run import measure_efficiency
from hicom.efficiency.settings import ClipSettings
from hicom.model.build import baseline_of, build_model
from hicom.model.settings import ModelProfile
from hicom.params import Params

sys.path.insert(0, str(Path(__file__).resolve().parent))
from goals import Goal, record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "outputs" / "reports" / "latency_bench"
TARGET = 5.0  # baseline / HICom median end-to-end latency on `mid` at 32 frames
PAPER_GPU = 2.8  # the paper's end-to-end ratio, 7B model on a GPU
ORDER = ("llava_ov", "hicom")


def shares(row: dict) -> dict[str, float]:
    """Each part's share of the mean question, timed inside those same questions (hicom.efficiency)."""
    names = {"load": "video loading", "vision": "vision encoder", "compressor": "compressor (incl. text encoder)",
             "llm": "LLM (prefill + answer tokens)", "other": "other (splice, generate glue)"}
    parts = row["question_parts_ms"]
    total = sum(parts.values())
    return {names[part]: ms / total for part, ms in parts.items()}


def spread(values: list[float]) -> dict[str, float]:
    """Median, min, max and quartiles (inclusive: within the data, as fits a handful of questions)."""
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "q1": q1, "q3": q3}


def random_init(profile: ModelProfile) -> ModelProfile:
    """The profile with every tower built from its config: a paper profile's timings need no checkpoint on disk."""
    return dataclasses.replace(profile, **{tower: dataclasses.replace(getattr(profile, tower), path=None)
                                           for tower in ("vision", "text", "llm")})


def meta_flops(profile, frames: int, text_tokens: int) -> dict[str, dict[str, int]]:
    """question_flops of HICom and its baseline, both built on the meta device (nothing allocated)."""
    return {"hicom": question_flops(build_model(profile, device="meta"), frames, text_tokens),
            "llava_ov": question_flops(build_model(baseline_of(profile), device="meta"), frames, text_tokens)}


def flop_ratios(flops: dict[str, dict[str, int]]) -> dict[str, float]:
    return {part: flops["llava_ov"][part] / flops["hicom"][part] for part in ("total", "llm_prefill")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="mid", help="params.yaml profile measured (default: mid)")
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--samples", type=int, default=7, help="end-to-end questions per model (default 7)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed component repeats per model (default 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu (default: where the goal is set), cuda, cuda:N, auto")
    parser.add_argument("--dtype", default="float32", help="float32 (default), bfloat16, float16, auto")
    parser.add_argument("--flops-profile", default="paper-7b",
                        help="profile whose FLOP ratios are printed beside the measured one's (meta device; "
                             "default: paper-7b)")
    args = parser.parse_args()
    if min(args.frames, args.samples, args.repeats, args.threads) < 1 or args.warmup < 0:
        parser.error("--frames, --samples, --repeats and --threads must be >= 1, --warmup >= 0")
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
        dtype = resolve_dtype(args.dtype, device)
    except ConfigError as err:
        parser.error(str(err))
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
    models = model_pair(build_model(random_init(profile), device=device, dtype=dtype), device, dtype)
    setting = f"{device.type.upper()} {str(dtype).removeprefix('torch.')}"
    print(f"latency_bench: profile {profile.name!r} at {args.frames} frames, {setting}, {args.threads} thread(s), "
          f"{args.repeats} repeats after {args.warmup} warm-up, {args.samples} questions per model "
          f"(models alternating, the first rotating each round)")
    with tempfile.TemporaryDirectory(prefix="latency_bench_") as tmp:
        c = settings.clips
        clips = render_clips(c, Path(tmp))
        result = measure_efficiency(models, profile_name=profile.name,
                                    model_source=f"profile {profile.name!r}, random init",
                                    clips=clips, clips_source=f"{c.count} synthetic clips ({c.num_frames} frames, "
                                                              f"{c.size}x{c.size}, lossless mp4)",
                                    prompt=random_prompt(models["hicom"].config, settings.prompt_tokens),
                                    preprocessor=FramePreprocessor(image_size), settings=settings, decoder=decoder,
                                    device=device, log=lambda msg: print(f"  {msg}"))
    write_outputs(result, OUT)

    rows = {r["model"]: r for r in result["rows"]}
    ratio = result["ratios"][0]
    print()
    print(f"components (median of {args.repeats}) and FLOPs:")
    print(f"{'':20}{'visual tokens':>14}{'vision ms':>11}{'compressor ms':>15}{'LLM TTFT ms':>13}"
          f"{'prefill GFLOPs':>16}")
    for name in ORDER:
        r = rows[name]
        print(f"{MODELS[name]:20}{r['visual_tokens']:>14}{r['vision_ms']:>11.1f}{r['compressor_ms']:>15.1f}"
              f"{r['llm_ttft_ms']:>13.1f}{r['llm_prefill_flops'] / 1e9:>16.1f}")

    wall = {name: rows[name]["runs_ms"]["e2e"] for name in ORDER}
    cpu = {name: rows[name]["runs_ms"]["e2e_cpu"] for name in ORDER}
    print()
    print(f"end to end per question, {args.samples} per model (wall: median, min-max, interquartile range; "
          f"CPU time of the process over the same questions):")
    print(f"{'':20}{'wall ms':>10}{'min-max':^19}{'IQR':^19}{'CPU ms':>10}{'CPU/wall':>10}")
    for name in ORDER:
        w, cpu_median = spread(wall[name]), statistics.median(cpu[name])
        busy = statistics.median(c / t for c, t in zip(cpu[name], wall[name]))
        print(f"{MODELS[name]:20}{w['median']:>10.1f}{w['min']:>10.1f}-{w['max']:<8.1f}"
              f"{w['q1']:>10.1f}-{w['q3']:<8.1f}{cpu_median:>10.1f}{busy:>10.2f}")
    print(f"{'  per question':20}" + "; ".join(
        f"{MODELS[name]} " + ", ".join(f"{t:.0f}" for t in wall[name]) for name in ORDER) + " (ms, in round order)")
    print()
    print(f"share of a question (mean of {args.samples}):")
    for name in ORDER:
        print(f"  {MODELS[name]:18}: " + ", ".join(f"{part} {share:.0%}" for part, share in shares(rows[name]).items()))

    paired = spread([b / h for b, h in zip(wall["llava_ov"], wall["hicom"])])
    e2e = ratio["e2e_ms"]
    print()
    print(f"baseline / HICom: visual tokens {ratio['visual_tokens']:.2f}x, LLM prefill tokens "
          f"{ratio['llm_prefill_tokens']:.2f}x, prefill FLOPs {ratio['llm_prefill_flops']:.2f}x, "
          f"LLM time to first token {ratio['llm_ttft_ms']:.2f}x")
    print(f"baseline / HICom end to end: CPU time {ratio['e2e_cpu_ms']:.2f}x (medians); per round, wall "
          f"{paired['median']:.2f}x median, {paired['min']:.2f}-{paired['max']:.2f}x")

    text_tokens = settings.prompt_tokens
    flop_profiles = [profile.name] + [p for p in (args.flops_profile,) if p and p != profile.name]
    flops = {name: meta_flops(params.profile(name), args.frames, text_tokens) for name in flop_profiles}
    fratios = {name: flop_ratios(counts) for name, counts in flops.items()}
    print()
    print(f"FLOPs of one question to its first token at {args.frames} frames (meta device, FlopCounterMode: vision "
          f"tower + compressor incl. text tower + LLM prefill of {text_tokens} text tokens and the visual tokens):")
    print(f"{'':12}{'':20}{'vision':>10}{'compressor':>12}{'prefill':>11}{'total GFLOPs':>14}")
    for name, counts in flops.items():
        for model in ORDER:
            n = counts[model]
            print(f"{name:12}{MODELS[model]:20}{n['vision'] / 1e9:>10.1f}{n['compressor'] / 1e9:>12.1f}"
                  f"{n['llm_prefill'] / 1e9:>11.1f}{n['total'] / 1e9:>14.1f}")
        print(f"{name:12}{'baseline / HICom':20}{'':>10}{'':>12}{fratios[name]['llm_prefill']:>10.2f}x"
              f"{fratios[name]['total']:>13.2f}x")
    measured = {model: rows[model]["llm_prefill_flops"] for model in ORDER}
    counted = {model: flops[profile.name][model]["llm_prefill"] for model in ORDER}
    if measured != counted:
        print(f"WARNING: {profile.name}'s prefill FLOPs on the meta device {counted} differ from those counted in "
              f"the measured run {measured}")

    # What the goal asks of HICom's question, against the two parts it cannot do without: the vision tower (every
    # patch of every frame, the last layer included, for the joint-space embeddings) and the LLM's prefill. Were
    # loading, the compressor and the glue free, the ratio could not exceed this ceiling.
    baseline_ms = statistics.median(wall["llava_ov"])
    needed_ms = rows["hicom"]["vision_ms"] + rows["hicom"]["llm_ttft_ms"]
    ceiling = baseline_ms / needed_ms
    print(f"the goal needs HICom's question in at most {baseline_ms / TARGET:.0f} ms; its vision encoder and LLM time "
          f"to first token alone take {needed_ms:.0f} ms (components' medians): a ceiling of {ceiling:.2f}x here")

    met = e2e >= TARGET
    own, paper = fratios[profile.name], fratios.get(args.flops_profile)
    print()
    print(f"end-to-end per-question latency baseline / HICom: {e2e:.2f}x (medians of {args.samples}; "
          f"target >= {TARGET:g}x: {'met' if met else 'NOT met'}), against an end-to-end FLOP ratio of "
          f"{own['total']:.2f}x on {profile.name} (prefill {own['llm_prefill']:.2f}x)"
          + (f"; {args.flops_profile}: end-to-end FLOPs {paper['total']:.2f}x, prefill {paper['llm_prefill']:.2f}x"
             if paper else "")
          + f"; paper: {PAPER_GPU}x on a GPU, 7B")
    detail = (f"{profile.name}, {args.frames} frames, {args.threads} thread(s), {setting}: median of {args.samples} "
              f"questions per model, {statistics.median(wall['llava_ov']):.0f} vs "
              f"{statistics.median(wall['hicom']):.0f} ms wall (per-round ratio {paired['min']:.2f}-"
              f"{paired['max']:.2f}x), CPU time {ratio['e2e_cpu_ms']:.2f}x; FLOP ratios (meta device, vision + "
              f"compressor + prefill): "
              f"{profile.name} {own['total']:.2f}x end to end, {own['llm_prefill']:.2f}x prefill"
              + (f"; {args.flops_profile} {paper['total']:.2f}x end to end, {paper['llm_prefill']:.2f}x prefill"
                 if paper else "")
              + f"; paper {PAPER_GPU}x on a GPU (7B); ceiling with HICom's loading, compressor and glue free: "
              f"{ceiling:.2f}x (vision {rows['hicom']['vision_ms']:.0f} + LLM TTFT {rows['hicom']['llm_ttft_ms']:.0f} ms)")
    record("latency_bench", [Goal(f"end-to-end median latency, baseline / HICom ({profile.name}, {args.frames} fr, "
                                       f"{setting})",
                                  e2e, ">=", TARGET, "x", detail)])
    print(f"latency_bench: wrote {OUT.relative_to(ROOT)}/ and its goal ({time.perf_counter() - began:.0f}s)")


if __name__ == "__main__":
    main()
