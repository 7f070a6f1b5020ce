# One-word entry points. Every target sets up the environment first when needed,
# so each one works as the first command on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA_DIR ?=

.PHONY: setup data test test-fast lab paper quick smoke site clean-venv

# The stamp depends on pyproject.toml: changing a pin re-installs.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# DATA_DIR: another raw data folder (default: the project's data/raw, which every sub-command reads).
data: setup
	$(PY) -m cgt data --dataset all $(if $(DATA_DIR),--data-dir $(DATA_DIR))

# The full suite (what CI runs), and the fast tier: every module's unit tests, no end-to-end runs.
test: data
	$(PY) -m pytest

test-fast: data
	$(PY) -m pytest -m "not slow"

# The whole paper: every notebook, both datasets, every method; the pre-registered verdicts
# (PREREGISTRATION.md); the wall-clock benchmark of the trained models; then the README answer block and
# the results pages (every number in them from these artifacts).
# The runs train first on one local worker process per core (WORKERS), one thread each: every CPU run
# trains with one thread however it is scheduled, so the worker count changes the wall time, never a number.
# PAPER_ARGS: e.g. "--workers 2", or "--scheduler tcp://HOST:8786" (a Dask cluster instead of local workers).
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
PAPER_ARGS ?= --workers $(WORKERS)
paper: data
	$(PY) -m cgt paper --profile paper $(PAPER_ARGS)
	$(PY) -m cgt verdicts --profile paper
	$(PY) -m cgt bench --profile paper
	$(PY) -m cgt results --profile paper

# The same pipeline at the quick profile (one seed, fewer epochs); writes under runs/quick/.
quick: data
	$(PY) -m cgt paper --profile quick --workers $(WORKERS)

smoke: data
	$(PY) -m cgt paper --profile smoke

# The results site in site/ (not committed): docs/, the results pages and the executed notebooks in paper/,
# rendered from their stored outputs (nothing is executed); MathJax is served from the site, so it reads offline.
site: setup
	$(PY) -m mkdocs build --strict

# JupyterLab's settings for this environment: no first-run "fetch Jupyter news?" prompt, no update check
# (the lab runs offline against the project; change them in the lab's Settings editor if you like).
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json
$(LAB_SETTINGS): $(STAMP)
	mkdir -p $(dir $@)
	printf '%s\n' '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' > $@

lab: setup $(LAB_SETTINGS)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean-venv:
	rm -rf $(VENV)
