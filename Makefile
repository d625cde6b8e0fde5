# The README's two quick-start commands are `make demo` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test test-fast clean

setup:
	./scripts/setup.sh

demo: setup
	$(VENV)/bin/radseg demo --output demo-runs --overwrite

test: setup
	$(PY) -m pytest -q -rs

test-fast: setup
	$(PY) -m pytest -q -rs -m "not slow"

clean:
	rm -rf demo-data demo-runs .radseg-cache
