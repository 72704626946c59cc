#!/usr/bin/env bash
# The build steps of the project's image (Dockerfile RUN lines), as a script so a test runs them without Docker.
#   dependencies  a venv at $VIRTUAL_ENV (kept if it exists) with requirements.lock's exact set, torch first
#                 (as scripts/setup.sh: the CPU build; a GPU image sets PIP_EXTRA_INDEX_URL to a CUDA index)
#   project       the project itself (no dependencies: the lock has them all), DVC without git, then the stage
#                 CLI and the flow must import
set -euo pipefail
cd "$(dirname "$0")/.."
: "${VIRTUAL_ENV:?set VIRTUAL_ENV (the image uses /opt/venv)}"
PYTHON=${PYTHON:-python3}
pip() { "$VIRTUAL_ENV/bin/python" -m pip --disable-pip-version-check "$@"; }
case "${1:-}" in
  dependencies)
    [ -x "$VIRTUAL_ENV/bin/python" ] || "$PYTHON" -m venv "$VIRTUAL_ENV"
    pip install -q "pip==25.3" "setuptools==84.2.1" "wheel==0.45.1"
    pip install -q "torch==2.13.0"
    pip install -q --no-build-isolation -r requirements.lock
    ;;
  project)
    pip install -q --no-build-isolation --no-deps .
    # The image has no git (nor the repository's history): DVC versions the stages' outputs without one.
    "$VIRTUAL_ENV/bin/python" -m dvc config core.no_scm true
    # DVC's cache on the data volume (mounted at outputs/), not in the pod's own disk: a commit copies each
    # stage's outputs into the cache, checkpoints included, and the pod's disk goes with the pod.
    "$VIRTUAL_ENV/bin/python" -m dvc cache dir outputs/.dvc-cache
    (cd / && "$VIRTUAL_ENV/bin/python" -m hicom --help >/dev/null)
    "$VIRTUAL_ENV/bin/python" -c "import flows.retrain, infra.stack.stack"
    ;;
  *)
    echo "usage: $0 dependencies|project" >&2
    exit 2
    ;;
esac
