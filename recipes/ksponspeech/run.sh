#!/usr/bin/env bash
# KsponSpeech recipe (AI Hub licence; download the corpus yourself).
#   bash recipes/ksponspeech/run.sh --corpus-root /data/KsponSpeech --ngpu 1 \
#        --config conf/conformer_ctc_attention.yaml [--stage N] [--stop-stage M]
# The corpus root holds KsponSpeech_01..05, KsponSpeech_eval and KsponSpeech_scripts (or scripts/).
# --user-dir DIR loads a plugin folder in every stage.
# TRANSCRIPT=spelling scores the spelling form instead of the phonetic one; NORMALIZATION=kospeech
# prepares the transcripts by the original KoSpeech's rules (to compare with its published CRR).
set -euo pipefail
start_dir=$PWD  # --user-dir paths are relative to it
cd "$(dirname "$0")"

config=conf/conformer_ctc_attention.yaml
tokenizer=sentencepiece
vocab_size=${VOCAB_SIZE:-5000}
transcript=${TRANSCRIPT:-phonetic}
normalization=${NORMALIZATION:-standard}
train_set=train
dev_set=dev
test_sets="eval_clean eval_other"

prepare_data() {
  [ -n "$corpus_root" ] || { echo "--corpus-root /path/to/KsponSpeech is required for stage 1" >&2; exit 2; }
  kospeech data prep --corpus ksponspeech --root "$corpus_root" --out data --transcript "$transcript" \
    --normalization "$normalization" --nj "$nj" "${plugin_args[@]}"
}

source ../common/run_stages.sh
