# vaebench front door. Every target builds .venv first when it is missing, so each works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
# make sweep-all: a fixed directory, so rerunning resumes; JOBS empty = jobs_per_gpu jobs per GPU, else one
# per core; SEEDS=0,1,2 for replicates.
SWEEP_DIR ?= outputs/sweep-all
JOBS ?=
SEEDS ?= 0
# make bench: QUICK=1 for latent 100 only, fewer repeats and a small sweep (a few minutes)
QUICK ?=

# make docs: a fresh demo (no resume: numbers from today's code) for docs/doc_numbers.py
DOCS_DEMO ?= outputs/docs-demo

.PHONY: install test test-slow test-cuda demo docs docs-check docs-demo sweep-all aggregate bench clean

# One stamp per TORCH value (named by a hash of it): `make install TORCH=torch==2.5.1` on an existing .venv
# installs that torch, and vaebench again over it; the same TORCH again is "nothing to be done".
TORCH_STAMP := $(VENV)/.torch-$(shell printf '%s' '$(TORCH)' | cksum | cut -d' ' -f1)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(TORCH_STAMP): | $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	@rm -f $(VENV)/.torch-*
	@touch $@

# setuptools announces every editable install of a flat layout ("Editable installation ... be careful with
# folders"): information, not a problem, and the one line the quiet install below would otherwise print.
$(BIN)/vaebench: pyproject.toml $(TORCH_STAMP)
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/vaebench  ## build .venv with torch ($(TORCH)) and vaebench in editable mode

# Tests run on every core (pytest-xdist): most of the suite's time is CPU-bound process starts and training.
test: install  ## the test suite (fast; slow tests: make test-slow)
	$(BIN)/pytest -q -n auto --dist worksteal

test-slow: install
	$(BIN)/pytest -q -n auto --dist worksteal -m slow

# Fails, rather than passing with every test skipped, where torch has no CUDA.
test-cuda: install  ## the GPU tests (tests/test_cuda.py), on a machine with a GPU
	@$(BIN)/python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
		'make test-cuda: torch ' + torch.__version__ + ' here has no CUDA device; run it on a machine with a GPU \
	(with a CUDA build of torch, such as the Linux wheels on PyPI)')"
	$(BIN)/pytest -q -m cuda

demo: install  ## the demo grid of all four models on built-in data under the default and the study's objective
	$(BIN)/vaebench -m +experiment=demo hydra.sweep.dir=outputs/demo/calibrated
	$(BIN)/vaebench -m +experiment=demo_paper hydra.sweep.dir=outputs/demo/paper
	$(BIN)/vaebench-aggregate outputs/demo
	@echo "results: outputs/demo/{calibrated,paper}/*/result.json; one report per objective: outputs/demo/aggregate/"

docs-demo: install  # the demo's two sweeps and the VAE under the default objective with three seeds (docs/choosing-settings.md)
	rm -rf $(DOCS_DEMO)
	$(BIN)/vaebench -m +experiment=demo_paper hydra.sweep.dir=$(DOCS_DEMO)/paper
	$(BIN)/vaebench -m +experiment=demo hydra.sweep.dir=$(DOCS_DEMO)/calibrated
	$(BIN)/vaebench -m +experiment=demo model=vae seed=0,1,2 hydra.sweep.dir=$(DOCS_DEMO)/seeds

docs: docs-demo  ## regenerate every demo number the docs quote (docs/doc_numbers.py) and the README's figure
	$(BIN)/python docs/doc_numbers.py $(DOCS_DEMO)

docs-check: docs-demo  ## fail when a number the docs quote disagrees with a fresh demo
	$(BIN)/python docs/doc_numbers.py $(DOCS_DEMO) --check

sweep-all: install  ## the study's grid for all four models under the default and the study's objective (2 x 360 runs); rerun to resume
	$(BIN)/vaebench -m +experiment=grid model=vae,iwae,infovae,logcosh seed=$(SEEDS) \
		hydra.sweep.dir=$(SWEEP_DIR)/calibrated $(if $(JOBS),hydra.launcher.n_jobs=$(JOBS))
	$(BIN)/vaebench -m +experiment=paper_grid model=vae,iwae,infovae,logcosh seed=$(SEEDS) \
		hydra.sweep.dir=$(SWEEP_DIR)/paper $(if $(JOBS),hydra.launcher.n_jobs=$(JOBS))

aggregate: install  ## results.csv, dot-plots and report.md for every run under outputs/, into outputs/aggregate
	$(BIN)/vaebench-aggregate outputs/

bench: install  ## timings vs the bare matrix-product floor, one table (BENCHMARKS.md); QUICK=1 for a short run
	$(BIN)/python bench/bench.py $(if $(QUICK),--quick)

clean:
	rm -rf outputs/runs outputs/sweeps outputs/demo outputs/aggregate $(DOCS_DEMO)
