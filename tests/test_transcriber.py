import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import ROOT, TINY_MANIFEST, high_band_share
from ds2.audio import SAMPLE_RATE, AudioError
from ds2.checkpoint import CheckpointError, load_model, save_model
from ds2.data import read_manifest
from ds2.text import wer_cer
from ds2.transcriber import Transcriber, segment_bounds

ENTRIES = read_manifest(TINY_MANIFEST)


@pytest.fixture(scope="module")
def transcriber(tiny_model_dir):
    return Transcriber(tiny_model_dir, lm=None)


def test_tiny_model_learns_the_fixture(transcriber):
    """A `tiny` model trained for ~15 s (120 steps) on ten synthetic utterances transcribes them."""
    pairs = [(e["text"], transcriber.transcribe(e["audio"]).greedy) for e in ENTRIES]
    _, cer = wer_cer(pairs)
    assert cer < 0.10, pairs


def test_result_fields(transcriber):
    r = transcriber.transcribe(ENTRIES[2]["audio"])
    assert r.emissions.ndim == 2 and r.emissions.shape[1] == 29
    assert abs(r.duration - ENTRIES[2]["duration"]) < 0.01
    assert r.frame_seconds == pytest.approx(0.02)  # tiny: 10 ms hop x time stride 2
    assert [w.word for w in r.greedy_words] == r.greedy.split()
    assert all(0 <= w.start <= w.end <= r.duration + 0.05 for w in r.greedy_words)
    assert {"load", "features", "model", "greedy", "lm"} <= set(r.timings)


def test_array_input_at_any_rate_and_channels(transcriber):
    wave, rate = sf.read(ENTRIES[2]["audio"], dtype="float32")
    expected = transcriber.transcribe(wave, rate).greedy
    stereo48k = np.repeat(np.stack([wave, wave], 1), 3, axis=0)  # 48 kHz by sample repetition
    assert transcriber.transcribe((stereo48k * 32767).astype(np.int16), 48000).greedy == expected
    with pytest.raises(AudioError, match="sample rate"):
        transcriber.transcribe(wave)


