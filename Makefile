# One command runs the demo, one runs the tests; both do all the set-up first. `make test-fast` is the
# edit-test loop: every test but those that start servers or a browser, train, run the demo or a benchmark.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

FAST   := not (server or training or demo or slow or docker)

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
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) scripts/test_setup.py --no-browser
	$(PY) -m pytest -m "$(FAST)" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) focus.db focus-report .focus-cache
