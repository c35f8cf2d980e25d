"""Transducer greedy search in numpy over a prediction network and a joiner given as functions.

The search of :class:`kospeech.search.transducer.TransducerGreedySearch` for one utterance: at
each encoder frame, emit the joiner's best token and advance the prediction network until it
says blank, at most ``max_symbols`` tokens per frame. Each token's span is the frame it was
emitted at. :class:`Greedy` takes the frames in any number of calls (a stream's committed
frames), and :func:`greedy` is it over all frames at once, so an export and a stream decode with
one code. The step and joint are the ONNX graphs' (:class:`kospeech.runtime.model.OnnxEngine`)
or the PyTorch model's (:class:`kospeech.inference.api.TorchEngine`); the state is theirs,
passed back untouched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np

from kospeech.runtime.ctc import Span, mask_non_units
from kospeech.text.special import BLANK_ID

#: tokens (1,), state -> predictor output (1, P), new state
Step = Callable[[np.ndarray, Any], tuple[Any, Any]]
#: encoder frame (1, H), predictor output (1, P) -> log-probs (1, V)
Joint = Callable[[np.ndarray, Any], np.ndarray]


class Greedy:
    """Transducer greedy search that takes its encoder frames in any number of calls (streaming).

    The prediction network's output and state after the last emitted token are all the next frame
    needs, so frames given in chunks give exactly the tokens they give at once. :meth:`advance`
    never changes a list or state in place (the step returns a new state), so ``copy.copy(search)``
    is a cheap snapshot to decode tentative frames from without disturbing the search
    (:meth:`look_ahead`).

    Args:
        step: the prediction network's step (:data:`Step`).
        joint: the joiner (:data:`Joint`), log-probabilities over the model's units.
        state: the prediction network's start state for one hypothesis.
        max_symbols: at most this many tokens per frame (a joiner that never says blank stops).
    """

    def __init__(self, step: Step, joint: Joint, state: Any, max_symbols: int = 3) -> None:
        self.step, self.joint, self.max_symbols = step, joint, max_symbols
        self.pred_out, self.state = step(np.array([BLANK_ID], dtype=np.int64), state)
        self.tokens: list[int] = []
        self.spans: list[Span] = []  # (token, frame, frame + 1, probability), frames counted from the first call
        self.frames = 0

    def advance(self, encoder_out: np.ndarray) -> np.ndarray:
        """Decode (T', H) more encoder frames; which of them emitted a token (bool (T',)), the
        transducer's counterpart of CTC's non-blank frames for endpointing."""
        tokens, spans = list(self.tokens), list(self.spans)
        emitted = np.zeros(encoder_out.shape[0], dtype=bool)
        pred_out, state = self.pred_out, self.state
        for t in range(encoder_out.shape[0]):
            frame = encoder_out[t : t + 1]
            for _ in range(self.max_symbols):
                lp = mask_non_units(self.joint(frame, pred_out))[0]
                best = int(lp.argmax())
                if best == BLANK_ID:
                    break
                tokens.append(best)
                spans.append((best, self.frames + t, self.frames + t + 1, float(np.exp(lp[best]))))
                emitted[t] = True
                pred_out, state = self.step(np.array([best], dtype=np.int64), state)
        self.tokens, self.spans, self.pred_out, self.state = tokens, spans, pred_out, state
        self.frames += encoder_out.shape[0]
        return emitted

    def best(self) -> list[int]:
        """The tokens emitted so far."""
        return list(self.tokens)

    def look_ahead(self, encoder_out: np.ndarray) -> tuple[list[int], np.ndarray]:
        """The tokens so far and those ``encoder_out`` would add, and which of its frames emit,
        from a copy: the search itself stays where it is (a stream's tentative frames)."""
        ahead = copy.copy(self)
        emitted = ahead.advance(encoder_out)
        return ahead.best(), emitted


def greedy(encoder_out: np.ndarray, step: Step, joint: Joint, state: Any,
           max_symbols: int = 3) -> tuple[list[int], list[Span]]:
    """(T', H) encoder frames -> token ids and their (token, frame, frame + 1, probability) spans
    (:class:`Greedy` over all frames at once)."""
    search = Greedy(step, joint, state, max_symbols)
    search.advance(encoder_out)
    return search.tokens, search.spans
