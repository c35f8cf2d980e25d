"""Made-up espeak-ng voices: random voice-variant definitions, and the data folder that lets
espeak-ng speak them.

espeak-ng ships about a hundred voice variants; the synthetic corpus holds some of them out for
its robustness test set, so training hears a few dozen. A model trained on so few voices learns
those voices: unseen ones (a whisper, an unusual vocal tract, an echo) fail far more often than
unseen sentences do. A variant is only a small text file of synthesis parameters (pitch range,
formant frequencies, strengths and widths, voicing, breath, roughness, flutter, echo), so new
voices can be drawn at random, within the ranges of the shipped variants, for every training
speaker that should sound like nobody else.

espeak-ng reads variants from its data folder only. :func:`data_path_with` builds (once per
process) a folder of links to the installed data, with its own ``voices/!v`` holding links to
every shipped variant plus the made-up ones, and returns it for ``espeak-ng --path``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from kospeech.errors import DataError

VARIANTS_DIR = Path("voices") / "!v"
# Shares of made-up voices that whisper (voicing nearly off, breath noise instead) or are breathy.
WHISPER_SHARE = 0.15
BREATHY_SHARE = 0.15

_overlay: Path | None = None
_written: set[str] = set()


def random_variant(name: str, rng: np.random.Generator) -> str:
    """The text of an espeak-ng variant file for a new voice, drawn with ``rng``.

    One vocal-tract factor scales the five lower formant frequencies (a longer or shorter tract
    moves them together), each then varies on its own; the higher formants, strengths, widths,
    pitch range, roughness, flutter and consonant strength are drawn over about the spread of the
    shipped training variants, and some voices get a tone curve (the spectrum tilted or
    coloured, as a different microphone or room would), an echo or a Klatt synthesiser. A share
    of the voices whisper or breathe, which no shipped training variant does.
    """
    female = bool(rng.random() < 0.5)
    low = int(rng.integers(135, 200)) if female else int(rng.integers(65, 125))
    lines = [
        "language variant",
        f"name {name}",
        f"gender {'female' if female else 'male'}",
        f"pitch {low} {low + int(rng.integers(20, 100))}",
    ]
    tract = float(rng.uniform(0.88, 1.15)) * (1.05 if female else 1.0)
    for k in range(9):
        if k == 0:
            freq = int(rng.integers(80, 121))
        elif k <= 5:
            freq = int(round(100 * tract * rng.uniform(0.88, 1.12)))
        else:
            freq = int(rng.integers(60, 121))
        lines.append(f"formant {k} {freq} {int(rng.integers(50, 151))} {int(rng.integers(50, 171))}")
    style = rng.random()
    if style < WHISPER_SHARE:
        lines.append(f"voicing {int(rng.integers(10, 35))}")
        breath = rng.integers(40, 80, size=2).tolist() + [50, 40, 15, 10]
        lines.append("breath " + " ".join(str(int(v)) for v in breath))
        lines.append("breathw 150 150 200 200 400 400")
    elif style < WHISPER_SHARE + BREATHY_SHARE:
        lines.append(f"voicing {int(rng.integers(60, 95))}")
        lines.append("breath " + " ".join(str(int(v)) for v in rng.integers(5, 30, size=6)))
    elif rng.random() < 0.3:
        lines.append(f"voicing {int(rng.integers(100, 200))}")
    lines.append(f"roughness {int(rng.integers(0, 6))}")
    lines.append(f"flutter {int(rng.integers(0, 25))}")
    lines.append(f"consonants {int(rng.integers(80, 126))}")
    if rng.random() < 0.3:
        lines.append(f"echo {int(rng.integers(30, 200))} {int(rng.integers(5, 35))}")
    if rng.random() < 0.3:
        freqs = np.sort(rng.choice(np.arange(100, 4600, 100), size=int(rng.integers(3, 5)), replace=False))
        lines.append("tone " + " ".join(f"{int(f)} {int(rng.integers(30, 256))}" for f in freqs))
    if rng.random() < 0.15:
        lines.append(f"klatt {int(rng.integers(1, 7))}")
    return "\n".join(lines) + "\n"


def installed_data_path() -> Path:
    """The espeak-ng data folder in use (``espeak-ng --version`` names it)."""
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError) as err:
        raise DataError(f"espeak-ng is not usable ({err}); install it (apt-get install espeak-ng)") from None
    marker = "Data at:"
    if marker not in out:
        raise DataError(f"cannot find espeak-ng's data folder in its --version output: {out.strip()!r}")
    path = Path(out.split(marker, 1)[1].strip())
    if not (path / VARIANTS_DIR).is_dir():
        raise DataError(f"espeak-ng's data folder {path} has no {VARIANTS_DIR}")
    return path


def _build_overlay() -> Path:
    """A temporary espeak-ng data folder: links to the installed one, with a writable ``voices/!v``."""
    source = installed_data_path()
    root = Path(tempfile.mkdtemp(prefix="kospeech-espeak-"))
    atexit.register(shutil.rmtree, root, True)
    data = root / "espeak-ng-data"
    data.mkdir()
    for entry in source.iterdir():
        if entry.name != "voices":
            os.symlink(entry, data / entry.name)
    (data / "voices").mkdir()
    for entry in (source / "voices").iterdir():
        if entry.name != VARIANTS_DIR.name:
            os.symlink(entry, data / "voices" / entry.name)
    (data / VARIANTS_DIR).mkdir()
    for entry in (source / VARIANTS_DIR).iterdir():
        os.symlink(entry, data / VARIANTS_DIR / entry.name)
    return root


def prepare(definitions: dict[str, str]) -> None:
    """Write every made-up variant now, before synthesis forks its workers: they inherit the
    folder instead of each making (and leaking) their own."""
    for variant, definition in definitions.items():
        data_path_with(variant, definition)


def cleanup() -> None:
    """Remove this process's folder (synthesis calls it when its workers are done)."""
    global _overlay
    if _overlay is not None:
        shutil.rmtree(_overlay, ignore_errors=True)
    _overlay = None
    _written.clear()


def data_path_with(variant: str, definition: str) -> str:
    """The ``espeak-ng --path`` under which ``-v ko+<variant>`` speaks ``definition``.

    The folder is made once per process and removed at exit (or by :func:`cleanup`); a
    variant's file is written the first time it is needed.
    """
    global _overlay
    if _overlay is None or not _overlay.is_dir():
        _overlay = _build_overlay()
        _written.clear()
    if variant not in _written:
        target = _overlay / "espeak-ng-data" / VARIANTS_DIR / variant
        if target.is_symlink():
            raise DataError(f"made-up voice {variant!r} would replace a shipped espeak-ng variant; rename it")
        target.write_text(definition, encoding="utf-8")
        _written.add(variant)
    return str(_overlay)
