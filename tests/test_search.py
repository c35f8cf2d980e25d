"""Searches against brute force on a tiny deterministic model, then on the real models.

The toy model's heads are fixed functions of the token history (a hashed table) and of the
"encoder output" (which are simply the input logits), so the exact best sequence and exact
sequence probabilities can be enumerated for a few frames and compared with each search.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from kospeech.errors import ConfigError
from kospeech.models.base import ASRModel
from kospeech.registry import build
from kospeech.search import child_matrix
from kospeech.search.ctc import CTCPrefixScorer, ctc_prefix_beam_search
from kospeech.text.special import BLANK_ID, EOS_ID, SOS_ID

V = 7
REAL = [5, 6]  # the two "units"; specials 1, 2, 4 are ruled out by the toy heads
BIG_NEG = -1e9


class ToyModel(ASRModel):
    """Every head, deterministic: logits from a random table indexed by a hash of the history."""

    has_ctc = True
    has_decoder = True
    is_transducer = True

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(97, V, generator=g) * 1.5

    def encode(self, features, feature_lengths):
        return features, feature_lengths

    def ctc_log_probs(self, encoder_out):
        logits = encoder_out.clone()
        logits[..., 1:5] = BIG_NEG
        return logits.log_softmax(-1)

    @staticmethod
    def _next_hash(h, tokens):
        return (h * 31 + tokens + 1) % 1_000_003

    def init_decoder_state(self, encoder_out, encoder_lengths):
        return {"hash": torch.zeros(encoder_out.size(0), dtype=torch.long)}

    def decoder_step(self, tokens, state, encoder_out, encoder_lengths):
        h = self._next_hash(state["hash"], tokens)
        logits = self.table[h % 97] + encoder_out[:, 0]
        logits[:, [0, 1, 2, 4]] = BIG_NEG
        return logits.log_softmax(-1), {"hash": h}

    def predictor_init_state(self, batch_size, device):
        return {"hash": torch.zeros(batch_size, dtype=torch.long, device=device)}

    def predictor_step(self, tokens, state):
        h = self._next_hash(state["hash"], tokens)
        return self.table[h % 97], {"hash": h}

    def joint(self, encoder_frame, predictor_out):
        logits = encoder_frame + predictor_out
        logits[:, 1:5] = BIG_NEG
        return logits.log_softmax(-1)


class CTCOnly(ASRModel):
    has_ctc = True


def toy_batch(B: int, T: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(B, T, V, generator=g) * 2
    lens = torch.full((B,), T, dtype=torch.long)
    if B > 1:
        lens[-1] = T - 1
    return enc, lens


# ---------------------------------------------------------------------------------------------
# brute force


def att_score(model: ToyModel, enc: torch.Tensor, seq: list[int]) -> float:
    """log P_att(seq) for one utterance (enc (T, V)), teacher forced one token at a time."""
    state = model.init_decoder_state(enc[None], None)
    tok = torch.tensor([SOS_ID])
    total = 0.0
    for s in seq:
        logp, state = model.decoder_step(tok, state, enc[None], None)
        total += float(logp[0, s])
        tok = torch.tensor([s])
    return total


def att_candidates(max_len: int) -> list[list[int]]:
    """What an attention search may return: up to max_len-1 units + eos, or max_len units."""
    out = []
    for n in range(max_len):
        out += [[*p, EOS_ID] for p in itertools.product(REAL, repeat=n)]
    out += [list(p) for p in itertools.product(REAL, repeat=max_len)]
    return out


def ctc_sequence_logprobs(logp: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Exact log P_ctc(y) of every label sequence, summing all paths over {blank} + REAL."""
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product([BLANK_ID, *REAL], repeat=logp.size(0)):
        p = math.exp(sum(float(logp[t, s]) for t, s in enumerate(path)))
        y, prev = [], None
        for s in path:
            if s != BLANK_ID and s != prev:
                y.append(s)
            prev = s
        probs[tuple(y)] = probs.get(tuple(y), 0.0) + p
    return {y: math.log(p) for y, p in probs.items()}


def transducer_sequence_logprobs(model: ToyModel, enc: torch.Tensor) -> dict[tuple[int, ...], float]:
    """Exact log P(y) with one symbol (blank or unit) per frame, the modified-beam topology."""
    probs: dict[tuple[int, ...], float] = {}
    for path in itertools.product([BLANK_ID, *REAL], repeat=enc.size(0)):
        state = model.predictor_init_state(1, "cpu")
        pred, state = model.predictor_step(torch.tensor([BLANK_ID]), state)
        total, y = 0.0, []
        for t, s in enumerate(path):
            total += float(model.joint(enc[t : t + 1], pred)[0, s])
            if s != BLANK_ID:
                y.append(s)
                pred, state = model.predictor_step(torch.tensor([s]), state)
        probs[tuple(y)] = probs.get(tuple(y), 0.0) + math.exp(total)
    return {y: math.log(p) for y, p in probs.items()}


