# Two entry points for a newcomer: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-fast lint bench clean

# The test install includes the optional Ray and GGUF extras so that the Ray backend and GGUF loading are tested too.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,ray,gguf]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/kneuron demo

test: install
	$(PY) -m pytest -q

# The fast lane: no world training, no real model, no browser (tests marked slow, see tests/conftest.py),
# on two processes (pytest-xdist; one file per process, so each file builds its fixtures once).
test-fast: install
	$(PY) -m pytest -q -m "not slow" -n 2 --dist loadfile

lint: install
	$(VENV)/bin/ruff check kneuron tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info

# The documentation site (mkdocs.yml, docs/): runs the two tutorials and builds site/ with --strict,
# so a broken link, a page missing from the nav, a docstring that does not render or a failing
# tutorial cell fails. KNEURON_DOCS_EXECUTE=false skips running the tutorials.
.PHONY: docs check-paths

$(VENV)/.docs-installed: $(VENV)/.installed pyproject.toml constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,ray,gguf,docs]'
	touch $@

docs: $(VENV)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# No absolute path of any machine in a tracked file.
check-paths:
	$(PYTHON) scripts/check_paths.py
