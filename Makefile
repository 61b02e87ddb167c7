# Set-up is part of every target: a fresh clone needs only python3 (3.10-3.12) and network access to PyPI.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench bundles clean

$(STAMP): requirements.txt requirements-dev.txt setup.py
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/regionadapt demo

lint: $(STAMP)
	$(BIN)/ruff check regionadapt_ros test bench launch

test: lint
	$(BIN)/pytest -q -p no:cacheprovider

bench: $(STAMP)
	for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf build install log .cache

bundles: $(STAMP)
	$(BIN)/regionadapt train-all --workdir .cache/train --bundles bundles --results docs/results \
		$(if $(SIGN_KEY),--sign-key $(SIGN_KEY))
