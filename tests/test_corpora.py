"""Corpora: synthetic KsponSpeech/Zeroth layouts -> prep -> data dirs, and every documented bad input."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from kospeech.audio import read_audio
from kospeech.cli import main
from kospeech.data.corpora.ksponspeech import KsponSpeech
from kospeech.data.corpora.synthetic import synthesize
from kospeech.data.corpora.synthetic_plan import OTHER_VARIANTS, TRAIN_VARIANTS, split_counts
from kospeech.data.corpora.synthetic_render import make_noise, mix_at_snr
from kospeech.data.corpora.zeroth import Zeroth
from kospeech.data.datadir import read_data_dir, validate_data_dir
from kospeech.errors import DataError
from kospeech.files import read_scp
from kospeech.registry import registry

KSPON_SPLITS = ("train", "dev", "eval_clean", "eval_other")


def _trn(root: Path, split: str) -> dict[str, str]:
    """utt id -> raw transcript of a .trn list."""
    out = {}
    for line in (root / "KsponSpeech_scripts" / f"{split}.trn").read_text(encoding="utf-8").splitlines():
        rel, _, raw = line.partition(" :: ")
        out[Path(rel).stem] = raw
    return out


def test_corpora_are_registered() -> None:
    assert {"ksponspeech", "zeroth", "synthetic"} <= set(registry("corpus").names())


def test_split_counts_cover_the_total() -> None:
    counts = split_counts("ksponspeech", 1000)
    assert sum(counts.values()) == 1000 and counts["train"] == 860 and counts["eval_other"] == 50
    assert split_counts("zeroth", 20) == {"train": 18, "test": 2}


def test_kspon_layout_and_encodings(kspon_corpus: Path) -> None:
    meta = yaml.safe_load((kspon_corpus / "synth.yaml").read_text(encoding="utf-8"))
    assert meta["splits"] == {"train": 34, "dev": 2, "eval_clean": 2, "eval_other": 2}
    pcms = sorted(kspon_corpus.rglob("*.pcm"))
    assert len(pcms) == 40
    assert all(p.parent.parent.name in {f"KsponSpeech_0{i}" for i in range(1, 6)} | {"KsponSpeech_eval"} for p in pcms)
    trn = {s: _trn(kspon_corpus, s) for s in KSPON_SPLITS}
    for pcm in pcms:
        raw = pcm.with_suffix(".txt").read_bytes()
        text = raw.decode("cp949").strip()
        with pytest.raises(UnicodeDecodeError):
            raw.decode("utf-8")  # really CP949, not UTF-8
        split = pcm.parent.name if pcm.parent.parent.name == "KsponSpeech_eval" else None
        listed = {k: v for s in KSPON_SPLITS for k, v in trn[s].items()}
        assert listed[pcm.stem] == text
        if split:
            assert pcm.stem in trn[split]
        size = pcm.stat().st_size
        assert size % 2 == 0
        wave = read_audio(pcm)
        assert len(wave) == size // 2
        assert 0.5 < len(wave) / 16000 < 15
        assert 0.25 < np.max(np.abs(wave)) <= 0.91  # peak level drawn from 0.3-0.9
    # the eval sets never share a sentence with training, and eval_other never shares a voice
    train_sentences = set(trn["train"].values()) | set(trn["dev"].values())
    assert not train_sentences & (set(trn["eval_clean"].values()) | set(trn["eval_other"].values()))
    made_up = {p.name: p.read_text(encoding="utf-8") for p in (kspon_corpus / "made_up_voices").glob("*")}
    assert meta["made_up_voice_files"]["count"] == len(made_up)
    assert all(text.startswith(f"language variant\nname {name}\n") for name, text in made_up.items())
    assert set(meta["voices"]["train"]) <= set(TRAIN_VARIANTS) | set(made_up)
    assert set(meta["voices"]["eval_other"]) <= set(OTHER_VARIANTS)
    assert not set(meta["voices"]["eval_other"]) & set(TRAIN_VARIANTS)
    # voices.tsv names the voice and noise of every utterance, matching synth.yaml
    with (kspon_corpus / "voices.tsv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert sorted(r["utt_id"] for r in rows) == sorted(p.stem for p in pcms)
    for split in KSPON_SPLITS:
        assert {r["variant"] for r in rows if r["split"] == split} == set(meta["voices"][split])
        assert {r["utt_id"] for r in rows if r["split"] == split} == set(trn[split])
    other = [r for r in rows if r["split"] == "eval_other"]
    assert all(r["noise"] and 0.0 <= float(r["snr_db"]) <= 25.0 for r in other)
    assert all(not r["noise"] and not r["snr_db"] for r in rows if r["split"] == "eval_clean")
    # eval_clean has no noise: its leading silence is digital zero; eval_other's is noise
    for pcm in sorted((kspon_corpus / "KsponSpeech_eval" / "eval_clean").glob("*.pcm")):
        assert not np.any(np.fromfile(pcm, dtype="<i2")[:1000])
    for pcm in sorted((kspon_corpus / "KsponSpeech_eval" / "eval_other").glob("*.pcm")):
        assert np.count_nonzero(np.fromfile(pcm, dtype="<i2")[:1000]) > 500


def _pcm_of(value: str, directory: Path) -> tuple[str, str]:
    """(header, pcm) of a KsponSpeech wav.scp pipe ``cat DIR/pcm_header.wav x.pcm |``."""
    import shlex

    assert value.endswith(" |"), value
    cat, header, pcm = shlex.split(value[:-1])
    assert cat == "cat" and header == str((directory / "pcm_header.wav").resolve()) and pcm.endswith(".pcm"), value
    return header, pcm


def test_kspon_prep_data_dirs(kspon_corpus: Path, kspon_data: Path) -> None:
    from kospeech.text.normalize import normalize_kspon

    counts = {s: len(read_data_dir(kspon_data / s)) for s in KSPON_SPLITS}
    assert counts == {"train": 34, "dev": 2, "eval_clean": 2, "eval_other": 2}
    for split in KSPON_SPLITS:
        d = read_data_dir(kspon_data / split)
        assert d.meta == {"corpus": "ksponspeech", "transcript": "phonetic", "sample_rate": 16000,
                          "normalization": "standard"}
        assert validate_data_dir(kspon_data / split).ok
        assert (kspon_data / split / "skipped.txt").read_text() == ""
        raw = _trn(kspon_corpus, split)
        for utt, text in d.text.items():
            assert text == normalize_kspon(raw[utt], "phonetic")
            assert not set(text) & set("()/+*"), text
            # wav.scp reads each .pcm as WAV through `cat pcm_header.wav x.pcm |` (kaldi_io, tests/test_interop.py)
            header, pcm = _pcm_of(d.wav[utt], kspon_data / split)
            assert d.utt2dur[utt] == pytest.approx(Path(pcm).stat().st_size / 32000, abs=1e-3)
            assert Path(pcm).is_absolute() and Path(header).is_absolute()
        if split.startswith("eval"):
            assert all(spk == utt for utt, spk in d.utt2spk.items())  # one speaker per eval utterance
        else:
            assert all(spk == Path(_pcm_of(d.wav[utt], kspon_data / split)[1]).parent.name
                       for utt, spk in d.utt2spk.items())
    train_spk = set(read_data_dir(kspon_data / "train").utt2spk.values())
    assert not train_spk & set(read_data_dir(kspon_data / "dev").utt2spk.values())


def test_kspon_spelling_form_through_cli(kspon_corpus: Path, tmp_path: Path) -> None:
    from kospeech.text.normalize import normalize_kspon

    out = tmp_path / "data"
    cmd = ["data", "prep", "--corpus", "ksponspeech", "--root", str(kspon_corpus), "--out", str(out)]
    assert main([*cmd, "--transcript", "spelling", "--nj", "2"]) == 0
    d = read_data_dir(out / "train")
    assert d.meta["transcript"] == "spelling"
    raw = _trn(kspon_corpus, "train")
    assert all(d.text[u] == normalize_kspon(raw[u], "spelling") for u in d.text)


def _copy(corpus: Path, tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    shutil.copytree(corpus, root)
    return root


def test_kspon_bad_inputs_are_counted_and_listed(kspon_corpus: Path, tmp_path: Path) -> None:
    root = _copy(kspon_corpus, tmp_path)
    trn_path = root / "KsponSpeech_scripts" / "train.trn"
    lines = trn_path.read_text(encoding="utf-8").splitlines()
    rel = [line.partition(" :: ")[0] for line in lines]
    truncated, empty, noise_only = root / rel[0], root / rel[1], Path(rel[2]).stem
    truncated.write_bytes(truncated.read_bytes()[:-1])
    empty.write_bytes(b"")
    lines[2] = f"{rel[2]} :: b/ n/ l/"
    lines.append("KsponSpeech_01/KsponSpeech_0001/KsponSpeech_099999.pcm :: 없는 파일이에요")
    lines.append("this line has no separator")
    trn_path.write_bytes(("\n".join(lines) + "\n").encode("cp949"))  # a CP949 .trn is read too
    reports = KsponSpeech(nj=1).prepare(root, tmp_path / "data")
    train = reports["train"]
    assert train.num_utts == 34 - 3
    assert dict(train.skipped) == {
        "truncated pcm (odd byte count)": 1,
        "empty audio file": 1,
        "empty transcript after normalisation": 1,
        "audio file missing": 1,
        "malformed .trn line (expected 'path.pcm :: transcript')": 1,
    }
    skipped = (tmp_path / "data" / "train" / "skipped.txt").read_text(encoding="utf-8")
    assert f"{truncated.stem}\ttruncated pcm (odd byte count)" in skipped
    assert f"{empty.stem}\tempty audio file" in skipped
    assert f"{noise_only}\tempty transcript after normalisation\tb/ n/ l/" in skipped
    assert "KsponSpeech_099999\taudio file missing\ttrain.trn:35:" in skipped
    assert "train.trn:36\tmalformed .trn line" in skipped
    assert reports["dev"].num_skipped == 0 and reports["eval_other"].num_utts == 2
    assert validate_data_dir(tmp_path / "data" / "train").ok


def test_kspon_walk_mode_mixed_encodings(kspon_corpus: Path, kspon_data: Path, tmp_path: Path) -> None:
    root = _copy(kspon_corpus, tmp_path)
    shutil.rmtree(root / "KsponSpeech_scripts")
    txts = sorted(p.with_suffix(".txt") for p in root.rglob("*.pcm"))  # the transcripts (not lm_text.txt)
    for txt in txts[::2]:  # half the transcripts re-encoded as UTF-8, as in re-packed copies
        txt.write_text(txt.read_bytes().decode("cp949"), encoding="utf-8")
    reports = KsponSpeech().prepare(root, tmp_path / "data")
    assert {s: r.num_utts for s, r in reports.items()} == {"train": 34, "dev": 2, "eval_clean": 2, "eval_other": 2}
    for split in KSPON_SPLITS:  # the same text as the .trn route gave
        assert read_scp(tmp_path / "data" / split / "text") == read_scp(kspon_data / split / "text")
    bad = txts[3]
    bad.write_bytes(b"\xff\xfe\xfa\xff broken")
    reports = KsponSpeech().prepare(root, tmp_path / "data2")  # one bad transcript costs one utterance
    assert reports["train"].skipped == {"transcript neither UTF-8 nor CP949": 1}
    skipped = (tmp_path / "data2" / "train" / "skipped.txt").read_text(encoding="utf-8")
    assert f"{bad.name}:1: neither UTF-8 nor CP949" in skipped


def test_kspon_missing_root_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is not a folder"):
        KsponSpeech().prepare(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="nothing to prepare"):
        KsponSpeech().prepare(tmp_path / "empty", tmp_path / "out")


def test_zeroth_layout_and_prep(zeroth_corpus: Path, zeroth_data: Path) -> None:
    flacs = sorted(zeroth_corpus.rglob("*.flac"))
    assert len(flacs) == 20
    for flac in flacs:
        info = sf.info(flac)
        assert info.format == "FLAC" and info.samplerate == 16000 and info.channels == 1
        reader, script, _ = flac.stem.split("_")
        assert flac.parent.name == reader and flac.parent.parent.name == script
        assert flac.parent.parent.parent.name in ("train_data_01", "test_data_01")
    assert (zeroth_corpus / "AUDIO_INFO").read_text().startswith("SPEAKERID|NAME|SEX|SCRIPTID|DATASET\n")
    train, test = read_data_dir(zeroth_data / "train"), read_data_dir(zeroth_data / "test")
    assert (len(train), len(test)) == (18, 2)
    assert test.meta["corpus"] == "zeroth"
    trans = {}
    for t in zeroth_corpus.rglob("*.trans.txt"):
        trans.update(read_scp(t))
    for d in (train, test):
        for utt, text in d.text.items():
            assert text == trans[utt]
            assert d.utt2spk[utt] == utt.split("_")[0]
            assert d.utt2dur[utt] == pytest.approx(sf.info(d.wav[utt]).duration, abs=1e-3)
    assert not set(train.text.values()) & set(test.text.values())


def test_zeroth_bad_inputs(zeroth_corpus: Path, tmp_path: Path) -> None:
    root = _copy(zeroth_corpus, tmp_path)
    flacs = sorted((root / "train_data_01").rglob("*.flac"))
    flacs[0].unlink()
    flacs[1].write_bytes(b"not a flac file at all")
    trans = next((root / "train_data_01").rglob("*.trans.txt"))
    trans.write_text(trans.read_text(encoding="utf-8") + "100_001_0099\n", encoding="utf-8")
    reports = Zeroth().prepare(root, tmp_path / "data")
    assert reports["train"].num_utts == 16
    assert dict(reports["train"].skipped) == {"audio file missing": 1, "unreadable audio": 1, "empty transcript": 1}
    skipped = (tmp_path / "data" / "train" / "skipped.txt").read_text(encoding="utf-8")
    assert f"{flacs[0].stem}\taudio file missing" in skipped and f"{flacs[1].stem}\tunreadable audio" in skipped


def test_synthesis_is_deterministic_and_resumable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = synthesize("ksponspeech", tmp_path / "a", hours=0, seed=11, max_utts=6, nj=1)
    b = synthesize("ksponspeech", tmp_path / "b", hours=0, seed=11, max_utts=6, nj=2)
    assert a.num_utts == b.num_utts == 6
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        if rel.name != "synth.yaml":
            assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    again = synthesize("ksponspeech", tmp_path / "a", hours=0, seed=11, max_utts=6)
    assert again.skipped_work
    with pytest.raises(DataError, match="holds a synthetic corpus made with"):
        synthesize("ksponspeech", tmp_path / "a", hours=0, seed=12, max_utts=6)
    cmd = ["data", "synth", "--layout", "zeroth", "--out", str(tmp_path / "z"), "--hours", "0", "--max-utts", "4"]
    assert main(cmd) == 0
    assert "4 utterances" in capsys.readouterr().out
    assert main(cmd) == 0
    assert "already complete" in capsys.readouterr().out
    assert len(list((tmp_path / "z").rglob("*.flac"))) == 4


def test_noise_mixing_hits_the_snr() -> None:
    rng = np.random.default_rng(0)
    speech = np.sin(np.linspace(0, 2000, 16000))
    for kind in ("white", "pink", "babble"):
        noise = make_noise(kind, 16000, rng, [rng.standard_normal(5000), rng.standard_normal(7000)])
        mixed = mix_at_snr(speech, noise, 10.0)
        snr = 10 * np.log10(np.mean(speech**2) / np.mean((mixed - speech) ** 2))
        assert snr == pytest.approx(10.0, abs=1e-6)
    pink = np.abs(np.fft.rfft(make_noise("pink", 1 << 16, rng))) ** 2
    low, high = pink[100:200].mean(), pink[10000:20000].mean()
    assert 30 < low / high < 300  # 1/f: about 100x between bands 100x apart
    with pytest.raises(ValueError, match="unknown noise type"):
        make_noise("brown", 10, rng)


def test_kspon_scripts_folder_espnet_layout(kspon_corpus: Path, kspon_data: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """ESPnet's recipe keeps the lists in scripts/: the same data dirs, and the log names the lists found."""
    root = _copy(kspon_corpus, tmp_path)
    (root / "KsponSpeech_scripts").rename(root / "scripts")
    (root / "scripts" / "dev.trn").unlink()
    with caplog.at_level("INFO", logger="kospeech.data.corpora.ksponspeech"):
        reports = KsponSpeech().prepare(root, tmp_path / "data")
    assert set(reports) == {"train", "eval_clean", "eval_other"}
    for split in reports:
        assert read_scp(tmp_path / "data" / split / "text") == read_scp(kspon_data / split / "text")
    assert (f"lists found in {root / 'scripts'}: train.trn, eval_clean.trn, eval_other.trn (missing: dev.trn)"
            in caplog.text)


