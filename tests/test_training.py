import csv
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, TINY_MANIFEST, tiny_config
from ds2.checkpoint import CheckpointError
from ds2.model import DeepSpeech2, model_config
from ds2.training import ConfigError, TrainConfig, frame_entropy, lr_factor, plan_epochs, train, update_mean


def _losses(out_dir) -> dict[int, str]:
    with open(out_dir / "log.csv") as f:
        return {int(row["step"]): row["loss"] for row in csv.DictReader(f) if row["loss"]}


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    # Augmentation on and several batches per epoch, so the data order and RNG must be restored too.
    settings = dict(steps=10, max_batch_seconds=3, log_every=1, speeds=[0.9, 1.0, 1.1], noise_prob=0.5,
                    specaugment=True, epochs=4)
    train(tiny_config(tmp_path / "straight", **settings))
    train(tiny_config(tmp_path / "split", **{**settings, "steps": 6}, checkpoint_every=3))
    _, state = train(tiny_config(tmp_path / "split", **settings), resume=True)
    assert state["step"] == 10
    straight, split = _losses(tmp_path / "straight"), _losses(tmp_path / "split")
    assert [straight[s] for s in range(7, 11)] == [split[s] for s in range(7, 11)]


@pytest.mark.parametrize("freeze", [False, True])
def test_ddp_two_processes_agree_on_weights(freeze, tiny_model_dir, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)] + ([str(tiny_model_dir)] if freeze else []),
                   check=True, env=env, timeout=300)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # Parameters must be identical; BatchNorm running statistics are each rank's own between the
    # broadcasts DDP makes from rank 0 at every forward, and rank 0's are the ones saved.
    params = [name for name in w0 if "running_" not in name and "num_batches" not in name]
    assert len(params) > 10
    for name in params:
        torch.testing.assert_close(w0[name], w1[name], rtol=0, atol=0)
    if freeze:  # DDP reduces the trained parameters' gradients only; the frozen ones stay the init's
        from ds2.checkpoint import load_model
        initial = load_model(tiny_model_dir)[0].state_dict()
        lower = [name for name in params if name.startswith(("convs.", "conv_norms.", "rnns.0."))]
        assert lower and all(torch.equal(initial[name], w0[name]) for name in lower)
        params = [name for name in params if name not in lower]
    else:
        initial = DeepSpeech2(model_config("tiny", n_feats=40)).state_dict()
    assert any(not torch.equal(initial[name], w0[name]) for name in params)  # it did train
    assert (tmp_path / "best" / "model.safetensors").exists()


def test_non_finite_loss_batches_are_skipped_and_counted(tmp_path, monkeypatch):
    import ds2.training
    real_ctc, calls = ds2.training.F.ctc_loss, []

    def ctc_loss_nan_on_second_batch(*args, **kwargs):  # fault injection: one batch goes NaN
        calls.append(1)
        loss = real_ctc(*args, **kwargs)
        return loss * float("nan") if len(calls) == 2 else loss

    monkeypatch.setattr(ds2.training.F, "ctc_loss", ctc_loss_nan_on_second_batch)
    model, state = train(tiny_config(tmp_path, steps=4))
    assert state["skipped_batches"] == 1 and state["step"] == 4
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("native", [True, False])
def test_cpu_amp_autocasts_to_bf16_only_where_the_cpu_has_it(native, tmp_path, monkeypatch, capsys):
    import ds2.training
    real_forward, seen = DeepSpeech2.forward, []

    def forward(self, *args):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu"))
        return real_forward(self, *args)

    monkeypatch.setattr(DeepSpeech2, "forward", forward)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    model, state = train(tiny_config(tmp_path, steps=2, cpu_amp=True))
    assert state["step"] == 2 and all(torch.isfinite(p).all() for p in model.parameters())
    assert seen == ([torch.bfloat16] * 2 if native else [False] * 2)
    assert ("no native bf16" in capsys.readouterr().err) is not native
    assert ds2.training.TrainConfig().cpu_amp is False  # CPU runs stay fp32 unless asked


