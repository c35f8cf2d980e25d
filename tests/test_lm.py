"""The fusion LMs (kind ``lm``: lstm, transformer, ngram): training through the CLI, batched
stepping, and exact shallow fusion.

Fusion is checked against brute force on the deterministic toy model of test_search.py, for
every registered LM through the one interface the searches call: with a beam wide enough to
keep every prefix, each search must rank sequences exactly by ``acoustic score + lm_weight *
log P_lm(sequence <eos>)``, and the LM must change at least one decision.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from kospeech.cli import main
from kospeech.errors import ConfigError
from kospeech.lm.base import FusionLM
from kospeech.lm.loading import load_lm
from kospeech.lm.model import LSTMLM, save_lm
from kospeech.lm.ngram import estimate_kneser_ney, write_arpa
from kospeech.lm.transformer import TransformerLM
from kospeech.registry import build
from kospeech.text.special import EOS_ID, SOS_ID
from tests.conftest import SHORT_SENTENCES
from tests.test_search import (
    ToyModel,
    V,
    att_candidates,
    att_score,
    ctc_sequence_logprobs,
    strip,
    toy_batch,
    transducer_sequence_logprobs,
)


@torch.no_grad()
def lm_logprob(lm: FusionLM, seq: list[int]) -> float:
    """log P_lm(seq), seq ending with <eos> or not, one token at a time."""
    logp, state = lm.start(1, "cpu")
    total = 0.0
    for s in seq:
        total += float(logp[0, s])
        logp, state = lm.step(torch.tensor([s]), state)
    return total


TOY_UNITS = ["<blank>", "<pad>", "<sos>", "<eos>", "<unk>", "a", "b"]  # ids 5, 6 = the toy's REAL units


def write_toy_ngram(folder: Path, sentences: list[list[str]], order: int) -> Path:
    """An n-gram over the toy units, written as ``kospeech lm train --type ngram`` writes one."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    write_arpa(estimate_kneser_ney(sentences, order, TOY_UNITS[5:]), folder / "lm.arpa")
    info = {"name": "ngram", "order": order, "unit": "token", "vocab_size": V, "units": TOY_UNITS}
    (folder / "lm.yaml").write_text(yaml.safe_dump(info), encoding="utf-8")
    return folder / "lm.arpa"


@pytest.fixture(scope="module", params=["lstm", "transformer", "ngram"])
def toy_lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[FusionLM, Path]:
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(3)
    if request.param == "ngram":
        # "a" after "a" is rare and sentences end after "b": pulls away from what the toy acoustics prefer
        sentences = [["a", "b"]] * 6 + [["b", "a", "b"]] * 4 + [["b"]] * 3 + [["a", "a"]]
        path = write_toy_ngram(folder, [list(x) for x in sentences], 3)
        return load_lm(path), path
    if request.param == "lstm":
        lm = LSTMLM(vocab_size=V, embed_dim=8, hidden=16, layers=1, dropout=0.0)
    else:
        lm = TransformerLM(vocab_size=V, embed_dim=8, d_model=16, num_heads=2, ff_dim=32, num_layers=2, dropout=0.0)
    with torch.no_grad():
        lm.proj.weight.mul_(8.0)  # a peaky LM, so that fusion visibly changes rankings
        lm.proj.bias[EOS_ID] -= 3.0  # that prefers longer outputs than the toy's attention head
    path = save_lm(lm, folder / "lm.pt")
    return load_lm(path), path


def test_step_matches_full_forward(toy_lm: tuple[FusionLM, Path]) -> None:
    lm, _ = toy_lm
    if not isinstance(lm, (LSTMLM, TransformerLM)):
        pytest.skip("the n-gram has no full forward; its distributions are checked in test_ngram_lm.py")
    seqs = torch.tensor([[5, 6, 6, 5], [6, 6, 5, 5]])
    logits, _ = lm(torch.cat([torch.full((2, 1), SOS_ID), seqs], 1))
    full = logits.log_softmax(-1)
    logp, state = lm.start(2, "cpu")
    for t in range(4):
        assert torch.allclose(logp, full[:, t], atol=1e-5)
        logp, state = lm.step(seqs[:, t], state)
    # nll agrees with stepping, eos included
    nll, n = lm.nll(seqs, torch.tensor([4, 2]))
    expect = -(lm_logprob(lm, [5, 6, 6, 5, EOS_ID]) + lm_logprob(lm, [6, 6, EOS_ID]))
    assert float(nll) == pytest.approx(expect, abs=1e-4) and int(n) == 8


