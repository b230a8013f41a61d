# nvrag: `make demo` and `make test` work from a fresh clone; each creates .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch goes in first, pinned: left to choose, pip would pull a multi-GB CUDA build as a dependency.
TORCH_SPEC ?= torch==2.13.0
DEMO_INDEX ?= demo
DEMO_QUERIES ?= "compute a SHA-256 digest of a file" "run a shell command and capture its output" "create a temporary directory"

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False

.PHONY: help install demo test test-fidelity lint typecheck imports unit clean docker-test

help:
	@echo "make demo   - install nvrag in $(VENV), index the bundled demo corpus, run example searches, start the web UI"
	@echo "make test   - install nvrag with its dev extras in $(VENV), run lint, type checks and the tests"
	@echo "make test-fidelity - reproduce a published figure on a real dataset (minutes; CI runs it after make test)"
	@echo "make clean  - remove $(VENV) and caches"
	@echo "make docker-test - build the Docker images and check them in a real engine (not part of make test)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"

$(VENV)/.installed: $(BIN)/python pyproject.toml setup.py nvrag/model/_widemm.c
	$(BIN)/pip install --quiet -e ".[ui,serve]"
	@touch $@

$(VENV)/.installed-dev: $(BIN)/python pyproject.toml setup.py nvrag/model/_widemm.c
	$(BIN)/pip install --quiet -e ".[dev]"
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/nvrag index data/demo/stdlib.jsonl --index $(DEMO_INDEX)
	@for q in $(DEMO_QUERIES); do $(BIN)/nvrag search "$$q" --index $(DEMO_INDEX) -k 3 || exit $$?; done
	@echo "Try your own: $(BIN)/nvrag search \"your question\" --index $(DEMO_INDEX)"
	@echo "Starting the web UI (Ctrl-C to stop); open the address below in a browser."
	$(BIN)/nvrag ui --index $(DEMO_INDEX)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check nvrag tests bench data/demo docker
	$(BIN)/ruff format --check nvrag tests bench data/demo docker
	$(BIN)/hadolint docker/Dockerfile.cpu docker/Dockerfile.cuda docker/test/python-base.Dockerfile
	$(BIN)/shellcheck docker/entrypoint.sh docker/pip-install.sh docker/test/images.sh docker/test/cuda.sh

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

imports: $(VENV)/.installed-dev
	$(BIN)/lint-imports

unit: $(VENV)/.installed-dev
	$(BIN)/pytest -m "not fidelity"

# The published-figure reproductions (NFCorpus with the bundled model: about 3.5 minutes on 2 cores).
test-fidelity: $(VENV)/.installed-dev
	$(BIN)/pytest -m fidelity

test: lint typecheck imports unit

# Builds and runs the images in a Docker engine (installing and starting one if needed, as root); see docs/docker.md.
docker-test:
	bash docker/test/images.sh

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
