#!/usr/bin/env bash
# Mini recipe: synthesises a small Korean corpus with espeak-ng in KsponSpeech's on-disk layout
# (pcm, CP949 transcripts, .trn lists), runs the real KsponSpeech prep on it, trains on CPU and
# scores eval_clean (voices seen in training, unseen sentences) and eval_other (unseen voices,
# speeds and pitches, with noise: the robustness set). Minutes on 2 cores.
#   bash recipes/mini/run.sh [--stage N] [--stop-stage M] [--config conf/X.yaml] [--nj N]
# MINI_HOURS (default 5) sets the amount of synthetic speech, MINI_MAX_UTTS caps the number
# of utterances (for quick checks), MINI_MADE_UP_VOICES the share of training speakers with a
# made-up espeak-ng voice (default 0.4). MINI_UPDATES=N trains exactly N updates instead of the
# 11-minute budget (results that do not depend on the machine's speed). Training reads the data dirs (raw audio, features on the
# fly) because the configs add noise to the waveforms; stage 2 has nothing to do.
set -euo pipefail
start_dir=$PWD  # --user-dir paths are relative to it
cd "$(dirname "$0")"

hours=${MINI_HOURS:-5}
seed=${MINI_SEED:-1}
max_utts=${MINI_MAX_UTTS:-}
made_up_voices=${MINI_MADE_UP_VOICES:-0.4}
config=conf/conv_ctc.yaml
tokenizer=jamo
train_input=data
train_set=train
dev_set=dev
test_sets="eval_clean eval_other"
# Decoding: CTC prefix beam with a 6-gram jamo LM built from the training text and the corpus's
# training-only sentences (lm_text.txt: the listed training sentences and the conversational
# pool, spoken or not; seconds, made by stage 4 when missing). Weight and length bonus were
# chosen on a tuning corpus whose sentences are in neither the training text nor the test sets
# (local/lm_tuning_sentences.txt; measured in RESULTS.md). --lm-weight 0 decodes without the LM.
search="ctc_prefix_beam beam_size=10"
lm=ngram
lm_weight=1.0
lm_search_opts="length_bonus=1.5"  # the insertion bonus that offsets the LM's preference for short outputs
lm_ngram_opts="--order 6 --transcript phonetic"
# A fixed number of updates instead of the wall-clock budget (the schedule then follows the
# updates); --train-opts given on the command line still come last and win.
if [ -n "${MINI_UPDATES:-}" ]; then
  train_opts="train.max_steps=$MINI_UPDATES train.max_minutes=0"
fi

prepare_data() {
  local root=${corpus_root:-corpus}
  if [ ! -f "$root/.complete" ]; then
    local extra=()
    [ -n "$max_utts" ] && extra=(--max-utts "$max_utts")
    kospeech data synth --layout ksponspeech --out "$root" --hours "$hours" --seed "$seed" --nj "$nj" "${extra[@]}" \
      --made-up-voices "$made_up_voices" \
      "${plugin_args[@]}"
    touch "$root/.complete"
  fi
  kospeech data prep --corpus ksponspeech --root "$root" --out data --transcript phonetic --nj "$nj" "${plugin_args[@]}"
}

extra_lm_texts() { echo "${corpus_root:-corpus}/lm_text.txt"; }

source ../common/run_stages.sh
