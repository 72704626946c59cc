"""`python -m hicom COMMAND`: the parser assembled from the command registry (hicom.commands).

params.yaml is read and validated once, whole, before any command starts work; errors caused by input
are reported in one line and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from hicom.commands import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hicom", description=__doc__)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml of the project)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.HELP))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from hicom.core.allocator import keep_freed_memory
    from hicom.core.cpus import bind_to_rank_cores
    from hicom.core.errors import InputError
    from hicom.params import PARAMS_FILE, Params

    keep_freed_memory()
    cores = bind_to_rank_cores()
    if cores is not None:  # one write: the node's processes print this at the same moment
        sys.stderr.write(f"hicom: process {os.environ['LOCAL_RANK']} of {os.environ['LOCAL_WORLD_SIZE']} on this node "
                         f"bound to core(s) {','.join(map(str, cores))} (HICOM_BIND_CORES=0 leaves placement to the "
                         f"kernel)\n")
    try:
        params = Params.load(args.params or PARAMS_FILE, getattr(args, "profile", None))
        return COMMANDS[args.command].run(args, params)
    except (InputError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
