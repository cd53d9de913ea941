import json

import pytest
import torch

from conftest import TINY_MANIFEST
from ds2.checkpoint import load_model
from ds2.data import BucketBatchSampler, SpeechDataset, collate, read_manifest
from ds2.features import FeatureExtractor
from ds2.training import batchnorm_layers, recompute_batchnorm
from train import bnstats


def _batch_statistics(model, batch) -> list:
    """Each BatchNorm's statistics from one training-mode forward pass over `batch` alone."""
    layers = batchnorm_layers(model)
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.momentum = 1.0  # running statistics := this batch's
    model.train()
    with torch.no_grad():
        model(batch["feats"], batch["feat_lengths"])
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    return [(m.running_mean.clone(), m.running_var.clone()) for m in layers]


@pytest.mark.parametrize("dropout", [0.0, 0.5])  # train.fit's dropout: off for the statistics, then back
def test_recomputed_statistics_are_the_length_weighted_mean_over_batches(dropout, tiny_model_dir):
    model, features, _ = load_model(tiny_model_dir)
    dataset = SpeechDataset(read_manifest(TINY_MANIFEST), FeatureExtractor(features))
    batches = [collate([dataset[i] for i in b]) for b in
               BucketBatchSampler([e["duration"] for e in dataset.entries], 6.0, 3, sortagrad=False).batches()]
    assert len(batches) >= 3
    per_batch = [_batch_statistics(model, b) for b in batches]
    total = sum(b["seconds"] for b in batches)
    model.eval()
    model.dropout = dropout
    assert recompute_batchnorm(model, dataset, "cpu", max_batch_seconds=6.0, seed=3) == len(batches)
    assert not model.training and model.dropout == dropout  # left as it was found
    for i, layer in enumerate(batchnorm_layers(model)):
        mean = sum(b["seconds"] / total * stats[i][0] for b, stats in zip(batches, per_batch))
        var = sum(b["seconds"] / total * stats[i][1] for b, stats in zip(batches, per_batch))
        torch.testing.assert_close(layer.running_mean, mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(layer.running_var, var, rtol=1e-4, atol=1e-5)
        assert layer.momentum == 0.1  # restored


def test_bnstats_mixes_corpora_by_weight_and_records_them(tiny_model_dir, tmp_path, capsys):
    entries = [json.loads(line) for line in TINY_MANIFEST.read_text().splitlines()]
    parts = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for part, chunk in zip(parts, (entries[:5], entries[5:])):
        part.write_text("".join(json.dumps({**e, "audio": str(TINY_MANIFEST.parent / e["audio"])}) + "\n"
                                for e in chunk))
    bnstats.main([str(tiny_model_dir), "--out", str(tmp_path / "only-a"), "--manifest", f"{parts[0]}=1",
                  "--manifest", f"{parts[1]}=0", "--dev", str(TINY_MANIFEST)])
    out = capsys.readouterr().out
    assert out.count("dev WER") == 2 and "wrote" in out
    bnstats.main([str(tiny_model_dir), "--out", str(tmp_path / "a"), "--manifest", str(parts[0])])
    bnstats.main([str(tiny_model_dir), "--out", str(tmp_path / "mixed"), "--manifest", f"{parts[0]}=3",
                  "--manifest", f"{parts[1]}=1"])
    only_a, a, mixed = (load_model(tmp_path / name) for name in ("only-a", "a", "mixed"))
    b = load_model(tiny_model_dir)[0]
    bnstats.set_mixture(b, [bnstats.corpus_statistics(
        b, SpeechDataset(read_manifest(parts[1]), FeatureExtractor(a[1])), 2000.0)], [1.0])
    for la, lo, lm, lb in zip(*(batchnorm_layers(m) for m in (a[0], only_a[0], mixed[0], b))):
        torch.testing.assert_close(lo.running_mean, la.running_mean)  # weight 0: b plays no part
        torch.testing.assert_close(lm.running_mean, 0.75 * la.running_mean + 0.25 * lb.running_mean)
        torch.testing.assert_close(lm.running_var, 0.75 * la.running_var + 0.25 * lb.running_var)
    assert mixed[2]["batchnorm"]["manifests"] == {str(parts[0]): 0.75, str(parts[1]): 0.25}
    assert "dev_wer" not in mixed[2]  # measured with the old statistics
    original = load_model(tiny_model_dir)[0].state_dict()
    changed = {k for k, v in mixed[0].state_dict().items() if not torch.equal(v, original[k])}
    assert changed and all(k.endswith(("running_mean", "running_var")) for k in changed)


@pytest.mark.parametrize("args, message", [
    (["--manifest", "a.jsonl=0.5", "--manifest", "b.jsonl"], "every --manifest a weight, or none"),
    (["--manifest", "a.jsonl=much"], "must be a number"),
    (["--manifest", "a.jsonl=-1"], "must be >= 0"),
])
def test_bnstats_refuses_bad_weights(tiny_model_dir, tmp_path, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bnstats.main([str(tiny_model_dir), "--out", str(tmp_path / "x"), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_bnstats_reports_a_missing_manifest_in_one_line(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bnstats.main([str(tiny_model_dir), "--out", str(tmp_path / "x"), "--manifest", str(tmp_path / "none.jsonl")])
    assert exit_info.value.code == 2 and "none.jsonl" in (err := capsys.readouterr().err) and "Traceback" not in err


def test_precise_bn_in_training_saves_the_statistics_of_the_saved_weights(tmp_path):
    from conftest import tiny_config
    from ds2.training import train
    cfg = tiny_config(tmp_path, 2, epochs=1, dev=[str(TINY_MANIFEST)], precise_bn_seconds=1000.0)
    train(cfg)
    model, features, _ = load_model(tmp_path / "best")
    saved = [(m.running_mean.clone(), m.running_var.clone()) for m in batchnorm_layers(model)]
    recompute_batchnorm(model, SpeechDataset(read_manifest(TINY_MANIFEST, cfg.max_duration), FeatureExtractor(features)),
                        "cpu", cfg.max_batch_seconds, 1000.0, seed=cfg.seed + 1)
    for (mean, var), layer in zip(saved, batchnorm_layers(model)):
        torch.testing.assert_close(layer.running_mean, mean)
        torch.testing.assert_close(layer.running_var, var)
    train(tiny_config(tmp_path / "plain", 2, epochs=1, dev=[str(TINY_MANIFEST)]))
    plain = batchnorm_layers(load_model(tmp_path / "plain" / "best")[0])
    assert not torch.allclose(plain[0].running_mean, saved[0][0])  # without it: the last batches' average


def test_frozen_batchnorm_trains_the_weights_with_the_initial_statistics(tiny_model_dir, tmp_path):
    from conftest import tiny_config
    from ds2.training import train
    initial = load_model(tiny_model_dir)[0]
    start = batchnorm_layers(initial)
    weights = {k: v for k, v in initial.state_dict().items() if "running" not in k}
    # two epochs with a dev pass between them: the second epoch must still train with them frozen
    settings = dict(epochs=2, max_steps=0, init=str(tiny_model_dir), dev=[str(TINY_MANIFEST)], lr=1e-3)
    train(tiny_config(tmp_path / "frozen", 0, freeze_batchnorm=True, **settings))
    frozen = load_model(tmp_path / "frozen" / "best")[0]
    for layer, before in zip(batchnorm_layers(frozen), start):
        assert torch.equal(layer.running_mean, before.running_mean) and torch.equal(layer.running_var, before.running_var)
    assert any(not torch.equal(v, weights[k]) for k, v in frozen.state_dict().items() if k in weights)
    train(tiny_config(tmp_path / "plain", 0, **settings))
    plain = batchnorm_layers(load_model(tmp_path / "plain" / "best")[0])
    assert not torch.equal(plain[0].running_mean, start[0].running_mean)  # without it, training moves them


def test_dev_pass_gives_every_module_back_its_mode(tiny_model_dir):
    from ds2.training import greedy_pairs, train_mode
    model, features, _ = load_model(tiny_model_dir)
    dataset = SpeechDataset(read_manifest(TINY_MANIFEST, 20.0), FeatureExtractor(features))
    train_mode(model, freeze_batchnorm=True)
    before = [m.training for m in model.modules()]
    assert True in before and False in before
    pairs = greedy_pairs(model, dataset, "cpu")
    assert len(pairs) == len(dataset) and [m.training for m in model.modules()] == before


def test_frozen_batchnorm_needs_a_model_to_start_from(tmp_path):
    from conftest import tiny_config
    from ds2.training import ConfigError
    with pytest.raises(ConfigError, match="init"):
        tiny_config(tmp_path, 1, freeze_batchnorm=True)
    with pytest.raises(ConfigError, match="precise_bn_seconds"):
        tiny_config(tmp_path, 1, freeze_batchnorm=True, init=str(tmp_path), precise_bn_seconds=100.0)
