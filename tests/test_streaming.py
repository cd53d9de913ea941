import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TINY_MANIFEST
from ds2.data import read_manifest
from ds2.text import wer_cer
from ds2.transcriber import Transcriber

ENTRIES = read_manifest(TINY_MANIFEST)


@pytest.fixture(scope="module")
def transcriber(tiny_model_dir):
    return Transcriber(tiny_model_dir, lm=None)


def _speech_with_pauses(indices, pause=0.8, rate=16000):
    """Fixture utterances separated by pauses of faint noise (a microphone is never digitally silent)."""
    rng = np.random.default_rng(0)
    quiet = lambda: (rng.standard_normal(int(pause * rate)) * 1e-4).astype(np.float32)
    parts = []
    for i in indices:
        wave, _ = sf.read(ENTRIES[i]["audio"], dtype="float32")
        parts += [quiet(), wave]
    return np.concatenate(parts + [quiet()])


def _as_browser_chunks(wave16k, seconds=0.5):
    """48 kHz int16 stereo chunks, as Gradio's microphone stream delivers them."""
    wave48k = np.repeat(wave16k, 3)
    stereo = (np.stack([wave48k, wave48k], axis=1) * 32767).astype(np.int16)
    step = int(seconds * 48000)
    return [stereo[i:i + step] for i in range(0, len(stereo), step)]


def test_stream_segments_at_pauses_and_matches_whole_utterances(transcriber):
    indices = [2, 3, 5]
    audio = _speech_with_pauses(indices)
    session = transcriber.stream()
    partials = [session.feed(chunk, 48000).greedy for chunk in _as_browser_chunks(audio)]
    state = session.finish()
    # One final segment per utterance, each holding all of that utterance's audio ...
    assert len(state.segments) == 3
    start = 0.8
    for (seg_start, seg_end), i in zip(state.segments, indices):
        assert seg_start <= start + 0.3 and seg_end >= start + ENTRIES[i]["duration"] - 0.15
        start += ENTRIES[i]["duration"] + 0.8
    # ... decoded exactly as the whole-file path decodes the same samples ...
    for (seg_start, seg_end), text in zip(state.segments, state.final_greedy):
        piece = audio[round(seg_start * 16000):round(seg_end * 16000)]
        assert transcriber.transcribe(piece, 16000).greedy == text
    # ... close to the references (the tiny model is brittle to where a clip starts) ...
    assert wer_cer([(ENTRIES[i]["text"], t) for i, t in zip(indices, state.final_greedy)])[1] < 0.25
    assert state.greedy == " ".join(state.final_greedy)
    assert any(p and p != state.greedy for p in partials)  # text appeared before the end


def test_hotwords_reach_every_decode_of_a_session(transcriber, monkeypatch):
    seen, decode = [], transcriber.decode
    monkeypatch.setattr(transcriber, "decode", lambda *a, **k: seen.append(k) or decode(*a, **k))
    session = transcriber.stream(hotwords=["Red Car", "!!"], hotword_weight=5)
    for chunk in _as_browser_chunks(_speech_with_pauses([0, 1])):
        session.feed(chunk, 48000)
    assert len(session.finish().segments) == 2
    assert len(seen) >= 4 and all((k["hotwords"], k["hotword_weight"]) == (["red car"], 5.0) for k in seen)
    with pytest.raises(ValueError, match="hotword_weight"):
        transcriber.stream(hotwords=["red"], hotword_weight=float("nan"))


def test_new_session_starts_clean(transcriber):
    first = transcriber.stream()
    for chunk in _as_browser_chunks(_speech_with_pauses([0])):
        first.feed(chunk, 48000)
    second = transcriber.stream()
    assert second.state.greedy == "" and first.finish().greedy


def test_open_segment_stays_bounded_in_a_long_monologue(transcriber):
    """Without pauses the open segment is still cut, so each update's work stays bounded."""
    rng = np.random.default_rng(0)
    session = transcriber.stream(max_segment_seconds=6.0)
    longest = 0
    for _ in range(80):  # 40 s of continuous noise-like 'speech'
        session.feed((rng.standard_normal(8000) * 0.1).astype(np.float32), 16000)
        longest = max(longest, session.buffer.size)
    assert longest <= 6.5 * 16000


