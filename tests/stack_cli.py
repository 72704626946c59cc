"""`python -m infra.stack COMMAND` as `make stack-*` runs it, for a test's stack folder and ports."""
import subprocess
import sys
from pathlib import Path

from infra.stack.stack import StackConfig

ROOT = Path(__file__).resolve().parents[1]


def stack_cli(cfg: StackConfig, command: str) -> subprocess.CompletedProcess:
    """`python -m infra.stack COMMAND` for cfg's folder and port base, without the DVC remote setup."""
    return subprocess.run([sys.executable, "-m", "infra.stack", command, "--dir", str(cfg.root),
                           "--port-base", str(cfg.port_base), "--no-dvc"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
