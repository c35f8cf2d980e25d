"""Decoding a test set with a checkpoint: features or audio in, ``hyp.trn`` / ``ref.trn`` out.

The input is either a feature dump (``kospeech features dump``: features are read as stored and
normalised with the checkpoint's CMVN) or a Kaldi data dir (audio is read, resampled, and put
through the checkpoint's own frontend, then CMVN). Utterances are sorted by length and decoded
in batches, so padding stays small and a batched search does one pass per batch.

Outputs in the decode dir: ``hyp.trn`` and ``ref.trn`` (``utt-id text`` per line, sorted by id),
and ``decode.yaml`` (checkpoint, search config, test set, transcript form, timing).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from kospeech.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DEFAULT_FRAME_SHIFT_S = 0.01


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` is CUDA when available, else CPU; anything else is passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_search(model: Any) -> dict[str, Any]:
    """The strongest search that fits a model's heads, for when neither CLI nor config names one."""
    if model.has_ctc and model.has_decoder:
        return {"name": "joint_ctc_attention", "beam_size": 5}
    if model.has_decoder:
        return {"name": "beam", "beam_size": 5}
    if model.is_transducer:
        return {"name": "transducer_beam", "beam_size": 4}
    if model.has_ctc:
        return {"name": "ctc_prefix_beam", "beam_size": 10}
    raise ConfigError(f"model {type(model).__name__} has no decoding head (CTC, attention decoder or transducer)")


