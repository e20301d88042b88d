# The two commands a new user needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: run test lint bench clean bundle bundle-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/olsdesk

test: $(STAMP)
	$(BIN)/ruff check olsdesk tests bench tools
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check olsdesk tests bench tools

bench: $(STAMP)
	$(BIN)/python bench/train_overhead.py

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache

# --- the PyInstaller bundle ----------------------------------------------------------
BUNDLE_DIR ?= dist
BUNDLE_WORK ?= build
BUNDLE_STAMP := $(VENV)/.installed-bundle

$(BUNDLE_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[bundle]'
	touch $(BUNDLE_STAMP)

bundle: $(BUNDLE_STAMP)
	$(BIN)/pyinstaller olsdesk.spec --noconfirm --clean --log-level WARN \
		--distpath $(BUNDLE_DIR) --workpath $(BUNDLE_WORK)

bundle-check:
	$(PYTHON) tools/bundle_check.py $(BUNDLE_DIR)/olsdesk
