# Two commands a new user needs: `make demo` and `make test`. Both set up the environment first,
# from the committed lock (requirements.lock); `make lock` refreshes it, `make test-latest` tries
# the newest releases pyproject.toml allows in a separate environment.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements.lock
# The Dataflow worker image's subset of the lock (runtime and gcp, the same versions).
WORKER_LOCK := infra/dataflow/requirements.lock
LATEST_VENV ?= .venv-latest
LOCK_VENV ?= .venv-lock
UV_VERSION := 0.13.9
# Where the CPU build of torch (2.13.0+cpu, pinned in the lock) comes from: this machine's wheel
# folder where there is one, PyTorch's CPU index elsewhere.
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
FAST := not integration and not slow

.PHONY: setup demo regenerate-demo eval-demo test test-fast test-latest lock lint format bench train-tiny clean

# Exactly the lock, hash-checked, nothing resolved at install time; then the project itself.
$(STAMP): $(LOCK) pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --require-hashes --no-deps $(TORCH_SOURCE) -r $(LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/python -m beam_pipelines demo --output demo_output

regenerate-demo: setup
	$(BIN)/python -m beam_pipelines regenerate-demo --output demo_output

eval-demo: setup
	$(BIN)/python -m beam_pipelines eval-demo --output demo_output

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "$(FAST)"

# The canary for tomorrow's releases: the newest versions pyproject.toml admits, no lock, the fast
# suite (less the lock check, which compares the environment with the lock).
test-latest:
	rm -rf $(LATEST_VENV)
	$(PY) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/pip install -q -U pip
	$(LATEST_VENV)/bin/pip install -q $(TORCH_SOURCE) -e '.[serve,gcp,dev]'
	$(LATEST_VENV)/bin/pip freeze --exclude-editable > $(LATEST_VENV)/versions.txt
	$(LATEST_VENV)/bin/python -m pytest -q -m "$(FAST) and not lock"

# Re-resolve every pin (Python 3.11, Linux x86-64) from pyproject.toml's ranges, the worker
# image's subset and its Beam SDK base; then run `make test` on it before committing (README,
# "Dependencies").
lock:
	$(PY) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q uv==$(UV_VERSION)
	printf 'setuptools>=68\n' | $(LOCK_VENV)/bin/uv pip compile pyproject.toml - \
	  --extra serve --extra gcp --extra dev --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_35 $(TORCH_SOURCE) --generate-hashes \
	  --custom-compile-command 'make lock' --upgrade -o $(LOCK)
	$(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra gcp -c $(LOCK) --python-version 3.11 \
	  --python-platform x86_64-manylinux_2_35 --generate-hashes \
	  --custom-compile-command 'make lock' -o $(WORKER_LOCK)
	sed -i "s/^ARG BEAM_VERSION=.*/ARG BEAM_VERSION=$$(awk -F'[= ]+' '/^apache-beam==/{print $$2}' $(LOCK))/" \
	  infra/dataflow/Dockerfile

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: setup
	$(BIN)/python benchmarks/sandbox.py
	$(BIN)/python benchmarks/serving.py
	$(BIN)/python benchmarks/pipeline_efficiency.py
	$(BIN)/python benchmarks/pipeline_ceiling.py
	$(BIN)/python benchmarks/memory.py

train-tiny: setup
	$(BIN)/python -m tiny_agent.train --out triton_repo/agent_vlm/tiny --work build/tiny_train

clean:
	rm -rf demo_output .pytest_cache $(LATEST_VENV) $(LOCK_VENV)
