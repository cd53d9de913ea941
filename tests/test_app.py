"""The app's handlers, called as Gradio calls them, on the tiny model and real fixture audio."""

import dataclasses
import importlib.abc
import itertools
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

import demo
from conftest import ROOT, TINY_MANIFEST, padded_clip
from ds2.data import read_manifest
from ds2.text import ALPHABET, wer_cer
from ds2.transcriber import StreamingSession, Transcriber

ENTRIES = read_manifest(TINY_MANIFEST)
HELLO, SEVEN = ENTRIES[2], ENTRIES[8]  # "hello world", "seven eight"
LM = (0.5, 1.0, 16)  # alpha, beta, beam width


@pytest.fixture(scope="module")
def transcriber(tiny_model_dir):
    return Transcriber(tiny_model_dir, lm=None)


def file_view(transcriber, path, tmp_path, reference=""):
    return demo.file_view(transcriber, tmp_path, path, reference, *LM)


def chunks_48k_stereo(wave, rate, seconds=demo.STREAM_EVERY_SECONDS):
    """What the browser sends: int16, 48 kHz, two channels, one chunk per `seconds`."""
    x = np.repeat(wave, 48000 // rate)
    x = (np.stack([x, x], axis=1) * 32767).astype(np.int16)
    step = int(48000 * seconds)
    return [(48000, x[i:i + step]) for i in range(0, len(x), step)]


def test_file_gives_greedy_and_lm_with_word_times_and_wer(transcriber, tmp_path):
    greedy, lm, message, greedy_rows, lm_rows, files, lesson, *_ = file_view(
        transcriber, HELLO["audio"], tmp_path, reference=HELLO["text"])
    assert greedy == lm == HELLO["text"]
    assert [row[0] for row in greedy_rows] == [row[0] for row in lm_rows] == ["hello", "world"]
    assert all(0 <= start < end <= HELLO["duration"] + 0.05 for _, start, end, _ in lm_rows)
    assert "greedy WER 0%" in message and "LM WER 0%" in message
    assert sorted(f.rsplit(".", 1)[1] for f in files) == ["json", "srt", "txt", "vtt"]
    assert lesson.result.greedy == greedy


def test_downloads_hold_text_subtitles_and_json(transcriber, tmp_path):
    files = file_view(transcriber, HELLO["audio"], tmp_path)[5]
    by_suffix = {f.rsplit(".", 1)[1]: open(f, encoding="utf-8").read() for f in files}
    assert by_suffix["txt"] == "hello world\n"
    assert by_suffix["srt"].startswith("1\n00:00:00,") and "hello world" in by_suffix["srt"]
    assert by_suffix["vtt"].startswith("WEBVTT\n\n00:00:00.") and "hello world" in by_suffix["vtt"]
    report = json.loads(by_suffix["json"])
    assert report["greedy"] == report["lm"] == "hello world"
    assert [w["word"] for w in report["words"]] == ["hello", "world"]
    assert report["duration"] == pytest.approx(HELLO["duration"], abs=0.01)


@pytest.mark.parametrize("content, expected", [
    (b"", "empty"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt garbage", "cannot read"),
    ("text", "cannot read"),  # a text file named .wav: unsupported
    ("silence", "silent"),
    ("too long", "over the limit of 600 s"),
    (None, "no audio yet"),
])
def test_bad_files_give_a_message_not_an_exception(transcriber, tmp_path, content, expected):
    path = tmp_path / "input.wav"
    if content == "text":
        path.write_text("these are not the droids you are looking for\n")
    elif content == "silence":
        sf.write(path, np.zeros(16000, np.float32), 16000)
    elif content == "too long":  # 601 s at 1 kHz: long but small, refused before it is decoded
        sf.write(path, np.full(601_000, 0.1, np.float32), 1000)
    elif content is not None:
        path.write_bytes(content)
    outputs = file_view(transcriber, str(path) if content is not None else None, tmp_path)
    greedy, lm, message, _, _, files, lesson, figure, steps, beams, changes = outputs
    assert expected in message and message.startswith("⚠️") and str(tmp_path) not in message
    assert (greedy, lm, files, lesson, figure, beams) == ("", "", None, None, None, [])
    # ... and the same transcriber goes on serving
    assert file_view(transcriber, HELLO["audio"], tmp_path)[0] == HELLO["text"]


def test_clipped_audio_is_transcribed_with_a_warning(transcriber, tmp_path):
    wave, rate = sf.read(HELLO["audio"], dtype="float32")
    path = tmp_path / "loud.wav"
    sf.write(path, np.clip(wave * 8, -1, 1), rate)
    greedy, _, message, *_ = file_view(transcriber, str(path), tmp_path)
    assert "clipped" in message
    assert greedy  # still transcribed


def test_microphone_text_grows_while_speaking_and_matches_the_reference(transcriber):
    wave, rate = padded_clip(SEVEN["audio"])
    recording, greedy, lm, _ = demo.start_microphone(transcriber)
    assert (greedy, lm) == ("", "")
    partials = []
    for chunk in chunks_48k_stereo(np.tile(wave, 3), rate):
        recording, greedy, lm = demo.feed_microphone(transcriber, recording, chunk)
        partials.append(greedy)
    assert any(partials[:len(wave) // (rate // 2) + 1]), "no text while the first utterance was spoken"
    greedy, lm, message = demo.finish_microphone(recording)
    for text in (greedy, lm):
        assert wer_cer([(" ".join([SEVEN["text"]] * 3), text)])[1] < 0.2, text
    assert "recorded" in message


def test_recordings_and_sessions_never_share_text(transcriber):
    yes, rate = padded_clip(ENTRIES[0]["audio"])
    seven, _ = padded_clip(SEVEN["audio"])
    a, b = demo.start_microphone(transcriber)[0], demo.start_microphone(transcriber)[0]
    for chunk_a, chunk_b in itertools.zip_longest(chunks_48k_stereo(seven, rate), chunks_48k_stereo(yes, rate)):
        a, *_ = demo.feed_microphone(transcriber, a, chunk_a)
        b, *_ = demo.feed_microphone(transcriber, b, chunk_b)
    assert "yes" not in demo.finish_microphone(a)[0]
    assert demo.finish_microphone(b)[0] == "yes"
    again, greedy, lm, _ = demo.start_microphone(transcriber)
    assert again.session.state.greedy == "" and (greedy, lm) == ("", "")


def test_empty_chunks_and_silence_are_harmless(transcriber):
    recording, *_ = demo.feed_microphone(transcriber, None, None)  # a stream event before start
    for chunk in [(48000, np.zeros(0, np.int16)), (48000, np.zeros((0, 2), np.int16)), (0, np.ones(10, np.int16))]:
        recording, greedy, lm = demo.feed_microphone(transcriber, recording, chunk)
        assert (greedy, lm) == ("", "")
    for chunk in chunks_48k_stereo(np.zeros(16000 * 2, np.float32), 16000):
        recording, *_ = demo.feed_microphone(transcriber, recording, chunk)
    greedy, lm, message = demo.finish_microphone(recording)
    assert (greedy, lm) == ("", "") and "Nothing was recognised" in message
    assert demo.finish_microphone(None)[2] == message
    assert demo.recording_view(transcriber, recording, *LM)[0] is None  # silence: nothing to teach


@pytest.mark.slow
def test_a_long_monologue_updates_as_fast_at_the_end_as_at_the_start(transcriber):
    wave, rate = padded_clip(SEVEN["audio"])
    chunks = chunks_48k_stereo(np.tile(wave, 60), rate)  # 105 s of speech with pauses
    recording, seconds = None, []
    for chunk in chunks:
        tic = time.perf_counter()
        recording, *_ = demo.feed_microphone(transcriber, recording, chunk)
        seconds.append(time.perf_counter() - tic)
        assert recording.session.buffer.size <= recording.session.max_segment_seconds * 16000
        assert sum(map(len, recording.tail)) <= (demo.LESSON_SECONDS + 1) * 16000
    assert len(recording.session.state.final_greedy) >= 50
    first, last = np.median(seconds[5:40]), np.median(seconds[-35:])
    assert last < 2 * first + 0.01, (first, last)


def test_teaching_view_explains_the_last_utterance(transcriber, tmp_path):
    *_, lesson, figure, steps, beams, changes = file_view(transcriber, HELLO["audio"], tmp_path)
    assert len(figure.axes) == 3  # waveform with words, spectrogram, posteriogram
    assert steps.rstrip().endswith("\nhello world")
    assert [row[0] for row in beams][0] == "hello world"
    assert all(row[3] == pytest.approx(row[1] + row[2], abs=0.02) for row in beams)  # total = acoustic + LM
    assert [row[3] for row in beams] == sorted((row[3] for row in beams), reverse=True)
    assert changes == [("hello world ", None)]


def test_sliders_redecode_from_cached_emissions_without_the_network(transcriber, tmp_path, monkeypatch):
    lesson = file_view(transcriber, HELLO["audio"], tmp_path)[6]
    monkeypatch.setattr(transcriber, "_run_network", lambda *a: pytest.fail("the network ran again"))
    _, _, wide, _ = demo.teach(transcriber, lesson, 0.5, 1.0, 64)
    _, _, narrow, changes = demo.teach(transcriber, lesson, 2.0, -1.0, 1)
    assert len(wide) == demo.TOP_BEAMS and len(narrow) == 1
    assert narrow[0][0] == "hello world" and changes == [("hello world ", None)]


def test_microphone_lesson_is_the_last_utterance(transcriber):
    wave, rate = padded_clip(SEVEN["audio"])
    recording = None
    for chunk in chunks_48k_stereo(np.tile(wave, 20), rate):  # 35 s
        recording, *_ = demo.feed_microphone(transcriber, recording, chunk)
        assert sum(map(len, recording.tail)) < (demo.LESSON_SECONDS + 1) * 16000
    demo.finish_microphone(recording)
    lesson, figure, steps, beams, changes = demo.recording_view(transcriber, recording, *LM)
    assert SEVEN["duration"] - 0.3 < lesson.result.duration < SEVEN["duration"] + 0.6
    assert lesson.result.greedy == recording.session.state.final_greedy[-1]  # what the live view showed
    assert figure is not None and steps.rstrip().endswith(lesson.result.greedy)


def test_chunks_and_stop_arriving_in_parallel_threads_keep_the_recording_consistent(transcriber):
    """Gradio can hand two chunks of one stream (or a chunk and the stop) to two worker threads."""
    from concurrent.futures import ThreadPoolExecutor
    wave, rate = padded_clip(SEVEN["audio"])
    chunks = chunks_48k_stereo(np.tile(wave, 4), rate)
    recording = demo.start_microphone(transcriber)[0]
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda chunk: demo.feed_microphone(transcriber, recording, chunk), chunks))
    demo.finish_microphone(recording)
    session, received = recording.session, sum(c[1].shape[0] for c in chunks) // 3  # 48 kHz -> 16 kHz
    assert recording.received == session.buffer_start + session.buffer.size == received
    assert session.state.seconds == pytest.approx(received / 16000)
    assert all(0 <= start < end <= session.state.seconds for start, end in session.state.segments)
    lesson = demo.recording_lesson(transcriber, recording)
    assert lesson is not None and lesson.result.greedy == session.state.final_greedy[-1]


def test_long_file_reports_progress_and_teaches_its_first_30_seconds(transcriber, tmp_path):
    wave, rate = padded_clip(HELLO["audio"])
    path = tmp_path / "long.flac"
    sf.write(path, np.tile(wave, 25), rate)  # 41 s: three segments
    calls = []
    outputs = demo.file_view(transcriber, tmp_path, str(path), "", *LM, progress=lambda *done: calls.append(done))
    assert calls and calls[-1] == (3, 3)
    lesson = outputs[6]
    assert lesson.wave.size == 30 * 16000 and lesson.result.duration == 30.0
    assert lesson.result.emissions.shape[0] == pytest.approx(30 / lesson.result.frame_seconds, abs=1)
    assert outputs[3][-1][2] > 38  # the last greedy word ends near 41 s: all of the file is transcribed


def test_frames_to_text_steps():
    path = [0, 10, 10, 0, 0, 11, 1, 1, 10, 0, 10]  # _ h h _ _ i ␣ ␣ h _ h
    emissions = np.log(np.eye(len(ALPHABET))[path] * 0.9 + 0.1 / len(ALPHABET))
    lines = demo.collapse_steps(emissions, 0.02).split("\n")
    assert lines[1] == "_hh__i␣␣h_h" and lines[4] == "_h_i␣h_h" and lines[7] == "hi hh"
    assert "20 ms" in lines[0]


@pytest.mark.parametrize("greedy, lm, spans", [
    ("helo world", "hello world", [("hello ", "changed by the LM"), ("world ", None)]),
    ("the cat", "the cat sat", [("the cat ", None), ("sat ", "added by the LM")]),
    ("a uh cat", "a cat", [("a ", None), ("uh ", "dropped by the LM"), ("cat ", None)]),
    ("", "", []),
])
def test_lm_changes_are_highlighted(greedy, lm, spans):
    assert demo.lm_changes(greedy, lm) == spans


def test_examples_come_from_the_samples_manifest(samples_dir, tmp_path):
    samples = demo.read_samples(samples_dir)
    assert [s["text"] for s in samples] == ["yes", "hello world", "open the door", "seven eight"]
    assert all(s["source"] and (samples_dir / s["audio"]).is_file() for s in samples)
    assert demo.read_samples(tmp_path / "no-such-folder") == []


def test_model_card_gives_architecture_training_data_and_wer(transcriber, tiny_model_dir, tmp_path):
    card = demo.model_card(transcriber)
    assert "2 bidirectional GRU layers of 96 units" in card
    assert f"{transcriber.model.num_parameters / 1e6:.2f} M parameters" in card
    assert "manifest.jsonl" in card and "no dev-set WER" in card and "none: beam search" in card
    assert f"({transcriber.meta['step']} steps)" in card
    for name in ("model.safetensors", "config.json"):
        (tmp_path / name).write_bytes((tiny_model_dir / name).read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    config["meta"].update(dev_wer=0.123, dev_cer=0.045, averaged=["run/epochs/004", "run/epochs/005"])
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "README.md").write_text("# ds2-tiny\nTrained on ten clips.\n")
    card = demo.model_card(Transcriber(tmp_path, lm=None))
    assert "dev WER 12.3%, CER 4.5%" in card and card.endswith("Trained on ten clips.\n")
    assert "(weights averaged over 2 checkpoints)" in card and "steps)" not in card


def test_app_has_the_contract_elem_ids_and_a_queue(transcriber, samples_dir):
    app = demo.build_app(transcriber, samples_dir, hotwords=["Knollys", "new york"])
    props = {c["props"].get("elem_id"): c["props"] for c in app.config["components"]}
    assert {"mic-input", "file-input", "greedy-output", "lm-output", "transcribe-button", "hotwords-input"} <= set(props)
    assert props["hotwords-input"]["value"] == "Knollys, new york"  # demo.py --hotword fills the box
    assert props["lm-output"]["label"] == "Beam search (no LM loaded)"  # this transcriber has no LM
    stream = next(fn for fn in app.fns.values() if fn.connection == "stream")
    assert stream.concurrency_limit == demo.LIVE_SESSIONS and stream.stream_every == demo.STREAM_EVERY_SECONDS
    assert app._queue.default_concurrency_limit == demo.CONCURRENCY


@pytest.mark.parametrize("width", [16, 384, 700])
def test_beam_width_slider_holds_the_lm_width(tiny_model_dir, samples_dir, monkeypatch, width):
    """The teaching view's slider starts at the width the LM ships with, whatever it is."""
    t = Transcriber(tiny_model_dir, lm=None)
    monkeypatch.setattr(t.beam, "params", dataclasses.replace(t.beam.params, beam_width=width))
    app = demo.build_app(t, samples_dir)
    slider = next(c["props"] for c in app.config["components"] if c["props"].get("label") == "beam width")
    assert slider["value"] == width and slider["minimum"] <= width <= slider["maximum"]


def test_without_a_model_the_app_and_cli_say_so(tmp_path, capsys):
    assert demo.main(["--cli", "--model", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err
    app = demo.notice_app("no bundled model in assets/models/ds2-small")
    text = " ".join(str(c["props"].get("value")) for c in app.config["components"])
    assert "No model loaded" in text and "no bundled model" in text and "--model DIR" in text


def test_terminal_microphone_prints_partial_and_final_lines(transcriber, monkeypatch, capsys):
    wave, rate = padded_clip(SEVEN["audio"])
    audio = np.repeat(np.tile(wave, 2), 3)[:, None]  # what sounddevice gives: (frames, 1) float32, here 48 kHz

    class FakeMicrophone:  # delivers the audio in 0.25 s blocks, then stops
        def __init__(self, on_chunk):
            self.on_chunk = on_chunk

        def __enter__(self):
            for i in range(0, len(audio), 12000):
                self.on_chunk(audio[i:i + 12000])
            self.on_chunk(None)

        def __exit__(self, *exc):
            return False
    monkeypatch.setattr(demo, "open_microphone", lambda on_chunk: (FakeMicrophone(on_chunk), 48000))
    partial = StreamingSession._partial  # provisional text marked, final decodes slow: only finals get lines

    def marked(session, span):
        result = partial(session, span)
        return result and dataclasses.replace(result, greedy=result.greedy + " (provisional)")
    monkeypatch.setattr(StreamingSession, "_partial", marked)
    final = StreamingSession._final
    monkeypatch.setattr(StreamingSession, "_final", lambda session, wave: time.sleep(0.3) or final(session, wave))
    assert demo.run_cli(transcriber) == 0
    out = capsys.readouterr().out
    assert out.count("greedy: seven eight\n") == 2 and out.count("lm:     seven eight\n") == 2
    assert "… seven" in out and "(provisional)" in out  # partial lines while speaking
    assert "greedy: seven eight (provisional)" not in out


class _NoPortAudio(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")


@pytest.mark.parametrize("problem, advice", [
    ("no package", "pip install -r requirements.txt"),
    ("no PortAudio", "apt-get install libportaudio2"),
    ("no device", "No microphone found"),
])
def test_terminal_microphone_problems_give_one_sentence(monkeypatch, problem, advice):
    if problem == "no package":
        monkeypatch.setitem(sys.modules, "sounddevice", None)
    elif problem == "no PortAudio":
        monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
        monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    else:
        import sounddevice
        def no_device(*args, **kwargs):
            raise sounddevice.PortAudioError("Error querying device -1")
        monkeypatch.setattr(sounddevice, "query_devices", no_device)
    with pytest.raises(SystemExit) as exit_info:
        demo.open_microphone(print)
    assert advice in str(exit_info.value) and str(exit_info.value).count(".") <= 2


def test_terminal_microphone_on_a_machine_without_one(tiny_model_dir):
    try:
        import sounddevice
    except OSError:
        pytest.skip("PortAudio is not installed (its message is tested above)")
    try:
        sounddevice.query_devices(kind="input")
    except sounddevice.PortAudioError:
        pass
    else:
        pytest.skip("this machine has a microphone")
    proc = subprocess.run([sys.executable, "demo.py", "--cli", "--model", str(tiny_model_dir), "--lm", "none"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("No microphone found: plug one in (or enable the input device in your "
                                        "sound settings) and try again.")
    assert "Traceback" not in proc.stderr


def test_old_downloads_are_removed(transcriber, tmp_path):
    import os
    first = file_view(transcriber, HELLO["audio"], tmp_path)[5]
    old_folder = os.path.dirname(first[0])
    os.utime(old_folder, (0, 0))  # pretend it was written long ago
    second = file_view(transcriber, HELLO["audio"], tmp_path)[5]
    assert not os.path.exists(old_folder) and all(os.path.exists(f) for f in second)


def test_hotwords_box_reaches_the_file_and_microphone_searches_and_names_what_it_cannot_use(transcriber, tmp_path,
                                                                                            monkeypatch):
    assert demo.read_hotwords(" Knollys,\nnew  york ,, !!, ") == (["Knollys", "new  york"], demo.read_hotwords("!!")[1])
    assert demo.read_hotwords("!!")[1] == "⚠️ Not used as hotwords (no letters a-z in them): '!!'."
    assert demo.read_hotwords("") == ([], "") and demo.read_hotwords(None) == ([], "")
    seen, decode = [], transcriber.beam.decode
    monkeypatch.setattr(transcriber.beam, "decode", lambda *a, **k: seen.append(k.get("hotwords")) or decode(*a, **k))
    greedy, lm, message, *_, lesson, _, _, _, _ = demo.file_view(transcriber, tmp_path, HELLO["audio"], "", *LM,
                                                                 hotwords="Hello, %%")
    assert greedy == lm == HELLO["text"] and lesson.hotwords == ("Hello",)
    assert "Not used as hotwords" in message and "'%%'" in message
    assert seen and set(map(tuple, seen)) == {("Hello",)}  # the file's search and the teaching view's
    demo.teach(transcriber, lesson, 1.0, 1.0, 8)
    assert tuple(seen[-1]) == ("Hello",)
    recording, _, _, note = demo.start_microphone(transcriber, "seven, ##")
    assert recording.session.beam_options["hotwords"] == ["seven"] and "'##'" in note
    assert demo.start_microphone(transcriber)[3] == ""


def test_demo_refuses_a_hotword_it_cannot_use():
    for bad in ("!!", "a, b"):
        proc = subprocess.run([sys.executable, "demo.py", "--hotword", bad], capture_output=True, text=True, cwd=ROOT,
                              timeout=60)
        assert proc.returncode == 2 and "one word or phrase of letters a-z per --hotword" in proc.stderr