def test_ctc_prefix_beam_fusion_is_exact(toy_lm: tuple[FusionLM, Path]) -> None:
    lm, path = toy_lm
    model = ToyModel(2)
    enc, lens = toy_batch(2, 4, 2)
    w = 3.0
    nbest = build("search", {"name": "ctc_prefix_beam", "beam_size": 40, "lm": str(path), "lm_weight": w}, model=model)(
        enc, lens
    )
    logp = model.ctc_log_probs(enc)
    changed = False
    for b in range(2):
        exact = ctc_sequence_logprobs(logp[b, : int(lens[b])])
        fused = sorted(((v + w * lm_logprob(lm, [*y, EOS_ID]), list(y)) for y, v in exact.items()), reverse=True)
        assert nbest[b][0].tokens == fused[0][1]
        assert nbest[b][0].score == pytest.approx(fused[0][0], abs=1e-4)
        changed |= fused[0][1] != list(max(exact, key=exact.get))
    assert changed, "the LM should change at least one decision in this setting"


def test_beam_fusion_is_exact(toy_lm: tuple[FusionLM, Path]) -> None:
    lm, path = toy_lm
    model = ToyModel(5)
    enc, lens = toy_batch(2, 4, 5)
    w = 2.0
    nbest = build("search", {"name": "beam", "beam_size": 16, "lm": str(path), "lm_weight": w}, model=model)(enc, lens)
    changed = False
    for b in range(2):
        cands = att_candidates(int(lens[b]))
        scored = sorted(((att_score(model, enc[b], c) + w * lm_logprob(lm, c), strip(c)) for c in cands), reverse=True)
        changed |= scored[0][1] != strip(max(cands, key=lambda c: att_score(model, enc[b], c)))
        assert nbest[b][0].tokens == scored[0][1]
        assert nbest[b][0].score == pytest.approx(scored[0][0], abs=1e-4)
        assert nbest[b][0].parts["lm"] == pytest.approx(
            lm_logprob(lm, [*scored[0][1], EOS_ID])
            if len(scored[0][1]) < int(lens[b])
            else lm_logprob(lm, scored[0][1]),
            abs=1e-4,
        )
    assert changed, "the LM should change at least one decision in this setting"


def test_joint_ctc_attention_fusion_is_exact(toy_lm: tuple[FusionLM, Path]) -> None:
    lm, path = toy_lm
    model = ToyModel(5)
    enc, lens = toy_batch(2, 3, 5)
    cw, w = 0.4, 4.0
    cfg = {"name": "joint_ctc_attention", "beam_size": 16, "ctc_weight": cw, "pre_beam_ratio": 2.0,
           "max_len_ratio": 2.0}
    nbest = build("search", {**cfg, "lm": str(path), "lm_weight": w}, model=model)(enc, lens)
    logp = model.ctc_log_probs(enc)
    changed = False
    for b in range(2):
        exact = ctc_sequence_logprobs(logp[b, : int(lens[b])])

        def acoustic(y: tuple[int, ...], b: int = b, exact: dict = exact) -> float:
            return (1 - cw) * att_score(model, enc[b], [*y, EOS_ID]) + cw * exact[y]

        scored = sorted(((acoustic(y) + w * lm_logprob(lm, [*y, EOS_ID]), list(y)) for y in exact), reverse=True)
        changed |= scored[0][1] != list(max(exact, key=acoustic))
        assert nbest[b][0].tokens == scored[0][1]
        assert nbest[b][0].score == pytest.approx(scored[0][0], abs=1e-3)
    assert changed, "the LM should change at least one decision in this setting"


def test_joint_ctc_attention_with_lm_runs_and_respects_weight(toy_lm: tuple[FusionLM, Path]) -> None:
    _, path = toy_lm
    model = ToyModel(5)
    enc, lens = toy_batch(2, 3, 5)
    base = {"name": "joint_ctc_attention", "beam_size": 4, "max_len_ratio": 2.0}
    plain = build("search", base, model=model)(enc, lens)
    zero = build("search", {**base, "lm": str(path), "lm_weight": 0.0}, model=model)(enc, lens)
    assert [h[0].tokens for h in plain] == [h[0].tokens for h in zero]
    fused = build("search", {**base, "lm": str(path), "lm_weight": 2.0}, model=model)(enc, lens)
    assert all("lm" in h[0].parts for h in fused)