def test_unreadable_manifest_entries_are_skipped(tmp_path):
    manifest = tmp_path / "m.jsonl"
    lines = TINY_MANIFEST.read_text().splitlines()
    broken = lines[0].replace("utt00.flac", str(tmp_path / "missing.flac"))
    manifest.write_text("\n".join([broken] + [l.replace('"utt', f'"{TINY_MANIFEST.parent}/utt') for l in lines[1:]]))
    _, state = train(tiny_config(tmp_path / "run", steps=2, train=[str(manifest)]))
    assert state["skipped_utterances"] >= 1 and state["step"] == 2


def test_config_from_toml_with_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('model = "tiny"\nlr = 0.1\n[features]\nn_mels = 40\n')
    cfg = TrainConfig.load(path, ["lr=3e-4", "model_overrides.rnn_layers=3", "train=a.jsonl", "amp=none"])
    assert cfg.lr == 3e-4 and cfg.model_overrides == {"rnn_layers": 3} and cfg.train == ["a.jsonl"]
    assert cfg.features == {"n_mels": 40} and cfg.amp == "none"
    with pytest.raises(ValueError, match="unknown"):
        TrainConfig.load(None, ["learning_rate=1"])


@pytest.mark.parametrize("path", sorted((ROOT / "train" / "configs").glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_name_real_settings(path):
    from ds2.features import FeatureConfig
    cfg = TrainConfig.load(path)
    assert cfg.train and cfg.out_dir and cfg.epochs > 0
    model_config(cfg.model, **cfg.model_overrides)
    FeatureConfig(**cfg.features)


def test_lr_schedule_warms_up_then_decays():
    values = [lr_factor(s, 10, 100, 0.02) for s in range(100)]
    assert values[0] == 0.1 and values[9] == 1.0 and values[-1] < 0.05
    assert all(a >= b for a, b in zip(values[9:], values[10:]))


def test_plan_epochs_fits_the_rest_of_the_budget():
    assert plan_epochs(600, 100, 2, 50, 100) == 12  # 500 s left hold 10 more epochs of 50 s
    assert plan_epochs(600, 100, 2, 50, 8) == 8  # never more than the config's epochs
    assert plan_epochs(600, 590, 5, 50, 100) == 5  # no time for another: stop now
    assert plan_epochs(600, 700, 5, 50, 100) == 5  # over budget: never fewer than those done


def test_time_budget_trains_only_the_epochs_that_fit(tmp_path, capsys):
    budget_min = 0.04  # 2.4 s; an epoch of the ten fixture utterances takes a fraction of a second
    _, state = train(tiny_config(tmp_path, 0, max_steps=0, epochs=10_000, time_budget_min=budget_min))
    assert 1 <= state["epoch"] == state["planned_epochs"] < 10_000
    assert state["seconds"] < budget_min * 60 + 5
    assert "epochs in all" in capsys.readouterr().out
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["state"]["planned_epochs"] == state["epoch"]  # a resumed run keeps its plan
    _, again = train(tiny_config(tmp_path, 0, max_steps=0, epochs=10_000, time_budget_min=budget_min), resume=True)
    assert again["step"] == state["step"]  # the plan was met: nothing more to do


def test_a_run_cut_mid_epoch_counts_that_epochs_time_when_resumed(tmp_path):
    settings = dict(max_batch_seconds=3, epochs=2, checkpoint_every=2)  # several batches an epoch
    train(tiny_config(tmp_path, 3, **settings))  # stops after 3 steps, inside the first epoch
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["state"]["epoch"] == 0 and saved["state"]["batch"] > 0  # inside the first epoch
    assert saved["state"]["seconds"] == 0.0 and saved["state"]["epoch_seconds_done"] > 0
    saved["state"]["epoch_seconds_done"] = 1000.0  # as if the cut run had trained for 1000 s
    torch.save(saved, tmp_path / "last.pt")
    _, state = train(tiny_config(tmp_path, 0, **{**settings, "max_steps": 0, "epochs": 1}), resume=True)
    assert state["epoch"] == 1 and 1000.0 < state["seconds"] < 1000.0 + 60
    assert state["epoch_seconds_done"] == 0.0


def test_specaugment_policy_is_checked_and_used(tmp_path):
    with pytest.raises(ConfigError, match="specaugment_policy.*freq_widht"):
        TrainConfig.load(None, ["specaugment_policy.freq_widht=27"])
    cfg = TrainConfig.load(None, ["specaugment_policy.freq_width=27", "specaugment_policy.time_masks=4"])
    assert cfg.specaugment_policy == {"freq_width": 27, "time_masks": 4}
    _, state = train(tiny_config(tmp_path, 2, specaugment=True, specaugment_policy={"freq_width": 27}))
    assert state["step"] == 2


@pytest.mark.slow
def test_large_config_trains_a_few_steps_on_cpu(tmp_path):
    """The paper-sized recipe, shapes and loop included, on tiny batches: proves it runs end to end."""
    cfg = TrainConfig.load(ROOT / "train" / "configs" / "large.toml", [
        f"train={TINY_MANIFEST}", "dev=''", f"out_dir={tmp_path}", "max_steps=2", "max_batch_seconds=2.5",
        "num_workers=0", "warmup_steps=1"])
    model, state = train(cfg)
    assert state["step"] == 2 and state["skipped_batches"] == 0
    assert len(model.rnns) == 7 and model.config.n_feats == 161


def test_init_starts_a_new_run_from_a_model_folder(tiny_model_dir, tmp_path):
    from ds2.checkpoint import load_model
    start, _, _ = load_model(tiny_model_dir)
    model, state = train(tiny_config(tmp_path / "same", 1, init=str(tiny_model_dir), lr=0.0))
    assert state["step"] == 1  # a new run (step 0 -> 1), its weights those of the folder (lr 0)
    for (name, a), b in zip(start.named_parameters(), model.parameters()):
        assert torch.equal(a, b), name
    with pytest.raises(CheckpointError, match=r"differ \(model.n_feats 40 vs 64; features.n_mels 40 vs 64\)"):
        train(tiny_config(tmp_path / "other", 1, init=str(tiny_model_dir), features={"n_mels": 64}))


def test_a_resumed_run_does_not_need_its_init_folder_any_more(tiny_model_dir, tmp_path):
    import shutil
    init = tmp_path / "init"
    shutil.copytree(tiny_model_dir, init)
    settings = dict(init=str(init), max_batch_seconds=3, epochs=1, checkpoint_every=2)
    train(tiny_config(tmp_path / "run", 2, **settings))
    shutil.rmtree(init)  # e.g. a run folder of an earlier stage, lost with its machine
    _, state = train(tiny_config(tmp_path / "run", 3, **settings), resume=True)
    assert state["step"] == 3
    with pytest.raises(CheckpointError):  # a fresh run still needs it
        train(tiny_config(tmp_path / "fresh", 1, **settings))


def test_fit_and_average_report_bad_model_folders_without_a_traceback(tmp_path, capsys):
    from train import average, fit
    with pytest.raises(SystemExit) as exit_info:
        fit.main([str(ROOT / "train" / "configs" / "small.toml"), f"train=['{TINY_MANIFEST}']", "dev=''",
                  f"out_dir='{tmp_path / 'run'}'", f"init='{tmp_path / 'nowhere'}'"])
    assert exit_info.value.code == 2
    assert "error: " in (err := capsys.readouterr().err) and "nowhere" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        average.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "avg")])
    assert "error: " in capsys.readouterr().err


