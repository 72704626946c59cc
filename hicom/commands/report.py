"""`report`: parameters and visual tokens per component of a profile's model, on the meta device."""
from pathlib import Path

NAME = "report"
HELP = "parameters and visual tokens per component, on the meta device"
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default=None, help="profile name in params.yaml (default: its `profile:`)")
    parser.add_argument("--out", default=None, help="write the report to this file instead of stdout")


def run(args, params) -> int:
    from hicom.core.files import atomic_write_bytes
    from hicom.report import build_report, format_report

    text = format_report(build_report(params.profile(args.profile)))
    if args.out:
        atomic_write_bytes(Path(args.out), (text + "\n").encode())
    else:
        print(text)
    return 0
