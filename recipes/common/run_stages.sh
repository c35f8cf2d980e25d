#!/usr/bin/env bash
# Stages shared by every recipe. A recipe's run.sh sets the variables below, defines
# `prepare_data` (stage 1, corpus specific), cds into its own folder and sources this file.
#
#   stage 1  data prep (+ tokenizer)  -> data/<set>/, data/lang/
#   stage 2  features + CMVN          -> dump/<set>/ (skipped when training from raw audio)
#   stage 3  train                    -> exp/<name>/
#   stage 4  decode                   -> exp/<name>/decode_<set>_<search>[_avgN]/hyp.trn
#   stage 5  score                    -> .../scores.json, result.txt; a table of all sets
#   stage 6  language model (--lm)    -> exp/lm_<type>/ (lm.pt, or lm.arpa + lm.yaml)
#   stage 7  model package            -> exp/<name>/package/: the decoded model with the decoding
#                                        stage 4 scored (search, options, LM) and a model card; what
#                                        `kospeech transcribe|serve|export` and kospeech.load take
#
# Options: --stage N --stop-stage M --nj N --ngpu N --config conf/X.yaml --tag NAME
#   --search "NAME [k=v ...]" --tokenizer NAME --vocab-size N --train-input dump|data
#   --train-opts "a.b=c ..." (dotted overrides for kospeech train) --average N (decode the
#   mean of the last N checkpoints instead of best.pt) --corpus-root DIR
#   --average-by valid_cer|valid_loss (with --average N: the N best by that validation metric)
#   --score-opts "--cer-spaces" (options for kospeech score: ESPnet's CER, spaces scored)
#   --lm lstm|transformer|ngram (stage 6 trains it on data/<train>/text) --lm-opts "..."
#   (options of kospeech lm train) --lm-weight W (stage 4 decodes with the LM by shallow
#   fusion; the search must take an LM: ctc_prefix_beam, beam, joint_ctc_attention, ...)
#   --lm-search-opts "length_bonus=1.5" (search options used only with the LM)
#   --user-dir DIR (plugin folder, repeatable: passed to every kospeech command of every stage;
#   a relative path is taken from where run.sh was started)
# The LM stage is numbered after the others so that the existing numbers keep their meaning
# (--stage 3 is training): train the LM with --stage 6, then decode with --stage 4 --lm-weight.
# Each stage writes into temporary names and renames when complete, and skips finished work,
# so `--stage N` resumes safely after an interruption.
set -euo pipefail

: "${stage:=1}" "${stop_stage:=7}" "${nj:=2}" "${ngpu:=0}"
: "${config:=conf/las.yaml}" "${search:=}" "${tokenizer:=jamo}" "${vocab_size:=0}"
: "${corpus_root:=}" "${train_input:=dump}" "${train_opts:=}" "${average:=0}" "${average_by:=}" "${score_opts:=}"
: "${train_set:=train}" "${dev_set:=dev}" "${test_sets:=}" "${tag:=}"
: "${lm:=}" "${lm_opts:=}" "${lm_weight:=0}" "${lm_search_opts:=}"

: "${start_dir:=$PWD}"  # where the user ran run.sh (set before it cds into its folder)
user_dirs=()

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
    --user-dir|--user_dir) user_dirs+=("$2"); shift 2 ;;
    --lm) lm=$2; shift 2 ;;
    --lm-opts|--lm_opts) lm_opts=$2; shift 2 ;;
    --lm-weight|--lm_weight) lm_weight=$2; shift 2 ;;
    --lm-search-opts|--lm_search_opts) lm_search_opts=$2; shift 2 ;;
    --help|-h) sed -n '2,29p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

command -v kospeech >/dev/null || { echo "kospeech not found on PATH: activate the venv or pip install -e '.[train]'" >&2; exit 2; }
[ -f "$config" ] || { echo "config not found: $config (relative paths are read from $(pwd))" >&2; exit 2; }
case "$train_input" in
  dump|data) ;;
  *) echo "--train-input must be dump (feature dumps from stage 2) or data (raw audio), got $train_input" >&2; exit 2 ;;
