# hicom-ops front door. `make run` and `make test` install what they need first.
SHELL := /bin/bash
PY := .venv/bin/python
PROFILE ?= tiny
# One pytest-xdist worker a core, plus one: the suite spends much of its time waiting on servers, Slurm and
# subprocesses, and the extra worker computes meanwhile (docs/timings.md: 2 workers against 3 on 2 cores).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
# The stamp is keyed on the dependency files' content: setup re-runs only when they change.
DEPS_HASH := $(shell cat requirements.lock pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
STAMP := .venv/.setup-$(DEPS_HASH)

.PHONY: help setup run ablations deploy test report bench clean stack-up stack-down stack-status run-stack

help:
	@echo "make setup   create .venv and install pinned dependencies (idempotent)"
	@echo "make run     the whole pipeline (Prefect retrain flow) on the embedded default; ablations: .venv/bin/python -m flows run --ablation no_grouping"
	@echo "make ablations  benchmark (not a test): the paper's ablations A3-A5 x 3 seeds + accuracy vs visual tokens, verdicts in outputs/ablations/report/ (resumes; up to ~1 h on 2 cores)"
	@echo "make deploy  the scheduled retraining deployments (prefect.yaml) on a Prefect server"
	@echo "make test    install, then run every test"
	@echo "make report  parameter and visual-token report of a profile on the meta device"
	@echo "make bench   benchmarks (not tests): video loading; training with vs without feature cache; HICom vs baseline latency; eval question cost; flow overhead (~1 h); every number beside its goal at the end"
	@echo "make stack-up / stack-down / stack-status   the team stack on 127.0.0.1 (S3, MLflow, Prefect; data in STACK_DIR)"
	@echo "make run-stack   what \`make run\` runs, through the stack (env from STACK_DIR/env)"

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml scripts/setup.sh
	@rm -f .venv/.setup-*
	bash scripts/setup.sh
	@touch $@

# The whole pipeline through the Prefect retrain flow (flows/): every dvc.yaml stage (only what changed
# reruns), promotion and the report, on the embedded default (Prefect without a server, MLflow in
# mlflow.db, DVC pushing to .dvc/remote) or on the team stack when its environment is loaded.
run: setup
	$(PY) -m flows run

# The paper's ablations (params.yaml pipeline.ablation_sweep): baseline, no_grouping, no_injection, two_stage with
# each seed, HICom at two token budgets against the LLaVA-OV projector; a verdict per claim in
# outputs/ablations/report/ and an MLflow run. A benchmark, not a test; finished runs are reused (it resumes).
ablations: setup
	$(PY) -m flows ablations

# The scheduled retraining deployments of prefect.yaml (needs a Prefect server, e.g. `make stack-up`).
deploy: setup
	$(PY) -m flows deploy

report: setup
	$(PY) -m hicom report --profile $(PROFILE)

# Whole test files spread over TEST_WORKERS processes (pytest-xdist; the longest files first: tests/conftest.py).
# --durations: the slowest tests at the end of every run (CI's log), to keep the suite within its time
test: setup
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=25

# Each bench records its headline numbers with their goals (bench/goals.py); the table at the end holds this run's.
bench: setup
	$(PY) bench/goals.py --clear
	$(PY) bench/decode_bench.py
	.venv/bin/dvc repro curate
	$(PY) bench/train_bench.py
	$(PY) bench/latency_bench.py
	$(PY) bench/eval_cache_bench.py
	$(PY) bench/overhead_bench.py
	@echo; $(PY) bench/goals.py

# The team stack (infra/stack): SeaweedFS S3, MLflow server, Prefect server + process worker, on 127.0.0.1.
# STACK_DIR (data, logs, PIDs, credentials, env file) and STACK_PORT_BASE (ports base..base+14) are overridable.
export STACK_DIR ?= $(CURDIR)/.stack
export STACK_PORT_BASE ?= 27100
stack-up: setup
	$(PY) -m infra.stack up

stack-down:
	$(PY) -m infra.stack down

stack-status:
	$(PY) -m infra.stack status

run-stack: setup
	@$(PY) -m infra.stack status >/dev/null || { echo "run-stack: the stack is not up (make stack-status; make stack-up)" >&2; exit 1; }
	set -a && . "$(STACK_DIR)/env" && set +a && $(MAKE) --no-print-directory run

clean:
	rm -rf outputs .pytest_cache
