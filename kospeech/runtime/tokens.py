"""An export's tokenizer, read back without the registry: ids -> text, and text -> ids for hotwords.

Character and jamo lang dirs are a unit list; a sentencepiece lang dir needs the
sentencepiece package (the one tokenizer kind for which the runtime imports it).
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

import yaml

from kospeech.errors import DataError
from kospeech.text import hangul
from kospeech.text.special import NUM_SPECIAL, SPECIAL_TOKENS, UNK_ID
from kospeech.text.units import units_to_text

CONFIG_FILE, UNITS_FILE, SPM_FILE = "tokenizer.yaml", "units.txt", "spm.model"  # kospeech.text.tokenizers' names
UNIT_TOKENIZERS = ("character", "jamo")  # the unit-list tokenizers whose encoding the runtime repeats


class Detokenizer:
    """``decode(ids) -> str``, ``encode(text) -> ids`` and ``id_to_token(i)``, as
    :class:`kospeech.text.tokenizers.Tokenizer` gives them."""

    def __init__(self, directory: str | Path) -> None:
        d = Path(directory)
        if not (d / CONFIG_FILE).is_file():
            raise DataError(f"{d}: no {CONFIG_FILE}; the export is incomplete, export the checkpoint again")
        config = yaml.safe_load((d / CONFIG_FILE).read_text(encoding="utf-8")) or {}
        self.name = str(config.get("name"))
        self.space_symbol = str(config.get("space_symbol", "|"))
        self._sp = None
        self._index: dict[str, int] | None = None  # unit -> id, built at the first encode
        if self.name == "sentencepiece":
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_file=str(d / SPM_FILE))
            self._units = [self._sp.id_to_piece(i) for i in range(self._sp.get_piece_size())]
            self.space_symbol = "\u2581"
        elif (d / UNITS_FILE).is_file():
            self._units = (d / UNITS_FILE).read_text(encoding="utf-8").rstrip("\n").split("\n")
        else:
            raise DataError(f"{d}: tokenizer '{self.name}' needs {UNITS_FILE}; export the checkpoint again")
        if tuple(self._units[:NUM_SPECIAL]) != SPECIAL_TOKENS:
            raise DataError(f"{d}: the units do not start with {', '.join(SPECIAL_TOKENS)}")

    @property
    def vocab_size(self) -> int:
        return len(self._units)

    def id_to_token(self, i: int) -> str:
        return self._units[int(i)]

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` as the training tokenizer's ``encode`` gives them (hotwords are encoded
        with it): NFC and single spaces, then spaces as the space unit and, for jamo, syllables
        as conjoining jamo, unknown units as ``<unk>``; sentencepiece encodes the cleaned text."""
        cleaned = " ".join(unicodedata.normalize("NFC", text).split())  # kospeech.text.tokenizers._clean
        if self._sp is not None:
            return [int(i) for i in self._sp.encode(cleaned, out_type=int)]
        if self.name not in UNIT_TOKENIZERS:
            raise DataError(f"tokenizer '{self.name}' cannot encode text in the runtime (only "
                            f"{', '.join(UNIT_TOKENIZERS)} and sentencepiece can)")
        if self.name == "jamo":
            cleaned = hangul.decompose(cleaned)
        if self._index is None:
            self._index = {u: i for i, u in enumerate(self._units)}
        get = self._index.get
        return [get(self.space_symbol if ch == " " else ch, UNK_ID) for ch in cleaned]

    def decode(self, ids: list[int]) -> str:
        kept = [int(i) for i in ids if NUM_SPECIAL <= int(i) < len(self._units)]
        if self._sp is not None:
            return " ".join(hangul.to_valid_text(str(self._sp.decode(kept))).split())
        return units_to_text([self._units[i] for i in kept], self.space_symbol)
