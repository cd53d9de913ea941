import json

import numpy as np
import pytest

from conftest import TINY_MANIFEST, widened_and_refeatured
from train.compare import bootstrap, compare_errors, main


def test_bootstrap_of_equal_models_and_of_one_worse_everywhere():
    errors = np.array([0, 2, 1, 0, 3])
    assert bootstrap(errors, errors) == {"p_worse": 0.0, "p_better": 0.0}  # every draw a tie
    assert bootstrap(errors, errors + 1, resamples=500) == {"p_worse": 1.0, "p_better": 0.0}
    assert bootstrap(errors + 1, errors, resamples=500) == {"p_worse": 0.0, "p_better": 1.0}


def test_bootstrap_matches_the_chance_of_drawing_the_one_utterance_that_differs():
    """One utterance of 100 has one more error: a draw finds the candidate worse exactly when it holds
    that utterance at least once, 1 - 0.99**100 = 63.4% of draws, and never better."""
    base = np.zeros(100, dtype=int)
    cand = base.copy()
    cand[37] = 1
    result = bootstrap(base, cand, resamples=20_000, seed=3)
    assert result["p_better"] == 0.0
    assert abs(result["p_worse"] - (1 - 0.99 ** 100)) < 0.01
    assert bootstrap(base, cand, resamples=20_000, seed=3) == result  # seeded: the same draws again


def test_bootstrap_refuses_counts_that_do_not_pair_up():
    with pytest.raises(ValueError, match="must pair up"):
        bootstrap(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="at least 1"):
        bootstrap(np.zeros(3), np.zeros(3), resamples=0)


def test_compare_errors_counts_words_and_utterances_each_way():
    r = compare_errors("part.jsonl", np.array([3, 4, 5]), np.array([1, 0, 2]), np.array([0, 1, 2]), resamples=100)
    assert r["words"] == 12 and r["errors"] == [3, 3]
    assert r["utterances_better"] == 1 and r["utterances_worse"] == 1
    assert 0 < r["p_worse"] < 1 and 0 < r["p_better"] < 1


def test_cli_compares_two_model_folders_on_each_manifest(tiny_model_dir, tmp_path, capsys):
    from ds2.checkpoint import load_model, save_model
    from ds2.model import DeepSpeech2
    model, features, _ = load_model(tiny_model_dir)
    untrained = save_model(tmp_path / "untrained", DeepSpeech2(model.config), features)
    main([str(tiny_model_dir), str(tiny_model_dir), "--dev", str(TINY_MANIFEST), "--json"])
    same = json.loads(capsys.readouterr().out)
    assert same["errors"][0] == same["errors"][1] and same["utterances"] == 10
    assert same["p_worse"] == same["p_better"] == 0.0
    main([str(tiny_model_dir), str(untrained), "--dev", str(TINY_MANIFEST), "--resamples", "2000"])
    line = capsys.readouterr().out
    assert line.startswith("manifest.jsonl: 10 utterances") and "p_worse 1.000" in line  # no training: worse


def test_cli_compares_a_widened_model_with_its_start_and_refuses_other_features(tiny_model_dir, tmp_path, capsys):
    wide, other = widened_and_refeatured(tiny_model_dir, tmp_path)
    main([str(tiny_model_dir), str(wide), "--dev", str(TINY_MANIFEST), "--json", "--resamples", "200"])
    r = json.loads(capsys.readouterr().out)  # the same function to rounding: the same errors
    assert r["errors"][0] == r["errors"][1] and r["utterances"] == 10
    with pytest.raises(SystemExit) as exit_info:
        main([str(tiny_model_dir), str(other), "--dev", str(TINY_MANIFEST)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "features or output classes differ" in err and "Traceback" not in err


def test_cli_reports_a_missing_folder_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "nowhere"), str(tmp_path / "nowhere"), "--dev", str(TINY_MANIFEST)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "error: " in err and "nowhere" in err and "Traceback" not in err