@pytest.mark.parametrize("setting, message", [
    ("features.kind='mfcc'", "unknown feature kind 'mfcc'"),
    ("model_overrides.rnn_width=3", "rnn_width"),
    ("model_overrides.conv_layers=5", "needs that many conv_kernels"),
    ("learning_rate=1", "unknown training settings: learning_rate"),
    ("lr=fast", "lr = 'fast': expected float"),
    ("epochs=2.5", "epochs = 2.5: expected int"),
    ("sortagrad=1", "sortagrad = 1: expected bool"),
    ("swa_from=1.5", "swa_from = 1.5: expected a fraction"),
    ("vtlp=[1.1]", "low, high] warp factors, 0.5 <= low <= high <= 2"),
    ("vtlp=[1.1, 0.9]", "low, high] warp factors, 0.5 <= low <= high <= 2"),
    ("vtlp=[0.2, 1.1]", "low, high] warp factors, 0.5 <= low <= high <= 2"),
])
def test_bad_settings_fail_at_load_time_in_one_line(setting, message, capsys):
    from train import fit
    with pytest.raises(ConfigError, match=message):
        TrainConfig.load(ROOT / "train" / "configs" / "small.toml", [setting])
    with pytest.raises(SystemExit) as exit_info:
        fit.main([str(ROOT / "train" / "configs" / "small.toml"), setting])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_fit_keeps_the_traceback_of_a_bug(tmp_path, monkeypatch):
    """Only config, data and model-folder errors become a one-line `error:`; a bug's ValueError stays loud."""
    from train import fit

    def broken(config, resume):
        raise ValueError("a bug deep in the loop")
    monkeypatch.setattr(fit, "train", broken)
    with pytest.raises(ValueError, match="a bug deep in the loop"):
        fit.main([str(ROOT / "train" / "configs" / "small.toml"), f"out_dir='{tmp_path}'"])


