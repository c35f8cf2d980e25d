"""Fault suite, files the toolkit opens: feature-dump shards that are cut short are redone and
never read short; an LM file is data, never code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kospeech.audio import write_audio
from kospeech.cli import main
from kospeech.data.datadir import write_data_dir
from kospeech.data.dump import FeatureDump, dump_features
from kospeech.errors import ConfigError, DataError

FBANK = {"name": "fbank", "n_mels": 20}


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Eight short tones, in four shards of two (nj=4)."""
    rng = np.random.default_rng(0)
    wav, text, spk = {}, {}, {}
    for i in range(8):
        utt = f"u{i}"
        path = tmp_path / "audio" / f"{utt}.wav"
        t = np.arange(8000 + 800 * i) / 16000
        write_audio(path, (0.2 * np.sin(2 * np.pi * (200 + 30 * i) * t) + 0.01 * rng.standard_normal(t.size)))
        wav[utt], text[utt], spk[utt] = str(path), "가나다", "s"
    return write_data_dir(tmp_path / "data", wav=wav, text=text, utt2spk=spk, corpus="t", transcript="spelling")


def _shard(out: Path, k: int) -> Path:
    return out / "shards" / f"feats.{k:04d}.f16"


def test_a_truncated_shard_is_redone_by_a_rerun(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    dump_features(data_dir, out, FBANK, nj=4, shard_size=2)
    good = {u: FeatureDump(out)[u] for u in FeatureDump(out).keys()}
    shard = _shard(out, 1)
    full = shard.read_bytes()
    shard.write_bytes(full[: len(full) // 2])  # cut short after the dump "succeeded"
    with pytest.raises(DataError, match=r"feats.0001.f16 has \d+ bytes but the index needs \d+; the dump is damaged"):
        FeatureDump(out)["u2"]
    stats = dump_features(data_dir, out, FBANK, nj=1, shard_size=2)  # the rerun the error advises
    assert stats.shards_reused == 3  # only the damaged shard was extracted again
    assert shard.read_bytes() == full
    again = FeatureDump(out)
    assert sorted(again.keys()) == sorted(good) and all(np.array_equal(again[u], good[u]) for u in good)


def test_a_missing_shard_is_redone(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    dump_features(data_dir, out, FBANK, nj=1, shard_size=2)
    full = _shard(out, 2).read_bytes()
    _shard(out, 2).unlink()
    stats = dump_features(data_dir, out, FBANK, nj=1, shard_size=2)
    assert stats.shards_reused == 3 and _shard(out, 2).read_bytes() == full


def test_cmvn_refuses_a_truncated_shard_even_cut_to_an_odd_size(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dump"
    dump_features(data_dir, out, FBANK, nj=1, shard_size=2)
    shard = _shard(out, 0)
    shard.write_bytes(shard.read_bytes()[:-41])  # odd byte count: not even whole float16 values
    assert main(["features", "cmvn", "--dump", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "feats.0000.f16 has" in err and "rerun" in err
    assert not (out / "cmvn.npz").exists()


class _Payload:
    """What a malicious LM file carries: unpickling it runs code (here, writes a marker file)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple:
        return (exec, (f"open({self.marker!r}, 'w').write('ran')",))


def test_a_crafted_lm_pickle_runs_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kospeech.lm.loading import load_lm
    from kospeech.lm.model import LSTMLM, save_lm
    from kospeech.search import load_fusion_lm

    marker = tmp_path / "pwned"
    lm_path = tmp_path / "lm.pt"
    lm = LSTMLM(vocab_size=10, embed_dim=4, hidden=4, layers=1)
    torch.save({"config": lm.hparams, "model": lm.state_dict(), "vocab_size": 10, "x": _Payload(marker)}, lm_path)
    with pytest.raises(ConfigError, match="cannot be read as an LM .*never run code"):
        load_lm(lm_path)
    with pytest.raises(ConfigError):
        load_fusion_lm(str(lm_path), 0.5, "cpu")  # the path `--search "... lm=FILE"` takes
    code = main(["lm", "ppl", "--lm", str(lm_path), "--text", str(tmp_path / "t"), "--lang", str(tmp_path)])
    assert code == 1 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not marker.exists()  # nothing ran
    save_lm(lm, tmp_path / "good.pt", valid_ppl=3.5)  # what `kospeech lm train` writes still loads
    assert load_lm(tmp_path / "good.pt").vocab_size == 10


def test_no_loader_unpickles_code() -> None:
    """Every torch.load in the package asks for weights_only=True."""
    root = Path(__file__).resolve().parents[1] / "kospeech"
    for path in root.rglob("*.py"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if "torch.load(" in line and not line.lstrip().startswith(("#", '"', "`")):
                assert "weights_only=True" in line, f"{path}:{n}: {line.strip()}"
            assert "allow_pickle=True" not in line, f"{path}:{n}"
