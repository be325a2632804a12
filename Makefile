# Every set-up step lives here: `make demo` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seglab-installed
DEMO_OUT ?= demo-output

BROWSER := /usr/bin/chromium /usr/bin/chromedriver

.PHONY: install demo test lint bench clean browser serve

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-cache-dir -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The browser test drives Debian's headless Chromium; installed once, as the tests need it.
$(BROWSER):
	@command -v apt-get >/dev/null || { echo "need Debian's chromium and chromium-driver"; exit 1; }
	SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); export DEBIAN_FRONTEND=noninteractive; \
	$$SUDO apt-get install -y --no-install-recommends chromium chromium-driver \
	  || { $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium chromium-driver; }

browser: $(BROWSER)

demo: $(STAMP)
	$(BIN)/seglab demo --out $(DEMO_OUT)

test: $(STAMP) $(BROWSER)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

serve: $(STAMP)
	$(BIN)/seglab serve $(DEMO_OUT)/run/model $(DEMO_OUT)/run-cutout/model --data-dir $(DEMO_OUT)/service

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

lint: $(STAMP)
	$(BIN)/ruff check src tests

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