def test_dev_may_be_several_manifests_pooled_for_selection_and_printed_each(tmp_path, capsys):
    from ds2.checkpoint import load_model
    from ds2.data import read_manifest
    entries = read_manifest(TINY_MANIFEST)
    parts = [tmp_path / "dev-a.jsonl", tmp_path / "dev-b.jsonl"]
    for part, chunk in zip(parts, (entries[:4], entries[4:])):
        part.write_text("".join(json.dumps(e) + "\n" for e in chunk))
    assert tiny_config(tmp_path, 1, dev="one.jsonl").dev == ["one.jsonl"] and tiny_config(tmp_path, 1).dev == []
    train(tiny_config(tmp_path / "run", 2, epochs=1, dev=[str(p) for p in parts]))
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch 1: dev WER"))
    assert "; dev-a.jsonl WER " in line and "; dev-b.jsonl WER " in line
    assert load_model(tmp_path / "run" / "best")[2]["dev"] == [str(p) for p in parts]
    from train import average
    average.main([str(tmp_path / "run" / "best"), "--out", str(tmp_path / "avg"), "--dev", *map(str, parts)])
    out = capsys.readouterr().out
    assert out.count("; dev-a.jsonl WER ") == 2 and out.count("; dev-b.jsonl WER ") == 2  # the input and the mean


def test_keep_epochs_and_average(tmp_path):
    from ds2.checkpoint import load_model
    from train.average import average
    train(tiny_config(tmp_path, 4, dev=str(TINY_MANIFEST), keep_epochs=2))
    kept = sorted(p.name for p in (tmp_path / "epochs").iterdir())
    assert kept == ["003", "004"]  # the last two epochs, older ones deleted
    a, b = (load_model(tmp_path / "epochs" / name)[0].state_dict() for name in kept)
    assert any(not torch.equal(a[k], b[k]) for k in a)
    mean, _, meta = load_model(average([tmp_path / "epochs" / n for n in kept], tmp_path / "avg"))
    for name, tensor in mean.state_dict().items():
        expected = (a[name] + b[name]) / 2 if tensor.is_floating_point() else b[name]
        torch.testing.assert_close(tensor, expected, msg=name)
    assert meta["epoch"] == 4 and len(meta["averaged"]) == 2
    _, _, meta = load_model(average([tmp_path / "epochs" / "003", tmp_path / "best"], tmp_path / "avg2"))
    assert "dev_wer" in load_model(tmp_path / "best")[2] and "dev_wer" not in meta  # best's WER is not the mean's
    other_run = tmp_path / "other-run"  # a folder of a run that went on from this one, on other data
    shutil.copytree(tmp_path / "epochs" / "004", other_run)
    config = json.loads((other_run / "config.json").read_text())
    config["meta"]["train"] = ["other.jsonl"]
    (other_run / "config.json").write_text(json.dumps(config))
    _, _, meta = load_model(average([tmp_path / "epochs" / "003", other_run], tmp_path / "avg3"))
    assert "epoch" not in meta and "step" not in meta  # no one epoch of one run
    assert meta["train"] == [*load_model(tmp_path / "epochs" / "003")[2]["train"], "other.jsonl"]
    with pytest.raises(CheckpointError, match="model.n_feats .* features.n_mels"):
        average([tmp_path / "epochs" / "004", _other_model(tmp_path)], tmp_path / "bad")


