"""What a search needs from a language model (:class:`FusionLM`), and which file an ``lm:`` names.

Every LM of kind ``lm`` (``lstm``, ``transformer``, ``ngram``) offers the same three calls, so
the searches' shallow fusion (``ctc_prefix_beam``, ``beam``, ``joint_ctc_attention``,
``transducer_beam``) is written once and works with each of them:

- ``start(batch_size, device) -> (log_probs (N, V), state)``: the distribution of the first
  token (after ``<sos>``);
- ``step(tokens (N,), state) -> (log_probs (N, V), state)``: one token more for each row;
- ``select_state(state, index (M,)) -> state``: rows ``index`` of a state (beam reordering).

``vocab_size`` is the tokenizer's, specials included. A state is a tuple of tensors whose first
axis is the row and whose shapes do not change from step to step: the searches keep a row's old
state with ``torch.where`` where it did not emit a token. Log-probabilities of tokens an LM can
never predict (``<blank>``, ``<pad>``, ``<sos>``) may be ``-inf``; an n-gram over words gives 0
inside a word and scores the word when a boundary (space, word-initial piece, ``<eos>``) comes.

Files: a neural LM is ``lm.pt`` (``kospeech lm train --type lstm|transformer``), loaded with
``torch.load(weights_only=True)``; an n-gram is ``lm.arpa`` plus ``lm.yaml`` beside it (plain
text, ``--type ngram``). Neither runs code when opened. Loading either by what it is:
:func:`kospeech.lm.loading.load_lm`, above this base, which knows none of its subclasses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from kospeech.errors import ConfigError


class FusionLM:
    """Mixin of every registered LM: the stepping interface the searches call."""

    vocab_size: int

    def start(self, batch_size: int, device: torch.device | str) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def select_state(self, state: Any, index: torch.Tensor) -> Any:
        """Rows ``index`` of every tensor of the state (all of them are row-first)."""
        return tuple(s.index_select(0, index) for s in state)


def lm_file(path: str | Path) -> Path:
    """The file an ``lm:`` option names: the path itself, or ``lm.pt``/``lm.arpa`` in a folder."""
    path = Path(path)
    if path.is_dir():
        for name in ("lm.pt", "lm.arpa"):
            if (path / name).is_file():
                return path / name
        raise ConfigError(f"LM folder {path} holds neither lm.pt nor lm.arpa; train one with `kospeech lm train`")
    if not path.is_file():
        raise ConfigError(f"LM file not found: {path}; train one with `kospeech lm train --text ... --out DIR`")
    return path
