"""Contextual biasing (hotwords) for the CTC prefix beams: a trie over token ids, as dense tables.

Why: names that the acoustic model and the LM have rarely or never seen (솔담채, 한빛나래) lose
to common words that sound alike. A list of hotwords, encoded by the model's own tokenizer,
gives every prefix that spells one of them a bonus while it does, the context graph of WeNet
and the hotwords of sherpa-onnx.

Why here, apart from the searches: the torch search (:func:`kospeech.search.ctc.ctc_prefix_beam_search`)
and the torch-free runtime's (:func:`kospeech.runtime.ctc.prefix_beam`) must give identical
results, so the matching rule exists once, as the tables of :class:`ContextGraph`, which the numpy
search indexes directly and the torch search turns into tensors once per call. The module needs
numpy only (no torch, no registry).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kospeech.errors import ConfigError
from kospeech.text.special import BLANK_ID, EOS_ID, PAD_ID, SOS_ID

#: the bonus per matched token when none is given: chosen on made-up names and voices apart from the
#: measured ones (recipes/mini/local/hotword_eval.py --tuning), as the largest weight that left the dev
#: set's CER within 0.1 point
DEFAULT_HOTWORD_WEIGHT = 1.0

#: ids that a CTC head never emits, so a hotword holding one could never match
NEVER_EMITTED = (BLANK_ID, PAD_ID, SOS_ID, EOS_ID)


class ContextGraph:
    """A trie over hotwords' token-id sequences, with the bonus and next node of every (node, token).

    The scoring rule, over the stream of emitted tokens (no word boundaries: a particle after
    a name, 솔담채에서, does not stop the name from matching):

    * each token that follows an edge of the trie earns ``weight``;
    * a token that leaves a partial match (no edge from the current node) takes back the bonus
      that this partial match had earned, then matching restarts from the root with that same
      token (which may earn ``weight`` again as the first token of a hotword);
    * a token that completes a hotword keeps everything earned so far: nothing of it is ever
      taken back. Matching goes on from the root, or from the completed node when a longer
      hotword continues it (then only what is earned after the completion can be taken back);
    * at the end of the utterance, a partial match still open has its bonus taken back, so the
      final ranking never rewards half a hotword.

    Node 0 is the root. Tables, all dense numpy arrays over ``N`` nodes and ``V`` tokens:

    * ``next_node`` (N, V) int32: the trie's edges, -1 where none;
    * ``depth`` (N,) int32: tokens from the root; ``is_end`` (N,) bool: a hotword ends here;
    * ``open_bonus`` (N,) float32: the bonus still open at the node (earned since the root or
      since the last completed hotword on its path), what a break or the end takes back;
    * ``bonus`` (N, V) float32 and ``dest`` (N, V) int32: the transition of the rule above, the
      bonus a prefix at node ``n`` earns by emitting ``c`` and the node it goes to.

    Args:
        sequences: hotwords as token ids (the caller encodes text with the model's tokenizer);
            empty ones are skipped and repeats count once.
        vocab_size: the model's output size, the width of the tables.
        weight: bonus per matched token, in the units of the searches' log-probabilities.
    """

    def __init__(self, sequences: Sequence[Sequence[int]], vocab_size: int, weight: float) -> None:
        if vocab_size <= 0:
            raise ConfigError(f"hotwords: vocab_size must be positive, got {vocab_size}")
        if not np.isfinite(weight):
            raise ConfigError(f"hotwords: the weight must be a finite number, got {weight}")
        self.vocab_size = int(vocab_size)
        self.weight = float(weight)
        edges: list[dict[int, int]] = [{}]
        parent = [-1]
        ends = [False]
        kept: dict[tuple[int, ...], None] = {}  # insertion-ordered set
        for seq in sequences:
            ids = tuple(int(t) for t in seq)
            if not ids:
                continue
            bad = [t for t in ids if not 0 <= t < vocab_size or t in NEVER_EMITTED]
            if bad:
                raise ConfigError(
                    f"hotword {list(ids)}: token ids {bad} are not units the model can emit (<unk> and the units, "
                    f"ids {max(NEVER_EMITTED) + 1}..{vocab_size - 1}); encode hotwords with the model's own tokenizer"
                )
            if ids in kept:
                continue
            kept[ids] = None
            node = 0
            for t in ids:
                if t not in edges[node]:
                    edges[node][t] = len(edges)
                    edges.append({})
                    parent.append(node)
                    ends.append(False)
                node = edges[node][t]
            ends[node] = True
        self.sequences: tuple[tuple[int, ...], ...] = tuple(kept)
        N, V = len(edges), self.vocab_size
        self.next_node = np.full((N, V), -1, dtype=np.int32)
        for n, out in enumerate(edges):
            for t, child in out.items():
                self.next_node[n, t] = child
        self.is_end = np.array(ends, dtype=bool)
        self.depth = np.zeros(N, dtype=np.int32)
        open_tokens = np.zeros(N, dtype=np.int32)
        for n in range(1, N):  # a parent always has a lower id than its children
            self.depth[n] = self.depth[parent[n]] + 1
            open_tokens[n] = 0 if self.is_end[n] else open_tokens[parent[n]] + 1
        w = np.float32(self.weight)
        self.open_bonus = (w * open_tokens.astype(np.float32)).astype(np.float32)
        # a completed hotword that nothing continues behaves as the root: go back there
        has_child = (self.next_node >= 0).any(-1)
        resume = np.where(self.is_end & ~has_child, 0, np.arange(N)).astype(np.int32)
        root = self.next_node[0]  # (V,): the first token of a hotword, after a restart
        restart_dest = np.where(root >= 0, resume[np.maximum(root, 0)], 0).astype(np.int32)
        restart_gain = np.where(root >= 0, w, np.float32(0.0)).astype(np.float32)
        hit = self.next_node >= 0
        self.dest = np.where(hit, resume[np.maximum(self.next_node, 0)], restart_dest[None, :]).astype(np.int32)
        self.bonus = np.where(hit, w, restart_gain[None, :] - self.open_bonus[:, None]).astype(np.float32)

    @property
    def num_nodes(self) -> int:
        return int(self.next_node.shape[0])

    def advance(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Current nodes (K,) -> the bonus of each one-token extension (K, V) float32 and the nodes
        the extensions go to (K, V) int32."""
        nodes = np.asarray(nodes)
        return self.bonus[nodes], self.dest[nodes]

    def score(self, tokens: Sequence[int]) -> float:
        """The context score of a whole token sequence, what the searches add in their final
        ranking: the bonuses earned along it less the bonus still open at its end."""
        node, total = 0, np.float32(0.0)
        for t in tokens:
            total = np.float32(total + self.bonus[node, int(t)])
            node = int(self.dest[node, int(t)])
        return float(np.float32(total - self.open_bonus[node]))

    def __repr__(self) -> str:
        return f"ContextGraph({len(self.sequences)} hotwords, {self.num_nodes} nodes, weight={self.weight})"
