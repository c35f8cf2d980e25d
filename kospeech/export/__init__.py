"""Exporting a trained model for use outside the training stack.

``kospeech export CHECKPOINT --format onnx --out DIR`` (:func:`kospeech.export.onnx.export_onnx`)
writes a directory that :mod:`kospeech.runtime` decodes with onnxruntime and numpy alone.
Exporting needs torch and the ``export`` extra (onnx, onnxruntime); running the result does not
need torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["export_onnx"]


def __getattr__(name: str) -> Any:
    if name == "export_onnx":
        from kospeech.export.onnx import export_onnx

        return export_onnx
    raise AttributeError(f"module 'kospeech.export' has no attribute {name!r}")
