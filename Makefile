# Two commands on a fresh clone: `make reproduce` (the main job) and `make test`. Each one builds .venv
# first when needed; the install step is a no-op while settings.ini and setup.py are unchanged.
# `install` also puts the jars SPICE needs (Stanford CoreNLP 3.6.0, Rhino; 387 MB) into a user cache outside the
# checkout ($AACNB_SPICE_DIR, default ~/.cache/aacnb/spice), with Maven when present, else Stanford's zip; each jar
# is checked against its recorded SHA-256. Once they are there this prints nothing. A failed fetch does not fail
# the install: SPICE and SPIDEr then read n/a, every other metric works, and the message says how to retry.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.aacnb-installed
PROFILE ?= tiny
export PYTHONHASHSEED := 0

.PHONY: install browser test test-fast reproduce bench clean-nbs export docs lessons

$(STAMP): settings.ini setup.py scripts/fix_torchaudio.py
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q -e ".[dev,faiss]"
	$(PY) -m pip install -q --no-deps $$(sed -n 's/^nodeps_requirements *= *//p' settings.ini)
	$(PY) scripts/fix_torchaudio.py
	@touch $(STAMP)

install: $(STAMP)
	@$(VENV)/bin/aacnb metrics-setup --quiet || echo "make: the SPICE jars are not installed (above: why); SPICE and SPIDEr will read n/a, every other metric works. Retry with: $(VENV)/bin/aacnb metrics-setup"

# The whole suite: notebooks clean and in sync with aacnb/, pytest (tests/), then the notebooks' own checks.
# tests/test_site.py opens the course site in headless Chromium: as root on Debian/Ubuntu it is installed here
# from the distribution's packages when missing; elsewhere that test skips, saying why.
test: install browser
	bash scripts/check_notebooks.sh $(VENV)
	$(PY) -m pytest -q tests
	$(VENV)/bin/nbdev_test --n_workers 1 --timing

browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo "make: installing chromium (Debian package) for tests/test_site.py" && \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || \
	  echo "make: no chromium here; tests/test_site.py will skip its browser checks (install chromium to run them)"

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

reproduce: install
	$(VENV)/bin/aacnb reproduce --profile $(PROFILE)

bench: install
	$(PY) -m benchmarks

export: $(STAMP)
	$(VENV)/bin/nbdev_export && $(VENV)/bin/nbdev_clean

# The course site: every notebook as a static page with the outputs it is committed with, a table of contents in
# reading order (index, numbered notebooks, experiments), in _site/ (git-ignored). Nothing is executed.
docs: $(STAMP)
	$(PY) scripts/make_site.py

# Execute the teaching notebooks (07_one_clip, 08_demo) in place so they carry their figures and players;
# they read the trained tiny models, so `make reproduce` first (or point AACNB_REPORTS/AACNB_DATA at a study).
lessons: $(STAMP)
	$(PY) scripts/run_lessons.py