def search_config(
    model: Any, config: Mapping[str, Any], name: str | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> dict[str, Any]:
    """The search to run: ``--search NAME`` (or the checkpoint's ``decode.search``, or a default
    for the model's heads), then ``key=value`` options typed by YAML rules."""
    from kospeech.config import get_path, parse_override

    saved = get_path(config, "decode.search")
    if name is None:
        cfg = dict(saved) if isinstance(saved, Mapping) and saved.get("name") else default_search(model)
    elif isinstance(saved, Mapping) and saved.get("name") == name:
        cfg = dict(saved)
    else:
        cfg = {"name": name}
    for text in overrides:
        keys, value = parse_override(text)
        if len(keys) != 1:
            raise ConfigError(f"search option '{text}' must be a plain key=value (for example beam_size=10)")
        if keys[0] == "name":
            raise ConfigError(f"search option '{text}': choose the search with --search NAME")
        cfg[keys[0]] = value
    return cfg


def build_search(model: Any, cfg: Mapping[str, Any]) -> Any:
    from kospeech.registry import build

    return build("search", cfg, path="search", model=model)


# ---------------------------------------------------------------------------------------------
# inputs


@dataclass
class TestSet:
    """What to decode: utterance ids in length order, references, and how to load features."""

    path: Path
    kind: str  # "dump" or "datadir"
    utt_ids: list[str]
    refs: dict[str, str]
    meta: dict[str, Any] = field(default_factory=dict)
    lengths: dict[str, float] = field(default_factory=dict)
    source: Any = None  # FeatureDump or wav.scp mapping
    frame_shift_s: float = DEFAULT_FRAME_SHIFT_S


def _read_text(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    from kospeech.data.datadir import read_scp

    return read_scp(path, allow_empty=True)


def _read_meta(directory: Path) -> dict[str, Any]:
    meta_path = directory / "meta.yaml"
    if not meta_path.exists():
        return {}
    try:
        meta = yaml.safe_load(meta_path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise DataError(f"{meta_path}: YAML syntax error: {err}") from None
    return meta if isinstance(meta, dict) else {}


def open_test_set(path: str | Path) -> TestSet:
    """A feature dump (has ``index.tsv``) or a Kaldi data dir (has ``wav.scp``)."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"test set {path} does not exist; pass a feature dump or a data dir")
    meta = _read_meta(path)
    refs = _read_text(path / "text")
    if (path / "index.tsv").exists():
        from kospeech.data.dump import FeatureDump

        dump = FeatureDump(path)
        shift = float(dump.frontend_config().get("frame_shift_ms", DEFAULT_FRAME_SHIFT_S * 1000)) / 1000
        lengths = {u: float(dump.num_frames(u)) for u in dump.keys()}
        ids = sorted(lengths, key=lambda u: (-lengths[u], u))
        return TestSet(path, "dump", ids, refs, meta, lengths, dump, shift)
    if (path / "wav.scp").exists():
        from kospeech.data.datadir import read_scp

        wav = read_scp(path / "wav.scp")
        durs: dict[str, float] = {}
        if (path / "utt2dur").exists():
            durs = {u: float(v) for u, v in read_scp(path / "utt2dur").items()}
        lengths = {u: durs.get(u, 0.0) for u in wav}
        ids = sorted(wav, key=lambda u: (-lengths[u], u))
        return TestSet(path, "datadir", ids, refs, meta, lengths, wav)
    raise DataError(f"{path} is neither a feature dump (no index.tsv) nor a data dir (no wav.scp)")


def pad_batch(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """List of (T, ...) arrays -> zero-padded (B, T_max, ...) float tensor and (B,) lengths."""
    lengths = torch.tensor([a.shape[0] for a in arrays], dtype=torch.long)
    out = torch.zeros(len(arrays), int(lengths.max()), *arrays[0].shape[1:], dtype=torch.float32)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]] = torch.from_numpy(np.asarray(a, dtype=np.float32))
    return out, lengths


def waves_to_features(bundle: Any, waves: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio through the checkpoint's frontend and CMVN, as in training."""
    if bundle.frontend is None:
        raise ConfigError("the checkpoint's config names no frontend, so it cannot decode audio; decode a feature dump")
    w, wl = pad_batch(waves)
    feats, lengths = bundle.frontend(w.to(device), wl.to(device))
    return normalise(bundle, feats, lengths), lengths


def normalise(bundle: Any, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    if bundle.cmvn is None:
        return feats
    return bundle.cmvn(feats, lengths)


def frontend_sample_rate(bundle: Any) -> int:
    return int(getattr(bundle.frontend, "sample_rate", 16000) or 16000)


def load_batch(
    test: TestSet, ids: list[str], bundle: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Features (B, T, D), lengths, and the seconds of audio they cover (for the real-time factor)."""
    if test.kind == "dump":
        arrays = [test.source[u] for u in ids]
        feats, lengths = pad_batch(arrays)
        feats, lengths = feats.to(device), lengths.to(device)
        return normalise(bundle, feats, lengths), lengths, float(lengths.sum()) * test.frame_shift_s
    from kospeech.audio import read_audio

    sr = frontend_sample_rate(bundle)
    waves = []
    for u in ids:
        try:
            waves.append(read_audio(test.source[u], sample_rate=sr))
        except (DataError, RuntimeError, OSError) as err:
            raise DataError(f"{test.path / 'wav.scp'}: utterance '{u}': cannot read {test.source[u]}: {err}") from None
    feats, lengths = waves_to_features(bundle, waves, device)
    return feats, lengths, sum(len(w) for w in waves) / sr


# ---------------------------------------------------------------------------------------------
# decoding


def write_trn(path: Path, mapping: Mapping[str, str]) -> None:
    """``utt-id text`` per line, sorted by id, written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{u} {mapping[u]}".rstrip() + "\n" for u in sorted(mapping)), encoding="utf-8")
    tmp.replace(path)


def read_trn(path: str | Path) -> dict[str, str]:
    """Read a ``utt-id text`` file (an id alone means an empty text)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(maxsplit=1)
        if parts[0] in out:
            raise DataError(f"{path}:{n}: utterance '{parts[0]}' appears twice")
        out[parts[0]] = parts[1] if len(parts) > 1 else ""
    return out


def decode_test_set(
    bundle: Any,
    data: str | Path,
    out_dir: str | Path,
    search_cfg: Mapping[str, Any],
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    checkpoint: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Decode every utterance of ``data`` and write ``hyp.trn``, ``ref.trn``, ``decode.yaml``.

    ``progress(n)`` is called after each batch with the number of utterances done in it (the
    CLI drives a tqdm bar with it). Returns the ``decode.yaml`` contents.
    """
    device = torch.device(device)
    test = open_test_set(data)
    if not test.utt_ids:
        raise DataError(f"{data}: no utterances to decode")
    model = bundle.model.to(device).eval()
    search = build_search(model, search_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    hyps: dict[str, str] = {}
    audio_s = 0.0
    t0 = time.perf_counter()
    for start in range(0, len(test.utt_ids), batch_size):
        ids = test.utt_ids[start : start + batch_size]
        with torch.no_grad():
            feats, lengths, secs = load_batch(test, ids, bundle, device)
            token_ids = search.decode(feats, lengths)
        audio_s += secs
        for u, toks in zip(ids, token_ids):
            hyps[u] = bundle.tokenizer.decode(toks)
        if progress is not None:
            progress(len(ids))
    wall = time.perf_counter() - t0
    refs = {u: test.refs[u] for u in test.utt_ids if u in test.refs}
    if len(refs) < len(test.utt_ids):
        logger.warning("%d of %d utterances have no reference text in %s", len(test.utt_ids) - len(refs),
                       len(test.utt_ids), test.path)
    write_trn(out_dir / "hyp.trn", hyps)
    write_trn(out_dir / "ref.trn", refs)
    model_cfg = bundle.config.get("model", {}) if isinstance(bundle.config, Mapping) else {}
    info = {
        "checkpoint": str(checkpoint) if checkpoint else None,
        "model": model_cfg.get("name") if isinstance(model_cfg, Mapping) else None,
        "search": dict(search_cfg),
        "test_set": {
            "path": str(test.path),
            "name": test.path.name,
            "kind": test.kind,
            "corpus": test.meta.get("corpus"),
            "transcript": test.meta.get("transcript"),
            "utterances": len(test.utt_ids),
        },
        "batch_size": batch_size,
        "device": str(device),
        "timing": {
            "wall_seconds": round(wall, 3),
            "audio_seconds": round(audio_s, 3),
            "real_time_factor": round(wall / audio_s, 5) if audio_s > 0 else None,
        },
    }
    tmp = out_dir / "decode.yaml.tmp"
    tmp.write_text(yaml.safe_dump(info, sort_keys=False, allow_unicode=True), encoding="utf-8")
    tmp.replace(out_dir / "decode.yaml")
    return info


# ---------------------------------------------------------------------------------------------
# transcription of audio files


NO_CTC_NOTE = "the model has no CTC head; per-token timestamps come from CTC forced alignment and are not available"


def ctc_timestamps(
    log_probs: torch.Tensor, tokens: list[int], frame_seconds: float, tokenizer: Any
) -> list[dict[str, Any]] | None:
    """Per-token (start, end) seconds by CTC forced alignment of ``tokens`` on (T, V) log-probs.

    ``frame_seconds`` is the duration of one encoder frame (frontend frame shift x the
    encoder's subsampling). None when the tokens cannot be aligned (more tokens than frames).
    """
    import torchaudio.functional as AF

    if not tokens:
        return []
    targets = torch.tensor([tokens], dtype=torch.int32, device=log_probs.device)
    try:
        labels, scores = AF.forced_align(
            log_probs[None].float(),
            targets,
            torch.tensor([log_probs.size(0)], device=log_probs.device),
            torch.tensor([len(tokens)], device=log_probs.device),
            blank=0,
        )
    except RuntimeError as err:
        logger.warning("CTC forced alignment failed (%s); no timestamps", err)
        return None
    spans = AF.merge_tokens(labels[0].cpu(), scores[0].exp().cpu())
    return [
        {
            "token": tokenizer.id_to_token(int(s.token)),
            "start": round(s.start * frame_seconds, 3),
            "end": round(s.end * frame_seconds, 3),
            "score": round(float(s.score), 4),
        }
        for s in spans
    ]


def transcribe_waves(
    bundle: Any, waves: list[np.ndarray], search: Any, device: torch.device, *, timestamps: bool = False
) -> list[dict[str, Any]]:
    """Decode a batch of 16 kHz (frontend-rate) waves; with ``timestamps``, align tokens in time."""
    model = bundle.model
    sr = frontend_sample_rate(bundle)
    with torch.no_grad():
        feats, lengths = waves_to_features(bundle, waves, device)
        enc, enc_lens = model.encode(feats, lengths)
        nbest = search(enc, enc_lens)
        logp = model.ctc_log_probs(enc) if timestamps and model.has_ctc else None
    hop = getattr(bundle.frontend, "hop_length", None)
    shift = hop / sr if hop else DEFAULT_FRAME_SHIFT_S
    out = []
    for b, hyps in enumerate(nbest):
        ids = hyps[0].tokens if hyps else []
        item: dict[str, Any] = {
            "text": bundle.tokenizer.decode(ids),
            "duration": round(len(waves[b]) / sr, 3),
            "score": round(hyps[0].score, 4) if hyps else None,
        }
        if timestamps:
            if logp is None:
                item["timestamps"] = None
                item["note"] = NO_CTC_NOTE
            else:
                frames_ratio = float(lengths[b]) / max(int(enc_lens[b]), 1)
                item["timestamps"] = ctc_timestamps(logp[b, : int(enc_lens[b])], ids, shift * frames_ratio,
                                                    bundle.tokenizer)
        out.append(item)
    return out
