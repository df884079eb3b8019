# The two commands of the README. Each installs what it needs into .venv first (idempotent).
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.gdna-installed
# Extra pip arguments for the torch install, e.g. TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
export GDNA_DATA_ROOT ?= $(abspath ../shared/data)

.PHONY: install demo test reliability cluster-test browser clean bench

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The quickstart sweep on real DNA, then its analysis. Re-running continues (or re-reports) the same sweep.
demo: $(STAMP)
	$(VENV)/bin/gdna data summary --data-root "$(GDNA_DATA_ROOT)"
	$(VENV)/bin/gdna sweep sweeps/quickstart.yaml --resume
	$(VENV)/bin/gdna analyze quickstart

test: $(STAMP)
	$(PY) -m pytest -q -m "not cluster and not reliability" tests

# The fault-injection tests that take longer than `make test` affords (real signals, real servers).
reliability: $(STAMP)
	$(PY) -m pytest -q -m reliability tests

# A live 2-node Ray cluster + MLflow server on this machine, a sweep submitted with `ray job submit`,
# the worker node killed mid-trial (tests/test_cluster_live.py; a few minutes).
cluster-test: $(STAMP)
	$(PY) -m pytest -q -m cluster tests

# Every script in bench/, each printing its ratios measured side by side in one run (bench/RESULTS.md
# records them). Sized for a 2-vCPU machine: about 20-30 minutes; the fuller runs' commands are in each
# script's docstring and in bench/RESULTS.md. Not part of `make test`. bench/gpu_check.sh is for a GPU machine.
bench: $(STAMP)
	@echo "bench: $$(date -u '+%Y-%m-%d %H:%M UTC'), commit $$(git rev-parse --short HEAD), $$(nproc) CPUs,$$(uptime | sed 's/.*,  *load/ load/')"
	$(PY) bench/trial_overhead.py --steps 60 --eval-every 20 --repeats 1 --trials 4 --no-quickstart
	$(PY) bench/sweep_efficiency.py
	$(PY) bench/mfu.py
	$(PY) bench/data_pipeline.py
	$(PY) bench/kernels.py --repeats 3 --batches 1,16
	$(PY) bench/long_context.py --lengths 1024,4096 --quadratic-max 4096 --repeats 1 --threads 1
	@echo "bench: done $$(date -u '+%H:%M UTC'),$$(uptime | sed 's/.*,  *load/ load/')"

# Optional: Debian's headless Chromium for the MLflow UI screenshot test (needs root + apt).
browser:
	command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) runs
