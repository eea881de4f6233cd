# Two commands: `make sweep` and `make test`. Set-up is shared, idempotent and fast when done.
PY      := .venv/bin/python
STAMP   := .venv/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
CONFIG  ?= experiments/tiny.yaml

.PHONY: setup sweep test test-fast bench clean

setup: $(STAMP)

# torch==2.13.0 first: on CPU machines pip takes the local CPU wheel; an unpinned torch
# would pull a multi-GB CUDA build. GPU machines: install your CUDA torch before `make`.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	rm -f .venv/.installed-* && touch $(STAMP)

sweep: setup
	.venv/bin/mlora sweep $(CONFIG) $(ARGS)

test: setup
	$(PY) -m pytest tests

test-fast: setup
	$(PY) -m pytest tests -m "not slow"

bench: setup
	@for f in benchmarks/[!_]*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf .venv outputs .pytest_cache
