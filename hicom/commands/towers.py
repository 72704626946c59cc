"""`towers`: sigmoid-loss pre-training of the tiny SigLIP towers on a synthetic world."""
import sys

from hicom.core.errors import ConfigError

NAME = "towers"
HELP = "sigmoid-loss pre-training of the tiny SigLIP towers on a synthetic world"
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default=None)
    parser.add_argument("--world", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)


def run(args, params) -> int:
    from hicom.data.tokenizer import load_tokenizer
    from hicom.pretrain.towers import pretrain_towers

    profile = params.profile(args.profile)
    if profile.vision.path:
        raise ConfigError(f"profile {profile.name!r} loads SigLIP from {profile.vision.path}; "
                          "tower pre-training is for profiles built from configs (tiny)")
    result = pretrain_towers(profile, args.world, load_tokenizer(args.tokenizer), args.out, params.towers)
    if result["retrieval_top1_after"] <= 2 * result["chance"]:
        print("towers: FAILED: retrieval is not clearly above chance", file=sys.stderr)
        return 1
    return 0
