#!/usr/bin/env bash
# MLIT end to end on multilingual-e5-small (issue 23, item 5), as the original BERT-DML's
# mlit commands: train_dml.py, then the DML and pre-trained extractors, the pictures, the
# clusterings and the comparison (with TF-IDF's bag of words beside them), on mlit/split-train.txt -> split-test.txt. With
# CLASSIFIER=1 train_classifier.py and its features too (another ~30 minutes on 2 cores).
#
#   make model-multilingual && nice bash bench/mlit_multilingual.sh
#
# The recipe is the issue's PyTorch reference's (supcon, temperature 0.3, learning rate
# 1e-4, 2 epochs, batch 64 of random sentences, `query: ` before every text, the text as
# spaced), not one chosen on these test lines. Writes under OUT (default results/mlit-e5):
# models/, features/, plot_mlit-{dml,clsed,embed}-split-test.png, clustering/, and
# comparison_mlit-split-test.{md,png}, explore_mlit-compare-split-test.html. With JOIN=1 BERT reads the text with the spaces
# between MLIT's words removed (copies under OUT/data/; TF-IDF keeps the spaced words),
# the reading chosen on validation folds of split-train.txt (docs/multilingual-mlit.md).
# DML_ARGS: more train_dml.py flags, after the recipe's (so they win), split on spaces; the
# all-classes recipe chosen on validation is JOIN=1 DML_ARGS='--freeze_word_embeddings
# --temperature 0.1 --epoch 3' (the classifier keeps EPOCHS).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
MODEL_DIR=${MODEL_DIR:-BERT/multilingual-e5-small}
DATA=${DATA:-../shared/datasets/mlit}
OUT=${OUT:-results/mlit-e5}
EPOCHS=${EPOCHS:-2}
PREFIX=${PREFIX:-query: }
BERT=(--vocab_file "$MODEL_DIR/tokenizer.json" --bert_config_file "$MODEL_DIR/bert_config.json"
      --init_checkpoint "$MODEL_DIR/arrays_bert_model.ckpt.npz")
mkdir -p "$OUT/features" "$OUT/clustering"
F=$OUT/features/mlit
SPACED=$DATA
if [ "${JOIN:-0}" = 1 ]; then
    mkdir -p "$OUT/data"
    for part in split-train split-test; do
        # label<TAB>text: the spaces go from the text only.
        awk -F'\t' -v OFS='\t' '{ gsub(/ /, "", $2); print }' "$DATA/$part.txt" > "$OUT/data/$part.txt"
    done
    DATA=$OUT/data
fi
step() { echo "== [$(date -u +%H:%M:%S)] $*" >&2; }

step train_dml.py
$PY train_dml.py "${BERT[@]}" --text_prefix "$PREFIX" --train "$DATA/split-train.txt" \
    --eval "$DATA/split-test.txt" --epoch "$EPOCHS" --batchsize 64 --loss supcon \
    --sampling random --pooling mean --learnrate 1e-4 --temperature 0.3 \
    --out "$OUT/models/metrics" ${DML_ARGS:-} 2>&1 | tee "$OUT/train_dml.log"
sets=(dml embed tfidf) names=(DML Pre-trained TF-IDF)
step extractors
$PY extruct_bert_metrics.py "${BERT[@]}" --input "$DATA/split-test.txt" \
    --model "$OUT/models/metrics/final.model" --label "$OUT/models/metrics/labels.bin" \
    --output "$F-dml-split-test.txt"
$PY extruct_bert_embed.py "${BERT[@]}" --text_prefix "$PREFIX" --pooling mean \
    --input "$DATA/split-test.txt" --output "$F-embed-split-test.txt"
$PY bench/tfidf_features.py "$SPACED/split-train.txt" "$SPACED/split-test.txt" > "$F-tfidf-split-test.txt"
if [ "${CLASSIFIER:-0}" = 1 ]; then
    step train_classifier.py
    $PY train_classifier.py "${BERT[@]}" --text_prefix "$PREFIX" --train "$DATA/split-train.txt" \
        --eval "$DATA/split-test.txt" --epoch "$EPOCHS" --learnrate 1e-4 \
        --out "$OUT/models/classified" 2>&1 | tee "$OUT/train_classifier.log"
    # final.model, not early_stopped-uar.model: that one is chosen by its score on the
    # test lines (--eval), as tools/demo.sh reasons.
    $PY extruct_bert_classified.py "${BERT[@]}" --input "$DATA/split-test.txt" \
        --model "$OUT/models/classified/final.model" \
        --label "$OUT/models/classified/labels.bin" --output "$F-clsed-split-test.txt"
    sets=(dml clsed embed tfidf) names=(DML Classified Pre-trained TF-IDF)
fi
for kind in "${sets[@]}"; do
    step "plot and clustering: $kind"
    $PY plot_features.py --input "$F-$kind-split-test.txt" --output "$OUT/plot_mlit-$kind-split-test.png"
    $PY cluster_features.py --input "$F-$kind-split-test.txt" \
        --output "$OUT/clustering/plot_mlit-$kind-split-test.png"
done
step explorer
# One page comparing the BERT feature sets (the explorer takes two or three), text from
# the file the features were extracted from.
explore=(); for kind in "${sets[@]}"; do [ "$kind" = tfidf ] || explore+=("$F-$kind-split-test.txt"); done
$PY explore_features.py --input "${explore[@]}" --text "$DATA/split-test.txt" \
    --output "$OUT/explore_mlit-compare-split-test.html"
step comparison
files=(); for kind in "${sets[@]}"; do files+=("$F-$kind-split-test.txt"); done
$PY evaluate_features.py "${files[@]}" --names "${names[@]}" \
    --grid "$OUT/comparison_mlit-split-test.png" --output "$OUT/comparison_mlit-split-test.md"
cat "$OUT/comparison_mlit-split-test.md"