esac
# Plugin folders travel as absolute paths to every kospeech command (stages run in the recipe
# folder; training, decoding and the tokenizer may all need the plugins' components).
plugin_args=()
for d in "${user_dirs[@]}"; do
  case "$d" in /*) ;; *) d=$start_dir/$d ;; esac
  [ -d "$d" ] || { echo "--user-dir $d: no such folder" >&2; exit 2; }
  plugin_args+=(--user-dir "$(cd "$d" && pwd)")
done
case "$lm" in
  ""|lstm|transformer|ngram) ;;
  *) echo "--lm must be lstm, transformer or ngram, got $lm" >&2; exit 2 ;;
esac
# the recipe's own LM options for its --lm type (e.g. ESPnet's Transformer LM), unless --lm-opts
if [ -n "$lm" ] && [ -z "$lm_opts" ]; then
  defaults_var="lm_${lm}_opts"
  lm_opts=${!defaults_var:-}
fi
lm_dir=exp/lm_${lm}
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
    kospeech tokenizer train --name "$tokenizer" --text "data/$train_set/text" --out data/lang "${extra[@]}" \
      "${plugin_args[@]}"
  else
    log "  data/lang exists, tokenizer kept"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  if [ "$train_input" = dump ]; then
    log "stage 2: features"
    # kospeech features dump resumes an unfinished dump and reuses finished shards.
    kospeech features dump --data "data/$train_set" --out "dump/$train_set" --config "$config" --nj "$nj" --cmvn \
      "${plugin_args[@]}"
    for s in $dev_set $test_sets; do
      kospeech features dump --data "data/$s" --out "dump/$s" --config "$config" --nj "$nj" "${plugin_args[@]}"
    done
  else
    log "stage 2: skipped (training from raw audio: features are computed on the fly)"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "stage 3: training $exp"
  train_args=(--config "$config" --exp-dir "$exp" --device "$device" "${plugin_args[@]}"
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
# decode dirs say which model and search made them: decode_<set>_<search>[_avgN][_lm_<type>]
decode_tag=$search_name
if [ "$average" -gt 0 ] && [ -n "$average_by" ]; then
  decode_tag=${decode_tag}_best${average}_$average_by
elif [ "$average" -gt 0 ]; then
  decode_tag=${decode_tag}_avg$average
fi
fusion=()  # with --lm-weight: the LM options, after the search's own (or alone, for the default search)
if [ -n "$lm" ] && [ "$lm_weight" != 0 ]; then
  # shellcheck disable=SC2206  # $lm_search_opts: search options that go with the LM (length_bonus=...)
  fusion=("lm=$lm_dir" "lm_weight=$lm_weight" $lm_search_opts)
  decode_tag=${decode_tag}_lm_$lm
fi
decode_key="$search${fusion[*]:+ ${fusion[*]}}"

# The LM of --lm, trained on the training text into exp/lm_<type>/ unless it is there already; a
# recipe may define extra_lm_texts (prints more text files, e.g. the synthetic corpus's
# training-only sentences; called after the options are read, so --corpus-root counts).
train_lm() {
  if [ -e "$lm_dir/lm.pt" ] || [ -e "$lm_dir/lm.arpa" ]; then
    log "  $lm_dir exists, kept (remove it to train again)"
    return
  fi
  # written into a temporary folder and renamed when complete, as every stage does
  rm -rf "$lm_dir.tmp"
  # shellcheck disable=SC2206  # word splitting of the LM options is intended
  local texts=("data/$train_set/text") extra
  for extra in $(declare -F extra_lm_texts >/dev/null && extra_lm_texts); do
    if [ -e "$extra" ]; then texts+=("$extra"); else log "  LM text $extra is missing; the LM reads the training text without it"; fi
  done
  local lm_args=(--type "$lm" --text "${texts[@]}" --lang data/lang --out "$lm_dir.tmp" $lm_opts)
  [ "$lm" != ngram ] && [ -d "data/$dev_set" ] && lm_args+=(--valid-text "data/$dev_set/text" --device "$device")
  kospeech lm train "${lm_args[@]}" "${plugin_args[@]}"
  mv "$lm_dir.tmp" "$lm_dir"
}

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  if [ "$average" -gt 0 ] && { [ ! -f "$ckpt" ] || [ "$exp/checkpoints/last.pt" -nt "$ckpt" ]; }; then
    if [ -n "$average_by" ]; then
      log "stage 4: averaging the $average best checkpoints by $average_by -> $ckpt"
      kospeech average --exp-dir "$exp" --best "$average" --metric "$average_by" --out "$(basename "$ckpt")" \
        "${plugin_args[@]}"
    else
      log "stage 4: averaging the last $average checkpoints -> $ckpt"
      kospeech average --exp-dir "$exp" --last "$average" --out "$(basename "$ckpt")" \
        "${plugin_args[@]}"
    fi
  fi
  [ -e "$ckpt" ] || { echo "no checkpoint $ckpt: run stage 3 first" >&2; exit 1; }
  log "stage 4: decoding with $ckpt"
  for s in $test_sets; do
    out=$exp/decode_${s}_${decode_tag}
    # decode.yaml is written last: a decode dir that has it, newer than the model and made with
    # the same --search string (options included), is complete
    if [ -f "$out/hyp.trn" ] && [ "$out/decode.yaml" -nt "$ckpt" ] && [ -f "$out/search.txt" ] \
      && [ "$(cat "$out/search.txt")" = "$decode_key" ] && { [ ${#fusion[@]} -eq 0 ] || [ "$out/decode.yaml" -nt "$lm_dir" ]; }; then
      log "  $out done, skipped"; continue
    fi
    if [ ${#fusion[@]} -gt 0 ] && [ ! -e "$lm_dir/lm.pt" ] && [ ! -e "$lm_dir/lm.arpa" ]; then
      # an n-gram builds in seconds, so decoding makes it; a neural LM is stage 6's job
      [ "$lm" = ngram ] || { echo "no LM in $lm_dir: run stage 6 first (--stage 6 --stop-stage 6 --lm $lm)" >&2; exit 1; }
      log "  building the $lm LM first (seconds) -> $lm_dir"
      train_lm
    fi
    rm -f "$out/search.txt"
    kospeech decode "$ckpt" --data "$input_root/$s" --out "$out" --device "$device" \
      "${search_args[@]}" "${fusion[@]}" "${plugin_args[@]}"
    printf '%s' "$decode_key" > "$out/search.txt"
  done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "stage 5: scoring"
  dirs=()
  for s in $test_sets; do
    out=$exp/decode_${s}_${decode_tag}
    # shellcheck disable=SC2086  # word splitting of the options is intended
    kospeech score --dir "$out" $score_opts "${plugin_args[@]}"
    dirs+=("$out")
  done
  kospeech compare "${dirs[@]}" --out "$exp" "${plugin_args[@]}"
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

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ] && [ -n "$lm" ]; then
  log "stage 6: $lm language model -> $lm_dir"
  train_lm
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  # the package decodes as stage 4 decoded: the same model, search string and LM options
  [ -e "$ckpt" ] || { echo "no checkpoint $ckpt: run stage 3 first" >&2; exit 1; }
  pack_args=()
  # shellcheck disable=SC2206  # "NAME k=v ..." splits into the search name and its options
  words=($search)
  if [ ${#words[@]} -gt 0 ]; then pack_args+=(--search "${words[0]}"); words=("${words[@]:1}"); fi
  for w in "${words[@]}" "${fusion[@]}"; do pack_args+=(-o "$w"); done
  scored=()
  for s in $test_sets; do
    out=$exp/decode_${s}_${decode_tag}
    [ -f "$out/scores.json" ] && scored+=("$out")
  done
  log "stage 7: model package -> $exp/package ($decode_key)"
  kospeech pack "$ckpt" "${pack_args[@]}" --scores "${scored[@]}" --out "$exp/package" "${plugin_args[@]}"
  log "  use it: kospeech transcribe $(pwd)/$exp/package a.wav   (or kospeech serve / kospeech export)"
fi
