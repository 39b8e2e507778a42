# One command runs the demo, one runs the tests; both do all the set-up first. `make test-fast` is the
# edit-test loop: every test but those that start servers or a browser, train, run the demo or a benchmark.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

FAST   := not (server or training or demo or slow or docker)
# Test files run side by side (pytest-xdist), each file whole on one worker so its module fixtures start once.
# Most of the suite waits on servers and child processes, so three workers keep two cores busy;
# `make test WORKERS=0` runs in one process.
WORKERS ?= 3
XDIST   = $(if $(filter 0,$(WORKERS)),-p no:xdist,-n $(WORKERS) --dist loadfile)

.PHONY: demo test test-fast install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch and torchvision first, pinned, so pip takes the builds on this disk (README.md, "Two commands")
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/focus demo

test: $(STAMP)
	$(PY) scripts/test_setup.py
	$(PY) -m pytest $(XDIST) $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) scripts/test_setup.py --no-browser
	$(PY) -m pytest $(XDIST) -m "$(FAST)" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) focus.db focus-report .focus-cache