def strip(seq: list[int]) -> list[int]:
    return [s for s in seq if s != EOS_ID]


# ---------------------------------------------------------------------------------------------
# attention decoder


def test_beam_exhaustive_equals_brute_force_nbest() -> None:
    model = ToyModel()
    enc, lens = toy_batch(2, 4)
    search = build("search", {"name": "beam", "beam_size": 16}, model=model)
    nbest = search(enc, lens)
    for b in range(2):
        max_len = int(lens[b])
        scored = sorted(((att_score(model, enc[b], c), strip(c)) for c in att_candidates(max_len)), reverse=True)
        assert nbest[b][0].tokens == scored[0][1]
        assert nbest[b][0].score == pytest.approx(scored[0][0], abs=1e-4)
        for h, (s, seq) in zip(nbest[b][:5], scored[:5]):
            assert h.tokens == seq and h.score == pytest.approx(s, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_size_one_equals_greedy(seed: int) -> None:
    model = ToyModel(seed)
    enc, lens = toy_batch(3, 6, seed)
    g = build("search", {"name": "greedy"}, model=model)(enc, lens)
    b = build("search", {"name": "beam", "beam_size": 1}, model=model)(enc, lens)
    assert [h[0].tokens for h in g] == [h[0].tokens for h in b]
    for hg, hb in zip(g, b):
        assert hg[0].score == pytest.approx(hb[0].score, abs=1e-4)


def test_beam_is_batched_consistently() -> None:
    """Decoding a batch gives the same result as decoding each utterance alone."""
    model = ToyModel(3)
    enc, lens = toy_batch(3, 6, 3)
    search = build("search", {"name": "beam", "beam_size": 3, "length_penalty": 0.5}, model=model)
    batched = search(enc, lens)
    for i in range(3):
        alone = search(enc[i : i + 1, : int(lens[i])], lens[i : i + 1])
        assert alone[0][0].tokens == batched[i][0].tokens
        assert alone[0][0].score == pytest.approx(batched[i][0].score, abs=1e-4)


def test_length_penalty_makes_outputs_longer() -> None:
    model = ToyModel(4)
    enc, lens = toy_batch(4, 8, 4)
    short = build("search", {"name": "beam", "beam_size": 4, "length_penalty": -5.0}, model=model)(enc, lens)
    long = build("search", {"name": "beam", "beam_size": 4, "length_penalty": 5.0}, model=model)(enc, lens)
    assert all(len(h[0].tokens) == 0 for h in short)
    assert all(len(h[0].tokens) == int(n) for h, n in zip(long, lens))  # runs to max length


# ---------------------------------------------------------------------------------------------
# CTC


def test_ctc_greedy_collapses_best_path() -> None:
    logits = torch.full((1, 6, V), -5.0)
    for t, s in enumerate([5, 5, 0, 5, 6, 0]):
        logits[0, t, s] = 5.0
    search = build("search", {"name": "ctc_greedy"}, model=CTCOnly())
    search.model.ctc_log_probs = lambda x: x.log_softmax(-1)  # type: ignore[method-assign]
    hyp = search(logits, torch.tensor([6]))[0][0]
    assert hyp.tokens == [5, 5, 6]
    hyp = search(logits, torch.tensor([2]))[0][0]  # only the first two frames count
    assert hyp.tokens == [5]


def test_ctc_prefix_beam_matches_exact_sequence_probabilities() -> None:
    model = ToyModel()
    enc, lens = toy_batch(2, 5)
    logp = model.ctc_log_probs(enc)
    nbest = ctc_prefix_beam_search(logp, lens, beam_size=40)
    for b in range(2):
        exact = ctc_sequence_logprobs(logp[b, : int(lens[b])])
        best = sorted(exact.items(), key=lambda kv: -kv[1])
        got = [(tuple(h.tokens), h.score) for h in nbest[b] if h.score > -1e6]
        assert len(got) == len(exact)
        for (y, s), (gy, gs) in zip(best, got):
            assert y == gy and s == pytest.approx(gs, abs=1e-4)


def test_ctc_prefix_beam_small_beam_finds_best_on_peaky_posteriors() -> None:
    """A hand-built posterior whose best path (a a) differs from the best sequence (a)."""
    p = torch.full((3, V), 1e-9)
    p[:, BLANK_ID] = 0.0
    p[0, 5], p[0, BLANK_ID] = 0.6, 0.4  # 'a' or blank
    p[1, 5], p[1, BLANK_ID] = 0.4, 0.6
    p[2, 5], p[2, BLANK_ID] = 0.6, 0.4
    logp = (p / p.sum(-1, keepdim=True)).log()[None]
    best_path = build("search", {"name": "ctc_greedy"}, model=CTCOnly())
    best_path.model.ctc_log_probs = lambda x: x  # type: ignore[method-assign]
    assert best_path(logp, torch.tensor([3]))[0][0].tokens == [5, 5]
    hyps = ctc_prefix_beam_search(logp, torch.tensor([3]), beam_size=2)[0]
    # P(a) = all paths collapsing to 'a'; P(aa) needs a blank in the middle
    exact = ctc_sequence_logprobs(logp[0])
    assert exact[(5,)] > exact[(5, 5)]
    assert hyps[0].tokens == [5] and hyps[0].score == pytest.approx(exact[(5,)], abs=1e-5)


def test_ctc_prefix_scorer_matches_brute_force() -> None:
    model = ToyModel()
    enc, lens = toy_batch(1, 4)
    logp = model.ctc_log_probs(enc)
    exact = ctc_sequence_logprobs(logp[0])

    def prefix_prob(g: tuple[int, ...]) -> float:
        return math.log(sum(math.exp(v) for y, v in exact.items() if y[: len(g)] == g))

    scorer = CTCPrefixScorer(logp, lens, beam_size=1)
    cand = torch.tensor([[5, 6, EOS_ID]])
    psi = scorer.score(cand)[0]
    assert float(psi[0]) == pytest.approx(prefix_prob((5,)), abs=1e-6)
    assert float(psi[1]) == pytest.approx(prefix_prob((6,)), abs=1e-6)
    assert float(psi[2]) == pytest.approx(exact[()], abs=1e-6)
    scorer.select(torch.tensor([0]), torch.tensor([5]))
    psi = scorer.score(torch.tensor([[5, 6, EOS_ID]]))[0]
    assert float(psi[0]) == pytest.approx(prefix_prob((5, 5)), abs=1e-6)
    assert float(psi[1]) == pytest.approx(prefix_prob((5, 6)), abs=1e-6)
    assert float(psi[2]) == pytest.approx(exact[(5,)], abs=1e-6)


def test_joint_ctc_attention_exhaustive_equals_brute_force() -> None:
    model = ToyModel(5)
    enc, lens = toy_batch(2, 3, 5)
    w = 0.4
    search = build(
        "search",
        {"name": "joint_ctc_attention", "beam_size": 16, "ctc_weight": w, "pre_beam_ratio": 2.0, "max_len_ratio": 2.0},
        model=model,
    )
    nbest = search(enc, lens)
    logp = model.ctc_log_probs(enc)
    for b in range(2):
        exact = ctc_sequence_logprobs(logp[b, : int(lens[b])])
        scored = sorted(((1 - w) * att_score(model, enc[b], [*y, EOS_ID]) + w * v, list(y)) for y, v in exact.items())[
            ::-1
        ]
        assert nbest[b][0].tokens == scored[0][1]
        assert nbest[b][0].score == pytest.approx(scored[0][0], abs=1e-3)


def test_attention_rescoring_picks_best_of_ctc_nbest() -> None:
    model = ToyModel(6)
    enc, lens = toy_batch(2, 4, 6)
    ctc_w = 0.5
    out = build("search", {"name": "attention_rescoring", "beam_size": 8, "ctc_weight": ctc_w}, model=model)(enc, lens)
    nbest = ctc_prefix_beam_search(model.ctc_log_probs(enc), lens, 8)
    for b in range(2):
        best = max(nbest[b], key=lambda h: att_score(model, enc[b], [*h.tokens, EOS_ID]) + ctc_w * h.score)
        assert out[b][0].tokens == best.tokens
        assert out[b][0].parts["att"] == pytest.approx(att_score(model, enc[b], [*best.tokens, EOS_ID]), abs=1e-4)


# ---------------------------------------------------------------------------------------------
# transducer


def test_transducer_beam_exhaustive_matches_exact_probabilities() -> None:
    model = ToyModel(7)
    enc, lens = toy_batch(1, 4, 7)
    nbest = build("search", {"name": "transducer_beam", "beam_size": 40}, model=model)(enc, lens)[0]
    exact = transducer_sequence_logprobs(model, enc[0])
    best = sorted(exact.items(), key=lambda kv: -kv[1])
    got = [(tuple(h.tokens), h.score) for h in nbest if h.score > -1e6]
    assert len(got) == len(exact)
    for (y, s), (gy, gs) in zip(best, got):
        assert y == gy and s == pytest.approx(gs, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_transducer_beam_one_equals_greedy_one_symbol(seed: int) -> None:
    model = ToyModel(seed)
    enc, lens = toy_batch(3, 7, seed)
    g = build("search", {"name": "transducer_greedy", "max_symbols_per_frame": 1}, model=model)(enc, lens)
    b = build("search", {"name": "transducer_beam", "beam_size": 1}, model=model)(enc, lens)
    assert [h[0].tokens for h in g] == [h[0].tokens for h in b]
    for hg, hb in zip(g, b):
        assert hg[0].score == pytest.approx(hb[0].score, abs=1e-4)


def test_transducer_greedy_emits_several_symbols_per_frame() -> None:
    model = ToyModel(8)
    enc = torch.full((1, 2, V), -10.0)
    enc[..., 5] = 30.0  # the joiner always prefers unit 5 over blank
    out = build("search", {"name": "transducer_greedy", "max_symbols_per_frame": 3}, model=model)(
        enc, torch.tensor([2])
    )
    assert out[0][0].tokens == [5] * 6


# ---------------------------------------------------------------------------------------------
# helpers and errors


def test_child_matrix() -> None:
    pre = torch.tensor([[[5, -1, -1], [5, 6, -1], [6, -1, -1], [-1, -1, -1]]])
    lens = torch.tensor([[1, 2, 1, 0]])
    m = child_matrix(pre, lens)[0]
    assert m[0, 1] and m[3, 0] and m[3, 2]
    assert int(m.sum()) == 3


@pytest.mark.parametrize(
    "name,needs",
    [
        ("beam", "an attention decoder"),
        ("greedy", "an attention decoder"),
        ("transducer_beam", "a transducer"),
        ("joint_ctc_attention", "an attention decoder"),
        ("attention_rescoring", "an attention decoder"),
    ],
)
def test_missing_head_error_names_search_and_model(name: str, needs: str) -> None:
    with pytest.raises(ConfigError, match=f"search '{name}' needs {needs}.*model CTCOnly has a CTC head"):
        build("search", {"name": name}, model=CTCOnly())


def test_ctc_search_on_attention_only_model_fails() -> None:
    class AttOnly(ASRModel):
        has_decoder = True

    with pytest.raises(ConfigError, match="search 'ctc_prefix_beam' needs a CTC head.*AttOnly"):
        build("search", {"name": "ctc_prefix_beam"}, model=AttOnly())


# ---------------------------------------------------------------------------------------------
# the real models on real speech features (untrained: shapes, termination, agreement)

_TINY_T = {"d_model": 32, "num_heads": 2, "ff_dim": 64, "num_layers": 1}
_CONF = {"name": "conformer", "d_model": 32, "ff_dim": 64, "num_layers": 1}
_PRED = {"name": "transducer", "embed_dim": 16, "hidden_dim": 32}
REAL_MODELS = {
    "las": {
        "name": "las",
        "encoder": {"name": "rnn", "hidden_dim": 32, "num_layers": 1},
        "decoder": {"name": "rnn", "hidden_dim": 32, "num_layers": 1},
        "ctc_weight": 0.3,
    },
    "deepspeech2": {
        "name": "deepspeech2",
        "encoder": {
            "name": "rnn",
            "rnn_type": "gru",
            "hidden_dim": 32,
            "num_layers": 1,
            "extractor": {"name": "deepspeech2"},
        },
    },
    "transformer": {
        "name": "transformer",
        "encoder": {"name": "transformer", **_TINY_T},
        "decoder": {"name": "transformer", **_TINY_T},
    },
    "conformer": {"name": "conformer", "encoder": _CONF, "decoder": {"name": "transformer", **_TINY_T}},
    "conformer_transducer": {
        "name": "conformer",
        "encoder": _CONF,
        "head": "transducer",
        "predictor": _PRED,
        "joint_dim": 32,
    },
    "rnnt": {"name": "rnnt", "encoder": _CONF, "predictor": _PRED, "joint_dim": 32},
}
SEARCHES = {
    "greedy": ("decoder", {}),
    "beam": ("decoder", {"beam_size": 3}),
    "ctc_greedy": ("ctc", {}),
    "ctc_prefix_beam": ("ctc", {"beam_size": 4}),
    "joint_ctc_attention": ("both", {"beam_size": 3}),
    "attention_rescoring": ("both", {"beam_size": 4}),
    "transducer_greedy": ("transducer", {}),
    "transducer_beam": ("transducer", {"beam_size": 3}),
}


def _fits(model: ASRModel, needs: str) -> bool:
    return {
        "decoder": model.has_decoder,
        "ctc": model.has_ctc,
        "both": model.has_ctc and model.has_decoder,
        "transducer": model.is_transducer,
    }[needs]


@pytest.fixture(scope="module")
def real_encoded(fbank_batch: dict) -> dict:
    out = {}
    for name, cfg in REAL_MODELS.items():
        torch.manual_seed(0)
        model = build("model", cfg, input_dim=80, vocab_size=fbank_batch["vocab_size"]).eval()
        with torch.no_grad():
            enc, lens = model.encode(fbank_batch["features"][:4], fbank_batch["feature_lengths"][:4])
        out[name] = (model, enc, lens)
    return out


@pytest.mark.parametrize("model_name", list(REAL_MODELS))
def test_every_fitting_search_runs_on_real_model(model_name: str, real_encoded: dict, fbank_batch: dict) -> None:
    model, enc, lens = real_encoded[model_name]
    V = fbank_batch["vocab_size"]
    ran = []
    for search_name, (needs, opts) in SEARCHES.items():
        if not _fits(model, needs):
            with pytest.raises(ConfigError, match=f"search '{search_name}' needs"):
                build("search", {"name": search_name, **opts}, model=model)
            continue
        search = build("search", {"name": search_name, **opts}, model=model)
        nbest = search(enc, lens)
        ran.append(search_name)
        assert len(nbest) == 4
        for b, hyps in enumerate(nbest):
            assert 1 <= len(hyps) <= opts.get("beam_size", 1)
            scores = [h.score for h in hyps]
            assert scores == sorted(scores, reverse=True) and all(math.isfinite(s) for s in scores)
            for h in hyps:
                assert all(4 <= t < V for t in h.tokens), (search_name, h.tokens)  # no blank/pad/sos/eos
                assert len(h.tokens) <= 3 * int(lens[b])
    assert ran, f"no search fits {model_name}"


@pytest.mark.parametrize("model_name", ["las", "transformer", "conformer"])
def test_real_attention_beam_one_equals_greedy(model_name: str, real_encoded: dict) -> None:
    model, enc, lens = real_encoded[model_name]
    g = build("search", {"name": "greedy", "max_len_ratio": 0.3}, model=model)(enc, lens)
    b = build("search", {"name": "beam", "beam_size": 1, "max_len_ratio": 0.3}, model=model)(enc, lens)
    assert [h[0].tokens for h in g] == [h[0].tokens for h in b]


@pytest.mark.parametrize("model_name", ["conformer_transducer", "rnnt"])
def test_real_transducer_beam_one_equals_greedy(model_name: str, transducer_checkpoint: dict) -> None:
    """On a trained transducer (tests/fixtures/deploy.py), so that both searches have long, varied
    outputs to agree on (an untrained one emits the same few units on every frame): greedy must
    give the eight training texts, and a beam of one the same units with the same score. The
    Conformer with a transducer head is the ``rnnt`` model under another name: the same weights load."""
    from tests.fixtures.deploy import TRANSDUCER

    fx = transducer_checkpoint
    model = fx["model"]
    if model_name == "conformer_transducer":
        cfg = {**{k: v for k, v in TRANSDUCER.items() if k != "name"}, "name": "conformer", "head": "transducer"}
        model = build("model", cfg, input_dim=fx["features"].size(2), vocab_size=fx["tokenizer"].vocab_size)
        model.load_state_dict(fx["model"].state_dict())
        model.eval()
    with torch.no_grad():
        enc, lens = model.encode(fx["features"], fx["lengths"])
        g = build("search", {"name": "transducer_greedy", "max_symbols_per_frame": 1}, model=model)(enc, lens)
        b = build("search", {"name": "transducer_beam", "beam_size": 1}, model=model)(enc, lens)
    assert [fx["tokenizer"].decode(h[0].tokens) for h in g] == fx["texts"]
    assert sum(len(h[0].tokens) for h in g) == 56  # a unit per character and space of the eight texts
    assert [h[0].tokens for h in g] == [h[0].tokens for h in b]
    for hg, hb in zip(g, b):
        assert hg[0].score == pytest.approx(hb[0].score, abs=1e-4)


def test_decode_returns_best_ids(real_encoded: dict, fbank_batch: dict) -> None:
    model, enc, lens = real_encoded["deepspeech2"]
    search = build("search", {"name": "ctc_prefix_beam", "beam_size": 3}, model=model)
    ids = search.decode(fbank_batch["features"][:4], fbank_batch["feature_lengths"][:4])
    assert ids == [h[0].tokens for h in search(enc, lens)]