def test_update_mean_is_the_mean_of_every_state_seen():
    model = DeepSpeech2(model_config("tiny", n_feats=40))
    states, mean = [], None
    for count in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
            for b in model.buffers():  # BatchNorm statistics: averaged; its batch count: the last one
                b.add_(torch.rand_like(b) if b.is_floating_point() else 1)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        mean = update_mean(mean, model, count)
    for name, value in mean.items():
        if value.is_floating_point():
            torch.testing.assert_close(value, torch.stack([s[name].float() for s in states]).mean(0), msg=name)
        else:
            assert torch.equal(value, states[-1][name])


def test_swa_averages_the_last_steps_and_survives_a_resume(tmp_path, capsys):
    from ds2.checkpoint import load_model
    settings = dict(steps=20, epochs=4, max_batch_seconds=3, swa_from=0.5, dev=str(TINY_MANIFEST))
    train(tiny_config(tmp_path / "straight", **settings))
    out = capsys.readouterr().out
    assert "; 5 steps per epoch" in out  # 20 planned: the mean of steps 11 to 20, from epoch 3 on
    straight, _, meta = load_model(tmp_path / "straight" / "swa")
    assert meta["swa_steps"] == 10 and meta["step"] == 20 and "dev_wer" in meta
    assert "epoch 3 swa, the mean of the last 5 steps: dev WER" in out
    assert "epoch 4 swa, the mean of the last 10 steps: dev WER" in out
    assert "epoch 2 swa" not in out  # nothing averaged yet after 10 steps
    last, _, _ = load_model(tmp_path / "straight" / "best")
    assert any(not torch.equal(a, b) for a, b in zip(straight.state_dict().values(), last.state_dict().values()))
    train(tiny_config(tmp_path / "split", **{**settings, "steps": 13}, checkpoint_every=1))  # stops mid-average
    train(tiny_config(tmp_path / "split", **settings), resume=True)
    resumed, _, meta = load_model(tmp_path / "split" / "swa")
    assert meta["swa_steps"] == 10
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def _other_model(tmp_path):
    from ds2.checkpoint import save_model
    from ds2.features import FeatureConfig
    return save_model(tmp_path / "other", DeepSpeech2(model_config("tiny", n_feats=64)), FeatureConfig(n_mels=64))


def _tiny_batch(size: int = 3) -> dict:
    """The first `size` utterances of the tiny fixture as one batch, as the tiny model's features."""
    from ds2.data import SpeechDataset, collate, read_manifest
    from ds2.features import FeatureConfig, FeatureExtractor
    dataset = SpeechDataset(read_manifest(TINY_MANIFEST), FeatureExtractor(FeatureConfig(n_mels=40)))
    return collate([dataset[i] for i in range(size)])


