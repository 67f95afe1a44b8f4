# Two commands a new user needs: `make demo` and `make test`. Both set up the environment first.
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo regenerate-demo eval-demo test test-fast lint format bench train-tiny clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip wheel
	$(BIN)/pip install -q -e '.[serve,gcp,dev]'
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
	$(BIN)/python -m pytest -q -m "not integration and not slow"

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
	$(BIN)/python benchmarks/memory.py

train-tiny: setup
	$(BIN)/python -m tiny_agent.train --out triton_repo/agent_vlm/tiny --work build/tiny_train

clean:
	rm -rf demo_output .pytest_cache
