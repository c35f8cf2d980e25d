#!/usr/bin/env bash
# Zeroth-Korean recipe (LibriSpeech-style layout, 16 kHz FLAC).
#   bash recipes/zeroth/run.sh --corpus-root /data/zeroth_korean --ngpu 1 \
#        --config conf/conformer_ctc_attention.yaml [--stage N] [--stop-stage M]
# The corpus root holds train_data_01 and test_data_01.
set -euo pipefail
cd "$(dirname "$0")"

config=conf/conformer_ctc_attention.yaml
tokenizer=sentencepiece
vocab_size=${VOCAB_SIZE:-5000}
train_set=train
dev_set=dev
test_sets="test"

prepare_data() {
  [ -n "$corpus_root" ] || { echo "--corpus-root /path/to/zeroth_korean is required for stage 1" >&2; exit 2; }
  kospeech data prep --corpus zeroth --root "$corpus_root" --out data --nj "$nj"
}

source ../common/run_stages.sh