def test_freeze_keeps_named_layers_at_init_and_trains_the_rest_with_the_same_gradients(tiny_model_dir, tmp_path):
    from ds2.checkpoint import load_model
    start, _, _ = load_model(tiny_model_dir)
    freeze = ["convs", "conv_norms", "rnns.0"]
    model, _ = train(tiny_config(tmp_path / "run", 3, init=str(tiny_model_dir), freeze=freeze, freeze_batchnorm=True))
    moved = {name for (name, a), b in zip(start.named_parameters(), model.parameters()) if not torch.equal(a, b)}
    assert moved and all(name.startswith(("rnns.1", "output_norm", "fc")) for name in moved), moved

    # the layers above a frozen one get the gradients they would get with nothing frozen (gru_scan
    # skips the weight gradient of a frozen layer, not the gradient that flows through it)
    from ds2.training import frozen, train_mode
    batch = _tiny_batch()
    grads = []
    for names in ([], ["convs", "conv_norms", "rnns.0", "rnns.1.norm"]):
        net, _, _ = load_model(tiny_model_dir)
        train_mode(net, freeze_batchnorm=True)
        for name, p in net.named_parameters():
            p.requires_grad_(not frozen(name, names))
        log_probs, lengths = net(batch["feats"], batch["feat_lengths"])
        torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), batch["targets"], lengths,
                                     batch["target_lengths"]).backward()
        grads.append({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    full, partial = grads
    trained = {n for n, _ in start.named_parameters() if n.startswith(("rnns.1.rnn", "output_norm", "fc"))}
    assert set(full) == {n for n, _ in start.named_parameters()} and set(partial) == trained
    for name, g in partial.items():
        torch.testing.assert_close(g, full[name], msg=name)


def test_resuming_with_another_freeze_fails_in_one_line(tiny_model_dir, tmp_path):
    settings = dict(init=str(tiny_model_dir), freeze_batchnorm=True, checkpoint_every=1)
    train(tiny_config(tmp_path, 1, freeze=["rnns.0"], **settings))
    with pytest.raises(CheckpointError, match=r"trained other parameters \(freeze = \['rnns.0'\], now \['convs'\]\)"):
        train(tiny_config(tmp_path, 2, freeze=["convs"], **settings), resume=True)
    _, state = train(tiny_config(tmp_path, 2, freeze=["rnns.0"], **settings), resume=True)
    assert state["step"] == 2


@pytest.mark.parametrize("settings, message", [
    (dict(freeze=["rnns.0"]), "set init too"),
    (dict(freeze=["rnns.9"], init="x"), r"'rnns.9' names no parameter of the model \(its parameters: "),
    (dict(freeze=["rnn"], init="x"), "'rnn' names no parameter"),  # whole dotted parts only
    (dict(freeze=["convs", "conv_norms", "rnns", "output_norm", "fc"], init="x"), "leaves no parameter to train"),
])
def test_freeze_is_checked_at_load_time(settings, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        tiny_config(tmp_path, 1, **settings)


def test_dropout_acts_in_training_only_and_changes_what_is_learnt(tiny_model_dir, tmp_path):
    from ds2.checkpoint import load_model
    batch = _tiny_batch()
    net, _, _ = load_model(tiny_model_dir)
    net.eval()
    plain = net(batch["feats"], batch["feat_lengths"])[0]
    net.dropout = 0.5
    torch.testing.assert_close(net(batch["feats"], batch["feat_lengths"])[0], plain)  # inference: nothing dropped
    net.train()
    for m in net.modules():  # BatchNorm as in eval, so that only dropout can make a difference
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()
    torch.manual_seed(0)
    dropped = net(batch["feats"], batch["feat_lengths"])[0]
    assert not torch.allclose(dropped, plain)
    net.dropout = 0.0
    torch.testing.assert_close(net(batch["feats"], batch["feat_lengths"])[0], plain)

    settings = dict(init=str(tiny_model_dir), freeze_batchnorm=True)
    runs = [train(tiny_config(tmp_path / str(p), 2, dropout=p, **settings))[0] for p in (0.0, 0.5)]
    assert runs[0].dropout == 0.0 and runs[1].dropout == 0.5
    assert any(not torch.equal(a, b) for a, b in zip(runs[0].parameters(), runs[1].parameters()))
    saved, _, _ = load_model(tmp_path / "0.5" / "best")
    assert saved.dropout == 0.0  # a setting of the run, not of the model it writes


@pytest.mark.parametrize("p", [-0.1, 1.0])
def test_dropout_is_checked_at_load_time(p, tmp_path):
    with pytest.raises(ConfigError, match=r"dropout = .*: expected a probability"):
        tiny_config(tmp_path, 1, dropout=p)


def test_dropout_masks_follow_the_step_so_a_resumed_run_draws_the_same(tiny_model_dir, tmp_path, monkeypatch):
    import ds2.model
    real, seeds = ds2.model.F.dropout, []

    def recording_dropout(x, p, training):
        if training and p:
            seeds.append(torch.initial_seed())
        return real(x, p, training)

    monkeypatch.setattr(ds2.model.F, "dropout", recording_dropout)
    settings = dict(init=str(tiny_model_dir), freeze_batchnorm=True, dropout=0.3, checkpoint_every=1)
    straight, _ = train(tiny_config(tmp_path / "straight", 4, **settings))
    straight_seeds, seeds[:] = list(seeds), []
    train(tiny_config(tmp_path / "split", 4, **{**settings, "max_steps": 2}))
    resumed, _ = train(tiny_config(tmp_path / "split", 4, **settings), resume=True)
    layers = len(straight.rnns)
    per_step = straight_seeds[::layers]
    assert len(set(per_step)) == 4  # one seed per step, every layer of a step under it
    assert straight_seeds == [seed for seed in per_step for _ in range(layers)]
    assert seeds == straight_seeds
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_vtlp_warps_training_utterances_only(tmp_path, monkeypatch):
    import ds2.features
    real, warps = ds2.features.vtlp_matrix, []

    def recording_matrix(n_bins, alpha, *args, **kwargs):
        warps.append(alpha)
        return real(n_bins, alpha, *args, **kwargs)

    monkeypatch.setattr(ds2.features, "vtlp_matrix", recording_matrix)
    dev = [str(TINY_MANIFEST)]
    train(tiny_config(tmp_path / "plain", 2, dev=dev))
    assert warps == []
    train(tiny_config(tmp_path / "vtlp", 2, dev=dev, vtlp=[0.8, 1.2]))
    n_train = len(warps)
    assert n_train >= 2 and all(0.8 <= a <= 1.2 for a in warps) and len(set(warps)) == n_train
    train(tiny_config(tmp_path / "vtlp", 2, dev=dev, vtlp=[0.8, 1.2]))  # the same run again: the same draws
    assert warps[n_train:] == warps[:n_train]


def test_frame_entropy_is_the_mean_over_the_frames_within_each_length():
    log29 = math.log(29)
    uniform = torch.full((1, 4, 29), 1 / 29).log()
    peaked = torch.log_softmax(torch.tensor([50.0] + [0.0] * 28), 0).expand(1, 4, 29)
    assert frame_entropy(uniform, torch.tensor([4])).item() == pytest.approx(log29)
    assert frame_entropy(peaked, torch.tensor([4])).item() == pytest.approx(0.0, abs=1e-6)
    assert frame_entropy(torch.cat([uniform, peaked]), torch.tensor([2, 2])).item() == pytest.approx(log29 / 2)
    padded = torch.cat([uniform[:, :2], peaked[:, :2]], 1)  # frames past the length do not count
    assert frame_entropy(padded, torch.tensor([2])).item() == pytest.approx(log29)


def test_confidence_penalty_lowers_the_logged_loss_by_the_entropy_term_and_is_checked(tmp_path, monkeypatch):
    import ds2.training
    seen = []
    real = ds2.training.frame_entropy
    monkeypatch.setattr(ds2.training, "frame_entropy", lambda lp, n: seen.append(real(lp, n)) or seen[-1])
    settings = dict(steps=3, log_every=1, specaugment=False, noise_prob=0.0)
    train(tiny_config(tmp_path / "plain", **settings))
    assert not seen
    train(tiny_config(tmp_path / "penalised", **settings, confidence_penalty=0.5))
    plain, penalised = _losses(tmp_path / "plain"), _losses(tmp_path / "penalised")
    assert len(seen) == 3 and all(e > 0 for e in seen)
    # the first step sees the same model and batch in both runs: the losses differ by 0.5 x its entropy
    assert float(plain[1]) - float(penalised[1]) == pytest.approx(0.5 * seen[0].item(), abs=2e-3)
    with pytest.raises(ConfigError, match="confidence_penalty = -1"):
        tiny_config(tmp_path / "bad", 1, confidence_penalty=-1.0)
