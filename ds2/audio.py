"""Reading audio and bringing it to the one format the model knows: float32, 16 kHz, mono.

Files are read with soundfile (WAV, FLAC, Ogg/Vorbis/Opus, MP3), arrays may be int or float with any
channel count, and everything is resampled with torchaudio. Bad input raises `AudioError` with a
message that names the source and the problem; it never reaches the model.
"""

import io
import os
import re

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

SAMPLE_RATE = 16000  # Hz: what every model here is trained on
MIN_SECONDS = 0.05  # shorter than one conv receptive field is not speech
SILENCE_PEAK = 1e-4  # a peak below this (about -80 dBFS) is digital silence
MAX_FLOAT_PEAK = 1e5  # float samples belong in [-1, 1]; far beyond, they are not audio


class AudioError(ValueError):
    """Audio that cannot be transcribed; the message says which source and why."""


def load_audio(source, *, max_seconds: float | None = None, name: str | None = None) -> np.ndarray:
    """Read a file path, bytes or file-like object into a (samples,) float32 16 kHz mono waveform."""
    name = name or (os.fspath(source) if isinstance(source, (str, os.PathLike)) else "audio")
    if isinstance(source, (str, os.PathLike)):
        if os.path.isdir(source):
            raise AudioError(f"{name}: is a directory, not an audio file")
        if not os.path.exists(source):
            raise AudioError(f"{name}: no such file")
        if os.path.getsize(source) == 0:
            raise AudioError(f"{name}: the file is empty (0 bytes)")
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise AudioError(f"{name}: no audio data (0 bytes)")
        source = io.BytesIO(source)
    try:
        with sf.SoundFile(source) as f:
            if max_seconds is not None and f.frames > (max_seconds + 1) * f.samplerate:
                raise AudioError(f"{name}: {f.frames / f.samplerate:.0f} s of audio is over the limit of {max_seconds:.0f} s")
            samples = f.read(dtype="float32", always_2d=True)
            sample_rate = f.samplerate
    except AudioError:
        raise
    except Exception as e:  # libsndfile's errors: unknown format, truncated, corrupt
        raise AudioError(f"{name}: cannot read this as audio ({_short(e)}); supported: WAV, FLAC, Ogg/Opus, MP3") from None
    return to_mono_16k(samples, sample_rate, max_seconds=max_seconds, name=name)


def check_sample_rate(sample_rate, name: str = "audio") -> None:
    """Raise AudioError unless `sample_rate` is an integer rate audio is really recorded at."""
    if not isinstance(sample_rate, (int, np.integer)) or not 1000 <= sample_rate <= 384000:
        raise AudioError(f"{name}: sample rate {sample_rate!r} is not a plausible audio rate")


def start_samples(start_ms: float) -> int:
    """The samples at 16 kHz in a start shift of `start_ms` milliseconds; a ValueError unless
    0 <= start_ms < 1000 (a shift within a second). A network with a time stride of 3 frames of
    10 ms sees only every third frame position; a start 10 or 20 ms later shows it another phase
    of the same speech, and how much its errors move is how much of a difference that size is chance."""
    if not 0 <= start_ms < 1000:
        raise ValueError(f"{start_ms} ms: the start shift must be from 0 up to (not including) 1000 ms")
    return round(start_ms * SAMPLE_RATE / 1000)


def to_mono_16k(samples, sample_rate: int, *, max_seconds: float | None = None, name: str = "audio",
                whole: bool = True) -> np.ndarray:
    """Any array of audio -> (samples,) float32 at 16 kHz, mono, validated.

    `samples` is (samples,) or (samples, channels) (soundfile's and Gradio's layout); a 2-D array
    with more columns than rows is taken as (channels, samples). Integer arrays are scaled by their
    type's full range; channels are averaged; the level is never changed otherwise. A `whole`
    recording must also be long enough to hold speech and not silent; a streamed chunk need not.
    """
    x = np.asarray(samples)
    if x.dtype.kind not in "iuf" or x.ndim not in (1, 2):
        raise AudioError(f"{name}: expected a 1-D or 2-D numeric array, got {x.dtype} with shape {x.shape}")
    check_sample_rate(sample_rate, name)
    if x.size == 0:
        raise AudioError(f"{name}: contains no samples")
    if x.ndim == 2 and x.shape[0] < x.shape[1] and x.shape[0] <= 8:
        x = x.T  # (channels, samples) -> (samples, channels)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        x = (x.astype(np.float64) - (info.max + info.min + 1) / 2) / (info.max + 1 - (info.max + info.min + 1) / 2)
    if not np.isfinite(x).all():
        raise AudioError(f"{name}: contains NaN or infinite samples")
    if np.abs(x).max() > MAX_FLOAT_PEAK:  # checked before float32, which such values would overflow
        raise AudioError(f"{name}: sample values up to {np.abs(x).max():.3g} are not audio (expected -1..1)")
    x = x.astype(np.float32, copy=False)
    if x.ndim == 2:
        x = x.mean(axis=1)
    seconds = x.size / sample_rate
    if whole and seconds < MIN_SECONDS:
        raise AudioError(f"{name}: {seconds * 1000:.0f} ms is too short to hold speech (minimum {MIN_SECONDS * 1000:.0f} ms)")
    if max_seconds is not None and seconds > max_seconds:
        raise AudioError(f"{name}: {seconds:.0f} s of audio is over the limit of {max_seconds:.0f} s")
    if whole and np.abs(x).max() < SILENCE_PEAK:
        raise AudioError(f"{name}: the audio is silent")
    return resample(x, sample_rate)


def resample(x: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(samples,) float32 from `sample_rate` to `target_rate` (band-limited sinc interpolation)."""
    if sample_rate == target_rate:
        return np.ascontiguousarray(x, dtype=np.float32)
    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), int(sample_rate), target_rate)
    return y.numpy()


def _short(error: Exception) -> str:
    text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    text = re.sub(r"^Error opening (<[^>]*>|'[^']*'|\S+): ", "", text)  # libsndfile repeats the source's name
    return text[:160]
