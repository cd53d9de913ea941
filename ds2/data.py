"""Training data: JSON-lines manifests, a dataset with on-the-fly augmentation, a length-bucketed
batch sampler with SortaGrad, and the padding collate.

A manifest line is `{"audio": PATH, "text": ..., "duration": SECONDS}`; a relative `audio` path is
relative to the manifest's folder. Every random choice for an utterance is drawn from a generator
seeded by (seed, epoch, index), so an interrupted run resumes with exactly the same batches.
"""

import contextlib
import copy
import json
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from .audio import SAMPLE_RATE, AudioError, load_audio, start_samples
from .features import FeatureExtractor, SpecAugment
from .text import encode


class ManifestError(ValueError):
    """A manifest line that is not JSON with audio, text and duration."""


def read_manifest(path, max_duration: float | None = None) -> list[dict]:
    """Entries of a JSONL manifest, with `audio` made absolute; longer than max_duration dropped."""
    path = Path(path).expanduser()
    entries = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                entry["audio"] = str((path.parent / entry["audio"]).resolve())
                entry["duration"] = float(entry["duration"])
                entry["text"] = str(entry["text"])
            except (ValueError, KeyError, TypeError) as e:
                raise ManifestError(f"{path}:{n}: not a manifest line with audio, text, duration ({e})") from None
            if max_duration is None or entry["duration"] <= max_duration:
                entries.append(entry)
    return entries


