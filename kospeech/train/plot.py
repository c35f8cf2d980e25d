"""``exp/NAME/train.png``: training loss and validation CER against updates, from ``log.jsonl``.

The plot is redrawn from the log file each validation, so it is always what the log says and a
resumed run's picture continues the interrupted one's.
"""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

from kospeech.files import write_atomic

logger = logging.getLogger(__name__)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``log.jsonl``; a torn last line (a killed run) is ignored."""
    records = []
    path = Path(path)
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            logger.warning("%s: skipped an unreadable line", path)
    return records


def plot_training(log_path: str | Path, out_path: str | Path) -> Path | None:
    """Draw loss (left) and validation CER (right); returns the image path, None without data."""
    records = read_log(log_path)
    train = [r for r in records if r.get("kind") == "train" and "loss" in r]
    valid = [r for r in records if r.get("kind") == "valid"]
    if not train and not valid:
        return None
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_cer) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    vloss = [r for r in valid if r.get("loss") is not None]
    if vloss:
        ax_loss.plot([r["step"] for r in vloss], [r["loss"] for r in vloss], "o-", label="valid")
    ax_loss.set_xlabel("update")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend()
    vcer = [r for r in valid if r.get("cer") is not None]
    if vcer:
        ax_cer.plot([r["step"] for r in vcer], [r["cer"] for r in vcer], "o-", color="C3")
    ax_cer.set_xlabel("update")
    ax_cer.set_ylabel("CER (%)")
    ax_cer.set_title("validation CER")
    ax_cer.grid(alpha=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.9, wspace=0.25)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return write_atomic(out_path, buf.getvalue())
