#!/usr/bin/env bash
# Stages shared by every recipe. A recipe's run.sh sets the variables below, defines
# `prepare_data` (stage 1, corpus specific) and sources this file.
#
#   stage 1  data prep (+ tokenizer)  -> data/<set>/, data/lang/
#   stage 2  features + CMVN          -> dump/<set>/
#   stage 3  train                    -> exp/<name>/
#   stage 4  decode                   -> exp/<name>/decode_<set>_<search>/hyp.trn
#   stage 5  score                    -> .../scores.json, result.txt; a table of all sets
#
# Each stage writes into temporary names and renames when complete, and skips finished work,
# so `--stage N` resumes safely after an interruption.
set -euo pipefail

: "${stage:=1}" "${stop_stage:=5}" "${nj:=2}" "${ngpu:=0}"
: "${config:=conf/las.yaml}" "${search:=}" "${tokenizer:=jamo}" "${vocab_size:=0}"
: "${corpus_root:=}"
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
    --corpus-root) corpus_root=$2; shift 2 ;;
    --help|-h) sed -n '2,14p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

[ -f "$config" ] || { echo "config not found: $config" >&2; exit 2; }
name=${tag:-$(basename "$config" .yaml)}
exp=exp/$name
if [ "$ngpu" -gt 0 ]; then device=cuda; else device=cpu; fi

log() { echo "[$(date +%H:%M:%S)] $*"; }

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "stage 1: data preparation"
  prepare_data
  if [ ! -f data/lang/tokenizer.yaml ]; then
    extra=()
    [ "$vocab_size" -gt 0 ] && extra=(--vocab-size "$vocab_size")
    kospeech tokenizer train --name "$tokenizer" --text "data/$train_set/text" --out data/lang "${extra[@]}"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "stage 2: features"
  kospeech features dump --data "data/$train_set" --out "dump/$train_set" --config "$config" --nj "$nj" --cmvn
  for s in $dev_set $test_sets; do
    kospeech features dump --data "data/$s" --out "dump/$s" --config "$config" --nj "$nj"
  done
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: training $exp"
  train_args=(--config "$config" --exp-dir "$exp" --device "$device"
    "data.train=dump/$train_set" "data.valid=dump/$dev_set" data.lang=data/lang "data.cmvn=dump/$train_set/cmvn.npz")
  [ -f "$exp/checkpoints/last.pt" ] && train_args+=(--resume)
  if [ "$ngpu" -gt 1 ]; then
    torchrun --standalone --nproc_per_node="$ngpu" -m kospeech train "${train_args[@]}"
  else
    kospeech train "${train_args[@]}"
  fi
fi

ckpt=$exp/checkpoints/best.pt
search_args=()
[ -n "$search" ] && search_args=(--search "$search")
search_name=${search:-default}

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "stage 4: decoding with $ckpt"
  for s in $test_sets; do
    out=$exp/decode_${s}_${search_name}
    if [ -f "$out/hyp.trn" ]; then log "  $out done, skipped"; continue; fi
    kospeech decode --checkpoint "$ckpt" --data "dump/$s" --out "$out" --device "$device" "${search_args[@]}"
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: scoring"
  dirs=()
  for s in $test_sets; do
    out=$exp/decode_${s}_${search_name}
    kospeech score --dir "$out"
    dirs+=("$out")
  done
  kospeech compare "${dirs[@]}" --out "$exp"
fi
