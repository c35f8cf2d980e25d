"""The demo page driven as a person would, in headless Chromium (Debian ``chromium`` + ``chromium-driver``).

Upload: choose a synthesised wav in the file input, click Transcribe, read the transcript from
the page. Microphone: Chromium's fake capture device plays a synthesised wav
(``--use-fake-device-for-media-stream --use-file-for-fake-audio-capture``); the page records it
with the Web Audio API, resamples to 16 kHz and posts a WAV. Screenshots land in the test's
tmp dir. ``make test`` installs Chromium (the Makefile's ``chromium`` target).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kospeech.cli import main

from .test_export import cer
from .test_serve import run_server

pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install -e '.[dev]'")


def chromium(tmp_path: Path, extra: list[str]) -> object:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.fail("chromium and chromedriver are not installed; `make test` installs them (apt-get install "
                    "chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=900,800", f"--user-data-dir={tmp_path / 'profile'}", *extra]:
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def wait_for_result(driver: object, timeout: float = 60.0) -> str:
    from selenium.webdriver.common.by import By

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")
        if state in ("done", "error"):
            break
        time.sleep(0.2)
    status = driver.find_element(By.ID, "status").text
    assert state == "done", status
    return driver.find_element(By.ID, "transcript").text


def click_word(driver: object, index: int) -> tuple[str, float, str]:
    """Click the middle of word ``index`` on the page's timeline (the canvas); the page's record of
    what it played (``data-played``), the word's start and the status line."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    start, end, duration = driver.execute_script(
        f"const w = timeline.words.at({index}); return [w.start, w.end, timeline.duration]")
    canvas = driver.find_element(By.ID, "timeline")
    x = ((start + end) / 2 / duration - 0.5) * canvas.size["width"]
    y = canvas.size["height"] * 0.4  # the label row, below the waveform
    ActionChains(driver).move_to_element_with_offset(canvas, int(x), int(y)).click().perform()
    played = driver.find_element(By.TAG_NAME, "body").get_attribute("data-played")
    return played, start, driver.find_element(By.ID, "status").text


class Recorder:
    """The exported model, keeping each wave the server received (to check what the browser sent)."""

    def __init__(self, model: object) -> None:
        self.model, self.sample_rate, self.waves = model, model.sample_rate, []

    def transcribe(self, wave: np.ndarray, **options: object) -> object:
        self.waves.append(wave)
        return self.model.transcribe(wave, **options)


@pytest.fixture(scope="module")
def server(ctc_checkpoint: dict, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Recorder]]:
    from kospeech import runtime
    from kospeech.serve.app import create_app

    out = tmp_path_factory.mktemp("browser") / "onnx"
    assert main(["export", str(ctc_checkpoint["path"]), "--out", str(out)]) == 0
    recorder = Recorder(runtime.load(out))
    for url in run_server(create_app(recorder, name="test export")):
        yield url, recorder


def test_upload_in_the_page(server: tuple[str, Recorder], ctc_checkpoint: dict, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from kospeech.audio import write_audio

    wav = tmp_path / "upload.wav"
    write_audio(wav, ctc_checkpoint["waves"][2], 16000)
    page_url = server[0]
    driver = chromium(tmp_path, [])
    try:
        driver.get(page_url + "/")
        driver.find_element(By.ID, "file").send_keys(str(wav))
        driver.find_element(By.ID, "upload").click()
        text = wait_for_result(driver)
        rows = [cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#words tbody td:first-child")]
        # the timeline: the uploaded audio kept in the page, its words drawn; a click on a word plays from it
        kept = driver.execute_script("return [audio.samples.length / audio.rate, timeline.words.map((w) => w.text)]")
        played = click_word(driver, -1)
        driver.save_screenshot(str(tmp_path / "upload.png"))
    finally:
        driver.quit()
    assert text == ctc_checkpoint["texts"][2]
    assert rows == text.split()
    assert kept == [pytest.approx(ctc_checkpoint["waves"][2].size / 16000, abs=0.01), rows]
    assert played[0] == f"{rows[-1]}@{played[1]:.2f}" and played[2].startswith(f"playing from “{rows[-1]}”")
    assert (tmp_path / "upload.png").stat().st_size > 1000


def test_record_from_the_fake_microphone(server: tuple[str, Recorder], ctc_checkpoint: dict, tmp_path: Path) -> None:
    """The page's WAV holds the played utterance intact (found by cross-correlation: gain ~1, small
    residual, 16 kHz), and the page shows what the model makes of it. The test model, trained on
    eight clean utterances, is not asked to be robust to the recording: the text check is loose."""
    from selenium.webdriver.common.by import By

    from kospeech.audio import write_audio

    wave = ctc_checkpoint["waves"][5]
    silence = np.zeros(16000, np.float32)  # 1 s before: the device starts playing before the page records
    mic = tmp_path / "mic.wav"
    write_audio(mic, np.concatenate([silence, wave, silence]), 16000)
    page_url, recorder = server
    recorder.waves.clear()
    driver = chromium(tmp_path, ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                 f"--use-file-for-fake-audio-capture={mic}%noloop"])
    try:
        driver.get(page_url + "/")
        driver.find_element(By.ID, "record").click()
        end = time.monotonic() + 10
        while driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") != "recording":
            assert time.monotonic() < end, driver.find_element(By.ID, "status").text
            time.sleep(0.1)
        time.sleep(wave.size / 16000 + 1.8)
        driver.save_screenshot(str(tmp_path / "recording.png"))
        driver.find_element(By.ID, "stop").click()
        text = wait_for_result(driver)
        driver.save_screenshot(str(tmp_path / "recorded.png"))
    finally:
        driver.quit()
    assert len(recorder.waves) == 1
    got = recorder.waves[0]
    corr = np.correlate(got, wave, mode="valid")
    k = int(np.argmax(corr))
    assert 0.5 < k / 16000 < 1.5  # the utterance, 1 s in (after the leading silence)
    # the played samples at gain ~1 with a resampling error only, checked per 0.25 s piece, each
    # aligned on its own: a capture buffer that arrives late or twice on a loaded machine shifts
    # what follows it by a few ms (a whole-wave comparison then fails), so most pieces must match,
    # while a wrong rate (drift within every piece), a cut or a different signal fails them all
    piece, reach = 4000, 800
    loud = float(np.sqrt(np.mean(wave**2)))
    matched = checked = 0
    for o in range(0, wave.size - piece + 1, piece):
        ref = wave[o : o + piece]
        if float(np.sqrt(np.mean(ref**2))) < 0.1 * loud:
            continue  # a pause: nothing to compare
        checked += 1
        window = got[max(0, k + o - reach) : k + o + piece + reach]
        if window.size < piece:
            continue
        lags = np.lib.stride_tricks.sliding_window_view(window, piece)  # every shift within reach
        gains = lags @ ref / float(ref @ ref)
        errors = np.sqrt(np.mean((lags - gains[:, None] * ref) ** 2, axis=1))
        best = int(np.argmin(errors))
        matched += bool(0.9 < gains[best] < 1.1 and errors[best] < 0.1 * float(np.sqrt(np.mean(ref**2))))
    assert checked >= 3 and matched >= 0.8 * checked, (matched, checked)
    assert text == recorder.model.transcribe(got).text
    assert cer([ctc_checkpoint["texts"][5]], [text]) <= 50.0
