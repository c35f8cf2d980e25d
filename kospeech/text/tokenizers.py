"""Text <-> token ids: character, jamo and SentencePiece units behind one interface.

Every tokenizer keeps the ids of ``kospeech.text.special`` (``<blank>``=0 .. ``<unk>``=4) and
puts its own units after them, so CTC blanks and padding mean the same in every model.

A tokenizer is a registered component (kind ``tokenizer``): its constructor's keyword-only
arguments are its options (the YAML schema, and what ``tokenizer.yaml`` stores); ``train``
learns the units from text; ``save``/``load_tokenizer`` move it through a lang dir::

    data/lang/tokenizer.yaml      name + options, flat like any component config
    data/lang/units.txt           character/jamo: one unit per line, line number = id
    data/lang/spm.model           sentencepiece: the model

``files()`` and ``load_tokenizer_from_files`` carry the same files inline (a checkpoint stores
them so that it alone can decode).
"""

from __future__ import annotations

import collections
import io
import logging
import os
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from kospeech.errors import ConfigError, DataError
from kospeech.registry import register, registry, validate
from kospeech.text import hangul
from kospeech.text.special import NUM_SPECIAL, SPECIAL_TOKENS, UNK_ID
from kospeech.text.units import units_to_text

logger = logging.getLogger(__name__)

CONFIG_FILE = "tokenizer.yaml"
UNITS_FILE = "units.txt"
SPM_FILE = "spm.model"


def _clean(text: str) -> str:
    """NFC and single spaces: the same text always gives the same ids."""
    return " ".join(unicodedata.normalize("NFC", text).split())


