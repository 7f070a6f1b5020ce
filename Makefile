# One-word entry points. Every target sets up the environment first when needed,
# so each one works as the first command on a fresh clone.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA_DIR ?= data/raw

.PHONY: setup data test lab clean-venv

# The stamp depends on pyproject.toml: changing a pin re-installs.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(PY) -m cgt data --dataset all --data-dir $(DATA_DIR)

test: data
	$(PY) -m pytest

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

clean-venv:
	rm -rf $(VENV)
