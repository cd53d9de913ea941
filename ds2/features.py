"""Acoustic features: log-mel or linear spectrograms with DS2's 20 ms window and 10 ms hop.

Each utterance is normalised to zero mean and unit variance per feature (per-utterance CMVN), so
the model is indifferent to the recording level. SpecAugment masks and vocal tract length
perturbation are applied in training only.
"""

from dataclasses import dataclass

import numpy as np
import torch
import torchaudio

from .audio import SAMPLE_RATE

WINDOW_MS = 20  # DS2: 20 ms analysis window
HOP_MS = 10  # DS2: 10 ms between frames, so 100 frames per second
VTLP_BOUNDARY_HZ = 4800.0  # Jaitly & Hinton (2013): below this, frequencies scale by the warp factor


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "logmel"  # "logmel" or "linear" (DS2's linear spectrogram: 161 bins)
    n_mels: int = 80
    window_ms: int = WINDOW_MS
    hop_ms: int = HOP_MS

    def __post_init__(self):
        if self.kind not in ("logmel", "linear"):
            raise ValueError(f"unknown feature kind {self.kind!r}: use 'logmel' or 'linear'")

    @property
    def n_feats(self) -> int:
        return self.n_mels if self.kind == "logmel" else self.n_fft // 2 + 1

    @property
    def n_fft(self) -> int:
        return 512 if self.kind == "logmel" else SAMPLE_RATE * self.window_ms // 1000

    @property
    def hop_length(self) -> int:
        return SAMPLE_RATE * self.hop_ms // 1000

    @property
    def frames_per_second(self) -> float:
        return 1000 / self.hop_ms


@dataclass(frozen=True)
class SpecAugment:
    """Frequency and time masking (Park et al., 2019); time masks scale with utterance length."""
    freq_masks: int = 2
    freq_width: int = 15  # bins
    time_masks: int = 2
    time_width: float = 0.05  # at most this fraction of the utterance per mask

    def __call__(self, feats: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(time, feats) -> (time, feats) with masked stripes set to 0 (the normalised mean)."""
        feats = feats.clone()
        n_time, n_feats = feats.shape
        for _ in range(self.freq_masks):
            width = int(torch.randint(0, self.freq_width + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, n_feats - width), (1,), generator=generator))
            feats[:, start:start + width] = 0
        for _ in range(self.time_masks):
            width = int(torch.randint(0, int(self.time_width * n_time) + 1, (1,), generator=generator))
            start = int(torch.randint(0, max(1, n_time - width), (1,), generator=generator))
            feats[start:start + width, :] = 0
        return feats


def vtlp_matrix(n_bins: int, alpha: float, sample_rate: int = SAMPLE_RATE,
                boundary_hz: float = VTLP_BOUNDARY_HZ) -> torch.Tensor:
    """Vocal tract length perturbation (Jaitly & Hinton, 2013, "Vocal Tract Length Perturbation
    (VTLP) improves speech recognition") as a (n_bins, n_bins) map of a power spectrum's bins,
    0 Hz to Nyquist: `matrix @ spectrum` moves what the input has at frequency f to warp(f), where
    warp(f) = alpha * f up to boundary_hz * min(alpha, 1) / alpha, then a straight line on to
    Nyquist, which stays where it is. Each output bin interpolates linearly between the two input
    bins around warp^-1 of its frequency. alpha > 1 sounds like a shorter vocal tract."""
    nyquist = sample_rate / 2
    freqs = np.linspace(0.0, nyquist, n_bins)
    knee = boundary_hz * min(alpha, 1.0) / alpha
    warped = np.where(freqs <= knee, alpha * freqs,
                      nyquist - (nyquist - alpha * knee) / (nyquist - knee) * (nyquist - freqs))
    source = np.interp(freqs, warped, freqs) / nyquist * (n_bins - 1)  # warp^-1, in input bins
    low = np.clip(np.floor(source).astype(int), 0, n_bins - 2)
    frac = source - low
    matrix = np.zeros((n_bins, n_bins))
    rows = np.arange(n_bins)
    matrix[rows, low] = 1 - frac
    matrix[rows, low + 1] += frac
    return torch.from_numpy(matrix).float()


class FeatureExtractor(torch.nn.Module):
    """(samples,) float32 16 kHz waveform -> (frames, n_feats) normalised log spectrogram."""

    def __init__(self, config: FeatureConfig = FeatureConfig()):
        super().__init__()
        self.config = config
        win_length = SAMPLE_RATE * config.window_ms // 1000
        if config.kind == "logmel":
            self.spectrogram = torchaudio.transforms.MelSpectrogram(
                SAMPLE_RATE, n_fft=config.n_fft, win_length=win_length, hop_length=config.hop_length,
                n_mels=config.n_mels, power=2.0)
        else:  # "linear"
            self.spectrogram = torchaudio.transforms.Spectrogram(
                n_fft=config.n_fft, win_length=win_length, hop_length=config.hop_length, power=2.0)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, warp: float = 1.0) -> torch.Tensor:
        """`warp`: a VTLP factor (see vtlp_matrix) applied to the power spectrum before the mel
        filters; 1 (inference) leaves it as it is."""
        if warp == 1.0:
            spec = self.spectrogram(waveform)
        elif self.config.kind == "logmel":
            power = self.spectrogram.spectrogram(waveform)
            spec = self.spectrogram.mel_scale(vtlp_matrix(power.shape[-2], warp) @ power)
        else:
            power = self.spectrogram(waveform)
            spec = vtlp_matrix(power.shape[-2], warp) @ power
        feats = torch.log(spec + 1e-6).transpose(-1, -2)  # (frames, feats)
        mean = feats.mean(dim=-2, keepdim=True)
        std = feats.std(dim=-2, keepdim=True) if feats.shape[-2] > 1 else torch.ones_like(mean)
        return (feats - mean) / (std + 1e-5)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of `num_samples` (centred STFT)."""
        return num_samples // self.config.hop_length + 1
