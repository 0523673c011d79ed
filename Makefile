# `make demo` and `make test` create .venv when it is missing and install what they need: the demo
# the package with its `examples` extra, the tests the `dev` and `docs` extras too.
# torch is installed first, pinned, through TORCH_SPEC: the CPU build by default, a small download
# (for the CUDA build on Linux: `make test TORCH_SPEC=torch==2.13.0`). .venv/.torch-spec records
# the spec torch was installed with; a run with another TORCH_SPEC says so and installs that one.
# Other installs never upgrade torch. `make demo DEMO_ARGS=--overwrite` replaces an earlier demo.
# The tests run in one pytest-xdist worker per core, a test file per worker at a time.
# `make test-spandrel` (part of `make test`) runs the spandrel architecture's tests in a virtual
# environment of their own: spandrel needs torchvision, which works only beside the torch release
# it was built for, so that environment installs the pair SPANDREL_TORCH names.
PYTHON ?= python3
VENV ?= .venv
TORCH_DEFAULT := torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= $(TORCH_DEFAULT)
BIN := $(VENV)/bin
TORCH_STAMP := $(VENV)/.torch-spec
DEMO_STAMP := $(VENV)/.installed-demo
STAMP := $(VENV)/.installed
SPANDREL_VENV ?= .venv-spandrel
SPANDREL_TORCH ?= torch==2.14.1 torchvision==0.29.1
SPANDREL_BIN := $(SPANDREL_VENV)/bin

.PHONY: demo test test-spandrel install torch docs clean

# checked on every run, so that a new TORCH_SPEC takes effect in an existing .venv
torch:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
		echo "make: could not create $(VENV) with '$(PYTHON) -m venv' (on Debian or Ubuntu: sudo apt install python3-venv)" >&2; \
		exit 1; }
	@had=$$(cat $(TORCH_STAMP) 2>/dev/null); \
	if ! $(BIN)/python -c "import torch" 2>/dev/null; then \
		$(BIN)/python -m pip install $(TORCH_SPEC) && echo "$(TORCH_SPEC)" > $(TORCH_STAMP); \
	elif [ -z "$$had" ] && [ "$(TORCH_SPEC)" = "$(TORCH_DEFAULT)" ]; then \
		echo "$(TORCH_SPEC)" > $(TORCH_STAMP); \
	elif [ "$$had" != "$(TORCH_SPEC)" ]; then \
		echo "make: $(VENV) holds torch $$($(BIN)/python -c 'import torch; print(torch.__version__)') (installed as: $${had:-not recorded}); installing TORCH_SPEC: $(TORCH_SPEC)"; \
		$(BIN)/python -m pip install --force-reinstall --no-deps $(TORCH_SPEC) && \
		$(BIN)/python -m pip install $(TORCH_SPEC) && echo "$(TORCH_SPEC)" > $(TORCH_STAMP); \
	fi

$(DEMO_STAMP): pyproject.toml | torch
	$(BIN)/python -m pip install -e ".[examples]"
	touch $(DEMO_STAMP)

$(STAMP): pyproject.toml | torch
	$(BIN)/python -m pip install -e ".[dev,docs,examples]"
	touch $(STAMP) $(DEMO_STAMP)

install: torch $(STAMP)

demo: torch $(DEMO_STAMP)
	$(BIN)/python examples/train_all_in_one.py $(DEMO_ARGS)

test: torch $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy contrastive_prompts
	$(BIN)/python -m pytest -n auto --dist loadfile
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site
	$(MAKE) test-spandrel

test-spandrel:
	@test -x $(SPANDREL_BIN)/python || $(PYTHON) -m venv $(SPANDREL_VENV)
	$(SPANDREL_BIN)/python -m pip install $(SPANDREL_TORCH)
	$(SPANDREL_BIN)/python -m pip install -e ".[spandrel]" spandrel_extra_arches pytest hypothesis $(SPANDREL_TORCH)
	SPANDREL_REQUIRED=1 $(SPANDREL_BIN)/python -m pytest -p no:cacheprovider tests/test_spandrel.py contrastive_prompts/app/spandrel_arch.py

docs: torch $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs serve

clean:
	rm -rf site dist build .pytest_cache .hypothesis .mypy_cache $(SPANDREL_VENV)
