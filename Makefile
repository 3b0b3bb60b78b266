# Two commands on a fresh machine: `make demo` and `make test`. Each installs what it needs.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first, pinned; a plain `torch` requirement may pull a multi-GB CUDA build. Where pip
# finds no CPU wheel of its own: TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu".
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: install demo test lint test-python test-vscode bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" $(TORCH_INDEX)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

demo: install
	$(VENV)/bin/phi3-lsp demo

lint: install
	$(VENV)/bin/ruff check server tests bench
	$(VENV)/bin/ruff format --check server tests bench
	$(VENV)/bin/mypy

# The slowest tests listed at the end: the whole suite must stay well under 20 minutes. Two
# workers, each taking whole test files (their module fixtures load a model once): one alone
# kept ~1.2 of CI's 2 cores busy (tests/e2e: 394 s of CPU in 318 s), waiting on the servers
# the tests start. More would only share the 2 cores, each holding its own models in memory.
# The files marked `solo` decode on both cores in the test process: beside another worker
# their threads wait on each other's lost core (4-10x their time alone), so they run after.
test-python: install
	$(VENV)/bin/pytest -n 2 --dist loadfile -m "not solo" --durations=25
	$(VENV)/bin/pytest -m solo --durations=10

test-vscode: install
	cd client-vscode && npm ci --no-audit --no-fund && PHI3_LSP_PYTHON="$(abspath $(PY))" npm test

test: lint test-python test-vscode

bench: install
	$(PY) -m bench

clean:
	rm -rf $(VENV) client-vscode/node_modules client-vscode/dist
