"""The app in a real browser: Playwright drives Debian's Chromium (no browser download) against
`demo.py` started on a free port with the tiny model. Screenshots go to test-artifacts/."""

import importlib.util
import json
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf

from conftest import ROOT, TINY_MANIFEST, demo_server, padded_clip
from ds2.data import read_manifest
from ds2.text import wer_cer

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
MAX_CER = 0.15  # the tiny model's CER on a single fixture clip is 0-10 %

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install chromium"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="needs Playwright for Python: pip install -r requirements-dev.txt"),
]


@pytest.fixture(scope="module")
def samples(samples_dir):
    return {s["text"]: s for s in read_manifest(samples_dir / "samples.jsonl")}


@pytest.fixture(scope="module")
def server(tiny_model_dir, samples_dir, tmp_path_factory):
    """demo.py on a free port; yields its URL."""
    with demo_server(tiny_model_dir, samples_dir, tmp_path_factory.mktemp("server")) as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium whose fake microphone loops "seven eight" with pauses."""
    from playwright.sync_api import sync_playwright
    wave, rate = padded_clip(read_manifest(TINY_MANIFEST)[8]["audio"])
    mic_file = tmp_path_factory.mktemp("mic") / "seven-eight.wav"
    sf.write(mic_file, wave, rate, subtype="PCM_16")
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic_file}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, server):
    """open_page() -> a fresh tab (its own Gradio session) with the app loaded."""
    contexts = []

    def open_page():
        contexts.append(browser.new_context(viewport={"width": 1400, "height": 1000}))
        page = contexts[-1].new_page()
        page.goto(server)
        page.wait_for_selector("#greedy-output textarea")
        return page
    yield open_page
    for context in contexts:
        context.close()


def text(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id} textarea").input_value()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.wait_for_timeout(400)  # let fades and plots settle
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def upload(page, path) -> None:
    page.get_by_role("tab", name="File").click()
    clear = page.locator("#file-input").get_by_role("button", name="Clear")
    if clear.count():
        clear.click()
    page.locator("#file-input input[type=file]").set_input_files(str(path))


def wait_for_transcripts(page, timeout_s: float = 30) -> None:
    page.wait_for_function("document.querySelector('#greedy-output textarea').value.length > 0 && "
                           "document.querySelector('#lm-output textarea').value.length > 0", timeout=timeout_s * 1000)


def test_server_limits_upload_size(server):
    config = json.load(urllib.request.urlopen(server + "config", timeout=10))
    assert config["max_file_size"] == 128 * 1024 ** 2


def test_upload_shows_both_transcripts_and_the_teaching_view(open_page, samples, samples_dir):
    page = open_page()
    sample = samples["hello world"]
    upload(page, samples_dir / sample["audio"])
    wait_for_transcripts(page)
    for elem_id in ("greedy-output", "lm-output"):
        assert wer_cer([(sample["text"], text(page, elem_id))])[1] <= MAX_CER, text(page, elem_id)
    page.get_by_text("Word timings and downloads").click()
    page.locator("#downloads").get_by_text(".srt", exact=True).wait_for()
    assert page.locator("#downloads").inner_text().count("utt02") == 4  # .txt, .srt, .vtt and .json
    shot(page, "upload")
    page.locator("#hotwords-input textarea").fill("door, %%")  # used from the next transcription on
    page.get_by_role("button", name="open the door").click()  # an example: its reference gives a WER
    page.wait_for_function("document.querySelector('#message').innerText.includes('Against the reference')")
    assert wer_cer([("open the door", text(page, "lm-output"))])[1] <= MAX_CER
    assert "Not used as hotwords (no letters a-z in them): '%%'" in page.locator("#message").inner_text()
    page.get_by_role("tab", name="How it works").click()
    page.get_by_text("CTC blank").wait_for()
    page.locator("img[src*='data:image']").first.wait_for(timeout=10_000)  # the plotted figure
    shot(page, "how-it-works")


def test_microphone_streams_partial_then_final_text_per_tab(open_page):
    page, other = open_page(), open_page()
    page.get_by_role("button", name="Record").click()
    start, partial_at = time.monotonic(), None
    while time.monotonic() - start < 5.5:  # about three loops of the 1.75 s clip
        if partial_at is None and text(page, "greedy-output"):
            partial_at = time.monotonic() - start
            shot(page, "microphone-partial")
        time.sleep(0.1)
    page.get_by_role("button", name="Stop").click()
    assert partial_at is not None and partial_at < 3.5, "no partial text while the sample played"
    page.wait_for_function("document.querySelector('#message').innerText.includes('recorded')")
    final_greedy, final_lm = text(page, "greedy-output"), text(page, "lm-output")
    shot(page, "microphone-final")
    reference = "seven eight"
    for final in (final_greedy, final_lm):
        repeats = max(1, round(len(final.split()) / 2))
        assert reference in final and wer_cer([(" ".join([reference] * repeats), final)])[1] <= 0.25, final
    assert text(other, "greedy-output") == text(other, "lm-output") == ""  # another tab sees nothing
    page.get_by_role("tab", name="How it works").click()  # the teaching view explains the last utterance
    steps = page.wait_for_function("[...document.querySelectorAll('textarea')].map(t => t.value)"
                                   ".find(v => v.includes('blanks removed:'))", timeout=10_000).json_value()
    last_utterance = steps.split("blanks removed:")[1].strip()
    assert final_greedy.endswith(last_utterance), (steps, final_greedy)  # where Stop cut it, it may be a part
    shot(page, "microphone-how-it-works")
    page.get_by_role("tab", name="Transcribe").click()
    page.get_by_role("button", name="Record").click()  # a new recording starts clean
    page.wait_for_function("document.querySelector('#greedy-output textarea').value === ''", timeout=5000)
    page.wait_for_function("document.querySelector('#greedy-output textarea').value.length > 0", timeout=5000)
    page.get_by_role("button", name="Stop").click()
    assert text(page, "greedy-output").count("seven") <= 2  # only what was heard since the new start


def test_corrupted_upload_shows_an_error_and_the_next_upload_works(open_page, samples, samples_dir, tmp_path):
    page = open_page()
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt this is not audio" * 20)
    upload(page, bad)
    page.get_by_role("button", name="Transcribe").click()
    page.wait_for_function("document.querySelector('#message').innerText.includes('cannot read')", timeout=20_000)
    assert "/tmp" not in page.locator("#message").inner_text()  # no server paths in messages
    shot(page, "corrupted-upload")
    sample = samples["seven eight"]
    upload(page, samples_dir / sample["audio"])
    wait_for_transcripts(page)
    assert wer_cer([(sample["text"], text(page, "greedy-output"))])[1] <= MAX_CER
    assert "cannot read" not in page.locator("#message").inner_text()
