# hicom-ops front door. `make run` and `make test` install what they need first.
SHELL := /bin/bash
PY := .venv/bin/python
PROFILE ?= tiny
# The stamp is keyed on the dependency files' content: setup re-runs only when they change.
DEPS_HASH := $(shell cat requirements.lock pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
STAMP := .venv/.setup-$(DEPS_HASH)

.PHONY: help setup run test report bench clean

help:
	@echo "make setup   create .venv and install pinned dependencies (idempotent)"
	@echo "make run     the pipeline on the embedded default (PROFILE=$(PROFILE))"
	@echo "make test    install, then run every test"
	@echo "make report  parameter and visual-token report of a profile on the meta device"
	@echo "make bench   benchmarks (not tests): decoding decord vs PyAV; training with vs without feature cache"

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml scripts/setup.sh
	@rm -f .venv/.setup-*
	bash scripts/setup.sh
	@touch $@

# The data stages run through DVC (only what changed reruns); then the model checks.
run: setup
	.venv/bin/dvc repro
	$(PY) -m hicom report --profile paper-7b
	$(PY) -m hicom smoke --profile $(PROFILE)

report: setup
	$(PY) -m hicom report --profile $(PROFILE)

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) bench/decode_bench.py
	.venv/bin/dvc repro curate
	$(PY) bench/train_bench.py

clean:
	rm -rf outputs .pytest_cache