def test_many_files_give_the_same_results_in_order_with_errors_in_place(transcriber, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all" * 10)
    paths = [ENTRIES[0]["audio"], str(bad), ENTRIES[1]["audio"], ENTRIES[2]["audio"]]
    results = list(transcriber.transcribe_many(paths, ahead=2))
    assert [source for source, _ in results] == paths
    assert isinstance(results[1][1], AudioError) and "bad.wav" in str(results[1][1])
    for path, r in (results[0], results[2], results[3]):
        alone = transcriber.transcribe(path)
        assert (r.greedy, r.lm, r.words) == (alone.greedy, alone.lm, alone.words)
        np.testing.assert_array_equal(r.emissions, alone.emissions)


def test_beam_options_reach_every_beam_search(transcriber, monkeypatch):
    seen, decode = [], transcriber.beam.decode
    monkeypatch.setattr(transcriber.beam, "decode", lambda *a, **k: seen.append(k) or decode(*a, **k))
    transcriber.transcribe(ENTRIES[0]["audio"], hotwords=["red car"], hotword_weight=3.0)
    list(transcriber.transcribe_many([ENTRIES[1]["audio"], ENTRIES[2]["audio"]], hotwords=["blue"]))
    transcriber.transcribe(ENTRIES[0]["audio"])
    assert [(k.get("hotwords"), k.get("hotword_weight")) for k in seen] == [
        (["red car"], 3.0), (["blue"], None), (["blue"], None), (None, None)]


def test_cli_hotwords_reach_the_beam_search_and_bad_ones_are_refused(tiny_model_dir, monkeypatch, capsys):
    from ds2 import __main__ as cli
    seen, decode = [], Transcriber.decode
    monkeypatch.setattr(Transcriber, "decode", lambda self, *a, **k: seen.append(k) or decode(self, *a, **k))
    common = ["--model", str(tiny_model_dir), "--lm", "none", "--json"]
    assert cli.main(["transcribe", ENTRIES[0]["audio"], *common, "--hotword", "Red Car", "--hotword", "blue",
                     "--hotword-weight", "4"]) == 0
    assert json.loads(capsys.readouterr().out)["greedy"] == ENTRIES[0]["text"]  # the greedy text is not changed
    assert cli.main(["evaluate", str(TINY_MANIFEST), *common, "--hotword", "red"]) == 0
    assert [(k["hotwords"], k["hotword_weight"]) for k in seen] == [(["Red Car", "blue"], 4.0)] + [(["red"], 10.0)] * 10
    assert cli.main(["transcribe", ENTRIES[0]["audio"], *common]) == 0 and "hotwords" not in seen[-1]
    for bad, message in ((["--hotword", "!!!"], "nothing left"), (["--hotword-weight", "inf"], "finite number")):
        with pytest.raises(SystemExit):
            cli.main(["transcribe", ENTRIES[0]["audio"], *common, *bad])
        assert message in capsys.readouterr().err


def test_save_load_gives_bit_identical_outputs(tiny_model_dir, tmp_path):
    import torch
    model, features, meta = load_model(tiny_model_dir)
    save_model(tmp_path, model, features, meta)
    again, _, _ = load_model(tmp_path)
    x, lengths = torch.randn(2, 150, 40), torch.tensor([150, 77])
    with torch.no_grad():
        assert torch.equal(model(x, lengths)[0], again(x, lengths)[0])


def test_segments_cover_long_audio_exactly():
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(SAMPLE_RATE * 75).astype(np.float32) * 0.1
    wave[SAMPLE_RATE * 18:SAMPLE_RATE * 18 + 800] = 0  # a pause inside the cut search window
    bounds = segment_bounds(wave)
    assert bounds[0][0] == 0 and bounds[-1][1] == wave.size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(0 < e - s <= 20 * SAMPLE_RATE for s, e in bounds)
    assert SAMPLE_RATE * 18 <= bounds[0][1] <= SAMPLE_RATE * 18 + 800  # cut in the quiet part


@pytest.mark.parametrize("max_seconds", [0.5, 1.0, 2.5, 3.5, 4.0, 5.5])
def test_short_segment_limits_cut_at_quiet_points_and_always_move_on(max_seconds):
    rng = np.random.default_rng(1)
    wave = rng.standard_normal(SAMPLE_RATE * 12).astype(np.float32) * 0.1
    quiet = int(SAMPLE_RATE * 0.8 * max_seconds)  # a pause inside the first cut's search window
    wave[quiet:quiet + 160] = 0
    bounds = segment_bounds(wave, max_seconds)
    assert bounds[0][0] == 0 and bounds[-1][1] == wave.size
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    assert all(0 < e - s <= max_seconds * SAMPLE_RATE for s, e in bounds)
    assert quiet - 480 <= bounds[0][1] <= quiet + 160  # at the pause (segment starts snap to 30 ms)


def test_segment_limits_too_short_to_hold_speech_are_refused(transcriber):
    with pytest.raises(ValueError, match="at least 0.5 s"):
        segment_bounds(np.zeros(SAMPLE_RATE, np.float32), 0.2)
    with pytest.raises(ValueError, match="max_segment_seconds=0.5: at least 1.0 s"):
        transcriber.stream(max_segment_seconds=0.5)


def test_long_audio_is_transcribed_in_segments(transcriber):
    wave, rate = sf.read(ENTRIES[3]["audio"], dtype="float32")
    gap = np.zeros(rate // 2, np.float32)
    long = np.concatenate([np.concatenate([wave, gap])] * 24)  # ~40 s: three segments
    r = transcriber.transcribe(long, rate)
    assert r.emissions.shape[0] == pytest.approx(long.size / rate / r.frame_seconds, abs=3)
    bounds = segment_bounds(long)
    assert len(bounds) == 3
    pieces = [transcriber.transcribe(long[a:b], rate).emissions for a, b in bounds]
    np.testing.assert_allclose(r.emissions, np.concatenate(pieces), atol=1e-4)
    assert r.greedy_words[-1].end == pytest.approx(r.duration, abs=1.0)  # times run across segments


def test_no_lm_warning_only_when_an_lm_was_expected(tiny_model_dir, tmp_path, monkeypatch):
    import warnings

    from ds2 import transcriber
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # --lm none asked for no LM: nothing to warn about
        assert Transcriber(tiny_model_dir, lm="none").lm_dir is None and Transcriber(tiny_model_dir, lm=None).beam
    monkeypatch.setattr(transcriber, "DEFAULT_LM", tmp_path / "no-lm")
    with pytest.warns(UserWarning, match="without a language model"):  # the bundled LM is missing
        Transcriber(tiny_model_dir)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        Transcriber(tmp_path, lm=None)


def test_cli_json_contract_with_a_bad_file(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    files = [ENTRIES[0]["audio"], str(bad), ENTRIES[2]["audio"]]
    proc = subprocess.run([sys.executable, "-m", "ds2", "transcribe", *files, "--model", str(tiny_model_dir),
                           "--lm", "none", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode != 0
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["path"] for line in lines] == files
    assert "error" in lines[1] and "cannot read" in lines[1]["error"]
    for line, entry in zip([lines[0], lines[2]], [ENTRIES[0], ENTRIES[2]]):
        assert {"greedy", "lm", "duration"} <= set(line) and "error" not in line
        assert line["greedy"] == entry["text"]
        assert line["duration"] == pytest.approx(entry["duration"], abs=0.01)


def test_cli_evaluate_prints_corpus_wer_and_cer(tiny_model_dir):
    proc = subprocess.run([sys.executable, "-m", "ds2", "evaluate", str(TINY_MANIFEST), "--model", str(tiny_model_dir),
                           "--lm", "none", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["utterances"] == 10 and report["greedy_cer"] < 0.1
    assert {"greedy_wer", "lm_wer", "lm_cer"} <= set(report)


def test_rewritten_gives_band_limited_recordings(tmp_path):
    from ds2.audio import load_audio
    from ds2.evaluation import rewritten
    files = [ENTRIES[1]["audio"], str(tmp_path / "missing.wav")]
    phone, missing = rewritten(files, sample_rate=8000)
    assert missing == files[1]  # passed on: transcribe_many reports it
    assert sf.info(io.BytesIO(phone)).samplerate == 8000
    original, narrow = load_audio(files[0]), load_audio(phone)
    assert abs(narrow.size - original.size) <= 2
    assert high_band_share(original) > 1e-2 and high_band_share(narrow) < 1e-4
    with pytest.raises(ValueError, match="plausible"):
        rewritten(files, sample_rate=0)
    (both,) = rewritten(files[:1], start_ms=10, sample_rate=8000)  # shifted and re-recorded in one read
    assert sf.info(io.BytesIO(both)).samplerate == 8000 and abs(load_audio(both).size - (original.size - 160)) <= 2


def test_rewritten_drops_the_start_of_each_file(tmp_path):
    from ds2.audio import load_audio
    from ds2.evaluation import rewritten
    files = [ENTRIES[1]["audio"], str(tmp_path / "missing.wav")]
    later, missing = rewritten(files, start_ms=10)
    assert missing == files[1]  # passed on: transcribe_many reports it
    original, shifted = load_audio(files[0]), load_audio(later)
    assert shifted.size == original.size - 160 and np.array_equal(shifted, original[160:])
    short = tmp_path / "short.wav"
    sf.write(short, original[:1600], 16000)  # 100 ms
    assert next(rewritten([str(short)], start_ms=100)) == b""  # nothing left: reported as empty, not hidden
    for bad in (-1, 1000, float("nan")):
        with pytest.raises(ValueError, match="start shift"):
            rewritten(files, start_ms=bad)


def test_a_file_no_longer_than_the_shift_is_skipped_by_name(tiny_model_dir, tmp_path, capsys):
    from ds2.audio import load_audio
    from ds2.evaluation import evaluate
    short = tmp_path / "short.wav"
    sf.write(short, load_audio(ENTRIES[1]["audio"])[:1600], 16000)  # 100 ms
    entries = [ENTRIES[1], {"audio": str(short), "text": "a"}]
    report = evaluate(Transcriber(tiny_model_dir, lm=None), entries, beam=False, start_ms=100)
    assert report["utterances"] == 1 and report["skipped"] == 1
    assert f"skipped: {short}" in capsys.readouterr().err


def test_cli_evaluate_with_a_later_start(tiny_model_dir):
    run = [sys.executable, "-m", "ds2", "evaluate", str(TINY_MANIFEST), "--model", str(tiny_model_dir),
           "--lm", "none", "--json", "--greedy-only"]
    reports = [json.loads(subprocess.run(run + extra, capture_output=True, text=True, cwd=ROOT, timeout=120,
                                         check=True).stdout) for extra in ([], ["--start-ms", "10"])]
    assert "start_ms" not in reports[0] and reports[1]["start_ms"] == 10
    assert reports[1]["utterances"] == 10 and reports[1]["skipped"] == 0
    proc = subprocess.run(run + ["--start-ms", "1000"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "start shift" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_evaluate_at_a_sample_rate(tiny_model_dir):
    proc = subprocess.run([sys.executable, "-m", "ds2", "evaluate", str(TINY_MANIFEST), "--model", str(tiny_model_dir),
                           "--lm", "none", "--json", "--greedy-only", "--sample-rate", "8000"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["sample_rate"] == 8000 and report["utterances"] == 10 and report["skipped"] == 0
    proc = subprocess.run([sys.executable, "-m", "ds2", "evaluate", str(TINY_MANIFEST), "--model", str(tiny_model_dir),
                           "--lm", "none", "--sample-rate", "5"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "not a plausible audio rate" in proc.stderr and "Traceback" not in proc.stderr


def test_cli_reports_a_broken_lm_folder_or_manifest_in_one_line(tiny_model_dir, tmp_path, capsys):
    from ds2.__main__ import main
    (tmp_path / "lm").mkdir()
    (tmp_path / "lm" / "lm.json").write_text('{"alpha": 0.5}')
    assert main(["transcribe", ENTRIES[0]["audio"], "--model", str(tiny_model_dir), "--lm", str(tmp_path / "lm")]) == 2
    assert "error: " in (err := capsys.readouterr().err) and "not a valid LM config" in err
    (tmp_path / "m.jsonl").write_text('{"audio": "a.wav"}\n')
    assert main(["evaluate", str(tmp_path / "m.jsonl"), "--model", str(tiny_model_dir), "--lm", "none"]) == 2
    assert "m.jsonl:1: not a manifest line" in capsys.readouterr().err


def test_cli_without_bundled_model_says_so(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ds2", "transcribe", ENTRIES[0]["audio"], "--model", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "missing" in proc.stderr and "Traceback" not in proc.stderr


def test_fp16_export_loads_as_fp32_with_close_outputs(tiny_model_dir, tmp_path):
    import torch
    from train.export import export
    export(tiny_model_dir, tmp_path / "half")
    assert (tmp_path / "half" / "model.safetensors").stat().st_size < 0.6 * (tiny_model_dir / "model.safetensors").stat().st_size
    full, _, _ = load_model(tiny_model_dir)
    half, _, meta = load_model(tmp_path / "half")
    assert meta["weights_dtype"] == "float16" and next(half.parameters()).dtype == torch.float32
    x, lengths = torch.randn(1, 120, 40), torch.tensor([120])
    with torch.no_grad():
        torch.testing.assert_close(full(x, lengths)[0], half(x, lengths)[0], atol=0.05, rtol=0.01)


def test_the_cli_runs_from_any_folder_once_installed(tiny_model_dir, tmp_path):
    """`make install` installs this checkout in editable mode: the `ds2` command and `python -m ds2`
    work outside the repository, with the bundled assets where they are."""
    command = Path(sys.executable).with_name("ds2")
    if not command.exists():
        pytest.skip("the checkout is not installed in this environment: make install")
    for cli in ([str(command)], [sys.executable, "-m", "ds2"]):
        proc = subprocess.run([*cli, "transcribe", ENTRIES[2]["audio"], "--model", str(tiny_model_dir), "--lm", "none",
                               "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["greedy"] == ENTRIES[2]["text"]
