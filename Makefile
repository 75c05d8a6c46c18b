# Two commands on a fresh clone: `make reproduce` (the main job) and `make test`. Each one builds .venv
# first when needed; the install step is a no-op while settings.ini and setup.py are unchanged.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aacnb-installed
PROFILE ?= tiny
export PYTHONHASHSEED := 0

.PHONY: install test test-fast reproduce bench clean-nbs export

$(STAMP): settings.ini setup.py scripts/fix_torchaudio.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps $$(sed -n 's/^nodeps_requirements *= *//p' settings.ini)
	$(PY) scripts/fix_torchaudio.py
	@touch $(STAMP)

install: $(STAMP)

# The whole suite: notebooks clean and in sync with aacnb/, pytest (tests/), then the notebooks' own checks.
test: $(STAMP)
	bash scripts/check_notebooks.sh $(VENV)
	$(PY) -m pytest -q tests
	$(VENV)/bin/nbdev_test --n_workers 1 --timing

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

reproduce: $(STAMP)
	$(VENV)/bin/aacnb reproduce --profile $(PROFILE)

bench: $(STAMP)
	$(PY) -m benchmarks

export: $(STAMP)
	$(VENV)/bin/nbdev_export && $(VENV)/bin/nbdev_clean
