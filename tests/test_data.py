import json
import tarfile

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import TINY_MANIFEST, high_band_share
from ds2.data import Augment, BucketBatchSampler, SpeechDataset, collate, read_manifest, write_manifest
from ds2.features import FeatureConfig, FeatureExtractor, SpecAugment, vtlp_matrix


def test_manifest_paths_are_relative_to_the_manifest(tmp_path):
    entries = read_manifest(TINY_MANIFEST)
    assert len(entries) == 10 and all(e["audio"].startswith(str(TINY_MANIFEST.parent)) for e in entries)
    out = tmp_path / "copy.jsonl"
    write_manifest(out, entries)
    assert read_manifest(out) == entries
    assert read_manifest(TINY_MANIFEST, max_duration=1.0) == [e for e in entries if e["duration"] <= 1.0]


def test_bucketed_batches_respect_the_budget_and_cover_every_utterance():
    rng = np.random.default_rng(0)
    durations = rng.uniform(0.5, 15, 500).tolist()
    sampler = BucketBatchSampler(durations, max_batch_seconds=60, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(500))
        assert all(len(b) == 1 or max(durations[i] for i in b) * len(b) <= 60 for b in batches)
    sampler.set_epoch(0)
    first = [round(max(durations[i] for i in b) * 2) for b in sampler]  # half-second buckets
    assert first == sorted(first)  # SortaGrad: shortest first in epoch 0
    sampler.set_epoch(1)
    later = [round(max(durations[i] for i in b) * 2) for b in sampler]
    assert later != sorted(later)


def test_resume_mid_epoch_yields_the_remaining_batches():
    sampler = BucketBatchSampler(np.linspace(1, 10, 100).tolist(), 30, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2, start=5)
    assert list(sampler) == full[5:] and len(sampler) == len(full) - 5


