"""`smoke`: a tiny forward/backward of a profile's model on a drawn clip."""
import sys

from hicom.commands.arguments import integer_at_least

NAME = "smoke"
HELP = "tiny forward/backward of a profile's model on a drawn clip"
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default=None)
    parser.add_argument("--steps", type=integer_at_least(1), default=5)


def run(args, params) -> int:
    from hicom.smoke import run_smoke

    profile = params.profile(args.profile)
    r = run_smoke(profile, steps=args.steps)
    print(f"smoke: profile {profile.name!r}: {r['frames']}-frame clip -> {r['visual_tokens']} visual tokens; "
          f"{r['trainable_params']:,} trainable (compressor) / {r['frozen_params']:,} frozen parameters")
    print(f"smoke: loss {r['loss_first']:.4f} -> {r['loss_last']:.4f} after {args.steps} compressor-only steps "
          f"({r['seconds']:.1f}s); gradients reached every compressor parameter: {r['compressor_grads']}")
    if not r["compressor_grads"] or not r["loss_last"] < r["loss_first"]:
        print("smoke: FAILED (no gradient to the compressor, or the loss did not go down)", file=sys.stderr)
        return 1
    return 0
