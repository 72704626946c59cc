"""`evaluate`: multiple-choice video QA on a benchmark (run under torchrun to shard)."""
from pathlib import Path

from hicom.commands.arguments import integer_at_least

NAME = "evaluate"
HELP = "multiple-choice video QA on a benchmark (run under torchrun to shard)"
TRACKED = True


def add_arguments(parser) -> None:
    from hicom.evaluate.benchmarks import BENCHMARKS

    parser.add_argument("--benchmark", required=True, choices=list(BENCHMARKS),
                        help="; ".join(f"{name}: {entry.data}" for name, entry in BENCHMARKS.items()))
    parser.add_argument("--profile", default=None)
    parser.add_argument("--model", required=True, help="a saved HICom model directory (e.g. the sft stage's model/)")
    parser.add_argument("--data", required=True, help="the benchmark's annotation file or folder")
    parser.add_argument("--videos", default=None,
                        help="video folder (default: where the benchmark's release puts it beside --data)")
    parser.add_argument("--subtitles", default=None,
                        help="Video-MME only: folder of <videoID>.srt; every question is also asked with subtitles")
    parser.add_argument("--towers", default=None, help="SigLIP directory with the instruction tokenizer")
    parser.add_argument("--frames", type=integer_at_least(1), default=None, help="frames per video (default: the profile's)")
    parser.add_argument("--guidance", default="on", choices=["on", "off", "both"],
                        help="instruction injection: on, off (same model, injection disabled) or both (Table A4)")
    parser.add_argument("--protocol", default="generate", metavar="LIST",
                        help="how answers are read, comma-separated, the first is the headline: generate (greedy "
                             "reply, letter extracted; the benchmarks' protocol), likelihood (the option likeliest "
                             "as a short answer after the same prompt generation sees). Default: %(default)s")
    parser.add_argument("--allow-missing", action="store_true",
                        help="go on when videos are missing or unreadable (the pre-flight stops otherwise): their "
                             "questions count as wrong, the accuracy over readable videos is reported beside it")
    parser.add_argument("--out", required=True, help="output folder; rerunning into it resumes")
    parser.add_argument("--experiment", default="hicom", help="MLflow experiment")
    parser.add_argument("--parent-run-id", default=None, help="MLflow parent run (a pipeline run)")
    parser.add_argument("--no-track", action="store_true", help="do not log to MLflow")


def run(args, params) -> int:
    from hicom.evaluate.stage import EvalRun, run_evaluation

    optional = {name: Path(getattr(args, name)) if getattr(args, name) else None
                for name in ("videos", "subtitles", "towers")}
    results = run_evaluation(EvalRun(
        benchmark=args.benchmark, model_dir=Path(args.model), data=Path(args.data), out=Path(args.out),
        profile=params.profile(args.profile), config=params.evaluate, decoder=params.data.decoder,
        limits=params.data.limits,
        frames=args.frames, guidance=args.guidance, protocol=args.protocol, track=not args.no_track,
        experiment=args.experiment, parent_run_id=args.parent_run_id, allow_missing=args.allow_missing, **optional))
    if results is None:  # a torchrun rank other than 0: rank 0 reports
        return 0

    def share(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    for name, r in results["variants"].items():
        valid, invalid = r["validity"]["valid"], r["validity"]["invalid"]
        extra = f"; mean over tasks {share(r['task_mean'])}" if "task_mean" in r else ""
        print(f"evaluate[{args.benchmark}/{name}]: accuracy {share(r['accuracy'])} on {r['total']} questions "
              f"(chance {share(r['chance'])}); unanswered {r['unanswered']}; unreadable videos' questions "
              f"{r['missing']} (accuracy without them {share(r['accuracy_readable'])}){extra}; valid/invalid "
              f"instructions {share(valid['accuracy'])} ({valid['total']}) / "
              f"{share(invalid['accuracy'])} ({invalid['total']})")
    if results["data_issues"]:
        print(f"evaluate[{args.benchmark}]: {len(results['data_issues'])} data issue(s) in the benchmark's files, "
              f"listed in results.json")
    print(f"evaluate[{args.benchmark}]: predictions, samples.jsonl and results in {args.out}")
    return 0