def test_kspon_walk_mode_names_the_missing_eval_trn(kspon_corpus: Path, tmp_path: Path) -> None:
    """As released, the eval folders have no .txt: the error says which .trn to bring, and where."""
    root = _copy(kspon_corpus, tmp_path)
    shutil.rmtree(root / "KsponSpeech_scripts")
    for txt in (root / "KsponSpeech_eval" / "eval_other").glob("*.txt"):
        txt.unlink()
    with pytest.raises(DataError, match=r"eval_other has 2 \.pcm files and no \.txt transcripts.*only in "
                                        r"eval_other\.trn: put eval_other\.trn into .*KsponSpeech_scripts"):
        KsponSpeech().prepare(root, tmp_path / "data")


def test_kspon_kospeech_normalization_through_cli(kspon_corpus: Path, tmp_path: Path) -> None:
    from kospeech.text.normalize import normalize_kospeech

    out = tmp_path / "data"
    cmd = ["data", "prep", "--corpus", "ksponspeech", "--root", str(kspon_corpus), "--out", str(out)]
    assert main([*cmd, "--normalization", "kospeech"]) == 0
    d = read_data_dir(out / "train")
    assert d.meta["normalization"] == "kospeech" and d.meta["transcript"] == "phonetic"
    raw = _trn(kspon_corpus, "train")
    assert all(d.text[u] == normalize_kospeech(raw[u], "phonetic", utt_id=u) for u in d.text)
    assert main(["data", "prep", "--corpus", "zeroth", "--root", str(kspon_corpus), "--out", str(out),
                 "--normalization", "kospeech"]) != 0
