import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, TINY_MANIFEST, widened_and_refeatured
from ds2.training import ConfigError, TrainConfig
from train.ship import ShipRule, judge, main, summary


def counts(*rows):
    return np.array(rows, dtype=np.int64).reshape(-1, 4)


BASE = {"read.jsonl": counts([5, 10, 9, 40], [5, 10, 11, 40]), "spelled.jsonl": counts([1, 4, 1, 8], [0, 4, 0, 8])}


def test_summary_pools_the_errors_of_every_part_before_dividing():
    s = summary(BASE)
    assert s["pooled"]["word_errors"] == 11 and s["pooled"]["words"] == 28 and s["pooled"]["wer"] == 39.29
    assert s["parts"]["read.jsonl"]["wer"] == 50.0 and s["parts"]["read.jsonl"]["cer"] == 25.0


def test_judge_applies_each_clause_of_the_rule():
    rule = ShipRule(baseline="x", no_worse=["read.jsonl"], max_errors={"spelled.jsonl": 1}, resamples=500)
    better = {"read.jsonl": counts([4, 10, 9, 40], [5, 10, 11, 40]), "spelled.jsonl": BASE["spelled.jsonl"]}
    assert judge(better, BASE, rule)[0] == []
    assert judge(BASE, BASE, rule)[0] == ["pooled WER 39.29% not below 39.29%"]
    more_chars = {"read.jsonl": counts([4, 10, 12, 40], [5, 10, 11, 40]), "spelled.jsonl": BASE["spelled.jsonl"]}
    assert judge(more_chars, BASE, rule)[0] == ["read.jsonl: 23 char errors, more than 20"]
    spelled_worse = {"read.jsonl": counts([0, 10, 0, 40], [0, 10, 0, 40]), "spelled.jsonl": counts([1, 4, 1, 8], [1, 4, 1, 8])}
    reasons, boot = judge(spelled_worse, BASE, rule)
    assert reasons == ["spelled.jsonl: 2 word errors, more than 1"]  # one utterance of two: not beyond chance
    assert boot["spelled.jsonl"]["p_worse"] < 0.95 and boot["read.jsonl"]["p_better"] == 1.0


def test_judge_refuses_a_part_worse_beyond_chance():
    base = {"a.jsonl": counts(*[[0, 5, 0, 20]] * 40), "b.jsonl": counts(*[[9, 10, 30, 40]] * 40)}
    cand = {"a.jsonl": counts(*[[1, 5, 1, 20]] * 40), "b.jsonl": counts(*[[0, 10, 0, 40]] * 40)}
    reasons, boot = judge(cand, base, ShipRule(baseline="x", resamples=500))
    assert reasons == ["a.jsonl: worse beyond chance (bootstrap p_worse 1.000)"] and boot["a.jsonl"]["p_worse"] == 1.0


def write_config(path, out_dir, init, ship: str):
    path.write_text(f'train = ["{TINY_MANIFEST}"]\ndev = ["{TINY_MANIFEST}"]\nout_dir = "{out_dir}"\n'
                    f'init = "{init}"\nmodel = "tiny"\n[features]\nn_mels = 40\n{ship}')
    return path


