"""`llm`: language-model pre-training of the tiny LLM on a synthetic world's text."""
import sys
from pathlib import Path

from hicom.core.errors import ConfigError

NAME = "llm"
HELP = "language-model pre-training of the tiny LLM on a synthetic world's text"
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default=None)
    parser.add_argument("--world", required=True)
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--out", required=True)


def run(args, params) -> int:
    from hicom.data.tokenizer import load_tokenizer
    from hicom.pretrain.llm import pretrain_llm

    profile = params.profile(args.profile)
    if profile.llm.path:
        raise ConfigError(f"profile {profile.name!r} loads its LLM from {profile.llm.path}; "
                          "LLM pre-training is for profiles built from configs (tiny)")
    result = pretrain_llm(profile, Path(args.world), load_tokenizer(args.tokenizer), args.out, params.llm)
    if not result["perplexity_after"] < result["perplexity_before"] / 2:
        print("llm: FAILED: held-out perplexity did not fall", file=sys.stderr)
        return 1
    return 0
