"""Acoustic features: log-mel or linear spectrograms with DS2's 20 ms window and 10 ms hop.

Each utterance is normalised to zero mean and unit variance per feature (per-utterance CMVN), so
the model is indifferent to the recording level. SpecAugment masks are applied in training only.
"""

from dataclasses import dataclass

import torch
import torchaudio

from .audio import SAMPLE_RATE

WINDOW_MS = 20  # DS2: 20 ms analysis window
HOP_MS = 10  # DS2: 10 ms between frames, so 100 frames per second


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
    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        feats = torch.log(self.spectrogram(waveform) + 1e-6).transpose(-1, -2)  # (frames, feats)
        mean = feats.mean(dim=-2, keepdim=True)
        std = feats.std(dim=-2, keepdim=True) if feats.shape[-2] > 1 else torch.ones_like(mean)
        return (feats - mean) / (std + 1e-5)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for a waveform of `num_samples` (centred STFT)."""
        return num_samples // self.config.hop_length + 1
