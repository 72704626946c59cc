"""`python -m hicom COMMAND`: one entry per stage. Only commands that work are listed."""
from __future__ import annotations

import argparse
import sys

from hicom.config import PARAMS_FILE, ConfigError, load_profile


def cmd_report(args) -> int:
    from hicom.report import build_report, format_report

    print(format_report(build_report(load_profile(args.profile, args.params))))
    return 0


def cmd_smoke(args) -> int:
    from hicom.smoke import run_smoke

    profile = load_profile(args.profile, args.params)
    r = run_smoke(profile, steps=args.steps)
    print(f"smoke: profile {profile.name!r}: {r['frames']}-frame clip -> {r['visual_tokens']} visual tokens; "
          f"{r['trainable_params']:,} trainable (compressor) / {r['frozen_params']:,} frozen parameters")
    print(f"smoke: loss {r['loss_first']:.4f} -> {r['loss_last']:.4f} after {args.steps} compressor-only steps "
          f"({r['seconds']:.1f}s); gradients reached every compressor parameter: {r['compressor_grads']}")
    if not r["compressor_grads"] or not r["loss_last"] < r["loss_first"]:
        print("smoke: FAILED (no gradient to the compressor, or the loss did not go down)", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hicom", description=__doc__)
    parser.add_argument("--params", default=str(PARAMS_FILE), help="params file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("report", help="parameters and visual tokens per component, on the meta device")
    rep.add_argument("--profile", default=None, help="profile name in params.yaml (default: its `profile:`)")
    rep.set_defaults(func=cmd_report)
    smk = sub.add_parser("smoke", help="tiny forward/backward of a profile's model on a drawn clip")
    smk.add_argument("--profile", default=None)
    smk.add_argument("--steps", type=int, default=5)
    smk.set_defaults(func=cmd_smoke)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
