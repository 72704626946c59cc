"""`synth`: render the synthetic video world."""
NAME = "synth"
HELP = "render the synthetic video world (clips + LLaVA annotations)"
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True)


def run(args, params) -> int:
    from hicom.data.synthetic import generate_world

    manifest = generate_world(params.data.synthetic, args.out)
    print(f"synth: {manifest['num_videos']} clips in {args.out}; samples per file: {manifest['counts']}")
    return 0