def test_ranks_get_disjoint_equal_shares():
    durations = np.linspace(1, 10, 101).tolist()
    shards = [list(BucketBatchSampler(durations, 30, seed=3, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])
    assert {i for s in shards for b in s for i in b} == set(range(101))


def test_dataset_items_and_collate():
    extractor = FeatureExtractor(FeatureConfig(n_mels=40))
    augment = Augment(speeds=(0.9, 1.1), noise_prob=1.0, specaugment=SpecAugment())
    dataset = SpeechDataset(read_manifest(TINY_MANIFEST), extractor, augment, seed=0)
    a, b = dataset[3], dataset[3]
    assert torch.equal(a["feats"], b["feats"])  # seeded by (seed, epoch, index): reproducible
    dataset.epoch = 1
    assert not torch.equal(dataset[3]["feats"], a["feats"])
    batch = collate([dataset[i] for i in range(4)] + [None])
    assert batch["skipped"] == 1 and batch["size"] == 4
    assert batch["feats"].shape[0] == 4 and batch["feats"].shape[2] == 40
    assert batch["targets"].numel() == batch["target_lengths"].sum()


def test_speed_perturbation_changes_length():
    extractor = FeatureExtractor(FeatureConfig(n_mels=40))
    plain = SpeechDataset(read_manifest(TINY_MANIFEST), extractor)[1]["feats"].shape[0]
    fast = SpeechDataset(read_manifest(TINY_MANIFEST), extractor, Augment(speeds=(1.25,)))[1]["feats"].shape[0]
    assert abs(fast - plain / 1.25) <= 2


def test_narrowband_augmentation_leaves_nothing_above_4_khz():
    entries = read_manifest(TINY_MANIFEST)
    def augmented(augment):  # an identity "extractor" hands back the augmented waveform
        return SpeechDataset(entries, lambda w: w, augment)[1]["feats"]
    plain = high_band_share(augmented(Augment()))
    assert plain > 1e-2  # the clip has 2% of its power up there; a telephone band keeps under 1% of that
    assert high_band_share(augmented(Augment(narrowband_prob=1.0))) < min(plain / 100, 1e-4)
    noisy = Augment(noise_prob=1.0)
    assert torch.equal(SpeechDataset(entries, lambda w: w, noisy)[1]["feats"],  # off: the same random draws
                       SpeechDataset(entries, lambda w: w, Augment(noise_prob=1.0, narrowband_prob=0.0))[1]["feats"])


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_vtlp_moves_a_tone_by_the_warp_factor_and_keeps_the_band_edges(alpha):
    extractor = FeatureExtractor(FeatureConfig(kind="linear"))  # 161 bins, 50 Hz apart
    tone = torch.sin(2 * torch.pi * 1000 * torch.arange(16000) / 16000)
    power = extractor.spectrogram(tone)
    matrix = vtlp_matrix(161, alpha)
    assert int((matrix @ power).mean(1).argmax()) * 50 == round(1000 * alpha)
    assert matrix[0, 0] == 1 and matrix[-1, -1] == 1  # 0 Hz and Nyquist stay where they are
    torch.testing.assert_close(matrix.sum(1), torch.ones(161))
    torch.testing.assert_close(vtlp_matrix(161, 1.0), torch.eye(161))
    for kind in ("linear", "logmel"):  # both feature kinds take a warp; 1 is no warp at all
        ext = FeatureExtractor(FeatureConfig(kind=kind))
        assert torch.equal(ext(tone, 1.0), ext(tone))
        assert not torch.allclose(ext(tone, alpha), ext(tone), atol=1e-2)


def test_vtlp_draws_a_warp_per_utterance_and_leaves_other_draws_alone():
    entries = read_manifest(TINY_MANIFEST)
    warps = []
    def extractor(wave, warp=1.0):  # hands back the warp factor it was asked for
        warps.append(warp)
        return wave
    augment = Augment(noise_prob=1.0, specaugment=None)
    plain = SpeechDataset(entries, extractor, augment, seed=0)[2]["feats"]
    assert warps == [1.0]
    warped = SpeechDataset(entries, extractor, Augment(noise_prob=1.0, vtlp=(0.9, 1.1)), seed=0)
    assert torch.equal(warped[2]["feats"], plain)  # the warp is drawn after the noise: same noise
    for index in (2, 3):
        warped[index]
    assert 0.9 <= warps[1] <= 1.1 and warps[1] == warps[2] != warps[3]  # seeded per utterance


def test_a_dataset_started_later_drops_each_utterances_first_milliseconds_and_shares_the_cache(tmp_path):
    def extractor(wave, warp=1.0):  # hands back the samples it was given
        return wave
    entries = read_manifest(TINY_MANIFEST)
    dataset = SpeechDataset(entries, extractor, cache_audio=True)
    later = dataset.started_later(10)
    assert torch.equal(later[4]["feats"], dataset[4]["feats"][160:])  # 10 ms at 16 kHz
    assert dataset.cache is later.cache and list(dataset.cache) == [4]  # read once, by the first
    assert later[4]["text"] == dataset[4]["text"] and dataset.drop == 0
    sf.write(tmp_path / "short.wav", np.full(960, 0.1, dtype=np.float32), 16000)  # 60 ms
    short = SpeechDataset([{"audio": str(tmp_path / "short.wav"), "text": "a", "duration": 0.06}], extractor)
    assert short.started_later(50)[0]["feats"].numel() == 160
    assert short.started_later(60)[0] is None  # nothing left: skipped, as an unreadable file is
    for ms in (-1, 1000):
        with pytest.raises(ValueError, match="from 0 up to"):
            dataset.started_later(ms)


def test_features_are_normalised_per_utterance():
    extractor = FeatureExtractor(FeatureConfig(kind="linear"))
    wave = torch.randn(16000) * 0.1
    feats = extractor(wave)
    assert feats.shape == (101, 161)  # 10 ms hop, centred frames; DS2's 161 linear bins
    torch.testing.assert_close(feats.mean(0), torch.zeros(161), atol=1e-4, rtol=0)
    louder = extractor(wave * 10)  # level-independent, but for bins near the log floor
    assert (louder - feats).abs().mean() < 1e-3


def test_preload_decodes_everything_once_and_skips_unreadable_files(tmp_path):
    entries = read_manifest(TINY_MANIFEST) + [{"audio": str(tmp_path / "missing.flac"), "text": "x", "duration": 1.0}]
    dataset = SpeechDataset(entries, FeatureExtractor(FeatureConfig(n_mels=40)), cache_audio=True)
    dataset.preload(threads=2)
    assert sorted(dataset.cache) == list(range(len(entries) - 1))
    assert dataset[len(entries) - 1] is None  # skipped at training time as before
    with pytest.raises(ValueError, match="cache_audio"):
        SpeechDataset(entries, FeatureExtractor(FeatureConfig(n_mels=40))).preload()
