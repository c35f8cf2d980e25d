"""Any LM file, whatever its kind: loading it (:func:`load_lm`) and measuring its perplexity.

The one module that knows every kind of LM file (``lm.pt`` of a neural LM, ``lm.arpa`` of an
n-gram) and picks the code for each. It sits above them on purpose: the base
(:mod:`kospeech.lm.base`) stays the interface the searches call and knows none of its
children, and no child has to dispatch back to another.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kospeech.lm.base import lm_file
from kospeech.lm.model import TokenLM, load_neural_lm
from kospeech.lm.ngram import NgramLM, ngram_perplexity


def load_lm(path: str | Path, device: torch.device | str = "cpu") -> Any:
    """Any LM written by ``kospeech lm train`` (``lm.pt``, ``lm.arpa``, or their folder), ready for fusion."""
    path = lm_file(path)
    if path.suffix in (".arpa", ".yaml"):
        return NgramLM.load(path.with_suffix(".arpa"))
    return load_neural_lm(path, device)


def perplexity(lm: Any, seqs: Sequence[list[int]], *, batch_tokens: int = 8000, device: str = "cpu") -> float:
    """exp(mean negative log-likelihood per predicted token, ``<eos>`` included) of any LM
    :func:`load_lm` returns; an n-gram over words counts per word (its own unit)."""
    if isinstance(lm, TokenLM):
        from kospeech.lm.train import neural_perplexity  # the training module only when measuring

        return neural_perplexity(lm, seqs, batch_tokens=batch_tokens, device=device)
    return ngram_perplexity(lm, seqs)
