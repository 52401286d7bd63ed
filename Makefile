# `make demo`: venv + install + a 10 s 1080p sample + its HLS ladder in ./out/
# `make test`: venv + test dependencies + lint + types + the whole suite (what CI runs)
# `make check`: the fast loop: lint + types + the tests not marked slow (about a minute on 2 cores)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test check lint typecheck clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@

sample/lecture-1080p.mp4: | $(VENV)/.installed
	$(PY) -m bench.sources $@ --seconds 10

demo: $(VENV)/.installed sample/lecture-1080p.mp4
	rm -rf out
	$(VENV)/bin/transcode sample/lecture-1080p.mp4 -o out

lint: $(VENV)/.installed
	$(PY) -m ruff check .

typecheck: $(VENV)/.installed
	$(PY) -m mypy

# pytest exits 5 when it collected no tests: a suite that ran nothing fails.
test: $(VENV)/.installed lint typecheck
	@$(PY) -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

check: $(VENV)/.installed lint typecheck
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf out sample .pytest_cache .mypy_cache .ruff_cache