def test_training_ignores_the_ship_table_and_the_rule_is_checked(tmp_path):
    config = write_config(tmp_path / "run.toml", tmp_path / "run", tmp_path / "init",
                          '[ship]\nbaseline = "b"\nmax_errors = { "manifest.jsonl" = 3 }\ncandidates = { avg = ["init", 1] }\n')
    assert TrainConfig.load(config).model == "tiny"
    assert ShipRule.load(config).candidates == {"avg": ["init", 1]}
    for table, message in [("", "no \\[ship\\] table"), ("[ship]\nno_worse = []\n", "needs a baseline"),
                           ('[ship]\nbaseline = "b"\nfloor = 1\n', "unknown \\[ship\\] settings: floor"),
                           ('[ship]\nbaseline = "b"\ncandidates = { avg = [0] }\n', "member 0"),
                           ('[ship]\nbaseline = "b"\ncandidates = { best = [1, 2] }\n', "plain name"),
                           ('[ship]\nbaseline = "b"\ncandidates = { "../x" = [1, 2] }\n', "plain name"),
                           ('[ship]\nbaseline = "b"\nmax_errors = { "a.jsonl" = -1 }\n', "word counts"),
                           ('[ship]\nbaseline = "b"\np_worse = 2\n', "probability"),
                           ('[ship]\nbaseline = "b"\nmax_errors = [3]\n', "word counts"),
                           ('[ship]\nbaseline = "b"\ncandidates = ["init"]\n', "expected a table"),
                           ('[ship]\nbaseline = "b"\nshifts_ms = 10\n', "list of different start shifts"),
                           ('[ship]\nbaseline = "b"\nshifts_ms = []\n', "list of different start shifts"),
                           ('[ship]\nbaseline = "b"\nshifts_ms = [0, 10, 10]\n', "list of different start shifts"),
                           ('[ship]\nbaseline = "b"\nshifts_ms = [0, true]\n', "list of different start shifts"),
                           ('[ship]\nbaseline = "b"\nshifts_ms = [[0]]\n', "list of different start shifts"),
                           ('[ship]\nbaseline = "b"\nshifts_ms = [0, 1000]\n', "shifts_ms: 1000 ms: the start shift")]:
        with pytest.raises(ConfigError, match=message):
            ShipRule.load(write_config(tmp_path / "bad.toml", tmp_path / "run", tmp_path / "init", table))


def test_cli_averages_measures_and_picks_against_the_baseline(tiny_model_dir, tmp_path, capsys):
    from ds2.checkpoint import load_model, save_model
    from ds2.model import DeepSpeech2
    model, features, _ = load_model(tiny_model_dir)
    untrained = save_model(tmp_path / "untrained", DeepSpeech2(model.config), features)
    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "epochs" / "001")
    shutil.copytree(untrained, run / "epochs" / "002")
    config = write_config(tmp_path / "run.toml", run, untrained, '[ship]\nbaseline = "' + str(untrained) + '"\n'
                          'no_worse = ["manifest.jsonl"]\nresamples = 200\n'
                          'candidates = { twice = [1, 1], start = ["init"] }\n')
    main([str(config), "--json", str(tmp_path / "ship.json")])
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"pick: epoch 1 ({run / 'epochs' / '001'})"  # `twice` ties it: the first listed
    report = json.loads((tmp_path / "ship.json").read_text())
    assert list(report["candidates"]) == ["epoch 1", "epoch 2", "twice", "start"]
    c = report["candidates"]
    assert c["epoch 1"]["passes"] and c["twice"]["passes"] and c["twice"]["pooled"] == c["epoch 1"]["pooled"]
    assert (run / "twice" / "model.safetensors").exists() and c["start"]["folder"] == str(untrained)
    assert not c["epoch 2"]["passes"] and c["epoch 2"]["fails"][0].startswith("pooled WER")
    assert c["start"]["pooled"] == report["baseline"]["pooled"] and report["baseline"]["parts"]["manifest.jsonl"]["words"] > 0


def test_cli_names_what_is_missing_in_one_line(tiny_model_dir, tmp_path, capsys):
    config = write_config(tmp_path / "run.toml", tmp_path / "run", tmp_path / "init",
                          f'[ship]\nbaseline = "{tiny_model_dir}"\ncandidates = {{ avg = ["init", 1] }}\n')
    with pytest.raises(SystemExit) as exit_info:
        main([str(config)])
    assert exit_info.value.code == 2 and "init is not a model folder" in capsys.readouterr().err
    config = write_config(tmp_path / "run.toml", tmp_path / "run", tmp_path / "init",
                          f'[ship]\nbaseline = "{tiny_model_dir}"\nno_worse = ["librispeech-dev.jsonl"]\n')
    with pytest.raises(SystemExit):
        main([str(config)])
    assert "not one of the dev parts: manifest.jsonl" in capsys.readouterr().err


