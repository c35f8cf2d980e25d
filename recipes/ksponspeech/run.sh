#!/usr/bin/env bash
# KsponSpeech recipe (AI Hub licence; download the corpus yourself).
#   bash recipes/ksponspeech/run.sh --corpus-root /data/KsponSpeech --ngpu 1 \
#        --config conf/conformer_ctc_attention.yaml [--stage N] [--stop-stage M]
# The corpus root holds KsponSpeech_01..05, KsponSpeech_eval and KsponSpeech_scripts (or scripts/).
# --user-dir DIR loads a plugin folder in every stage.
# TRANSCRIPT=spelling scores the spelling form instead of the phonetic one; NORMALIZATION=kospeech
# prepares the transcripts by the original KoSpeech's rules (to compare with its published CRR).
# LM as ESPnet's KsponSpeech recipe (a 16 x 512 Transformer LM on the training transcripts,
# same BPE units), then decoding with it:
#   bash recipes/ksponspeech/run.sh --stage 6 --lm transformer --ngpu 1
#   bash recipes/ksponspeech/run.sh --stage 4 --lm transformer --lm-weight 0.3 \
#        --config conf/conformer_ctc_attention.yaml --search "joint_ctc_attention beam_size=10"
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
# ESPnet's conf/tuning/train_lm_transformer3.yaml: pos_enc null, embed 128, 16 x 512, 8 heads,
# FF 2048, dropout 0, Adam 0.005, 25k warm-up steps, 25 epochs. Differences: ESPnet's warmuplr
# decays as 1/sqrt(step) after the warm-up (ours stays at the peak), it batches 250M numel x 4
# accumulation (ours --batch-tokens), and it averages the 10 best checkpoints by validation
# loss (ours keeps the best one).
lm_transformer_opts="--layers 16 --d-model 512 --num-heads 8 --ff-dim 2048 --embed-dim 128 --pos-enc none
  --dropout 0.0 --lr 0.005 --warmup-steps 25000 --epochs 25 --batch-tokens 32000"

prepare_data() {
  [ -n "$corpus_root" ] || { echo "--corpus-root /path/to/KsponSpeech is required for stage 1" >&2; exit 2; }
  kospeech data prep --corpus ksponspeech --root "$corpus_root" --out data --transcript "$transcript" \
    --normalization "$normalization" --nj "$nj" "${plugin_args[@]}"
}

source ../common/run_stages.sh
