#!/usr/bin/env bash
# Create .venv with Python 3.11 and install the pinned dependency set.
# Called by `make setup`; the Makefile re-runs it only when requirements.lock or pyproject.toml change.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
VENV=.venv

if ! command -v "$PYTHON" >/dev/null; then
  echo "setup: $PYTHON not found; install Python 3.11 or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@"; }
pip install -q "pip==25.3" "setuptools==84.2.1" "wheel==0.45.1"
# torch first: the CPU build lies on disk for this exact version; deepspeed's build needs it importable.
pip install -q "torch==2.13.0"
# --no-build-isolation keeps sdists (deepspeed) from pulling a second, CUDA torch into a build env.
pip install -q --no-build-isolation -r requirements.lock
pip install -q --no-build-isolation --no-deps -e .
# The libraries' import-time chatter is kept out of the way, but a failed import is shown: which module, and why.
if ! imported=$("$VENV/bin/python" -c "import torch, transformers, deepspeed, decord, av, mlflow, prefect, dvc" 2>&1); then
  echo "setup: the installed environment in $VENV cannot import the project's libraries:" >&2
  printf '%s\n' "$imported" | tail -n 20 >&2
  exit 1
fi
# DeepSpeed compiles its CPU shared-memory collectives op (into $VENV/torch_extensions: hicom/train/extensions.py) the
# first time a training stage starts, about 20 s on 2 cores; build it here, as a stage loads it
# (hicom/train/extensions.py: a lock file left by a killed load is cleared), so that the first `make run` does not.
if ! built=$("$VENV/bin/python" - 2>&1 <<'PY'
from hicom.train.extensions import load_shm_comm_op
load_shm_comm_op()
PY
); then
  echo "setup: building DeepSpeed's CPU shared-memory op failed (a C++ compiler and Python headers are needed):" >&2
  printf '%s\n' "$built" | tail -n 20 >&2
  exit 1
fi
echo "setup: .venv ready ($("$VENV/bin/python" -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
