"""`compare`: several pipeline runs (an ablation sweep) side by side, each paired with the first on the same
questions (hicom.pipeline_report.compare_runs)."""
NAME = "compare"
HELP = ("several pipeline runs (an ablation sweep) side by side: one table, one plot, and each run's accuracy "
        "paired with the first run's on the same questions (difference and interval)")
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--runs", nargs="+", required=True, metavar="RUN_ID",
                        help="pipeline parent run ids; the first is the reference the others are paired with")
    parser.add_argument("--out", default="outputs/compare", help="output folder (default: %(default)s)")


def run(args, params) -> int:
    from hicom.pipeline_report import compare_runs

    table, files = compare_runs(args.runs, args.out, params.registry.efficiency_frames)
    print(table)
    print(f"compare: wrote {', '.join(sorted(files))} to {args.out}")
    return 0
