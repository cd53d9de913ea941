import re
import shutil

import numpy as np
import pytest
import soundfile as sf

from ds2.audio import SAMPLE_RATE, load_audio
from ds2.data import read_manifest
from ds2.text import normalize_text
from train import synth
from train.synth import (SynthOptions, add_noise, available_voices, colored_noise, room_impulse_response,
                         spoken_and_label, synthesize, trim_silence)

BOOK = """In 1816, Emma Woodhouse was twenty-one years old;
she had lived nearly all her life in the world.

"Hello there, Mr. Knightley!" she said. CHAPTER IV begins here. Fish & chips are good.
The 3 quick brown foxes jumped over 42 lazy dogs! It was a dark and stormy night.
"""
ENGINES = ("flite", "text2wave", "espeak-ng")


@pytest.mark.skipif(not any(map(shutil.which, ENGINES)), reason="no TTS engine installed (apt-get install flite)")
def test_same_seed_renders_identical_manifest_and_audio(tmp_path):
    (tmp_path / "book.txt").write_text(BOOK)
    runs = [tmp_path / "one", tmp_path / "two"]  # seed 7 draws flite, festival (HTS, diphone) and espeak-ng
    for out, jobs in zip(runs, (1, 2)):
        synthesize(SynthOptions(out=str(out), count=4, seed=7, text=(str(tmp_path / "book.txt"),), jobs=jobs))
    assert (runs[0] / "manifest.jsonl").read_bytes() == (runs[1] / "manifest.jsonl").read_bytes()
    entries = read_manifest(runs[0] / "manifest.jsonl")
    assert len(entries) == 4
    for entry in entries:
        assert open(entry["audio"], "rb").read() == open(entry["audio"].replace("/one/", "/two/"), "rb").read()
        info = sf.info(entry["audio"])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (SAMPLE_RATE, 1, "PCM_16", "FLAC")
        wave = load_audio(entry["audio"])
        assert abs(wave.size / SAMPLE_RATE - entry["duration"]) < 1e-3
        assert 0.05 < np.abs(wave).max() < 0.95
        assert re.fullmatch(r"[a-z' ]+", entry["text"]) and entry["text"] == normalize_text(entry["text"])
        assert entry["voice"].split(":")[0] in synth.VOICES


@pytest.mark.skipif(not shutil.which("flite"), reason="flite is not installed")
def test_min_words_one_renders_one_word_lines(tmp_path, capsys):
    (tmp_path / "digits.jsonl").write_text('{"audio": "a.flac", "text": "seven", "duration": 0.4}\n')
    synth.main(["--out", str(tmp_path / "out"), "--count", "2", "--text", str(tmp_path / "digits.jsonl"),
                "--voices", "flite", "--min-words", "1"])
    assert [e["text"] for e in read_manifest(tmp_path / "out" / "manifest.jsonl")] == ["seven", "seven"]
    with pytest.raises(SystemExit, match="no usable sentences of 3-20 words"):  # the default skips them
        synth.main(["--out", str(tmp_path / "out3"), "--count", "2", "--text", str(tmp_path / "digits.jsonl")])


def test_labels_match_what_the_voice_reads():
    spoken, label = spoken_and_label("In 1816, Emma was twenty-one.", 3, 20)
    assert label == "in one thousand eight hundred sixteen emma was twenty one"
    assert "1816" not in spoken and "one thousand eight hundred sixteen" in spoken
    for unsayable in ["Hello there, Mr. Knightley!", "CHAPTER IV begins here.", "Fish & chips are good.", "Too short."]:
        assert spoken_and_label(unsayable, 3, 20) is None, unsayable


def test_missing_engines_are_skipped_with_one_warning(monkeypatch, capsys):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None if name == "flite" else f"/usr/bin/{name}")
    voices = available_voices(("flite", "espeak-ng"))
    assert voices == ["espeak-ng"]
    assert capsys.readouterr().err.count("warning") == 1
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit, match="no TTS voice installed"):
        available_voices()


@pytest.mark.parametrize("rt60_s", [0.2, 0.5])
def test_room_impulse_response_decays_60_db_in_rt60(rt60_s):
    h = room_impulse_response(rt60_s, np.random.default_rng(0))
    decay_db = 10 * np.log10(np.cumsum(h[::-1] ** 2)[::-1] / np.sum(h ** 2))  # Schroeder backward integral
    t = np.arange(h.size) / SAMPLE_RATE
    fit = (decay_db < -5) & (decay_db > -35)
    slope_db_per_s = np.polyfit(t[fit], decay_db[fit], 1)[0]
    assert abs(-60 / slope_db_per_s - rt60_s) < 0.1 * rt60_s
    assert abs(np.sum(h ** 2) - 1) < 1e-9


@pytest.mark.parametrize("color", ["white", "pink", "brown"])
def test_noise_is_added_at_the_requested_snr(color):
    rng = np.random.default_rng(1)
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    speech = 0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 3 * t) > 0)  # bursts with pauses
    for snr_db in (5.0, 20.0):
        noise = add_noise(speech, snr_db, color, rng) - speech
        assert abs(10 * np.log10(np.mean(speech ** 2) / np.mean(noise ** 2)) - snr_db) < 0.5


def test_colored_noise_tilts_towards_low_frequencies():
    def low_share(x):
        power = np.abs(np.fft.rfft(x)) ** 2
        return power[np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE) < 500].sum() / power.sum()
    shares = [low_share(colored_noise(SAMPLE_RATE, c, np.random.default_rng(2))) for c in ("white", "pink", "brown")]
    assert shares[0] < 0.1 < shares[1] < shares[2]


def test_trim_silence_keeps_the_speech():
    tone = 0.5 * np.sin(2 * np.pi * 200 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    x = np.concatenate([np.zeros(8000), tone, 1e-4 * np.ones(8000)])
    assert abs(trim_silence(x).size - tone.size) <= SAMPLE_RATE // 100
