"""`python -m infra.stack up|down|status|env`: what `make stack-up`, `stack-down` and `stack-status` run."""
from __future__ import annotations

import argparse
import sys

from infra.stack.stack import PROJECT_ROOT, StackConfig, down, status, up


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", help="data folder (default $STACK_DIR or .stack/)")
    parser.add_argument("--port-base", type=int, help="first port (default $STACK_PORT_BASE or 27100)")
    parser.add_argument("--pool", help="the Prefect process work pool its worker serves "
                                       "(default $STACK_WORK_POOL or hicom-process, the pool prefect.yaml names)")
    parser.add_argument("--no-dvc", action="store_true", help="do not point the project's DVC remote at the stack")
    args = parser.parse_args(argv)
    cfg = StackConfig.from_environment(args.dir, args.port_base, args.pool)
    try:
        if args.command == "up":
            up(cfg, dvc_repo=None if args.no_dvc else PROJECT_ROOT)
        elif args.command == "down":
            down(cfg)
        elif args.command == "status":
            return 0 if status(cfg) else 3
        else:
            print(cfg.env_file)  # for `. $(python -m infra.stack env)`
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
