"""One-pass joint CTC/attention beam search (Watanabe et al. 2017; ESPnet's default decoder)."""

from __future__ import annotations

from kospeech.models.base import ASRModel
from kospeech.registry import register
from kospeech.search import require_head
from kospeech.search.beam import BeamSearch


@register("search", "joint_ctc_attention")
class JointCTCAttentionSearch(BeamSearch):
    """Attention beam search whose every extension is also scored by the CTC prefix probability.

    Each step takes the ``pre_beam_ratio x beam_size`` best tokens of each hypothesis by the
    attention (and LM) score, computes their CTC prefix scores, and ranks by
    ``(1 - ctc_weight) * att + ctc_weight * ctc + lm_weight * lm``. CTC vetoes hypotheses the
    audio cannot support (too long, looping, ending early), which attention alone misses.

    Args:
        beam_size: hypotheses kept per utterance (and the n-best returned).
        ctc_weight: weight of the CTC prefix score, in (0, 1]; 0.3 is ESPnet's usual value.
        pre_beam_ratio: candidates per hypothesis scored by CTC, as a multiple of beam_size.
        max_len_ratio: at most ``max_len_ratio`` x encoder frames output tokens per utterance.
        length_penalty: added to the score of every emitted token (``<eos>`` included).
        length_normalize: rank finished hypotheses by score / (tokens + 1).
        lm: an LM from ``kospeech lm train`` (``lm.pt``, ``lm.arpa`` or their folder) for shallow fusion (None: no LM).
        lm_weight: weight of the LM log-probabilities.
    """

    name = "joint_ctc_attention"

    def __init__(
        self,
        *,
        model: ASRModel,
        beam_size: int = 5,
        ctc_weight: float = 0.3,
        pre_beam_ratio: float = 1.5,
        max_len_ratio: float = 1.0,
        length_penalty: float = 0.0,
        length_normalize: bool = False,
        lm: str | None = None,
        lm_weight: float = 0.0,
    ) -> None:
        require_head(self.name, model, "ctc")
        super().__init__(
            model=model,
            beam_size=beam_size,
            max_len_ratio=max_len_ratio,
            length_penalty=length_penalty,
            length_normalize=length_normalize,
            lm=lm,
            lm_weight=lm_weight,
        )
        if not 0.0 < ctc_weight <= 1.0:
            raise ValueError(f"{self.name}: ctc_weight must be in (0, 1], got {ctc_weight}; use 'beam' for 0")
        if pre_beam_ratio < 1.0:
            raise ValueError(f"{self.name}: pre_beam_ratio must be >= 1, got {pre_beam_ratio}")
        self.ctc_weight = ctc_weight
        self.pre_beam_ratio = pre_beam_ratio
