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
#
# Data: rt-polarity when datasets/rt-polarity/04-{train,test}.txt exist (make them with
# datasets/prepare_rt_polarity.py), else the bundled samples/sentences.txt, which then
# serves as training and test file alike (a smoke run, not a measurement).
# Override with environment variables: NAME, TRAIN, TEST, EPOCHS, MODEL_DIR, PY, GPU, and
# OUT, the folder that receives models/, features/ and results/ (default: the project).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
GPU=${GPU:--1}
MODEL_DIR=${MODEL_DIR:-BERT/all-MiniLM-L6-v2}
if [ -z "${TRAIN:-}" ]; then
    if [ -f datasets/rt-polarity/04-train.txt ] && [ -f datasets/rt-polarity/04-test.txt ]; then
        NAME=${NAME:-rt} TRAIN=datasets/rt-polarity/04-train.txt
        TEST=datasets/rt-polarity/04-test.txt EPOCHS=${EPOCHS:-2}
    else
        NAME=${NAME:-sample} TRAIN=samples/sentences.txt TEST=samples/sentences.txt
        EPOCHS=${EPOCHS:-5}
    fi
fi
NAME=${NAME:-demo} TEST=${TEST:?TEST is needed with TRAIN} EPOCHS=${EPOCHS:-2}
TESTNAME=$(basename "${TEST%.txt}")
BERT=(--vocab_file "$MODEL_DIR/vocab.txt" --bert_config_file "$MODEL_DIR/bert_config.json"
      --init_checkpoint "$MODEL_DIR/arrays_bert_model.ckpt.npz" --gpu "$GPU")
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
step "train_classifier.py: $TRAIN, $EPOCHS epochs"
$PY train_classifier.py "${BERT[@]}" --train "$TRAIN" --eval "$TEST" --epoch "$EPOCHS" \
    --out "$CLS" 2>&1 | tee "$RESULTS/train_classifier-$NAME.log"
cp "$CLS.png" "$RESULTS/results_clsed-$NAME.png"

step "extracting the three feature sets of $TEST"
FEATURES=$OUT/features/$NAME
$PY extruct_bert_metrics.py "${BERT[@]}" --input "$TEST" --model "$DML/final.model" \
    --label "$DML/labels.bin" --output "$FEATURES-dml-$TESTNAME.txt"
$PY extruct_bert_classified.py "${BERT[@]}" --input "$TEST" \
    --model "$CLS/early_stopped-uar.model" --label "$CLS/labels.bin" \
    --output "$FEATURES-clsed-$TESTNAME.txt"
$PY extruct_bert_embed.py "${BERT[@]}" --input "$TEST" --pooling mean \
    --output "$FEATURES-embed-$TESTNAME.txt"

for kind in dml clsed embed; do
    features=$FEATURES-$kind-$TESTNAME.txt
    step "plot and clustering of $features"
    $PY plot_features.py --input "$features" --output "$RESULTS/plot_$NAME-$kind-$TESTNAME.png"
    $PY cluster_features.py --input "$features" \
        --output "$RESULTS/clustering/plot_$NAME-$kind-$TESTNAME.png"
done

step "comparison"
$PY evaluate_features.py "$FEATURES-dml-$TESTNAME.txt" "$FEATURES-clsed-$TESTNAME.txt" \
    "$FEATURES-embed-$TESTNAME.txt" --names DML Classified Pre-trained \
    --grid "$RESULTS/comparison_$NAME-$TESTNAME.png" \
    --output "$RESULTS/comparison_$NAME-$TESTNAME.md"
cat "$RESULTS/comparison_$NAME-$TESTNAME.md"
echo "results: $RESULTS/*$NAME-*" >&2
