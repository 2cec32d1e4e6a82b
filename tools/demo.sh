#!/usr/bin/env bash
# The full demo (`make demo`): fine-tune DML and the classifier for a few epochs, extract
# the three feature sets of the test file (DML, classified, pre-trained), then plot,
# cluster and compare them, under the original project's file names:
#   models/{metrics,classified}/<name>/         the two trained models and their logs
#   features/<name>-{dml,clsed,embed}-<test>.txt the three feature sets
#   results/results_{dml,clsed}-<name>.png       training curves
#   results/plot_<name>-<kind>-<test>.png        t-SNE pictures
#   results/clustering/plot_<name>-<kind>-<test>.png (+ .tsv)  clustering comparisons
#   results/comparison_<name>-<test>.{md,png}    the side-by-side table and picture
#   results/explore_<name>-<kind>-<test>.html  the explorer pages (explore_features.py)
#   results/explore_<name>-compare-<test>.html the three feature sets in one explorer page
#   results/projector/<name>-<kind>-<test>/    their TensorBoard Projector folders
#
# Data: rt-polarity when datasets/rt-polarity/04-{train,test}.txt exist (make them with
# datasets/prepare_rt_polarity.py), else the bundled held-out split samples/rt-polarity/
# (600 training and 400 unseen test sentences: minutes on a laptop CPU).
# Override with environment variables: NAME, TRAIN, TEST, EPOCHS, MODEL_DIR, PY, GPU,
# LABEL_NAMES (a label<TAB>name file the pictures and pages show; on rt-polarity
# samples/rt-polarity/label_names.txt: 0 negative, 1 positive), and OUT, the folder that
# receives models/, features/ and results/ (default: the project).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
GPU=${GPU:--1}
MODEL_DIR=${MODEL_DIR:-BERT/all-MiniLM-L6-v2}
# The classifier's flags: its defaults, except on the bundled sample. There 600 sentences
# are 10 steps an epoch at batch 64, and the default rate (5e-5, decayed to 0 over 20 steps)
# leaves it at chance after 2 epochs; the sample's recipe was chosen on a validation split
# of its training file (bench/classifier_recipe.py, docs/demo-results.md).
CLS_FLAGS=""  # a string, split into words where used: bash 3.2 (macOS) rejects an
             # empty array under set -u
if [ -z "${TRAIN:-}" ]; then
    LABEL_NAMES=${LABEL_NAMES-samples/rt-polarity/label_names.txt}
    if [ -f datasets/rt-polarity/04-train.txt ] && [ -f datasets/rt-polarity/04-test.txt ]; then
        NAME=${NAME:-rt} TRAIN=datasets/rt-polarity/04-train.txt
        TEST=datasets/rt-polarity/04-test.txt EPOCHS=${EPOCHS:-2}
    else
        NAME=${NAME:-rt-sample} TRAIN=samples/rt-polarity/train.txt
        TEST=samples/rt-polarity/test.txt EPOCHS=${EPOCHS:-2}
        CLS_FLAGS="--learnrate 1e-4 --batchsize 16 --warmup 0.1"
    fi
fi
NAME=${NAME:-demo} TEST=${TEST:?TEST is needed with TRAIN} EPOCHS=${EPOCHS:-2}
TESTNAME=$(basename "${TEST%.txt}")
NAMES_FLAGS=""  # a string, as CLS_FLAGS
if [ -n "${LABEL_NAMES:-}" ]; then
    NAMES_FLAGS="--label_names $LABEL_NAMES"
fi
BERT=(--bert_dir "$MODEL_DIR" --gpu "$GPU")
OUT=${OUT:-.}
DML=$OUT/models/metrics/$NAME
CLS=$OUT/models/classified/$NAME
RESULTS=$OUT/results
mkdir -p "$RESULTS/clustering" "$OUT/features" "$OUT/models/metrics" "$OUT/models/classified"

step() { echo "== $*" >&2; }

step "train_dml.py: $TRAIN, $EPOCHS epochs, the recommended recipe (supcon at temperature 0.3, mean pooling)"
$PY train_dml.py "${BERT[@]}" --train "$TRAIN" --eval "$TEST" --epoch "$EPOCHS" \
    --loss supcon --pooling mean --learnrate 1e-4 --temperature 0.3 --out "$DML" 2>&1 \
    | tee "$RESULTS/train_dml-$NAME.log"
cp "$DML.png" "$RESULTS/results_dml-$NAME.png"
step "train_classifier.py: $TRAIN, $EPOCHS epochs $CLS_FLAGS"
$PY train_classifier.py "${BERT[@]}" --train "$TRAIN" --eval "$TEST" --epoch "$EPOCHS" \
    $CLS_FLAGS $NAMES_FLAGS --out "$CLS" 2>&1 | tee "$RESULTS/train_classifier-$NAME.log"
cp "$CLS.png" "$RESULTS/results_clsed-$NAME.png"

step "extracting the three feature sets of $TEST"
# Both trained models' final.model: their early-stopped ones are chosen on $TEST, the very
# file the features are scored on.
FEATURES=$OUT/features/$NAME
$PY extruct_bert_metrics.py "${BERT[@]}" --input "$TEST" --model "$DML/final.model" \
    --label "$DML/labels.bin" --output "$FEATURES-dml-$TESTNAME.txt"
$PY extruct_bert_classified.py "${BERT[@]}" --input "$TEST" \
    --model "$CLS/final.model" --label "$CLS/labels.bin" \
    --output "$FEATURES-clsed-$TESTNAME.txt"
$PY extruct_bert_embed.py "${BERT[@]}" --input "$TEST" --pooling mean \
    --output "$FEATURES-embed-$TESTNAME.txt"

for kind in dml clsed embed; do
    features=$FEATURES-$kind-$TESTNAME.txt
    step "plot and clustering of $features"
    $PY plot_features.py --input "$features" $NAMES_FLAGS --output "$RESULTS/plot_$NAME-$kind-$TESTNAME.png"
    $PY cluster_features.py --input "$features" $NAMES_FLAGS \
        --output "$RESULTS/clustering/plot_$NAME-$kind-$TESTNAME.png"
done

step "comparison"
$PY evaluate_features.py "$FEATURES-dml-$TESTNAME.txt" "$FEATURES-clsed-$TESTNAME.txt" \
    "$FEATURES-embed-$TESTNAME.txt" --names DML Classified Pre-trained $NAMES_FLAGS \
    --grid "$RESULTS/comparison_$NAME-$TESTNAME.png" \
    --output "$RESULTS/comparison_$NAME-$TESTNAME.md"
cat "$RESULTS/comparison_$NAME-$TESTNAME.md"

for kind in dml clsed embed; do
    features=$FEATURES-$kind-$TESTNAME.txt
    step "explorer page of $features"
    $PY explore_features.py --input "$features" --text "$TEST" $NAMES_FLAGS \
        --output "$RESULTS/explore_$NAME-$kind-$TESTNAME.html" \
        --projector "$RESULTS/projector/$NAME-$kind-$TESTNAME"
done
step "explorer page comparing the three feature sets"
$PY explore_features.py --input "$FEATURES-dml-$TESTNAME.txt" \
    "$FEATURES-clsed-$TESTNAME.txt" "$FEATURES-embed-$TESTNAME.txt" --text "$TEST" $NAMES_FLAGS \
    --output "$RESULTS/explore_$NAME-compare-$TESTNAME.html"
echo "explorer pages: $RESULTS/explore_$NAME-*.html (open one in a browser)" >&2
echo "results: $RESULTS/*$NAME-*" >&2