def test_transducer_beam_fusion_is_exact(toy_lm: tuple[FusionLM, Path]) -> None:
    lm, path = toy_lm
    model = ToyModel(7)
    enc, lens = toy_batch(1, 4, 7)
    w = 0.6
    nbest = build("search", {"name": "transducer_beam", "beam_size": 40, "lm": str(path), "lm_weight": w}, model=model)(
        enc, lens
    )[0]
    exact = transducer_sequence_logprobs(model, enc[0])
    fused = sorted(((v + w * lm_logprob(lm, [*y, EOS_ID]), list(y)) for y, v in exact.items()), reverse=True)
    assert nbest[0].tokens == fused[0][1]
    assert nbest[0].score == pytest.approx(fused[0][0], abs=1e-4)


def test_lm_vocab_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    path = save_lm(LSTMLM(vocab_size=V + 3, hidden=8, embed_dim=4, layers=1), tmp_path / "lm.pt")
    search = build("search", {"name": "ctc_prefix_beam", "lm": str(path), "lm_weight": 0.5}, model=ToyModel())
    with pytest.raises(ConfigError, match=f"LM has {V + 3} tokens but the model outputs {V}"):
        search(*toy_batch(1, 3))


def test_missing_lm_file(tmp_path: Path) -> None:
    search = build("search", {"name": "beam", "lm": str(tmp_path / "nope.pt"), "lm_weight": 0.5}, model=ToyModel())
    with pytest.raises(ConfigError, match="LM file not found"):
        search(*toy_batch(1, 3))


