"""Output units -> text, the one rule every unit tokenizer and the torch-free runtime share.

Lives apart from :mod:`kospeech.text.tokenizers` because that module registers components
(it imports the registry); this one imports only :mod:`kospeech.text.hangul`.
"""

from __future__ import annotations

from collections.abc import Sequence

from kospeech.text import hangul


def units_to_text(units: Sequence[str], space_symbol: str) -> str:
    """Join units, the space unit as a space; jamo composed into valid Hangul; single spaces."""
    joined = "".join(" " if u == space_symbol else u for u in units)
    return " ".join(hangul.to_valid_text(joined).split())
