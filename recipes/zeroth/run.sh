#!/usr/bin/env bash
# Zeroth-Korean recipe (LibriSpeech-style layout, 16 kHz FLAC).
#   bash recipes/zeroth/run.sh --corpus-root /data/zeroth_korean --ngpu 1 \
#        --config conf/conformer_ctc_attention.yaml [--stage N] [--stop-stage M]
# The corpus root holds train_data_01 and test_data_01. Zeroth has no dev split: stage 1
# holds out 3% of the training speakers as data/dev (local/make_dev.py) and trains on the
# rest (data/train_nodev). See ../common/run_stages.sh --help for every option.
set -euo pipefail
start_dir=$PWD  # --user-dir paths are relative to it
cd "$(dirname "$0")"

config=conf/conformer_ctc_attention.yaml
tokenizer=sentencepiece
vocab_size=${VOCAB_SIZE:-5000}
train_set=train_nodev
dev_set=dev
test_sets="test"

prepare_data() {
  [ -n "$corpus_root" ] || { echo "--corpus-root /path/to/zeroth_korean is required for stage 1" >&2; exit 2; }
  kospeech data prep --corpus zeroth --root "$corpus_root" --out data --nj "$nj" "${plugin_args[@]}"
  kospeech_python local/make_dev.py --src data/train --train "data/$train_set" --dev "data/$dev_set"
}

source ../common/run_stages.sh