@pytest.mark.parametrize("max_segment", [1.0, 3.0, 4.5])
def test_short_segment_limits_stay_bounded_too(transcriber, max_segment):
    """Under 4.5 s the forced cut's search window once reached before the buffer (a crash, or a cut
    at the buffer's start that never closed anything); and one cut per update could not keep up
    when a forced cut took less than a chunk."""
    rng = np.random.default_rng(0)
    session = transcriber.stream(max_segment_seconds=max_segment)
    longest = 0
    for _ in range(40):  # 20 s of continuous noise-like 'speech'
        session.feed((rng.standard_normal(8000) * 0.1).astype(np.float32), 16000)
        longest = max(longest, session.buffer.size)
    assert longest < max_segment * 16000
    session.finish()


def test_a_chunk_longer_than_a_segment_is_cut_at_once(transcriber):
    rng = np.random.default_rng(0)
    session = transcriber.stream(max_segment_seconds=3.0)
    session.feed((rng.standard_normal(16000 * 20) * 0.1).astype(np.float32), 16000)  # 20 s in one chunk
    assert session.buffer.size < 3.0 * 16000 and session.state.seconds == 20.0


def test_silence_and_tiny_chunks_are_harmless(transcriber):
    session = transcriber.stream()
    for chunk in [np.zeros(0, np.int16), np.zeros(10, np.int16), np.zeros(48000, np.int16)]:
        assert session.feed(chunk, 48000).greedy == ""
    assert session.finish().greedy == ""


def _stream(session, audio):
    for chunk in _as_browser_chunks(audio):
        session.feed(chunk, 48000)
    return session.finish()


def test_final_decodes_on_the_worker_equal_those_of_the_closing_update(transcriber):
    audio = _speech_with_pauses([2, 3, 5, 7])
    behind = _stream(transcriber.stream(), audio)
    inline = _stream(transcriber.stream(background=False), audio)
    assert len(behind.segments) == 4 and behind.pending == inline.pending == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("ds2-final")]  # finish() ended them
    assert (behind.final_greedy, behind.final_lm, behind.segments) == (inline.final_greedy, inline.final_lm,
                                                                        inline.segments)


def test_a_closed_segment_shows_provisional_text_until_its_final_decode_is_in(transcriber, monkeypatch):
    session, release = transcriber.stream(), threading.Event()
    final = session._final
    monkeypatch.setattr(session, "_final", lambda wave: release.wait(10) and final(wave))
    audio = _speech_with_pauses([2, 3])
    chunks = iter(_as_browser_chunks(audio))
    while not (state := session.feed(next(chunks), 48000)).segments:
        pass
    assert state.pending == 1 and state.final_greedy[0]  # provisional: the fast network's text
    start, end = (round(s * 16000) for s in state.segments[0])
    piece = audio[start:end]
    partial = transcriber.emissions(piece, model=transcriber.partial_model())
    assert state.final_greedy[0] == transcriber.decode(partial, 1.0, beam=False).greedy
    for chunk in chunks:
        assert session.feed(chunk, 48000).pending >= 1  # held back: still provisional
    release.set()
    state = session.finish()
    assert state.pending == 0 and len(state.segments) == 2
    assert state.final_greedy[0] == transcriber.transcribe(piece, 16000).greedy


def test_partial_network_is_int8_on_a_cpu_and_close_to_the_model(transcriber):
    fast = transcriber.partial_model()
    assert fast is transcriber.partial_model() and fast is not transcriber.model  # made once
    assert any(isinstance(m, torch.ao.nn.quantized.dynamic.GRU) for m in fast.modules())
    wave, _ = sf.read(ENTRIES[2]["audio"], dtype="float32")
    exact, quick = transcriber.emissions(wave), transcriber.emissions(wave, model=fast)
    assert exact.shape == quick.shape and (exact.argmax(1) == quick.argmax(1)).mean() > 0.9
