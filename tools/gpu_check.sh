#!/usr/bin/env bash
# The prepared GPU check: everything that needs a CUDA GPU, in one command on a GPU
# machine, with one Markdown report.
#
#   bash tools/gpu_check.sh prepare   development machine (`make gpu-check-prepare`): builds
#                                     build/gpu-check/, what must travel with the working
#                                     tree: the wheel of what a GPU machine lacks (Chainer
#                                     7.8.1, built here), the demo model's config and
#                                     vocabulary. Checks it is under 64 MiB together.
#   bash tools/gpu_check.sh run       GPU machine, in the repository root, with
#                                     build/gpu-check/ carried along: installs into a
#                                     temporary site, runs `pytest -m gpu`, the end-to-end
#                                     checklist and the speed figures, and writes
#                                     $OUT/gpu_check.md (OUT defaults to build/gpu-check/out).
#   bash tools/gpu_check.sh dry-run   development machine (`make gpu-check-dry-run`): `run`
#                                     with the CPU standing in for the GPU, to check the
#                                     script's own logic, in a Python that stands in for the
#                                     GPU machine's (build/gpu-check-standin/, built on
#                                     first use from tools/gpu_check_standin.txt), so that a
#                                     green dry run means a green `run`.
#
# The GPU machines this is written for: one H100 or H200, Python 3.12, NumPy 2.5, CuPy 14
# (CUDA 13), PyTorch 2.11, sentence-transformers 6, SciPy, scikit-learn, matplotlib,
# Numba and pytest, but no Chainer, no network; at most 64 MiB travel with a run and a
# command may take 10 minutes, so `run` stops starting steps after BUDGET seconds
# (default 420) and always writes its report. What requirements.txt names and the
# machine lacks besides Chainer (matplotlib-fontja, plotly) only plot_features.py and
# explore_features.py use, which the check does not run, so it is not carried.
# The demo model's weights (91 MB) do not travel either: `run` makes random weights of
# the same shape, which is all that CPU-vs-GPU agreement and speed need.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PAYLOAD=build/gpu-check
MODEL_DIR=${MODEL_DIR:-BERT/all-MiniLM-L6-v2}
LIMIT_MIB=64
STANDIN=build/gpu-check-standin
STANDIN_LIST=tools/gpu_check_standin.txt

prepare() {
    local py=${PY:-.venv/bin/python}
    set -e
    rm -rf "$PAYLOAD"
    mkdir -p "$PAYLOAD/wheels" "$PAYLOAD/model"
    # Chainer 7.8.1 is an sdist: build its (pure Python) wheel here, where setuptools<81
    # is installed, so the GPU machine needs neither a network nor a build. Its own
    # dependencies (six, filelock, typing-extensions, protobuf) and pytest are there.
    "$py" -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$PAYLOAD/wheels" \
        chainer==7.8.1
    cp "$MODEL_DIR/bert_config.json" "$MODEL_DIR/vocab.txt" "$PAYLOAD/model/"
    local tree payload total
    tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
    payload=$(du -sb "$PAYLOAD" | cut -f1)
    total=$(( (tree + payload) / 1048576 ))
    echo "gpu-check payload: $PAYLOAD $((payload / 1024)) KiB + working tree $((tree / 1024)) KiB = $total MiB (limit $LIMIT_MIB MiB)"
    ls -l "$PAYLOAD/wheels"
    [ "$total" -lt "$LIMIT_MIB" ] || { echo "error: payload over $LIMIT_MIB MiB" >&2; exit 1; }
    echo "next: on a GPU machine run 'bash tools/gpu_check.sh run' carrying $PAYLOAD"
}

# The dry run's Python: a virtual environment of what the GPU machine's python3 holds
# (tools/gpu_check_standin.txt) on Python 3.12, built on first use and again when that
# list changes. pip's cache keeps a rebuild from downloading again.
standin() {
    [ -x "$STANDIN/bin/python" ] && cmp -s "$STANDIN_LIST" "$STANDIN/requirements.txt" && return 0
    local python="" candidate
    for candidate in python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3; do
        "$candidate" -c '' 2>/dev/null && { python=$candidate; break; }
    done
    if [ -z "$python" ]; then
        echo "error: the dry run needs Python 3.12 (the GPU machine's) for $STANDIN: no python3.12 or ~/.pyenv/versions/3.12*/bin/python3 runs" >&2
        exit 2
    fi
    echo "building $STANDIN ($("$python" --version 2>&1), $STANDIN_LIST)" >&2
    rm -rf "$STANDIN"
    if ! { "$python" -m venv "$STANDIN" &&
           "$STANDIN/bin/python" -m pip install --quiet --only-binary=:all: -r "$STANDIN_LIST"; }; then
        rm -rf "$STANDIN"
        echo "error: could not build $STANDIN from $STANDIN_LIST (pip's messages above)" >&2
        exit 2
    fi
    # Copied last: an interrupted build is not taken for a finished one.
    cp "$STANDIN_LIST" "$STANDIN/requirements.txt"
}

