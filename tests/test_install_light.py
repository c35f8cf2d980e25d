"""The light install: ``pip install kospeech`` (no extras) decodes exports without torch.

Two layers. In the normal suite, the CLI runs in a subprocess where torch, torchaudio and
librosa are "not installed" (importing them raises ``ModuleNotFoundError``, as in a venv that
lacks them): ``kospeech transcribe EXPORT_DIR`` works, ``kospeech train`` says in one line what
to install. With ``.venv-runtime`` present (``make runtime``: ``pip install .`` into a fresh venv,
as the README tells a deploying user; CI makes it before ``make test``) the real install is
checked: none of the heavy packages, well under 500 MB, and an export made here transcribed
there by the Python API, a stream and the console script, a 22.05 kHz file included (resampled
by numpy). A missing or stale ``.venv-runtime`` (an older copy of the code) skips those tests,
and under ``KOSPEECH_CI=1`` fails them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kospeech.cli import main

REPO = Path(__file__).resolve().parent.parent
RUNTIME_VENV = Path(os.environ.get("KOSPEECH_RUNTIME_VENV", REPO / ".venv-runtime"))
HEAVY = ("torch", "torchaudio", "librosa", "matplotlib")
MAX_BYTES = 500 * 2**20

NOT_INSTALLED = textwrap.dedent(
    """
    import importlib.abc, sys
    HEAVY = ("torch", "torchaudio", "librosa", "matplotlib")
    class NotInstalled(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in HEAVY:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None
    sys.meta_path.insert(0, NotInstalled())
    """
)


def cli_without_torch(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``kospeech ARGS`` from this checkout in a process where the heavy packages are not installed."""
    script = NOT_INSTALLED + textwrap.dedent(
        f"""
        from kospeech.cli import main
        code = main({args!r})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY)
        assert not heavy, heavy
        raise SystemExit(code)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120)


@pytest.fixture(scope="module")
def export_and_audio(ctc_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An export of the trained CTC checkpoint, three utterances at 16 kHz and one at 22.05 kHz."""
    import soundfile as sf

    from kospeech.audio import resample_wave, write_audio

    root = tmp_path_factory.mktemp("light")
    out = root / "export"
    assert main(["export", str(ctc_checkpoint["path"]), "--out", str(out)]) == 0
    paths = []
    for i, wave in enumerate(ctc_checkpoint["waves"][:3]):
        paths.append(str(root / f"utt{i}.wav"))
        write_audio(paths[-1], wave, 16000)
    paths.append(str(root / "utt3_22k.wav"))
    sf.write(paths[-1], resample_wave(ctc_checkpoint["waves"][3], 16000, 22050), 22050)
    return {"export": str(out), "paths": paths, "texts": ctc_checkpoint["texts"][:4], "root": root}


def test_cli_transcribes_an_export_without_torch(export_and_audio: dict) -> None:
    d = export_and_audio
    proc = cli_without_torch(["transcribe", d["export"], *d["paths"]], d["root"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [f"{p}\t{t}" for p, t in zip(d["paths"], d["texts"])]


@pytest.mark.parametrize(
    "args,line",
    [
        (["train", "--config", "x.yaml", "--exp-dir", "exp"],
         "kospeech train needs PyTorch: pip install 'kospeech[train]'"),
        (["export", "model.pt", "--out", "x"], "kospeech export needs PyTorch: pip install 'kospeech[export]'"),
        (["registry", "list"], "kospeech registry needs PyTorch: pip install 'kospeech[train]'"),
    ],
    ids=["train", "export", "registry"],
)
def test_a_command_that_needs_torch_says_what_to_install(args: list[str], line: str, tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"not read")
    (tmp_path / "x.yaml").write_text("model: {name: ctc}\n")
    proc = cli_without_torch(args, tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in proc.stderr


def test_cli_help_without_torch(tmp_path: Path) -> None:
    proc = cli_without_torch(["--help"], tmp_path)
    assert proc.returncode == 0 and "transcribe" in proc.stdout


# ---- the real light venv (make runtime) ---------------------------------------------------------


@pytest.fixture(scope="module")
def light_python() -> Path:
    py = RUNTIME_VENV / "bin" / "python"
    if not py.exists():
        if os.environ.get("KOSPEECH_CI") == "1":
            pytest.fail(f"{RUNTIME_VENV} is missing: CI runs `make runtime` before the tests")
        pytest.skip(f"no {RUNTIME_VENV} (make runtime)")
    installed = sorted(RUNTIME_VENV.glob("lib/python*/site-packages/kospeech"))
    stale = not installed or any(
        not (installed[-1] / f.relative_to(REPO / "kospeech")).is_file()
        or (installed[-1] / f.relative_to(REPO / "kospeech")).read_bytes() != f.read_bytes()
        for f in (REPO / "kospeech").rglob("*.py")
    )
    if stale and os.environ.get("KOSPEECH_CI") != "1":
        pytest.skip(f"{RUNTIME_VENV} holds an older copy of kospeech (make runtime installs this checkout)")
    assert not stale, f"{RUNTIME_VENV} is not this checkout's kospeech: `make runtime` after changing the code"
    return py


def run_light(py: Path, code: str, cwd: Path) -> dict:
    """Python in the light venv, outside this checkout (its installed kospeech, not the source tree)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(py), "-c", "import json, sys\n" + textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_light_venv_has_no_heavy_package_and_is_small(light_python: Path, tmp_path: Path) -> None:
    out = run_light(light_python, f"""
        import importlib.util, kospeech
        print(json.dumps({{"found": [m for m in {HEAVY!r} if importlib.util.find_spec(m)],
                          "kospeech": kospeech.__file__}}))
        """, tmp_path)
    assert out["found"] == []
    assert Path(out["kospeech"]).resolve().is_relative_to(RUNTIME_VENV.resolve())  # installed, not the checkout
    size = sum(f.stat().st_size for f in RUNTIME_VENV.rglob("*") if f.is_file() and not f.is_symlink())
    assert size < MAX_BYTES, f"{RUNTIME_VENV}: {size / 2**20:.0f} MB"


def test_light_venv_transcribes_an_export(light_python: Path, export_and_audio: dict) -> None:
    d = export_and_audio
    out = run_light(light_python, f"""
        import numpy as np, soundfile as sf
        import kospeech.runtime
        model = kospeech.runtime.load({d["export"]!r})
        results = model.transcribe({d["paths"]!r})
        wave, rate = sf.read({d["paths"][0]!r}, dtype="float32")
        stream = model.stream(endpoint=None)
        for start in range(0, wave.size, 2560):
            stream.feed(wave[start:start + 2560])
        import kospeech
        front = [r.text for r in kospeech.load({d["export"]!r}).transcribe({d["paths"]!r})]  # the front door too
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchaudio", "librosa"))
        print(json.dumps({{"texts": [r.text for r in results], "errors": [r.error for r in results],
                          "stream": stream.finish().text, "front": front, "heavy": heavy}}, ensure_ascii=False))
        """, d["root"])
    assert out["heavy"] == []
    assert out["errors"] == [None] * 4
    assert out["texts"] == out["front"] == d["texts"]
    assert out["stream"] == d["texts"][0]
    cli = light_python.parent / "kospeech"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(cli), "transcribe", d["export"], *d["paths"]], capture_output=True, text=True,
                          env=env, cwd=d["root"], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == [f"{p}\t{t}" for p, t in zip(d["paths"], d["texts"])]
    (Path(d["root"]) / "x.yaml").write_text("model: {name: ctc}\n")
    proc = subprocess.run([str(cli), "train", "--config", "x.yaml", "--exp-dir", "exp"], capture_output=True,
                          text=True, env=env, cwd=d["root"], timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "kospeech train needs PyTorch: pip install 'kospeech[train]'"


def test_numpy_resampling_matches_torchaudio() -> None:
    """The light install's resampler (numpy) against the one a full install uses (torchaudio)."""
    pytest.importorskip("torchaudio")
    from kospeech.audio import resample_numpy, resample_wave

    rng = np.random.default_rng(0)
    wave = (rng.standard_normal(22050 * 2) * 0.1).astype(np.float32)
    for orig, new in ((22050, 16000), (44100, 16000), (48000, 16000), (8000, 16000), (11025, 16000), (16000, 22050)):
        ref = resample_wave(wave, orig, new)
        out = resample_numpy(wave, orig, new)
        assert out.shape == ref.shape and out.dtype == np.float32
        assert np.abs(out - ref).max() < 2e-5, (orig, new)
