"""Saving tensors to files atomically: :func:`atomic_save`, ``torch.save`` over the ground floor.

One floor above :mod:`kospeech.files` (which must stay torch-free for the runtime) and below
every layer that writes a ``.pt`` file: checkpoints (:mod:`kospeech.train.checkpoint`) and the
neural LMs (:mod:`kospeech.lm.model`) share it, so an LM need not import the training package
to save itself the same way.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from kospeech.files import write_stream_atomic


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically (:func:`kospeech.files.write_stream_atomic`): a kill at any
    moment leaves the old file or the new one, never a truncated checkpoint under the final name.

    A write that fails for want of space says so as an ``OSError(ENOSPC)``: torch's zip writer
    reports a full disk as a RuntimeError without an errno.
    """
    path = Path(path)
    try:
        return write_stream_atomic(path, lambda f: torch.save(obj, f))
    except RuntimeError as err:
        if "write" in str(err) and _nearly_full(path.parent):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
        raise


def _nearly_full(folder: Path, margin: int = 64 << 20) -> bool:
    try:
        return shutil.disk_usage(folder).free < margin
    except OSError:
        return False
