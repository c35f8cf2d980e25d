#!/usr/bin/env bash
# Stages shared by every recipe. A recipe's run.sh sets the variables below, defines
# `prepare_data` (stage 1, corpus specific), cds into its own folder and sources this file.
#
#   stage 1  data prep (+ tokenizer)  -> data/<set>/, data/lang/
#   stage 2  features + CMVN          -> dump/<set>/ (skipped when training from raw audio)
#   stage 3  train                    -> exp/<name>/
#   stage 4  decode                   -> exp/<name>/decode_<set>_<search>[_avgN]/hyp.trn
#   stage 5  score                    -> .../scores.json, result.txt; a table of all sets
#
# Options: --stage N --stop-stage M --nj N --ngpu N --config conf/X.yaml --tag NAME
#   --search "NAME [k=v ...]" --tokenizer NAME --vocab-size N --train-input dump|data
#   --train-opts "a.b=c ..." (dotted overrides for kospeech train) --average N (decode the
#   mean of the last N checkpoints instead of best.pt) --corpus-root DIR
#   --average-by valid_cer|valid_loss (with --average N: the N best by that validation metric)
#   --score-opts "--cer-spaces" (options for kospeech score: ESPnet's CER, spaces scored)
# Each stage writes into temporary names and renames when complete, and skips finished work,
# so `--stage N` resumes safely after an interruption.
set -euo pipefail

: "${stage:=1}" "${stop_stage:=5}" "${nj:=2}" "${ngpu:=0}"
: "${config:=conf/las.yaml}" "${search:=}" "${tokenizer:=jamo}" "${vocab_size:=0}"
: "${corpus_root:=}" "${train_input:=dump}" "${train_opts:=}" "${average:=0}" "${average_by:=}" "${score_opts:=}"
: "${train_set:=train}" "${dev_set:=dev}" "${test_sets:=}" "${tag:=}"

# Kaldi-style options: --stage 3 --stop-stage 4 --nj 4 --ngpu 1 --config conf/x.yaml --search beam
while [ $# -gt 0 ]; do
  case "$1" in
    --stage) stage=$2; shift 2 ;;
    --stop-stage|--stop_stage) stop_stage=$2; shift 2 ;;
    --nj) nj=$2; shift 2 ;;
    --ngpu) ngpu=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --search) search=$2; shift 2 ;;
    --tag) tag=$2; shift 2 ;;
    --tokenizer) tokenizer=$2; shift 2 ;;
    --vocab-size|--vocab_size) vocab_size=$2; shift 2 ;;
    --train-input|--train_input) train_input=$2; shift 2 ;;
    --train-opts|--train_opts) train_opts="${train_opts:+$train_opts }$2"; shift 2 ;;  # after a recipe's own
    --average) average=$2; shift 2 ;;
    --average-by|--average_by) average_by=$2; shift 2 ;;
    --score-opts|--score_opts) score_opts=$2; shift 2 ;;
    --corpus-root|--corpus_root) corpus_root=$2; shift 2 ;;
    --help|-h) sed -n '2,18p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v kospeech >/dev/null || { echo "kospeech not found on PATH: activate the venv or pip install -e ." >&2; exit 2; }
[ -f "$config" ] || { echo "config not found: $config (relative paths are read from $(pwd))" >&2; exit 2; }
case "$train_input" in
  dump|data) ;;
  *) echo "--train-input must be dump (feature dumps from stage 2) or data (raw audio), got $train_input" >&2; exit 2 ;;
esac
name=${tag:-$(basename "$config" .yaml)}
exp=exp/$name
if [ "$ngpu" -gt 0 ]; then device=cuda; else device=cpu; fi

log() { echo "[$(date +%H:%M:%S)] $*"; }

# Run a recipe's local/*.py helper with the Python that kospeech is installed in.
kospeech_python() {
  local shebang
  shebang=$(head -n1 "$(command -v kospeech)")
  case "$shebang" in
    '#!'*python*) ${shebang#\#!} "$@" ;;  # unquoted: "/usr/bin/env python3" splits in two
    *) python3 "$@" ;;
  esac
}