# --- the GPU half ----------------------------------------------------------------------

START=$(date +%s)
BUDGET=${BUDGET:-420}
SCALE=1  # step time limits are multiplied by it: 4 in a dry run on a small CPU machine
REPORT=""
FAILED=0

elapsed() { echo $(( $(date +%s) - START )); }

note() { printf '%s\n' "$*" >> "$REPORT"; }

# step NAME SECONDS COMMAND...: runs COMMAND with a timeout (at most what is left of the
# budget), records its status, time and last lines in the report; never stops the script.
step() {
    local name=$1 limit=$2
    shift 2
    local left=$(( BUDGET - $(elapsed) ))
    if [ "$left" -lt 15 ]; then
        note "### $name: SKIPPED (time budget spent)"
        FAILED=1
        return 0
    fi
    limit=$(( limit * SCALE ))
    [ "$limit" -gt "$left" ] && limit=$left
    local log="$WORK/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_').log"
    local begin=$(date +%s)
    timeout -k 5 "$limit" "$@" > "$log" 2>&1
    local status=$?
    local took=$(( $(date +%s) - begin ))
    local verdict=ok
    [ $status -eq 0 ] || { verdict="FAILED (exit $status$([ $status -eq 124 ] && echo ', timed out'))"; FAILED=1; }
    note "### $name: $verdict in ${took}s"
    note '```'
    grep -E '^(check:|speed-|compare:|make-|[0-9]+ (passed|failed)|FAILED|ERROR|error:)|\] T/loss=|extracted [0-9]+ lines' \
        "$log" | tail -20 >> "$REPORT"
    if [ $status -ne 0 ]; then
        echo '--- last lines:' >> "$REPORT"
        tail -25 "$log" >> "$REPORT"
    fi
    note '```'
    echo "[$(elapsed)s] $name: $verdict" >&2
    return 0
}