def write_manifest(path, entries) -> None:
    """Write entries as JSON lines, audio paths relative to the manifest's folder where possible."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for e in entries:
            audio = Path(e["audio"]).resolve()
            try:
                audio = audio.relative_to(path.parent.resolve())
            except ValueError:
                pass
            f.write(json.dumps({**e, "audio": str(audio)}, ensure_ascii=False) + "\n")


NARROWBAND_RATE = 8000  # telephone speech, and recordings such as the spoken-digit set


@dataclass(frozen=True)
class Augment:
    """On-the-fly training augmentation; all off by default (evaluation)."""
    speeds: tuple = (1.0,)  # speed perturbation factors, e.g. (0.9, 1.0, 1.1)
    noise_prob: float = 0.0  # chance of adding white noise ...
    noise_snr_db: tuple = (10.0, 40.0)  # ... at an SNR drawn from this range
    narrowband_prob: float = 0.0  # chance of a telephone band: down to 8 kHz and back, nothing above 4 kHz
    specaugment: SpecAugment | None = None
    vtlp: tuple = ()  # (low, high): each utterance's spectrum warped by a factor drawn from this range


def seed_of(*keys: int) -> int:
    """A seed that is a function of `keys` alone, the same in every process and every run."""
    return hash(tuple(keys)) & 0x7FFFFFFF


def seeded_generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_of(*keys))


class SpeechDataset(torch.utils.data.Dataset):
    """Items are dicts: feats (time, n_feats), targets (label,), text, index; None if unreadable."""

    def __init__(self, entries: list[dict], extractor: FeatureExtractor, augment: Augment = Augment(),
                 seed: int = 0, cache_audio: bool = False):
        self.entries, self.extractor, self.augment, self.seed = entries, extractor, augment, seed
        self.epoch = 0
        self.cache: dict[int, np.ndarray] | None = {} if cache_audio else None
        self.drop = 0  # samples dropped from the start of every utterance: see started_later

    def started_later(self, start_ms: float) -> "SpeechDataset":
        """This dataset with every utterance's first `start_ms` milliseconds dropped (the same cut
        as `ds2 evaluate --start-ms`), sharing this one's audio cache: an utterance no longer
        than that is skipped. How a model's dev errors move with the shift is how much of a dev
        difference is the phase of its time stride (`ds2.audio.start_samples`)."""
        shifted = copy.copy(self)
        shifted.drop = start_samples(start_ms)
        return shifted

    def __len__(self) -> int:
        return len(self.entries)

    def _waveform(self, index: int) -> np.ndarray:
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        audio = load_audio(self.entries[index]["audio"])
        if self.cache is not None:
            self.cache[index] = audio
        return audio

    def preload(self, threads: int | None = None) -> None:
        """Decode every utterance into the cache now, on `threads` threads (default: one per core).
        DataLoader workers are forked afresh each epoch and share what the parent had cached, but
        fill caches of their own in vain; after this they decode nothing."""
        if self.cache is None:
            raise ValueError("preload needs cache_audio=True")

        def load(index: int) -> None:
            with contextlib.suppress(AudioError):  # __getitem__ skips it and collate counts it
                self._waveform(index)

        with ThreadPoolExecutor(threads or os.cpu_count()) as pool:
            list(pool.map(load, range(len(self.entries))))

    def __getitem__(self, index: int) -> dict | None:
        entry = self.entries[index]
        try:
            wave = torch.from_numpy(self._waveform(index)[self.drop:])
        except AudioError:
            return None  # counted as skipped by collate(); training goes on
        if not wave.numel():
            return None  # no longer than the start shift
        g = seeded_generator(self.seed, self.epoch, index)
        aug = self.augment
        speed = aug.speeds[int(torch.randint(len(aug.speeds), (1,), generator=g))]
        if speed != 1.0:  # resampling from rate*speed to rate plays the audio `speed` times faster
            wave = AF.resample(wave, int(SAMPLE_RATE * speed), SAMPLE_RATE)
        if float(torch.rand(1, generator=g)) < aug.noise_prob:
            snr_db = aug.noise_snr_db[0] + float(torch.rand(1, generator=g)) * (aug.noise_snr_db[1] - aug.noise_snr_db[0])
            power = wave.pow(2).mean().clamp_min(1e-10)
            wave = wave + torch.randn(wave.shape, generator=g) * torch.sqrt(power / 10 ** (snr_db / 10))
        if aug.narrowband_prob and float(torch.rand(1, generator=g)) < aug.narrowband_prob:
            # a telephone line carries the room's noise too, so the band is cut after the noise
            wave = AF.resample(AF.resample(wave, SAMPLE_RATE, NARROWBAND_RATE), NARROWBAND_RATE, SAMPLE_RATE)
        if aug.vtlp:  # a new speaker's vocal tract: drawn only when set, so other runs draw as before
            low, high = aug.vtlp
            feats = self.extractor(wave, low + float(torch.rand(1, generator=g)) * (high - low))
        else:
            feats = self.extractor(wave)
        if aug.specaugment is not None:
            feats = aug.specaugment(feats, g)
        return {"feats": feats, "targets": torch.tensor(encode(entry["text"]), dtype=torch.long),
                "text": entry["text"], "index": index, "seconds": wave.numel() / SAMPLE_RATE}


def collate(items: list[dict | None]) -> dict:
    """Pad a list of items into a batch: feats (batch, time, n_feats), feat_lengths (batch,),
    targets (sum of label lengths,), target_lengths (batch,); `skipped` counts unreadable items."""
    good = [it for it in items if it is not None]
    batch = {"skipped": len(items) - len(good), "size": len(good)}
    if not good:
        return batch
    batch["feat_lengths"] = torch.tensor([it["feats"].shape[0] for it in good])
    batch["feats"] = torch.nn.utils.rnn.pad_sequence([it["feats"] for it in good], batch_first=True)
    batch["targets"] = torch.cat([it["targets"] for it in good])
    batch["target_lengths"] = torch.tensor([len(it["targets"]) for it in good])
    batch["texts"] = [it["text"] for it in good]
    batch["seconds"] = sum(it["seconds"] for it in good)
    return batch


class BucketBatchSampler(torch.utils.data.Sampler):
    """Batches of similar-length utterances whose padded size stays under `max_batch_seconds`.

    Each epoch shuffles utterances within half-second length buckets and then shuffles the batch
    order; with SortaGrad (DS2 section 3.1) the first epoch instead runs shortest batches first.
    Under DDP, rank r takes every world-th batch. `set_epoch(epoch, start)` resumes mid-epoch.
    """

    def __init__(self, durations: list[float], max_batch_seconds: float, seed: int = 0, sortagrad: bool = True,
                 rank: int = 0, world_size: int = 1, max_batch_size: int = 64):
        self.durations, self.max_batch_seconds, self.seed = durations, max_batch_seconds, seed
        self.sortagrad, self.rank, self.world_size, self.max_batch_size = sortagrad, rank, world_size, max_batch_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 1000003 + self.epoch)
        order = list(range(len(self.durations)))
        rng.shuffle(order)
        order.sort(key=lambda i: round(self.durations[i] * 2))
        batches, current, longest = [], [], 0.0
        for i in order:
            longest_if_added = max(longest, self.durations[i])
            if current and (longest_if_added * (len(current) + 1) > self.max_batch_seconds
                            or len(current) >= self.max_batch_size):
                batches.append(current)
                current, longest_if_added = [], self.durations[i]
            current.append(i)
            longest = longest_if_added
        if current:
            batches.append(current)
        if not (self.sortagrad and self.epoch == 0):
            rng.shuffle(batches)
        per_rank = math.ceil(len(batches) / self.world_size)
        batches += batches[:per_rank * self.world_size - len(batches)]  # every rank gets as many
        return batches[self.rank::self.world_size]

    def __iter__(self):
        return iter(self.batches()[self.start:])

    def __len__(self) -> int:
        return len(self.batches()) - self.start
