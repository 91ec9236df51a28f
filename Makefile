# Two entry points, each enough on its own on a fresh machine (they install what they need):
#   make demo   - the whole job (synthesised task -> extract -> constrained sweep -> leaderboard), no data, no network
#   make test   - the test suite (what CI runs)
#   make test-quick - the fast unit tests only (tests/conftest.py names the slow ones)
VENV   ?= .venv
PYTHON ?= python3
# CPU build for CI and laptops; set TORCH_SPEC to the build for your GPU (e.g. TORCH_SPEC=torch) if you like.
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: install test test-quick demo bench bench-gpu pretrain-real clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[all]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

test-quick: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

demo: $(VENV)/.installed
	$(VENV)/bin/marble demo

bench: $(VENV)/.installed
	$(PY) bench/extract.py --device cpu
	$(PY) bench/probe.py --device cpu

# one GPU's figures in ~8 minutes (bench/suite.py): writes bench/results/<gpu>-<date>.json and .md, which
# `marble run --plan --device cuda` then reads. Install a CUDA build of torch: make bench-gpu TORCH_SPEC=torch
bench-gpu: $(VENV)/.installed
	$(PY) bench/suite.py --device cuda

# the real pretraining run of docs/pretraining.md (run 5: about 40 min on 2 idle cores, 25 of them training; not part of CI)
pretrain-real: $(VENV)/.installed
	apt-get install -y wesnoth-1.16-music warzone2100-music fluidsynth fluid-soundfont-gm
	$(PY) -m pip install -q -e ".[bench]"
	nice -n 5 $(PY) bench/pretrain_real.py --work runs/pretrain_real

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache marble-demo
