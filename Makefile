# Two commands for a newcomer: `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup browser demo test bench fuzz clean

setup: $(STAMP)

# torch 2.14.1 + torchvision 0.29.1 come from this machine's local wheel store (see DESIGN.md).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -c "from prunekit.deploy import build; print(build.build())" || echo "prunekit's own sparse kernels are off (why: the line above); torch's still run"
	touch $(STAMP)

# Datasets are fetched on purpose, here, into $PRUNEKIT_HOME: no library call downloads.
demo: setup
	$(VENV)/bin/prunekit data fetch mnist
	$(VENV)/bin/prunekit compare --out runs/demo --json runs/demo/compare.json

# Headless Chromium renders the HTML report in tests/test_report.py: Debian's package, installed
# here (as root, or with sudo) when the machine lacks it.
browser:
	@command -v chromium >/dev/null || { SUDO=$$(command -v sudo || true); \
	  $$SUDO apt-get install -y -qq chromium >/dev/null || { $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }; }

test: setup browser
	$(VENV)/bin/lint-imports
	$(VENV)/bin/prunekit data fetch mnist fashion-mnist
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: setup
	$(PY) -m pip install --quiet -e '.[test,bench]'
	$(VENV)/bin/prunekit data fetch all
	HF_HUB_OFFLINE=1 $(PY) benchmarks/run_all.py

# The long fuzz campaign (tests/fuzz_campaign.py): 100,000 damaged forms, files and sparse-layer
# buffers, each refused with a PruneError or equal to a reference decoder; counts in docs/results/runs/fuzz.json.
fuzz: setup
	$(PY) tests/fuzz_campaign.py --cases 100000 --seed 2024 --json docs/results/runs/fuzz.json

clean:
	rm -rf $(VENV) runs build src/*.egg-info
