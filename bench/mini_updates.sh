#!/usr/bin/env bash
# Updates per minute of the mini recipe's training, an earlier commit against this checkout, in
# one window: runs alternate (old, then each of this checkout's configs), ROUNDS times, so the
# machine's drift between hours cancels out of the ratios. Run it alone, after the mini recipe's
# data stage (recipes/mini/data must exist).
#   bash bench/mini_updates.sh OLD_COMMIT [UPDATES=800] [ROUNDS=2] [CONFIG...]
# CONFIG defaults to conf/conv_ctc.yaml (the default); the old commit trains its own default.
# Each line: updates per minute between the first and the last training log line; every update
# is augmented (train.augment_after=0), as all but the first 300 of a budget run are. The last
# lines: each config's rate over the old one's in the same round, and their median.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=$1; updates=${2:-800}; rounds=${3:-2}; shift $(( $# < 3 ? $# : 3 ))
configs=("$@"); [ ${#configs[@]} -eq 0 ] && configs=(conf/conv_ctc.yaml)
python=${PYTHON:-$root/.venv/bin/python}
work=$(mktemp -d); trap 'git -C "$root" worktree remove --force "$work/old" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git -C "$root" worktree add -q --detach "$work/old" "$old"
cd "$root/recipes/mini"
[ -d data/train ] || { echo "recipes/mini/data/train is missing: run bash recipes/mini/run.sh --stop-stage 1 first" >&2; exit 1; }
runs=0
train() {  # label code_root config
  runs=$((runs + 1)); local exp="$work/run$runs"
  PYTHONPATH=$2 "$python" -m kospeech train --config "$3" --exp-dir "$exp" --device cpu \
    data.train=data/train data.valid=data/dev data.lang=data/lang "train.max_steps=$updates" train.max_minutes=0 \
    train.augment_after=0 \
    > "$exp.log" 2>&1 || { echo "$1 failed: see the tail of its log:" >&2; tail -5 "$exp.log" >&2; exit 1; }
  "$python" - "$exp/log.jsonl" "$1" <<'PY'
import json, sys
train = [r for r in map(json.loads, filter(str.strip, open(sys.argv[1]))) if r.get("kind") == "train"]
steps, seconds = train[-1]["step"] - train[0]["step"], train[-1]["time"] - train[0]["time"]
print(f"{sys.argv[2]}: {steps} updates in {seconds:.1f} s -> {steps / seconds * 60:.0f} updates/min", flush=True)
PY
}
summary() {  # the ratios of each round's lines to its old line
  "$python" - "$@" <<'PY'
import re, statistics, sys
rates = {}
for line in open(sys.argv[1]):
    m = re.match(r"round(\d+) (old|new \((.*)\)).*-> (\d+) updates/min", line)
    if m:
        rates.setdefault(m.group(3) or "old", {})[int(m.group(1))] = int(m.group(4))
old = rates.pop("old", {})
for config, per_round in rates.items():
    ratios = [per_round[r] / old[r] for r in sorted(per_round) if r in old]
    print(f"{config}: new / old per round {' '.join(f'{x:.2f}' for x in ratios)}; median {statistics.median(ratios):.2f}")
PY
}
for round in $(seq "$rounds"); do
  train "round$round old $old (conf/conv_ctc.yaml)" "$work/old" "$work/old/recipes/mini/conf/conv_ctc.yaml"
  for config in "${configs[@]}"; do train "round$round new ($config)" "$root" "$config"; done
done | tee "$work/rates.txt"
summary "$work/rates.txt"
