# The two commands:  make run  (install and start the bot)   make test  (install and run every check)
# Both create .venv on first use and reinstall only when a requirements file changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test lint bench cluster image clean

$(VENV)/.runtime: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) bot.py $(ARGS)

test: $(VENV)/.dev
	bash scripts/test-packages
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

# cluster mode on one machine: Redis, PostgreSQL, 2 front ends, 2 workers (README, "Scaling out")
cluster: $(VENV)/.runtime
	$(PY) scripts/cluster.py $(ARGS)

# the container image (Dockerfile) with podman, tagged aipbot:latest (README, "Deploying"); IMAGE=... names it otherwise
IMAGE ?= aipbot:latest
image:
	bash scripts/build-image $(IMAGE)

bench: $(VENV)/.dev
	for b in bench/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
