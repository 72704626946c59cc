"""scripts/setup.sh (what `make setup`, `make run` and `make test` run first) says why it failed.

The script runs here against a stand-in interpreter in a copy of the repository layout: pip "installs" nothing,
and the interpreter fails the import check or the DeepSpeed op build as a broken environment would.
"""
from __future__ import annotations

import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

STAND_IN = """#!/usr/bin/env bash
# pip: every install succeeds; -c: the import check; -: the DeepSpeed op build (its script on stdin)
case "$1" in
  -m) exit 0 ;;
  -c) if [[ "$2" == *"import torch, transformers, deepspeed"* && -n "$FAIL_IMPORT" ]]; then
        echo "[WARNING] Setting accelerator to CPU." >&2
        echo "ModuleNotFoundError: No module named '$FAIL_IMPORT'" >&2
        exit 1
      fi
      exit 0 ;;
  -) cat > /dev/null
     if [[ -n "$FAIL_BUILD" ]]; then echo "$FAIL_BUILD" >&2; exit 1; fi
     exit 0 ;;
esac
exit 0
"""


def run_setup(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STAND_IN)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    return subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh")], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "PYTHON": "/bin/true", **env})


def test_setup_that_cannot_import_a_library_fails_naming_the_module_and_the_error(tmp_path):
    result = run_setup(tmp_path, FAIL_IMPORT="decord")
    assert result.returncode != 0
    assert "cannot import the project's libraries" in result.stderr
    assert "No module named 'decord'" in result.stderr
    assert "ready" not in result.stdout


def test_setup_whose_deepspeed_op_build_fails_shows_the_compiler_error(tmp_path):
    result = run_setup(tmp_path, FAIL_BUILD="error: command 'c++' failed: No such file or directory")
    assert result.returncode != 0
    assert "shared-memory op failed" in result.stderr
    assert "error: command 'c++' failed" in result.stderr


def test_setup_in_a_working_environment_says_it_is_ready_and_prints_no_error(tmp_path):
    result = run_setup(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "setup: .venv ready" in result.stdout
    assert "setup:" not in result.stderr
