"""Transducer greedy search in numpy over the exported predictor and joiner graphs.

The search of :class:`kospeech.search.transducer.TransducerGreedySearch` for one utterance: at
each encoder frame, emit the joiner's best token and advance the prediction network until it
says blank, at most ``max_symbols`` tokens per frame. Each token's span is the frame it was
emitted at.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from kospeech.runtime.ctc import Span, mask_non_units
from kospeech.text.special import BLANK_ID

#: tokens (1,), state -> predictor output (1, P), new state
Step = Callable[[np.ndarray, Sequence[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]
#: encoder frame (1, H), predictor output (1, P) -> log-probs (1, V)
Joint = Callable[[np.ndarray, np.ndarray], np.ndarray]


def greedy(encoder_out: np.ndarray, step: Step, joint: Joint, state: Sequence[np.ndarray],
           max_symbols: int = 3) -> tuple[list[int], list[Span]]:
    """(T', H) encoder frames -> token ids and their (token, frame, frame + 1, probability) spans."""
    pred_out, state = step(np.array([BLANK_ID], dtype=np.int64), state)
    tokens: list[int] = []
    spans: list[Span] = []
    for t in range(encoder_out.shape[0]):
        frame = encoder_out[t : t + 1]
        for _ in range(max_symbols):
            lp = mask_non_units(joint(frame, pred_out))[0]
            best = int(lp.argmax())
            if best == BLANK_ID:
                break
            tokens.append(best)
            spans.append((best, t, t + 1, float(np.exp(lp[best]))))
            pred_out, state = step(np.array([best], dtype=np.int64), state)
    return tokens, spans