# Where training and decoding read utterances from: feature dumps, or the data dirs
# themselves (features on the fly, needed by waveform augmentation such as noise or speed).
if [ "$train_input" = dump ]; then input_root=dump; else input_root=data; fi

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data preparation"
  prepare_data
  if [ ! -f data/lang/tokenizer.yaml ]; then
    extra=()  # the vocabulary size is sentencepiece's; character and jamo take every unit they see
    [ "$tokenizer" = sentencepiece ] && [ "$vocab_size" -gt 0 ] && extra=(--vocab-size "$vocab_size")
    kospeech tokenizer train --name "$tokenizer" --text "data/$train_set/text" --out data/lang "${extra[@]}"
  else
    log "  data/lang exists, tokenizer kept"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ "$train_input" = dump ]; then
    log "stage 2: features"
    # kospeech features dump resumes an unfinished dump and reuses finished shards.
    kospeech features dump --data "data/$train_set" --out "dump/$train_set" --config "$config" --nj "$nj" --cmvn
    for s in $dev_set $test_sets; do
      kospeech features dump --data "data/$s" --out "dump/$s" --config "$config" --nj "$nj"
    done
  else
    log "stage 2: skipped (training from raw audio: features are computed on the fly)"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: training $exp"
  train_args=(--config "$config" --exp-dir "$exp" --device "$device"
    "data.train=$input_root/$train_set" "data.valid=$input_root/$dev_set" data.lang=data/lang)
  if [ "$train_input" = dump ]; then train_args+=("data.cmvn=dump/$train_set/cmvn.npz"); fi
  # shellcheck disable=SC2206  # word splitting of the overrides is intended
  [ -n "$train_opts" ] && train_args+=($train_opts)
  # any checkpoint means resume: without last.pt, --resume continues from the newest readable ckpt_*.pt
  compgen -G "$exp/checkpoints/*.pt" > /dev/null && train_args+=(--resume)
  if [ "$ngpu" -gt 1 ]; then
    torchrun --standalone --nproc_per_node="$ngpu" -m kospeech train "${train_args[@]}"
  else
    kospeech train "${train_args[@]}"
  fi
fi

# The model to decode: the mean of the last N checkpoints (or of the N best by a validation
# metric), else the best on the dev set, else the last one (no dev set).
if [ "$average" -gt 0 ] && [ -n "$average_by" ]; then
  ckpt=$exp/model_best${average}_$average_by.pt
elif [ "$average" -gt 0 ]; then
  ckpt=$exp/model_avg$average.pt
elif [ -e "$exp/checkpoints/best.pt" ]; then
  ckpt=$exp/checkpoints/best.pt
else
  ckpt=$exp/checkpoints/last.pt
fi
search_args=()
# shellcheck disable=SC2206  # "NAME k=v ..." splits into the search name and its options
[ -n "$search" ] && search_args=(--search $search)
search_name=${search%% *}
search_name=${search_name:-default}
# decode dirs say which model and search made them: decode_<set>_<search>[_avgN]
decode_tag=$search_name
if [ "$average" -gt 0 ] && [ -n "$average_by" ]; then
  decode_tag=${decode_tag}_best${average}_$average_by
elif [ "$average" -gt 0 ]; then
  decode_tag=${decode_tag}_avg$average
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  if [ "$average" -gt 0 ] && { [ ! -f "$ckpt" ] || [ "$exp/checkpoints/last.pt" -nt "$ckpt" ]; }; then
    if [ -n "$average_by" ]; then
      log "stage 4: averaging the $average best checkpoints by $average_by -> $ckpt"
      kospeech average --exp-dir "$exp" --best "$average" --metric "$average_by" --out "$(basename "$ckpt")"
    else
      log "stage 4: averaging the last $average checkpoints -> $ckpt"
      kospeech average --exp-dir "$exp" --last "$average" --out "$(basename "$ckpt")"
    fi
  fi
  [ -e "$ckpt" ] || { echo "no checkpoint $ckpt: run stage 3 first" >&2; exit 1; }
  log "stage 4: decoding with $ckpt"
  for s in $test_sets; do
    out=$exp/decode_${s}_${decode_tag}
    # decode.yaml is written last: a decode dir that has it, newer than the model and made with
    # the same --search string (options included), is complete
    if [ -f "$out/hyp.trn" ] && [ "$out/decode.yaml" -nt "$ckpt" ] && [ -f "$out/search.txt" ] \
      && [ "$(cat "$out/search.txt")" = "$search" ]; then
      log "  $out done, skipped"; continue
    fi
    rm -f "$out/search.txt"
    kospeech decode --checkpoint "$ckpt" --data "$input_root/$s" --out "$out" --device "$device" "${search_args[@]}"
    printf '%s' "$search" > "$out/search.txt"
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: scoring"
  dirs=()
  for s in $test_sets; do
    out=$exp/decode_${s}_${decode_tag}
    # shellcheck disable=SC2086  # word splitting of the options is intended
    kospeech score --dir "$out" $score_opts
    dirs+=("$out")
  done
  kospeech compare "${dirs[@]}" --out "$exp"
  # the updates behind the table: with a wall-clock budget they depend on the machine
  if [ -f "$exp/log.jsonl" ]; then
    kospeech_python - "$exp/log.jsonl" <<'PY'
import json, sys
recs = [json.loads(x) for x in open(sys.argv[1], encoding="utf-8") if x.strip()]
steps = [r for r in recs if "step" in r and "time" in r]
if steps:
    minutes = (steps[-1]["time"] - steps[0]["time"]) / 60
    print(f"training: {steps[-1]['step']} updates, {minutes:.1f} min from the first to the last log line ({sys.argv[1]})")
PY
  fi
fi
