"""Korean text: KsponSpeech normalisation, Hangul jamo, tokenizers (character, jamo, sentencepiece).

Only light modules are imported here; sentencepiece loads when a subword tokenizer is used.
"""

from kospeech.text.normalize import is_empty_after_normalization, normalize_kspon
from kospeech.text.tokenizers import (
    Tokenizer,
    load_tokenizer,
    load_tokenizer_from_files,
    read_lang_dir,
    train_tokenizer,
)

__all__ = [
    "Tokenizer",
    "is_empty_after_normalization",
    "load_tokenizer",
    "load_tokenizer_from_files",
    "normalize_kspon",
    "read_lang_dir",
    "train_tokenizer",
]
