"""Ensembles: several checkpoints decoded as one model (kospeech/inference/ensemble.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from kospeech.cli import main
from kospeech.errors import ConfigError
from tests import test_decode_cli
from tests.test_decode_cli import MODEL, _save_checkpoint, _trn

setup = test_decode_cli.setup  # the module fixture: a data dir, its dump, a CTC + attention checkpoint


@pytest.fixture(scope="module")
def other(setup: dict) -> Path:
    """A second member with other weights (another seed) and the same tokenizer."""
    from kospeech.data.cmvn import load_cmvn

    torch.manual_seed(1)
    path = setup["root"] / "other.pt"
    cmvn = load_cmvn(setup["dump"] / "cmvn.npz")
    ckpt = torch.load(_save_checkpoint(path, MODEL, setup["root"] / "lang", cmvn), weights_only=False)
    torch.manual_seed(5)
    with torch.no_grad():
        for v in ckpt["model"].values():
            if v.is_floating_point():
                v.add_(0.05 * torch.randn_like(v))
    torch.save(ckpt, path)
    return path


def _log_probs(asr, setup: dict) -> tuple[torch.Tensor, torch.Tensor]:
    from kospeech.data.dump import FeatureDump

    dump = FeatureDump(setup["dump"])
    feats, lens = asr.inputs.from_features([dump[u] for u in ("utt00", "utt03")])
    with torch.no_grad():
        enc, enc_lens = asr.model.encode(feats, lens)
        return asr.model.ctc_log_probs(enc), enc_lens


@pytest.mark.parametrize("search", [["ctc_prefix_beam", "beam_size=3"], ["beam", "beam_size=2", "max_len_ratio=0.5"],
                                    ["joint_ctc_attention", "beam_size=2", "max_len_ratio=0.5"]])
def test_one_checkpoint_twice_decodes_as_the_checkpoint_alone(setup: dict, tmp_path: Path, search: list) -> None:
    single, double = tmp_path / "single", tmp_path / "double"
    common = ["--data", str(setup["dump"]), "--device", "cpu", "--batch-size", "4", "--search", *search]
    assert main(["decode", "--checkpoint", str(setup["ckpt"]), "--out", str(single), *common]) == 0
    assert main(["decode", "--checkpoint", str(setup["ckpt"]), str(setup["ckpt"]), "--out", str(double), *common]) == 0
    hyps = _trn(double / "hyp.trn")
    assert hyps == _trn(single / "hyp.trn") and sum(bool(h) for h in hyps.values()) >= 6
    info = yaml.safe_load((double / "decode.yaml").read_text(encoding="utf-8"))
    assert info["model"] == "ensemble" and info["checkpoint"] == [str(setup["ckpt"])] * 2


def test_averages_log_probs_per_frame_with_weights(setup: dict, other: Path) -> None:
    import kospeech

    a, b = kospeech.load(setup["ckpt"], device="cpu"), kospeech.load(other, device="cpu")
    lp_a, len_a = _log_probs(a, setup)
    lp_b, _ = _log_probs(b, setup)
    assert (lp_a - lp_b).abs().max() > 0.05  # really two different models
    twice = kospeech.load([setup["ckpt"], setup["ckpt"]], device="cpu")
    lp, lens = _log_probs(twice, setup)
    assert torch.equal(lens, len_a)
    torch.testing.assert_close(lp, lp_a, atol=1e-5, rtol=0)
    mixed = kospeech.load([setup["ckpt"], other], device="cpu", weights=[3, 1])
    lp, _ = _log_probs(mixed, setup)
    expected = torch.log_softmax(0.75 * lp_a + 0.25 * lp_b, dim=-1)
    torch.testing.assert_close(lp, expected, atol=1e-5, rtol=0)
    # the attention decoders too: one step of the ensemble is the weighted mean of the members' steps
    from kospeech.data.dump import FeatureDump

    feats, flens = mixed.inputs.from_features([FeatureDump(setup["dump"])["utt01"]])
    tokens = torch.tensor([2])
    with torch.no_grad():
        enc, elens = mixed.model.encode(feats, flens)
        step, _ = mixed.model.decoder_step(tokens, mixed.model.init_decoder_state(enc, elens), enc, elens)
        members = []
        for asr in (a, b):
            e, el = asr.model.encode(asr.inputs.from_features([FeatureDump(setup["dump"])["utt01"]])[0], flens)
            members.append(asr.model.decoder_step(tokens, asr.model.init_decoder_state(e, el), e, el)[0])
    torch.testing.assert_close(step, torch.log_softmax(0.75 * members[0] + 0.25 * members[1], -1), atol=1e-5, rtol=0)
    # and the weighted ensemble transcribes audio through the same API
    result = mixed.transcribe(setup["audio"]["utt00"], timestamps=False)
    assert result.ok and isinstance(result.text, str)


def test_refuses_mismatched_tokenizers_and_bad_weights(setup: dict, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import kospeech
    from kospeech.data.cmvn import load_cmvn
    from kospeech.text import train_tokenizer

    lang = tmp_path / "jamo"
    train_tokenizer("jamo", test_decode_cli.SHORT_SENTENCES, lang)
    jamo = _save_checkpoint(tmp_path / "jamo.pt", MODEL, lang, load_cmvn(setup["dump"] / "cmvn.npz"))
    with pytest.raises(ConfigError, match=rf"{setup['ckpt']} and {jamo} have different tokenizers \(.*\); the "
                                          "members of an ensemble must share one tokenizer"):
        kospeech.load([setup["ckpt"], jamo], device="cpu")
    with pytest.raises(ConfigError, match="one positive weight per checkpoint"):
        kospeech.load([setup["ckpt"], setup["ckpt"]], device="cpu", weights=[1.0])
    with pytest.raises(ConfigError, match="is a transducer"):
        kospeech.load([setup["rnnt"], setup["rnnt"]], device="cpu")
    rc = main(["decode", "--checkpoint", str(setup["ckpt"]), str(jamo), "--data", str(setup["dump"]), "--out",
               str(tmp_path / "o"), "--device", "cpu"])
    assert rc == 1 and "different tokenizers" in capsys.readouterr().err


def test_ctc_members_of_different_frame_rates_are_refused(setup: dict, tmp_path: Path) -> None:
    import kospeech
    from kospeech.data.cmvn import load_cmvn

    ctc = {"name": "ctc", "encoder": {"name": "separable_conv", "dim": 16, "num_blocks": 1, "extractor": None}}
    cmvn = load_cmvn(setup["dump"] / "cmvn.npz")
    full_rate = _save_checkpoint(tmp_path / "ctc.pt", ctc, setup["root"] / "lang", cmvn)
    with pytest.raises(ConfigError, match="CTC members must encode at one frame rate.*400 input frames"):
        kospeech.load([setup["ckpt"], full_rate], device="cpu")



def test_weighted_ensemble_with_a_trained_member_transcribes_the_reference_texts(ctc_checkpoint: dict,
                                                                                  tmp_path: Path) -> None:
    """The weighted ensemble's transcribe with a trained member (tests/fixtures/deploy.py, which
    gives its eight texts back) and an untrained one of the same architecture, tokenizer and CMVN
    (alone it transcribes nothing right): weighted 3:1, the ensemble gives the reference texts."""
    import kospeech
    from kospeech.audio import write_audio
    from kospeech.registry import build
    from kospeech.train.checkpoint import write_checkpoint

    ckpt = torch.load(ctc_checkpoint["path"], map_location="cpu", weights_only=False)
    torch.manual_seed(1)
    ckpt["model"] = build("model", ckpt["config"]["model"], path="model", **ckpt["model_args"]).state_dict()
    untrained = write_checkpoint(ckpt, tmp_path / "untrained.pt")  # sealed again: new weights, new checksum
    audio = []
    for i, wave in enumerate(ctc_checkpoint["waves"]):
        audio.append(str(tmp_path / f"u{i}.wav"))
        write_audio(audio[-1], wave, 16000)
    texts = ctc_checkpoint["texts"]
    alone = [r.text for r in kospeech.load(untrained, device="cpu").transcribe(audio, timestamps=False)]
    assert not any(a == t for a, t in zip(alone, texts))
    asr = kospeech.load([ctc_checkpoint["path"], untrained], device="cpu", weights=[3, 1])
    assert [r.text for r in asr.transcribe(audio, timestamps=False)] == texts
