"""`synth`: render the synthetic video world."""
import os

NAME = "synth"
HELP = "render the synthetic video world (clips + LLaVA annotations)"
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="processes that render and encode the clips (default: the CPUs this process may use; "
                             "the files are the same bytes whatever the count)")


def run(args, params) -> int:
    from hicom.data.synthetic import generate_world

    manifest = generate_world(params.data.synthetic, args.out, workers=args.workers)
    print(f"synth: {manifest['num_videos']} clips in {args.out}; samples per file: {manifest['counts']}")
    return 0
