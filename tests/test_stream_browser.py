"""The page's live mode in headless Chromium: the fake microphone plays a synthesised wav, the page
streams it over the WebSocket ``/stream`` (its own resampler to 16 kHz int16, ~160 ms a message),
partial text shows while the audio is still playing, the finals at the end; then a click on a
word of the timeline plays the audio from that word. Screenshots land in the test's tmp dir."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import kospeech

from .test_export import cer
from .test_serve import run_server
from .test_serve_browser import chromium, click_word

pytest.importorskip("selenium", reason="selenium is in the dev extra: pip install -e '.[dev]'")
pytest.importorskip("simple_websocket", reason="flask-sock is in the serve extra")

RATE = 16000


class StreamRecorder:
    """The model, keeping the messages' samples each of its streams was fed (what the page sent)."""

    def __init__(self, model: object) -> None:
        self.model, self.sample_rate, self.fed = model, model.sample_rate, []

    def transcribe(self, wave: np.ndarray, **options: object) -> object:
        return self.model.transcribe(wave, **options)

    def stream(self, **options: object) -> object:
        inner, fed = self.model.stream(**options), []
        self.fed.append(fed)

        class Recording:
            def feed(self, samples: np.ndarray) -> str:
                fed.append(np.array(samples))
                return inner.feed(samples)

            def __getattr__(self, name: str) -> object:
                return getattr(inner, name)

        return Recording()


@pytest.fixture(scope="module")
def live_server(ctc_checkpoint_running_speech: dict) -> Iterator[tuple[str, StreamRecorder]]:
    from kospeech.serve.app import create_app

    recorder = StreamRecorder(kospeech.load(ctc_checkpoint_running_speech["path"], device="cpu"))
    for url in run_server(create_app(recorder, name="live test")):
        yield url, recorder


def test_live_mode_shows_text_while_the_audio_plays(live_server: tuple[str, StreamRecorder],
                                                    ctc_checkpoint_running_speech: dict, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    from kospeech.audio import write_audio

    fixture = ctc_checkpoint_running_speech
    speech = np.concatenate([fixture["waves"][1], np.zeros(int(0.4 * RATE), np.float32), fixture["waves"][5]])
    reference = f"{fixture['texts'][1]} {fixture['texts'][5]}"
    mic = tmp_path / "mic.wav"
    write_audio(mic, np.concatenate([np.zeros(RATE, np.float32), speech, np.zeros(3 * RATE, np.float32)]), RATE)
    url, recorder = live_server
    recorder.fed.clear()
    driver = chromium(tmp_path, ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                                 f"--use-file-for-fake-audio-capture={mic}%noloop"])
    body = lambda: driver.find_element(By.TAG_NAME, "body")  # noqa: E731
    try:
        driver.get(url + "/")
        clicked = time.monotonic()
        driver.find_element(By.ID, "live").click()
        # the device starts playing when the page opens it, after the click: the speech ends after this
        speech_end = clicked + 1.0 + speech.size / RATE
        seen: list[tuple[float, str]] = []
        while time.monotonic() < speech_end + 2.5:
            state = body().get_attribute("data-state")
            assert state in (None, "live"), driver.find_element(By.ID, "status").text
            partial = driver.execute_script("const p = document.getElementById('partial'); "
                                            "return p ? p.textContent : ''")
            if partial and (not seen or seen[-1][1] != partial):
                seen.append((time.monotonic(), partial))
                if len(seen) == 1:
                    driver.save_screenshot(str(tmp_path / "partial.png"))
            time.sleep(0.05)
        assert seen and seen[0][0] < speech_end, seen  # text while the speaker was still talking
        driver.find_element(By.ID, "live-stop").click()
        end = time.monotonic() + 30
        while body().get_attribute("data-state") != "done":
            assert time.monotonic() < end and body().get_attribute("data-state") != "error", \
                driver.find_element(By.ID, "status").text
            time.sleep(0.1)
        text = driver.find_element(By.ID, "transcript").text
        rows = [[cell.text for cell in row.find_elements(By.TAG_NAME, "td")]
                for row in driver.find_elements(By.CSS_SELECTOR, "#words tbody tr")]
        driver.save_screenshot(str(tmp_path / "live.png"))
        # a click on a word of the timeline plays the kept audio from that word
        kept = driver.execute_script("return audio.samples.length")
        played, start, status = click_word(driver, -1)
        driver.save_screenshot(str(tmp_path / "played.png"))
    finally:
        driver.quit()
    assert len(recorder.fed) == 1
    sent = np.concatenate(recorder.fed[0])
    write_audio(tmp_path / "sent.wav", sent, RATE)  # what the page sent, to listen to
    # the page sent the played audio at 16 kHz: the speech found by cross-correlation about 1 s in
    corr = np.correlate(sent, speech, mode="valid")
    k = int(np.argmax(corr))
    assert 0.3 < k / RATE < 1.7, k / RATE
    piece = sent[k : k + speech.size]
    assert corr[k] / (np.linalg.norm(piece) * np.linalg.norm(speech)) > 0.9
    assert [m.size for m in recorder.fed[0][:-1]] == [int(0.16 * RATE)] * (len(recorder.fed[0]) - 1)
    # the page's text is the stream's finals: those of a Stream fed the same messages here
    stream = recorder.model.stream()
    finals = []
    for block in recorder.fed[0]:
        stream.feed(block)
        finals += stream.finals()
    stream.finish()
    finals += stream.finals()
    assert text == " ".join(f.text for f in finals)
    assert [r[0] for r in rows] == [w.text for f in finals for w in f.words]
    assert cer([reference], [text]) <= 50.0, (text, reference)
    assert kept == sent.size
    word = rows[-1][0]
    assert played == f"{word}@{start:.2f}" and status.startswith(f"playing from “{word}”"), (played, status)
    assert all((tmp_path / name).stat().st_size > 1000 for name in ("partial.png", "live.png", "played.png"))
