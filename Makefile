# `make demo` and `make test` create .venv when it is missing and install what they need.
# torch is installed first, pinned, through TORCH_SPEC: the CPU build by default, a small download
# (for the CUDA build on Linux: `make test TORCH_SPEC=torch==2.13.0`);
# later installs never upgrade it. `make demo DEMO_ARGS=--overwrite` replaces an earlier demo run.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test install docs clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install $(TORCH_SPEC)
	$(BIN)/python -m pip install -e ".[dev,docs,examples]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/train_all_in_one.py $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy contrastive_prompts
	$(BIN)/python -m pytest
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs serve

clean:
	rm -rf site dist build .pytest_cache .hypothesis .mypy_cache
