"""`tokenizer`: the tiny profile's byte-level BPE, trained on a synthetic world's text."""
from pathlib import Path

NAME = "tokenizer"
HELP = "train the tiny profile's BPE tokenizer on a synthetic world's text"
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--world", required=True)
    parser.add_argument("--out", required=True)


def run(args, params) -> int:
    from hicom.data.tokenizer import train_tokenizer, world_texts

    tok = train_tokenizer(world_texts(Path(args.world)), params.data.tokenizer.vocab_size, args.out)
    print(f"tokenizer: byte-level BPE with {len(tok)} tokens trained on {args.world}, saved to {args.out}")
    return 0
