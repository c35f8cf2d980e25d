"""TensorBoard event files beside ``log.jsonl`` (``train.tensorboard: true``).

``log.jsonl`` stays the source of truth (``train.png``, resume and ``kospeech compare`` read it);
this writer only mirrors each of its records for those who watch runs in TensorBoard, as ESPnet,
WeNet and icefall users do: every number of a ``train`` record as ``train/<key>``, the
validation loss and CER as ``valid/<key>``, and a few decoded validation utterances (reference
and hypothesis) as text. Only the main rank writes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kospeech.errors import ConfigError

logger = logging.getLogger(__name__)

_NOT_SCALARS = ("kind", "step", "epoch", "time")


class TensorBoardLog:
    """A ``SummaryWriter`` on ``log_dir`` fed with ``log.jsonl`` records.

    ``purge_step`` (the first step a resumed run logs: its checkpoint's step + 1) hides the
    events the interrupted run wrote from there on, so curves do not fold back on themselves.
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.tensorboard: true needs the tensorboard package: pip install 'kospeech[tensorboard]' "
                "(or set train.tensorboard: false)"
            ) from None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def write(self, record: Mapping[str, Any]) -> None:
        kind = record.get("kind")
        step = int(record.get("step", 0))
        if kind not in ("train", "valid"):
            return
        for key, value in record.items():
            if key in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{kind}/{key}", value, step)
        if kind == "valid":
            examples = record.get("examples") or ([record["example"]] if record.get("example") else [])
            if examples:
                # markdown: two trailing spaces break lines inside one table cell-free block
                text = "\n\n".join(
                    f"**{e['utt_id']}**  \nref: {e['ref']}  \nhyp: {e['hyp']}" for e in examples
                )
                self.writer.add_text("valid/examples", text, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
