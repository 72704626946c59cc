"""`pipeline-report`: markdown + HTML report with plots of one pipeline run."""
NAME = "pipeline-report"
HELP = "markdown + HTML report with plots of one pipeline run"
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--run-id", required=True, help="the pipeline's MLflow parent run")
    parser.add_argument("--out", required=True, help="output folder: report.md, report.html, PNGs")
    parser.add_argument("--eval", nargs="+", default=None, metavar="DIR",
                        help="evaluation outputs to use instead of the runs' logged results.json")
    parser.add_argument("--efficiency", default=None, metavar="FILE",
                        help="the efficiency stage's profile.json to use instead of its run's artifact")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the parent run")


def run(args, params) -> int:
    from hicom.pipeline_report import pipeline_report

    files = pipeline_report(args.run_id, args.out, eval_paths=args.eval or [], profile_file=args.efficiency,
                            efficiency_frames=params.registry.efficiency_frames, log=not args.no_log)
    logged = "" if args.no_log else f"; logged to run {args.run_id} under report/"
    print(f"pipeline-report: wrote {', '.join(sorted(files))} to {args.out}{logged}")
    return 0
