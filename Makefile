# clipbridge: `make repro` regenerates every result; `make test` runs the tests; `make paper` builds the PDF.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.requirements-installed
LATEX_PACKAGES := latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended texlive-bibtex-extra

.PHONY: setup repro verify sweep test paper clean latex-deps bench

setup: $(STAMP)

# The venv is (re)built from scratch only when a requirements file changes.
$(STAMP): requirements.txt requirements-nodeps.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

repro: setup
	PATH=$(BIN):$$PATH dvc repro --allow-missing

# After `make repro`: the workspace's results against the committed ones, within stated tolerances
# (src/clipbridge/verify.py; wall times are reported, not compared). Exits 1 on a miss.
verify: setup
	PATH=$(BIN):$$PATH python -m clipbridge.verify

# The ablation matrix as DVC queued experiments on JOBS workers, collected by `dvc repro`
# (src/clipbridge/sweep.py; README, "Scaling up").
JOBS ?= 1
sweep: setup
	PATH=$(BIN):$$PATH python -m clipbridge.sweep --jobs $(JOBS)

test: setup
	PATH=$(BIN):$$PATH python -m pytest -q

paper:
	@command -v latexmk >/dev/null || { echo "make paper: LaTeX missing; install the Debian packages: apt-get install --no-install-recommends $(LATEX_PACKAGES)"; exit 1; }
	cd paper && latexmk -pdf -interaction=nonstopmode -halt-on-error main.tex >/dev/null || { tail -n 40 main.log; exit 1; }
	@echo "paper/main.pdf written"

# Installs the Debian LaTeX packages (needs root); used by .ci/run.
latex-deps:
	command -v latexmk >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(LATEX_PACKAGES) poppler-utils; }

clean:
	cd paper && latexmk -C main.tex >/dev/null 2>&1 || true
	rm -rf .pytest_cache $$(find src tests -name __pycache__)

# Speed figures (printed, never asserted): generator synthesis, attribute models, CLIP and distillation steps.
bench: setup
	PATH=$(BIN):$$PATH python benchmarks/generator.py --resolutions 64 256 --batch-sizes 1 16
	PATH=$(BIN):$$PATH python benchmarks/attributes.py
	PATH=$(BIN):$$PATH python benchmarks/clip_train.py
	PATH=$(BIN):$$PATH python benchmarks/distill.py
