#!/usr/bin/env bash
# The full demo (`make demo`): fine-tune DML and the classifier for a few epochs, extract
# the three feature sets of the test file (DML, classified, pre-trained), then plot,
# cluster and compare them. Everything lands in results/<name>-*.
#
# Data: rt-polarity when datasets/rt-polarity/04-{train,test}.txt exist (make them with
# datasets/prepare_rt_polarity.py), else the bundled samples/sentences.txt, which then
# serves as training and test file alike (a smoke run, not a measurement).
# Override with environment variables: NAME, TRAIN, TEST, EPOCHS, MODEL_DIR, PY, GPU.
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
BERT=(--vocab_file "$MODEL_DIR/vocab.txt" --bert_config_file "$MODEL_DIR/bert_config.json"
      --init_checkpoint "$MODEL_DIR/arrays_bert_model.ckpt.npz" --gpu "$GPU")
DML=models/metrics/$NAME
CLS=models/classified/$NAME
OUT=results/$NAME
mkdir -p results models/metrics models/classified

step() { echo "== $*" >&2; }

step "train_dml.py: $TRAIN, $EPOCHS epochs, the recommended recipe (supcon, mean pooling)"
$PY train_dml.py "${BERT[@]}" --train "$TRAIN" --eval "$TEST" --epoch "$EPOCHS" \
    --loss supcon --pooling mean --learnrate 1e-4 --out "$DML" > "$OUT-train_dml.log"
step "train_classifier.py: $TRAIN, $EPOCHS epochs"
$PY train_classifier.py "${BERT[@]}" --train "$TRAIN" --eval "$TEST" --epoch "$EPOCHS" \
    --out "$CLS" > "$OUT-train_classifier.log"

step "extracting the three feature sets of $TEST"
$PY extruct_bert_metrics.py "${BERT[@]}" --input "$TEST" --model "$DML/final.model" \
    --label "$DML/labels.bin" --output "$OUT-dml.tsv"
$PY extruct_bert_classified.py "${BERT[@]}" --input "$TEST" \
    --model "$CLS/early_stopped-uar.model" --label "$CLS/labels.bin" --output "$OUT-clsed.tsv"
$PY extruct_bert_embed.py "${BERT[@]}" --input "$TEST" --pooling mean --output "$OUT-embed.tsv"

for kind in dml clsed embed; do
    step "plot and clustering of $OUT-$kind.tsv"
    $PY plot_features.py --input "$OUT-$kind.tsv" --output "$OUT-plot-$kind.png"
    $PY cluster_features.py --input "$OUT-$kind.tsv" --output "$OUT-cluster-$kind.png"
done

step "comparison"
$PY evaluate_features.py "$OUT-dml.tsv" "$OUT-clsed.tsv" "$OUT-embed.tsv" \
    --names DML Classified Pre-trained --grid "$OUT-comparison.png" \
    --output "$OUT-comparison.md"
cat "$OUT-comparison.md"
echo "results: $OUT-*" >&2
