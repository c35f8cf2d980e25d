"""``kospeech compare RUN_DIRS_OR_SCORES_JSON... [--out DIR]``: a cross-run, cross-corpus table.

Each row is one ``scores.json`` (one model x corpus x test set x search) with its CRR and CER
and their 95% bootstrap confidence intervals (utterances resampled 1000 times), so a reader
can tell a real improvement from test-set noise. Writes ``compare.csv`` and ``compare.png``
(CER bars with the interval as error bars) into ``--out``.

A run is named by as much of its path as tells it apart from the other rows' runs
(``mini/exp/conv_ctc`` and ``zeroth/exp/conv_ctc``, not ``conv_ctc`` twice); "trained on" is
the corpus of the model's training data (the checkpoint's metadata, via ``scores.json``), so a
cross-corpus row reads as such. CRR is clamped at 0 (a CER over 100% from insertions).
"""

from __future__ import annotations

import argparse
import csv
import io
import os
from pathlib import Path
from typing import Any

from kospeech.cli import positive_int
from kospeech.errors import DataError
from kospeech.files import write_atomic
from kospeech.metrics import summarise


def find_scores(paths: list[str]) -> list[Path]:
    """scores.json files named directly, in a decode dir, or anywhere under a run dir."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif (p / "scores.json").is_file():
            found.append(p / "scores.json")
        elif p.is_dir():
            found.extend(sorted(p.rglob("scores.json")))
        else:
            raise DataError(f"{p}: no such file or directory")
    if not found:
        raise DataError(f"no scores.json under {', '.join(paths)}; run `kospeech score --dir DECODE_DIR` first")
    return list(dict.fromkeys(found))


def name_runs(rows: list[dict[str, Any]]) -> None:
    """Set each row's ``run`` to the shortest tail of its run path that no other run shares."""
    paths = sorted({r["run_path"] for r in rows})
    parts = {p: Path(p).parts for p in paths}
    for p in paths:
        others = [parts[q] for q in paths if q != p]
        n = 1
        while n < len(parts[p]) and any(o[-n:] == parts[p][-n:] for o in others):
            n += 1
        name = os.path.join(*parts[p][-n:])
        for r in rows:
            if r["run_path"] == p:
                r["run"] = name


def _ci(lo: float | None, hi: float | None) -> str:
    return f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""


def markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| run | model | trained on | corpus | test set | transcript | search | utts | CRR % [95% CI] "
            "| CER % [95% CI] |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        crr_lo = max(0.0, 100.0 - r["cer_hi"]) if r["cer_hi"] is not None else None
        crr_hi = max(0.0, 100.0 - r["cer_lo"]) if r["cer_lo"] is not None else None
        lines.append(
            f"| {r['run']} | {r['model']} | {r['trained_on']} | {r['corpus']} | {r['test_set']} | {r['transcript']} "
            f"| {r['search']} "
            f"| {r['utts']} | {r['crr']:.2f}{_ci(crr_lo, crr_hi)} | {r['cer']:.2f}{_ci(r['cer_lo'], r['cer_hi'])} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['run']}\n{r['trained_on']} -> {r['corpus']}/{r['test_set']}\n{r['search']}" for r in rows]
    cers = [r["cer"] for r in rows]
    lo = [r["cer"] - r["cer_lo"] if r["cer_lo"] is not None else 0.0 for r in rows]
    hi = [r["cer_hi"] - r["cer"] if r["cer_hi"] is not None else 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(rows) + 1), 4.5))
    ax.bar(range(len(rows)), cers, yerr=[lo, hi], capsize=4, color="tab:blue", alpha=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("CER % (95% bootstrap CI)")
    ax.set_title("Character error rate by run and test set")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


def compare(args: argparse.Namespace) -> int:
    rows = [summarise(p, n_boot=args.bootstrap) for p in find_scores(args.inputs)]
    name_runs(rows)
    rows.sort(key=lambda r: (r["corpus"], r["test_set"], r["run"], r["search"]))
    print(markdown(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fields = ["run", "model", "trained_on", "corpus", "test_set", "transcript", "search", "utts", "crr", "cer",
              "cer_lo", "cer_hi", "run_path", "path"]
    with open(out / "compare.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: r[k] for k in fields})
    plot(rows, out / "compare.png")
    print(f"\nwrote {out / 'compare.csv'} and {out / 'compare.png'}")
    return 0


def add_parser(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("compare", parents=[parent], help="table and chart of CRR/CER with 95%% CIs across runs")
    p.add_argument("inputs", nargs="+", metavar="RUN_DIR_OR_SCORES_JSON")
    p.add_argument("--out", default=".", help="folder for compare.csv and compare.png (default: current dir)")
    p.add_argument("--bootstrap", type=positive_int, default=1000, help="bootstrap resamples for the intervals")
    p.set_defaults(func=compare)
