"""The benchmark's measurements, run for real on the tiny model and the fixture audio (repeats=1)."""

import importlib.util
import json
import math
import subprocess
import sys

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from conftest import ROOT, TINY_MANIFEST
from ds2 import bench
from ds2.audio import load_audio
from ds2.data import read_manifest
from ds2.features import FeatureConfig
from ds2.model import DeepSpeech2, model_config
from ds2.transcriber import Transcriber

ENTRIES = read_manifest(TINY_MANIFEST)


@pytest.fixture(scope="module")
def transcriber(tiny_model_dir):
    return Transcriber(tiny_model_dir, lm=None)


def assert_spread(s: dict):
    assert 0 < s["min"] <= s["median"] <= s["max"] < math.inf


def test_file_naive_and_quantised_rtf(transcriber, tiny_model_dir):
    files = bench.file_rtf(transcriber, ENTRIES[:3], repeats=1)
    assert files["files"] == 3 and files["audio_seconds"] == pytest.approx(sum(e["duration"] for e in ENTRIES[:3]))
    assert_spread(files["rtf_greedy"])
    assert_spread(files["rtf_lm"])
    assert_spread(files["rtf_many"])
    assert 0 <= files["wer_greedy"] < 1.5 and 0 <= files["wer_lm"] < 1.5
    assert_spread(bench.naive_rtf(tiny_model_dir, ENTRIES[:3], repeats=1)["rtf_greedy"])
    model = transcriber.model
    quant = bench.quantized(transcriber, ENTRIES[:3], 1, files)
    assert transcriber.model is model  # the float model is back in place
    assert_spread(quant["rtf_greedy"])
    assert all(math.isfinite(v) for v in quant["wer_change_points"].values())
    assert quant["adoptable"] == (max(quant["wer_change_points"].values()) <= 0.5)


def test_streaming_latency_and_word_lag(transcriber):
    stream = bench.streaming(transcriber, [load_audio(e["audio"]) for e in ENTRIES], seconds=8.0)
    assert stream["updates"] == 16  # 8 s in 0.5 s chunks
    ms = stream["latency_ms"]
    assert 0 < ms["p50"] <= ms["p95"] <= ms["max"] < 10_000
    assert stream["words"] > 0
    assert 0 <= stream["word_lag_s"]["p50"] <= stream["word_lag_s"]["p95"] < 10
    assert stream["segments"] > 0 and 0 <= stream["final_lag_s"]["p50"] <= stream["final_lag_s"]["p95"] < 10


def test_cold_start_in_a_fresh_process(tiny_model_dir):
    cold = bench.cold_start(tiny_model_dir, "none", ENTRIES[0]["audio"], repeats=1, threads=1)
    for key in ("import", "load", "first_transcript", "after_import", "process"):
        assert_spread(cold[key])
    assert cold["process"]["median"] > cold["import"]["median"] + cold["after_import"]["median"]


def test_training_throughput_bucketed_and_naive():
    train = bench.training(ENTRIES, "tiny", FeatureConfig(n_mels=40), batch_seconds=4.0, steps=2)
    assert train["steps"] == 2
    for run in (train["bucketed"], train["naive"]):
        assert run["audio_s_per_s"] > 0 and run["utt_per_s"] > 0 and run["tflop_per_s"] > 0
        assert 0 <= run["padding"] < 1
    assert train["speedup"] > 0


@pytest.mark.parametrize("bidirectional", [True, False])
def test_model_flops_match_torch_flop_counter(bidirectional):
    config = model_config("small", n_feats=40, bidirectional=bidirectional, rnn_hidden=64)
    model = DeepSpeech2(config).eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(2, 150, 40), torch.tensor([150, 150]))
    assert bench.model_flops(config, 2, 150) == counter.get_total_flops()


def test_lstm_flops_are_four_thirds_of_gru():
    # The flop counter cannot see inside CPU LSTMs (one fused kernel): LSTMs have 4 gates to GRUs' 3.
    gru, lstm, none = (model_config("large", rnn_type=kind, rnn_layers=layers)
                       for kind, layers in (("gru", 7), ("lstm", 7), ("gru", 0)))
    base = bench.model_flops(none, 4, 1000)
    assert bench.model_flops(lstm, 4, 1000) - base == pytest.approx(4 / 3 * (bench.model_flops(gru, 4, 1000) - base))


@pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None, reason="pocketsphinx is not installed")
def test_pocketsphinx_transcribes_a_fixture_file():
    peer = bench.pocketsphinx(ENTRIES[2:3], repeats=1, threads=1)
    assert peer["status"] == "ok" and peer["version"].startswith("5.")
    assert_spread(peer["rtf"])
    assert_spread(peer["rtf_process"])
    assert 0 <= peer["wer"] < math.inf


def test_cli_prints_a_table_and_writes_json(tiny_model_dir, tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "ds2.bench", "--model", str(tiny_model_dir), "--lm", "none", "--manifest",
         str(TINY_MANIFEST), "--only", "file,stream", "--files", "2", "--repeats", "1", "--stream-seconds", "4",
         "--json", str(out), "--markdown"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| measurement | result: median (min-max) | target |" in done.stdout
    assert "stream update p50 / p95 / max" in done.stdout and "stream, one pass" in done.stdout
    report = json.loads(out.read_text())
    assert set(report) == {"settings", "file", "stream", "stream_one_pass"}
    assert report["stream_one_pass"]["options"] == {"background": False, "fast_partials": False}
    assert report["settings"]["files"] == 2 and report["settings"]["threads"] == 1
    assert_spread(report["file"]["cli_no_lm"]["rtf"])
    assert report["stream"]["updates"] == 8


@pytest.mark.skipif(importlib.util.find_spec("pocketsphinx") is None, reason="pocketsphinx is not installed")
def test_results_reuse_a_pocketsphinx_run_only_for_the_same_files(tmp_path, monkeypatch):
    from train import results
    entries = [dict(e) for e in ENTRIES[2:3]]
    first = results.peer_results(entries, cache_dir=tmp_path)
    assert first["status"] == "ok" and "cached" not in first
    monkeypatch.setattr(results, "pocketsphinx", lambda *a, **k: pytest.fail("ran again"))
    again = results.peer_results(entries, cache_dir=tmp_path)
    assert again["cached"] and {k: again[k] for k in first} == first
    monkeypatch.setattr(results, "pocketsphinx", lambda *a, **k: {"status": "ran"})
    entries[0]["text"] += " more"  # other references: another key
    assert results.peer_results(entries, cache_dir=tmp_path) == {"status": "ran"}
    assert results.peer_results(ENTRIES[2:3], cache_dir=None) == {"status": "ran"}  # no cache: always runs