run_checks() {
    local dry=$1
    if ! ls "$ROOT/$PAYLOAD"/wheels/chainer-*.whl >/dev/null 2>&1; then
        echo "error: $PAYLOAD/wheels has no Chainer wheel: run 'bash tools/gpu_check.sh prepare' first (and carry $PAYLOAD)" >&2
        exit 2
    fi
    # The GPU machine's python3 holds PyTorch and CuPy; the dry run's stands in for it.
    local py=${PY:-python3} gpu=0
    if [ "$dry" = 1 ]; then
        standin
        py=$ROOT/$STANDIN/bin/python
        START=$(date +%s)  # the budget is the check's, not the stand-in's one-off build
    fi
    OUT=${OUT:-$ROOT/$PAYLOAD/out}
    mkdir -p "$OUT"
    WORK=$(mktemp -d)
    REPORT=$OUT/gpu_check.md
    : > "$REPORT"
    # Sizes: the dry run on a 2-core machine uses fewer sentences.
    local lines=${LINES:-512} sentences=${SPEED_SENTENCES:-2048} steps=${SPEED_STEPS:-20}
    if [ "$dry" = 1 ]; then
        gpu=-1 lines=${LINES:-96} sentences=${SPEED_SENTENCES:-128} steps=${SPEED_STEPS:-2}
        SCALE=4 BUDGET=${BUDGET_DRY:-1200}
    fi
    note "# GPU check ($([ "$dry" = 1 ] && echo 'dry run: the CPU stands in for the GPU' || echo 'GPU'))"
    note ""
    note "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), budget ${BUDGET}s"
    # A temporary site with the carried wheels (unpacked: they are pure Python, so no
    # pip, network or build is needed).
    local site=$WORK/site
    mkdir -p "$site"
    for wheel in "$ROOT/$PAYLOAD"/wheels/*.whl; do
        "$py" -m zipfile -e "$wheel" "$site"
    done
    export PYTHONPATH=$site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
    export BERTLIB_GPU_DRY_RUN=$dry
    note "site: $(ls "$site" | grep -v dist-info | tr '\n' ' ')"
    note '```'
    { command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || echo 'no nvidia-smi'; } >> "$REPORT"
    "$py" - >> "$REPORT" 2>&1 <<'EOF'
import importlib, sys
import bertlib  # first: it makes Chainer 7.8.1 importable on NumPy 2
print('Python', sys.version.split()[0])
for name in ('numpy', 'scipy', 'sklearn', 'numba', 'cupy', 'chainer', 'torch', 'transformers',
             'sentence_transformers', 'pytest'):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:
        print(name, 'not importable:', type(e).__name__, str(e).splitlines()[0] if str(e) else '')
EOF
    note '```'

    note ""

    local model=$WORK/model data=$WORK/data
    local flags=(--vocab_file "$model/vocab.txt" --bert_config_file "$model/bert_config.json"
                 --init_checkpoint "$model/arrays_bert_model.ckpt.npz")
    step "import bertlib and Chainer's CUDA" 60 "$py" -c "
import bertlib, chainer, numpy
from chainer.backends import cuda
print('check: compat patches', bertlib.compat.applied, 'numba compiled', bertlib.compat.numba.compiled)
print('check: chainer cuda available', cuda.available, 'cudnn', cuda.cudnn_enabled)
from bertlib import devices
print('check: device', devices.select_device($gpu))"
    step "make a random model of the demo's shape" 60 "$py" tools/gpu_check.py make-model \
        --config "$ROOT/$PAYLOAD/model/bert_config.json" --vocab "$ROOT/$PAYLOAD/model/vocab.txt" \
        --out "$model"
    step "make data" 30 "$py" tools/gpu_check.py make-data --out "$data" --lines $lines
    # Named files: collecting all of tests/ would import what a GPU machine may lack.
    local gpu_tests="tests/test_gpu.py tests/test_losses.py"
    [ "$dry" = 1 ] && gpu_tests=tests/test_gpu.py  # test_losses' GPU test needs CuPy arrays
    step "pytest -m gpu" 180 "$py" -m pytest -q -p no:cacheprovider -m gpu $gpu_tests
    step "train_dml one epoch" 90 "$py" train_dml.py --train "$data/train.txt" \
        --eval "$data/eval.txt" --out "$WORK/dml" --epoch 1 --batchsize 32 --dim 64 \
        --loss supcon --noplot --gpu $gpu "${flags[@]}"
    step "train_classifier one epoch" 90 "$py" train_classifier.py --train "$data/train.txt" \
        --eval "$data/eval.txt" --out "$WORK/cls" --epoch 1 --batchsize 32 --noplot \
        --gpu $gpu "${flags[@]}"
    step "resume train_dml on the CPU (epoch 2)" 120 "$py" train_dml.py --train "$data/train.txt" \
        --eval "$data/eval.txt" --out "$WORK/dml" --epoch 2 --batchsize 32 --dim 64 \
        --loss supcon --noplot --gpu -1 --resume "$WORK/dml" "${flags[@]}"
    step "resume train_dml on the GPU (epoch 3)" 90 "$py" train_dml.py --train "$data/train.txt" \
        --eval "$data/eval.txt" --out "$WORK/dml" --epoch 3 --batchsize 32 --dim 64 \
        --loss supcon --noplot --gpu $gpu --resume "$WORK/dml" "${flags[@]}"
    local extractor extra
    for extractor in embed metrics classified; do
        case $extractor in
            embed) extra=(--pooling mean) ;;
            metrics) extra=(--model "$WORK/dml/final.model" --label "$WORK/dml/labels.bin") ;;
            classified) extra=(--model "$WORK/cls/final.model" --label "$WORK/cls/labels.bin") ;;
        esac
        step "extruct_bert_$extractor on the CPU" 90 "$py" extruct_bert_$extractor.py \
            --input "$data/input.txt" --output "$WORK/$extractor-cpu.tsv" --gpu -1 \
            "${extra[@]}" "${flags[@]}"
        step "extruct_bert_$extractor on the GPU" 60 "$py" extruct_bert_$extractor.py \
            --input "$data/input.txt" --output "$WORK/$extractor-gpu.tsv" --gpu $gpu \
            "${extra[@]}" "${flags[@]}"
        step "extruct_bert_$extractor CPU vs GPU" 30 "$py" tools/gpu_check.py compare \
            "$WORK/$extractor-cpu.tsv" "$WORK/$extractor-gpu.tsv" --tolerance 1e-4
    done
    local speed=(--model "$model" --sentences $sentences --steps $steps)
    step "speed: extraction, bertlib" 60 "$py" tools/gpu_check.py speed-extract "${speed[@]}" --gpu $gpu
    step "speed: training, bertlib" 60 "$py" tools/gpu_check.py speed-train "${speed[@]}" --gpu $gpu
    if [ "$dry" = 0 ]; then
        step "speed: extraction, PyTorch reference" 60 "$py" tools/gpu_check.py speed-extract "${speed[@]}" --gpu 0 --torch
        step "speed: training, PyTorch reference" 60 "$py" tools/gpu_check.py speed-train "${speed[@]}" --gpu 0 --torch
    fi
    note ""
    note "total: $(elapsed)s of ${BUDGET}s; $([ $FAILED = 0 ] && echo 'every step passed' || echo 'SOME STEPS FAILED')"
    cp "$WORK"/*.log "$OUT/" 2>/dev/null
    rm -rf "$WORK"
    echo "report: $REPORT" >&2
    cat "$REPORT"
    return $FAILED
}

case ${1:-} in
    prepare) prepare ;;
    run) run_checks 0 ;;
    dry-run) run_checks 1 ;;
    *) echo "usage: bash tools/gpu_check.sh prepare|run|dry-run" >&2; exit 2 ;;
esac