def test_lm_train_cli_learns_the_sentences(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kospeech.text import train_tokenizer

    lang = tmp_path / "lang"
    tok = train_tokenizer("character", SHORT_SENTENCES, lang)
    text = tmp_path / "text"
    text.write_text("".join(f"utt{i:03d} {SHORT_SENTENCES[i % 8]}\n" for i in range(64)), encoding="utf-8")
    rc = main(
        [
            "lm",
            "train",
            "--text",
            str(text),
            "--lang",
            str(lang),
            "--out",
            str(tmp_path / "lm"),
            "--epochs",
            "12",
            "--hidden",
            "64",
            "--layers",
            "1",
            "--embed-dim",
            "32",
            "--lr",
            "0.01",
            "--batch-tokens",
            "400",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "valid ppl" in out
    ckpt = torch.load(tmp_path / "lm" / "lm.pt", weights_only=False)
    assert ckpt["vocab_size"] == tok.vocab_size and ckpt["config"]["hidden"] == 64
    # eight memorised sentences: far below the uniform perplexity of the vocabulary
    assert ckpt["valid_ppl"] < tok.vocab_size / 4
    lm = load_lm(tmp_path / "lm" / "lm.pt")
    seen = lm_logprob(lm, [*tok.encode(SHORT_SENTENCES[0]), EOS_ID])
    scrambled = lm_logprob(lm, [*tok.encode(SHORT_SENTENCES[0][::-1]), EOS_ID])
    assert seen > scrambled + 5
    rc = main(
        [
            "lm",
            "ppl",
            "--lm",
            str(tmp_path / "lm" / "lm.pt"),
            "--text",
            str(text),
            "--lang",
            str(lang),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    assert math.isfinite(float(capsys.readouterr().out.split('"ppl": ')[1].rstrip("}\n")))


def test_read_transcripts_plain_and_kaldi(tmp_path: Path) -> None:
    from kospeech.lm.text import read_transcripts

    (tmp_path / "a").write_text("u1 안녕 하세요\nu2 밥\n", encoding="utf-8")
    (tmp_path / "b").write_text("안녕 하세요\n밥 먹었어요\n", encoding="utf-8")
    assert read_transcripts(tmp_path / "a") == ["안녕 하세요", "밥"]
    assert read_transcripts(tmp_path / "b") == ["안녕 하세요", "밥 먹었어요"]
    # KsponSpeech notation, read into the form the acoustic model's transcripts were prepared in
    (tmp_path / "c").write_text("(3시)/(세 시)에 봐\n아/ 그래\nb/\n", encoding="utf-8")
    assert read_transcripts(tmp_path / "c", transcript="phonetic") == ["세 시에 봐", "아 그래"]
    assert read_transcripts(tmp_path / "c", transcript="spelling") == ["3시에 봐", "아 그래"]
    # CP949, as `kospeech data prep` accepts a KsponSpeech transcript: the LM reads it the same way
    (tmp_path / "d").write_bytes("u1 안녕 하세요\nu2 밥\n".encode("cp949"))
    assert read_transcripts(tmp_path / "d") == ["안녕 하세요", "밥"]


def test_lm_is_a_registry_kind(capsys: pytest.CaptureFixture[str]) -> None:
    from kospeech.registry import KINDS, registry

    assert "lm" in KINDS
    assert {"lstm", "transformer", "ngram"} <= set(registry("lm").names())
    assert main(["registry", "list", "lm"]) == 0
    out = capsys.readouterr().out
    assert "num_heads" in out and "ff_dim" in out and "order" in out


def test_lstm_file_of_the_old_format_still_loads(tmp_path: Path) -> None:
    lm = LSTMLM(vocab_size=V, embed_dim=4, hidden=8, layers=1)
    old = {"config": {"vocab_size": V, "embed_dim": 4, "hidden": 8, "layers": 1, "dropout": 0.1},
           "model": lm.state_dict(), "vocab_size": V}
    torch.save(old, tmp_path / "lm.pt")
    back = load_lm(tmp_path / "lm.pt")
    assert isinstance(back, LSTMLM) and torch.equal(back.proj.weight, lm.proj.weight)


def test_lm_files_carry_the_metadata_block(toy_lm: tuple[FusionLM, Path]) -> None:
    import yaml

    _, path = toy_lm
    if path.suffix == ".pt":
        meta = torch.load(path, weights_only=True)["metadata"]
    else:
        meta = yaml.safe_load(path.with_name("lm.yaml").read_text(encoding="utf-8")).get("metadata")
        if meta is None:  # the toy n-gram of this file is written by hand; the CLI's has it
            pytest.skip("hand-written lm.yaml")
    assert meta["kind"] == "lm" and meta["format_version"] >= 1


def test_lm_train_cli_transformer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kospeech.text import train_tokenizer

    lang = tmp_path / "lang"
    tok = train_tokenizer("character", SHORT_SENTENCES, lang)
    text = tmp_path / "text"
    text.write_text("".join(f"utt{i:03d} {SHORT_SENTENCES[i % 8]}\n" for i in range(64)), encoding="utf-8")
    args = ["lm", "train", "--type", "transformer", "--text", str(text), "--lang", str(lang), "--out",
            str(tmp_path / "lm"), "--epochs", "15", "--layers", "2", "--d-model", "32", "--num-heads", "4",
            "--ff-dim", "64", "--embed-dim", "16", "--dropout", "0.0", "--lr", "0.003", "--warmup-steps", "5",
            "--batch-tokens", "400", "--device", "cpu"]
    assert main(args) == 0
    assert "valid ppl" in capsys.readouterr().out
    ckpt = torch.load(tmp_path / "lm" / "lm.pt", weights_only=True)
    assert ckpt["config"] == {"name": "transformer", "embed_dim": 16, "d_model": 32, "num_heads": 4, "ff_dim": 64,
                              "num_layers": 2, "dropout": 0.0, "pos_enc": "sinusoidal"}
    assert ckpt["valid_ppl"] < tok.vocab_size / 4
    lm = load_lm(tmp_path / "lm")
    assert isinstance(lm, TransformerLM)
    seen = lm_logprob(lm, [*tok.encode(SHORT_SENTENCES[0]), EOS_ID])
    scrambled = lm_logprob(lm, [*tok.encode(SHORT_SENTENCES[0][::-1]), EOS_ID])
    assert seen > scrambled + 5


def test_transformer_cache_grows_and_rows_keep_their_own_history() -> None:
    """Rows stepped apart (as the prefix beams do) and merged again give each row the
    distribution of a full forward over its own history."""
    from kospeech.search import where_state

    torch.manual_seed(0)
    lm = TransformerLM(vocab_size=V, embed_dim=8, d_model=16, num_heads=2, ff_dim=32, num_layers=2, dropout=0.0).eval()
    hist = [[SOS_ID], [SOS_ID]]
    logp, state = lm.start(2, "cpu")
    for t, (a, b) in enumerate([(5, 6), (6, 6), (6, 5), (5, 5)]):
        moved = torch.tensor([True, t % 2 == 0])  # row 1 reads only every other token
        new_logp, new_state = lm.step(torch.tensor([a, b]), state)
        logp = torch.where(moved[:, None], new_logp, logp)
        state = where_state(moved, new_state, state)
        hist[0].append(a)
        if moved[1]:
            hist[1].append(b)
    assert state[1].size(3) >= 5 and state[0].tolist() == [5, 3]
    for row, h in enumerate(hist):
        logits, _ = lm(torch.tensor([h]))
        assert torch.allclose(logp[row], logits[0, -1].log_softmax(-1), atol=1e-5)
