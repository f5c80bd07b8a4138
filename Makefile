# Two commands for a fresh machine (Python 3.11 + pip):  make quickstart   and   make test
# Each creates .venv when it is missing (pinned environment of requirements.txt) and reuses it otherwise.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv quickstart test test-fast clean

$(BIN)/.installed: requirements.txt constraints.txt setup.py
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q setuptools==80.10.2 wheel
	$(BIN)/pip install -q --no-build-isolation -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-build-isolation --no-deps -e .
	$(BIN)/python -m basicsr_ext.autoload install
	touch $@

venv: $(BIN)/.installed

quickstart: venv
	HF_HUB_OFFLINE=1 $(BIN)/python scripts/quickstart.py

# the full suite (what CI runs)
test: venv
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --durations=15 tests

# everything but the end-to-end tests that start Python subprocesses (pytest marker e2e, see pytest.ini)
test-fast: venv
	HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 -m "not e2e" --durations=15 tests

clean:
	rm -rf $(VENV) quickstart_out
