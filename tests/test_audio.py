import numpy as np
import pytest
import soundfile as sf

from ds2.audio import SAMPLE_RATE, AudioError, load_audio, to_mono_16k


def _tone(seconds=1.0, rate=SAMPLE_RATE, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize("fmt,subtype,ext", [("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"),
                                             ("OGG", "OPUS", "opus"), ("MP3", "MPEG_LAYER_III", "mp3")])
def test_reads_common_formats(tmp_path, fmt, subtype, ext):
    path = tmp_path / f"tone.{ext}"
    rate = 48000 if ext == "opus" else 44100
    sf.write(path, _tone(1.0, rate), rate, format=fmt, subtype=subtype)
    wave = load_audio(path)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(wave.size / SAMPLE_RATE - 1.0) < 0.06
    assert 0.2 < np.abs(wave).max() < 0.4  # level kept


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resamples_to_16k(rate):
    wave = to_mono_16k(_tone(2.0, rate), rate)
    assert wave.size == 2 * SAMPLE_RATE
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / wave.size - 440) < 2


def test_downmixes_channels_and_scales_integers():
    stereo = np.stack([_tone(), _tone()], axis=1)
    np.testing.assert_allclose(to_mono_16k(stereo, SAMPLE_RATE), _tone(), atol=1e-6)
    six = np.repeat(_tone()[:, None], 6, axis=1)
    np.testing.assert_allclose(to_mono_16k(six, SAMPLE_RATE), _tone(), atol=1e-6)
    np.testing.assert_allclose(to_mono_16k(six.T, SAMPLE_RATE), _tone(), atol=1e-6)  # (channels, samples)
    ints = (_tone() * 32767).astype(np.int16)
    np.testing.assert_allclose(to_mono_16k(ints, SAMPLE_RATE), _tone(), atol=1e-4)
    int32 = (_tone().astype(np.float64) * 2**31).astype(np.int32)
    np.testing.assert_allclose(to_mono_16k(int32, SAMPLE_RATE), _tone(), atol=1e-4)


def test_bad_files_raise_audio_error_naming_the_problem(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 20)
    truncated = tmp_path / "cut.flac"
    sf.write(truncated, _tone(2.0), SAMPLE_RATE, format="FLAC")
    truncated.write_bytes(truncated.read_bytes()[:300])
    cases = {empty: "empty", text: "cannot read", truncated: "cannot read", tmp_path: "directory",
             tmp_path / "missing.wav": "no such file"}
    for path, message in cases.items():
        with pytest.raises(AudioError, match=message) as info:
            load_audio(path)
        assert str(path) in str(info.value)


def test_bad_arrays_raise_audio_error():
    with pytest.raises(AudioError, match="no samples"):
        to_mono_16k(np.zeros(0, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="silent"):
        to_mono_16k(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="NaN"):
        to_mono_16k(np.full(SAMPLE_RATE, np.nan, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="too short"):
        to_mono_16k(_tone(0.01), SAMPLE_RATE)
    with pytest.raises(AudioError, match="over the limit"):
        to_mono_16k(_tone(3.0), SAMPLE_RATE, max_seconds=2)
    with pytest.raises(AudioError, match="sample rate"):
        to_mono_16k(_tone(), 0)


def test_over_long_file_is_refused_before_decoding(tmp_path):
    path = tmp_path / "long.flac"
    sf.write(path, _tone(5.0), SAMPLE_RATE)
    with pytest.raises(AudioError, match="over the limit"):
        load_audio(path, max_seconds=2)


def test_clipped_audio_is_accepted_unchanged():
    clipped = np.clip(_tone() * 10, -1, 1)
    np.testing.assert_allclose(to_mono_16k(clipped, SAMPLE_RATE), clipped)