def test_cli_sums_each_models_errors_over_the_start_shifts(tiny_model_dir, tmp_path, capsys):
    from ds2.checkpoint import load_model, save_model
    from ds2.model import DeepSpeech2
    model, features, _ = load_model(tiny_model_dir)
    untrained = save_model(tmp_path / "untrained", DeepSpeech2(model.config), features)
    reports = {}
    for shifts in ("[0]", "[10]", "[0, 10]"):
        config = write_config(tmp_path / "run.toml", tmp_path / "run", tmp_path / "init",
                              f'[ship]\nbaseline = "{untrained}"\nresamples = 200\nshifts_ms = {shifts}\n'
                              f'candidates = {{ trained = ["{tiny_model_dir}"] }}\n')
        main([str(config), "--json", str(tmp_path / "ship.json")])
        reports[shifts] = json.loads((tmp_path / "ship.json").read_text())
    assert "start shifts of 0, 10 ms" in capsys.readouterr().out
    for who in ("baseline", "trained"):
        one, later, both = (r["baseline"] if who == "baseline" else r["candidates"][who] for r in reports.values())
        for key in ("word_errors", "words", "char_errors", "chars"):
            assert both["pooled"][key] == one["pooled"][key] + later["pooled"][key], (who, key)
    trained = [r["candidates"]["trained"]["pooled"]["char_errors"] for r in reports.values()]
    assert trained[0] != trained[1]  # the shift changes what the network hears
    assert reports["[0, 10]"]["rule"]["shifts_ms"] == [0, 10]


def test_cli_measures_only_the_named_candidates_before_the_run(tiny_model_dir, tmp_path, capsys):
    config = write_config(tmp_path / "run.toml", tmp_path / "run", tmp_path / "init",  # no init, no epochs yet
                          f'[ship]\nbaseline = "{tiny_model_dir}"\nresamples = 200\n'
                          f'candidates = {{ ready = ["{tiny_model_dir}"], avg = ["init", 1] }}\n')
    main([str(config), "--only", "ready", "--json", str(tmp_path / "ship.json")])
    assert list(json.loads((tmp_path / "ship.json").read_text())["candidates"]) == ["ready"]
    assert capsys.readouterr().out.splitlines()[-1] == "pick: none passes the rule"  # the baseline itself: a tie
    with pytest.raises(SystemExit) as exit_info:
        main([str(config), "--only", "ready", "epoch 3"])
    assert exit_info.value.code == 2 and "no candidate named 'epoch 3'; there are: ready, avg" in capsys.readouterr().err


def test_cli_measures_a_widened_candidate_against_its_narrower_baseline(tiny_model_dir, tmp_path, capsys):
    wide, other = widened_and_refeatured(tiny_model_dir, tmp_path)
    config = write_config(tmp_path / "run.toml", tmp_path / "run", tmp_path / "init",
                          f'[ship]\nbaseline = "{tiny_model_dir}"\nresamples = 200\n'
                          f'candidates = {{ wide = ["{wide}"] }}\n')
    main([str(config), "--json", str(tmp_path / "ship.json")])
    report = json.loads((tmp_path / "ship.json").read_text())  # the same function, so the same errors
    assert report["candidates"]["wide"]["pooled"]["word_errors"] == report["baseline"]["pooled"]["word_errors"]
    config = write_config(tmp_path / "run.toml", tmp_path / "run", tmp_path / "init",
                          f'[ship]\nbaseline = "{tiny_model_dir}"\ncandidates = {{ other = ["{other}"] }}\n')
    with pytest.raises(SystemExit) as exit_info:
        main([str(config)])
    assert exit_info.value.code == 2 and "features or output classes differ" in capsys.readouterr().err


def test_every_ship_table_in_the_repo_is_a_valid_rule():
    configs = [p for p in sorted((ROOT / "train" / "configs").glob("*.toml")) if "\n[ship]" in p.read_text()]
    assert configs  # stage 48 on
    for path in configs:
        rule = ShipRule.load(path)
        parts = {Path(m).name for m in TrainConfig.load(path).dev}
        assert set(rule.no_worse) | set(rule.max_errors) <= parts, path
