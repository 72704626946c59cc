# The project's image: the Kubernetes stages (flows/executors/k8s.py), the Prefect worker and the stack's servers
# (infra/k8s/stack), with the exact dependency set of requirements.lock. The build steps are
# scripts/image_build.sh (tests/infra/test_image.py runs them outside Docker).
#   docker build -t hicom-ops:$(git rev-parse --short HEAD) .     then HICOM_IMAGE=that tag for the flow
FROM python:3.11.7-slim-bookworm

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /opt/hicom-ops

# A C++ compiler: on a CPU pod DeepSpeed builds its shared-memory collectives op in the first training stage
# (hicom/train/extensions.py), and the slim image has none. The base image's Debian release fixes its version.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*

# Dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock pyproject.toml ./
COPY scripts/image_build.sh scripts/
RUN scripts/image_build.sh dependencies

COPY hicom hicom
COPY flows flows
COPY infra infra
COPY configs configs
COPY .dvc/config .dvc/
COPY dvc.yaml params.yaml prefect.yaml ./
# The flow pod commits and pushes each stage's outputs with DVC here (.dvc: its cache, locks and config).
RUN scripts/image_build.sh project \
    && useradd --uid 1000 --no-create-home --home-dir /opt/hicom-ops hicom \
    && chown hicom /opt/hicom-ops \
    && chown -R hicom /opt/hicom-ops/.dvc

# The manifests run as user 1000 (runAsNonRoot).
USER 1000
