# The two commands a newcomer needs: `make demo` and `make test`.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_DIR ?= demo-data
PORT ?= 8000

.PHONY: demo test lint venv clean bench browser

$(BIN)/python:
	$(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/reelrank demo --data-dir $(DEMO_DIR) --port $(PORT)

test: $(STAMP) browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

# The lint and type checks alone (make test runs them too, in tests/test_lint.py).
lint: $(STAMP)
	$(BIN)/ruff check reelrank tests benchmarks
	$(BIN)/mypy

# The web app's end-to-end tests run in Debian's chromium (Playwright drives it; its own browser
# download is never used). Installed here when missing and we may; otherwise those tests skip.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium for the browser tests (apt-get)"; \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; } || \
		echo "could not install chromium: the browser tests will skip"; \
	else \
		echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser tests will skip"; \
	fi

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_serving.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
