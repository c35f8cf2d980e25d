"""Deep Speech 2 (Amodei et al. 2016): convolutions, bidirectional RNNs and a CTC output.

A preset of ``model ctc`` (:mod:`kospeech.models.ctc`): only the default encoder differs.
"""

from __future__ import annotations

from kospeech.models.ctc import CTCModel
from kospeech.registry import component, register


@register("model", "deepspeech2")
class DeepSpeech2(CTCModel):
    """CTC model: the ``deepspeech2`` conv extractor, a bidirectional GRU/LSTM stack (the
    ``rnn`` encoder) and a linear layer to the vocabulary, trained with the ``ctc`` loss.

    Decoding uses the CTC hooks (greedy or prefix beam search, optionally with an LM).

    Args:
        encoder: the acoustic encoder; by default KoSpeech's DS2 body: ``deepspeech2``
            extractor and 3 bidirectional GRU layers of 512 units.
        init: ``default`` (PyTorch's) or ``uniform`` (U(-0.08, 0.08)).
    """

    def __init__(
        self,
        *,
        input_dim: int,
        vocab_size: int,
        encoder: component("encoder", "input_dim") = {
            "name": "rnn",
            "rnn_type": "gru",
            "hidden_dim": 512,
            "num_layers": 3,
            "bidirectional": True,
            "dropout": 0.1,
            "extractor": {"name": "deepspeech2"},
        },
        init: str = "default",
    ) -> None:
        super().__init__(input_dim=input_dim, vocab_size=vocab_size, encoder=encoder, init=init)