class Tokenizer:
    """Base class: the shared interface; subclasses fill ``_fit``, ``_encode``, ``_decode`` and files."""

    name: ClassVar[str] = ""

    def options(self) -> dict[str, Any]:
        """The constructor arguments, as written to ``tokenizer.yaml``."""
        raise NotImplementedError

    @classmethod
    def train(cls, texts: Iterable[str], **options: Any) -> Tokenizer:
        """Learn the units from ``texts`` (normalised transcripts) with the given options."""
        tok = cls(**options)
        tok.fit(texts)
        return tok

    def fit(self, texts: Iterable[str]) -> None:
        raise NotImplementedError

    @property
    def vocab_size(self) -> int:
        raise NotImplementedError

    def id_to_token(self, i: int) -> str:
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` without ``<sos>``/``<eos>``; unknown units map to ``<unk>``."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; special ids (blank, pad, sos, eos, unk) are dropped."""
        raise NotImplementedError

    def files(self) -> dict[str, bytes]:
        """The lang dir's files (without ``tokenizer.yaml``), by file name."""
        raise NotImplementedError

    def load_files(self, files: Mapping[str, bytes]) -> None:
        raise NotImplementedError

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the lang dir; each file goes to a temporary name first, ``tokenizer.yaml`` last."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        import yaml  # here, so building a model needs no YAML library (bench/train_gpu.py)

        from kospeech.files import write_atomic

        config = yaml.safe_dump({"name": self.name, **self.options()}, allow_unicode=True, sort_keys=False)
        for fname, data in [*self.files().items(), (CONFIG_FILE, config)]:
            write_atomic(out / fname, data)
        return out

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Tokenizer)
            and self.name == other.name
            and self.options() == other.options()
            and self.files() == other.files()
        )

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.files()))))

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts}, vocab_size={self.vocab_size if self._ready() else '?'})"

    def _ready(self) -> bool:
        raise NotImplementedError

    def _require_ready(self) -> None:
        if not self._ready():
            raise ConfigError(
                f"tokenizer '{self.name}' has no units yet: train it (Tokenizer.train / "
                "`kospeech tokenizer train`) or load a lang dir with load_tokenizer(dir)"
            )


class UnitTokenizer(Tokenizer):
    """A fixed list of units, one id each: the common part of the character and jamo tokenizers."""

    def __init__(self, *, min_freq: int = 1, space_symbol: str = "|") -> None:
        if min_freq < 1:
            raise ConfigError(f"tokenizer '{self.name}': min_freq must be >= 1, got {min_freq}")
        if len(space_symbol) != 1 or space_symbol.isspace():
            raise ConfigError(
                f"tokenizer '{self.name}': space_symbol must be one visible character, got {space_symbol!r}"
            )
        self.min_freq = min_freq
        self.space_symbol = space_symbol
        self._units: list[str] = []
        self._index: dict[str, int] = {}

    def options(self) -> dict[str, Any]:
        return {"min_freq": self.min_freq, "space_symbol": self.space_symbol}

    def _split(self, text: str) -> list[str]:
        """Units of cleaned text, spaces as ``space_symbol``."""
        return [self.space_symbol if ch == " " else ch for ch in self._prepare(_clean(text))]

    def _prepare(self, text: str) -> str:
        return text

    def _base_units(self) -> list[str]:
        """Units always in the vocabulary whatever the training text."""
        return [self.space_symbol]

    def fit(self, texts: Iterable[str]) -> None:
        counts: collections.Counter[str] = collections.Counter()
        n = 0
        for text in texts:
            counts.update(self._split(text))
            n += 1
        if n == 0:
            raise DataError(f"tokenizer '{self.name}': no training text given")
        base = self._base_units()
        kept = sorted(u for u, c in counts.items() if c >= self.min_freq and u not in base and u not in SPECIAL_TOKENS)
        dropped = sum(1 for u, c in counts.items() if c < self.min_freq)
        if dropped:
            logger.info("tokenizer %s: %d units below min_freq=%d map to <unk>", self.name, dropped, self.min_freq)
        self._set_units([*SPECIAL_TOKENS, *base, *kept])

    def _set_units(self, units: list[str]) -> None:
        if tuple(units[:NUM_SPECIAL]) != SPECIAL_TOKENS:
            raise DataError(f"tokenizer '{self.name}': {UNITS_FILE} must start with {', '.join(SPECIAL_TOKENS)}")
        if len(set(units)) != len(units):
            raise DataError(f"tokenizer '{self.name}': {UNITS_FILE} lists a unit twice")
        self._units = units
        self._index = {u: i for i, u in enumerate(units)}

    def _ready(self) -> bool:
        return bool(self._units)

    @property
    def vocab_size(self) -> int:
        self._require_ready()
        return len(self._units)

    def id_to_token(self, i: int) -> str:
        self._require_ready()
        return self._units[i]

    def encode(self, text: str) -> list[int]:
        self._require_ready()
        get = self._index.get
        return [get(u, UNK_ID) for u in self._split(text)]

    def decode(self, ids: Iterable[int]) -> str:
        self._require_ready()
        return units_to_text([self._units[int(i)] for i in ids if NUM_SPECIAL <= int(i) < len(self._units)],
                             self.space_symbol)

    def files(self) -> dict[str, bytes]:
        self._require_ready()
        return {UNITS_FILE: ("\n".join(self._units) + "\n").encode("utf-8")}

    def load_files(self, files: Mapping[str, bytes]) -> None:
        if UNITS_FILE not in files:
            raise DataError(f"tokenizer '{self.name}': the lang dir has no {UNITS_FILE}")
        self._set_units(files[UNITS_FILE].decode("utf-8").rstrip("\n").split("\n"))


@register("tokenizer", "character")
class CharacterTokenizer(UnitTokenizer):
    """One unit per character (Hangul syllable, letter, digit), the usual KoSpeech unit.

    Args:
        min_freq: characters seen fewer times in the training text map to ``<unk>``; a few
            thousand syllables occur in KsponSpeech, many only once.
        space_symbol: the unit that stands for a space (one character that never occurs in text).
    """

    name = "character"


@register("tokenizer", "jamo")
class JamoTokenizer(UnitTokenizer):
    """One unit per conjoining jamo (see ``kospeech.text.hangul``): a small, closed vocabulary.

    Args:
        min_freq: non-jamo characters seen fewer times than this map to ``<unk>``.
        space_symbol: the unit that stands for a space.
        full_inventory: include all 67 modern jamo whatever the training text, so no Hangul
            syllable is ever unknown.
    """

    name = "jamo"

    def __init__(self, *, min_freq: int = 1, space_symbol: str = "|", full_inventory: bool = True) -> None:
        super().__init__(min_freq=min_freq, space_symbol=space_symbol)
        self.full_inventory = full_inventory

    def options(self) -> dict[str, Any]:
        return {**super().options(), "full_inventory": self.full_inventory}

    def _base_units(self) -> list[str]:
        return [self.space_symbol, *(hangul.MODERN_JAMO if self.full_inventory else ())]

    def _prepare(self, text: str) -> str:
        return hangul.decompose(text)


@register("tokenizer", "sentencepiece")
class SentencePieceTokenizer(Tokenizer):
    """Subword units learned by the sentencepiece library (unigram or BPE).

    The specials are pinned with sentencepiece's own ids (``pad``/``bos``/``eos``/``unk`` at
    1..4 under our names) and ``<blank>`` as a control symbol, which lands on id 0.

    Args:
        vocab_size: number of pieces including the 5 specials; a soft limit, so a small corpus
            that cannot fill it gets fewer pieces instead of an error.
        model_type: ``unigram`` or ``bpe``.
        character_coverage: share of characters covered by the model; 1.0 keeps every
            syllable seen in training (sentencepiece suggests 0.9995 only for very large sets).
    """

    name = "sentencepiece"

    def __init__(
        self,
        *,
        vocab_size: int = 5000,
        model_type: Literal["unigram", "bpe"] = "unigram",
        character_coverage: float = 1.0,
    ) -> None:
        if model_type not in ("unigram", "bpe"):
            raise ConfigError(f"tokenizer 'sentencepiece': model_type must be unigram or bpe, got {model_type!r}")
        if vocab_size <= NUM_SPECIAL + 1:
            raise ConfigError(f"tokenizer 'sentencepiece': vocab_size must exceed {NUM_SPECIAL + 1}, got {vocab_size}")
        self._vocab_size = vocab_size
        self.model_type = model_type
        self.character_coverage = character_coverage
        self._model: bytes = b""
        self._sp: Any = None

    def options(self) -> dict[str, Any]:
        return {
            "vocab_size": self._vocab_size,
            "model_type": self.model_type,
            "character_coverage": self.character_coverage,
        }

    def fit(self, texts: Iterable[str]) -> None:
        import sentencepiece as spm

        cleaned = [t for t in (_clean(t) for t in texts) if t]
        if not cleaned:
            raise DataError("tokenizer 'sentencepiece': no training text given")
        buf = io.BytesIO()
        try:
            self._train_spm(spm, cleaned, buf)
        except RuntimeError as err:
            if "smaller than required_chars" not in str(err):
                raise
            n_chars = len({c for t in cleaned for c in t})
            raise ConfigError(
                f"tokenizer 'sentencepiece': vocab_size={self._vocab_size} cannot hold the {n_chars} distinct "
                f"characters of the training text plus the specials; raise vocab_size or lower character_coverage"
            ) from err
        self._load_model(buf.getvalue())
        if self._sp.get_piece_size() < self._vocab_size:
            logger.info(
                "sentencepiece: the training text supports %d pieces, fewer than vocab_size=%d",
                self._sp.get_piece_size(),
                self._vocab_size,
            )

    def _train_spm(self, spm: Any, cleaned: list[str], buf: io.BytesIO) -> None:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(cleaned),
            model_writer=buf,
            vocab_size=self._vocab_size,
            model_type=self.model_type,
            character_coverage=self.character_coverage,
            hard_vocab_limit=False,
            pad_id=1,
            bos_id=2,
            eos_id=3,
            unk_id=4,
            pad_piece=SPECIAL_TOKENS[1],
            bos_piece=SPECIAL_TOKENS[2],
            eos_piece=SPECIAL_TOKENS[3],
            unk_piece=SPECIAL_TOKENS[4],
            control_symbols=[SPECIAL_TOKENS[0]],
            num_threads=1,
            minloglevel=2,
        )

    def _load_model(self, model: bytes) -> None:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_proto=model)
        got = tuple(sp.id_to_piece(i) for i in range(NUM_SPECIAL))
        if got != SPECIAL_TOKENS:
            raise DataError(
                f"sentencepiece model has specials {got}, expected {SPECIAL_TOKENS}; retrain it with kospeech"
            )
        self._model, self._sp = model, sp

    def _ready(self) -> bool:
        return self._sp is not None

    @property
    def vocab_size(self) -> int:
        self._require_ready()
        return int(self._sp.get_piece_size())

    def id_to_token(self, i: int) -> str:
        self._require_ready()
        return str(self._sp.id_to_piece(int(i)))

    def encode(self, text: str) -> list[int]:
        self._require_ready()
        return list(self._sp.encode(_clean(text), out_type=int))

    def decode(self, ids: Iterable[int]) -> str:
        self._require_ready()
        kept = [int(i) for i in ids if NUM_SPECIAL <= int(i) < self.vocab_size]
        return " ".join(hangul.to_valid_text(str(self._sp.decode(kept))).split())

    def files(self) -> dict[str, bytes]:
        self._require_ready()
        return {SPM_FILE: self._model}

    def load_files(self, files: Mapping[str, bytes]) -> None:
        if SPM_FILE not in files:
            raise DataError(f"tokenizer 'sentencepiece': the lang dir has no {SPM_FILE}")
        self._load_model(files[SPM_FILE])


# ---------------------------------------------------------------------------------------------
# lang dirs


def _from_config(config: Mapping[str, Any], where: str) -> Tokenizer:
    if not isinstance(config, Mapping) or "name" not in config:
        raise ConfigError(f"{where}: expected a mapping with 'name' (character, jamo or sentencepiece)")
    validate("tokenizer", config, path=where)
    cls = registry("tokenizer").get(str(config["name"]), path=where).obj
    return cls(**{k: v for k, v in config.items() if k != "name"})


def load_tokenizer_from_files(files: Mapping[str, bytes]) -> Tokenizer:
    """Rebuild a tokenizer from a lang dir's files held in memory (as a checkpoint stores them)."""
    if CONFIG_FILE not in files:
        raise DataError(f"tokenizer files have no {CONFIG_FILE}; got {', '.join(sorted(files)) or 'nothing'}")
    import yaml

    config = yaml.safe_load(files[CONFIG_FILE].decode("utf-8"))
    tok = _from_config(config, CONFIG_FILE)
    tok.load_files(files)
    return tok


def read_lang_dir(directory: str | os.PathLike[str]) -> dict[str, bytes]:
    """All files of a lang dir by name (what a checkpoint embeds)."""
    d = Path(directory)
    if not (d / CONFIG_FILE).is_file():
        raise DataError(f"{d}: not a lang dir (no {CONFIG_FILE}); create one with `kospeech tokenizer train`")
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file() and not p.name.startswith(".")}


def load_tokenizer(directory: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer saved in a lang dir."""
    d = Path(directory)
    try:
        return load_tokenizer_from_files(read_lang_dir(d))
    except (DataError, ConfigError) as err:
        if str(d) in str(err):
            raise
        raise type(err)(f"{d}: {err}") from err


def train_tokenizer(name: str, texts: Iterable[str], out_dir: str | os.PathLike[str], **options: Any) -> Tokenizer:
    """Train tokenizer ``name`` with ``options`` on ``texts`` and save it into ``out_dir``."""
    config = {"name": name, **options}
    validate("tokenizer", config, path="tokenizer")
    cls = registry("tokenizer").get(name).obj
    tok = cls.train(texts, **options)
    tok.save(out_dir)
    logger.info("tokenizer %s: %d units saved to %s", name, tok.vocab_size, out_dir)
    return tok
