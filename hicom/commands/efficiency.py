"""`efficiency`: HICom vs the LLaVA-OV baseline per frame count (Table A6): tokens, FLOPs, latency, memory."""
import tempfile
from pathlib import Path

from hicom.commands.arguments import integer_at_least
from hicom.core.errors import ConfigError

NAME = "efficiency"
HELP = "efficiency profile of HICom vs the LLaVA-OV baseline (Table A6)"
TRACKED = True
RUN_NAME = "efficiency"  # its MLflow run


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default=None)
    parser.add_argument("--model", default=None,
                        help="a saved HICom model directory (default: build the profile's model, random init)")
    parser.add_argument("--towers", default=None,
                        help="SigLIP directory: instruction tokenizer, preprocessor and, without --model, the towers")
    parser.add_argument("--frames", type=integer_at_least(1), nargs="+", default=None,
                        help="frame counts (default: params efficiency)")
    parser.add_argument("--samples", type=integer_at_least(1), default=None, help="questions per model and frame count for s/video")
    parser.add_argument("--warmup", type=integer_at_least(0), default=None, help="untimed warm-up runs")
    parser.add_argument("--repeats", type=integer_at_least(1), default=None, help="timed repeats (medians are reported)")
    parser.add_argument("--videos", nargs="+", default=None, help="video files to read (default: render synthetic clips)")
    parser.add_argument("--eval-results", nargs="+", default=None, metavar="FILE",
                        help="evaluation results.json files (with `accuracy`) for the accuracy-vs-tokens plot")
    parser.add_argument("--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:N")
    parser.add_argument("--dtype", default="auto",
                        help="auto (bf16 on GPU, fp32 on CPU), float32, bfloat16, float16")
    parser.add_argument("--threads", type=integer_at_least(1), default=None,
                        help="torch intra-op threads (default: torch's); 1 gives steadier timings on busy shared CPUs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--experiment", default="hicom", help="MLflow experiment")
    parser.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def run(args, params) -> int:
    import dataclasses

    from hicom.core.sections import build_section
    from hicom.data.video import FramePreprocessor
    from hicom.efficiency.accuracy import load_eval_results
    from hicom.efficiency.fields import MODELS
    from hicom.efficiency.inputs import (
        model_pair,
        render_clips,
        resolve_device,
        resolve_dtype,
        subject,
    )
    from hicom.efficiency.outputs import log_to_tracker, write_outputs
    from hicom.efficiency.run import measure_efficiency
    from hicom.efficiency.settings import EfficiencySettings
    from hicom.tracking import Tracker

    profile = params.profile(args.profile)
    overrides = {key: value for key, value in (("frames", args.frames), ("samples", args.samples),
                                               ("warmup", args.warmup), ("repeats", args.repeats)) if value is not None}
    settings = build_section(EfficiencySettings, {**dataclasses.asdict(params.efficiency), **overrides}, "efficiency")
    eval_entries = load_eval_results(args.eval_results or [])  # a wrong path fails before the measurements
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if args.threads is not None:
        import torch

        if args.threads < 1:
            raise ConfigError(f"efficiency: --threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    measured = subject(profile, args.model, Path(args.towers) if args.towers else None, settings.prompt_tokens)
    preprocessor = FramePreprocessor.from_towers(measured.towers, measured.hicom.config.vision_config.image_size)
    models = model_pair(measured.hicom, device, dtype)
    with tempfile.TemporaryDirectory(prefix="hicom_efficiency_clips_") as tmp:
        if args.videos:
            clips, clips_source = [Path(v) for v in args.videos], f"{len(args.videos)} given video file(s)"
        else:
            c = settings.clips
            clips = render_clips(c, Path(tmp))
            clips_source = (f"{c.count} synthetic clips ({c.num_frames} frames, {c.size}x{c.size}, {c.fps} fps, "
                            f"lossless mp4) rendered by hicom.data.synthetic")
        result = measure_efficiency(models, profile_name=profile.name, model_source=measured.source, clips=clips,
                             clips_source=clips_source, prompt=measured.prompt, preprocessor=preprocessor,
                             settings=settings, decoder=params.data.decoder, device=device,
                             eval_entries=eval_entries, default_frames=profile.num_frames, log=print)
    files = write_outputs(result, args.out)
    # Opened after measuring, so the run's system-metrics sampler cannot disturb the timings.
    with Tracker(enabled=not args.no_track, experiment=args.experiment, run_name=RUN_NAME,
                 parent_run_id=args.parent_run_id) as tracker:
        log_to_tracker(tracker, result, files)
    by_key = {(r["model"], r["frames"]): r for r in result["rows"]}
    for q in result["ratios"]:
        hicom_row, base_row = by_key[("hicom", q["frames"])], by_key[("llava_ov", q["frames"])]
        print(f"efficiency: {q['frames']} frames: visual tokens {MODELS['llava_ov']} {base_row['visual_tokens']} vs "
              f"HICom {hicom_row['visual_tokens']} ({q['visual_tokens']:.2f}x); LLM prefill time "
              f"{q['llm_ttft_ms']:.2f}x, prefill FLOPs {q['llm_prefill_flops']:.2f}x; s/video {q['s_per_video']:.2f}x")
    print(f"efficiency: wrote {', '.join(sorted(files))} to {args.out}; accuracy vs tokens: {result['accuracy_plot']}")
    return 0
