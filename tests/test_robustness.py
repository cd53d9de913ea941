"""Bad input, faults in training and safe loading: every failure mode is a tested behaviour."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from conftest import ROOT, TINY_MANIFEST, tiny_config
from ds2.audio import AudioError
from ds2.checkpoint import CheckpointError, load_model, load_resume_state
from ds2.data import read_manifest
from ds2.transcriber import Transcriber

ENTRIES = read_manifest(TINY_MANIFEST)


@pytest.fixture(scope="module")
def transcriber(tiny_model_dir):
    return Transcriber(tiny_model_dir, lm=None)


def _bad_files(tmp_path) -> dict:
    """name -> path of each kind of broken input a user may hand us."""
    wave, rate = sf.read(ENTRIES[2]["audio"], dtype="float32")
    files = {"zero-bytes": tmp_path / "zero.wav", "text-as-wav": tmp_path / "notes.wav",
             "truncated-flac": tmp_path / "cut.flac", "random-bytes": tmp_path / "noise.mp3",
             "directory": tmp_path / "folder", "missing": tmp_path / "missing.wav",
             "silence": tmp_path / "silence.wav", "too-short": tmp_path / "short.wav"}
    files["zero-bytes"].write_bytes(b"")
    files["text-as-wav"].write_text("hello, this is a text file\n" * 100)
    sf.write(files["truncated-flac"], np.tile(wave, 5), rate, format="FLAC")
    files["truncated-flac"].write_bytes(files["truncated-flac"].read_bytes()[:2000])
    files["random-bytes"].write_bytes(np.random.default_rng(0).bytes(50_000))
    files["directory"].mkdir()
    sf.write(files["silence"], np.zeros(rate * 2, np.float32), rate)
    sf.write(files["too-short"], wave[:rate // 50], rate)
    return files


def test_every_bad_file_gives_a_clear_audio_error(transcriber, tmp_path):
    expected = {"zero-bytes": "empty", "text-as-wav": "cannot read", "truncated-flac": "cannot read",
                "random-bytes": "cannot read", "directory": "directory", "missing": "no such file",
                "silence": "silent", "too-short": "too short"}
    for kind, path in _bad_files(tmp_path).items():
        with pytest.raises(AudioError, match=expected[kind]):
            transcriber.transcribe(str(path), name=str(path))


def test_cli_reports_each_bad_file_and_goes_on(tiny_model_dir, tmp_path):
    bad = _bad_files(tmp_path)
    files = [str(p) for p in bad.values()] + [ENTRIES[2]["audio"]]
    proc = subprocess.run([sys.executable, "-m", "ds2", "transcribe", *files, "--model", str(tiny_model_dir),
                           "--lm", "none", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert [line["path"] for line in lines] == files
    assert all("error" in line for line in lines[:-1]) and "greedy" in lines[-1]


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
@pytest.mark.parametrize("layout", ["mono", "stereo", "6ch"])
@pytest.mark.parametrize("dtype", ["int16", "int32", "float64"])
def test_layouts_and_dtypes_give_the_same_text_at_every_rate(transcriber, rate, layout, dtype):
    import torchaudio.functional as AF
    wave, _ = sf.read(ENTRIES[3]["audio"], dtype="float32")
    x = AF.resample(torch.from_numpy(wave), 16000, rate).numpy()
    expected = transcriber.transcribe(x, rate).greedy  # the same audio as mono float32
    x = {"mono": x, "stereo": np.stack([x, x], 1), "6ch": np.repeat(x[:, None], 6, 1)}[layout]
    x = {"int16": lambda a: (a * 32767).astype(np.int16), "int32": lambda a: (a * 2**31 * 0.999).astype(np.int32),
         "float64": lambda a: a.astype(np.float64)}[dtype](x)
    assert transcriber.transcribe(x, rate).greedy == expected


def test_non_finite_and_clipped_arrays(transcriber):
    wave, _ = sf.read(ENTRIES[3]["audio"], dtype="float32")
    for bad in (np.where(np.arange(wave.size) == 100, np.nan, wave), np.where(np.arange(wave.size) == 5, np.inf, wave)):
        with pytest.raises(AudioError, match="NaN or infinite"):
            transcriber.transcribe(bad, 16000)
    clipped = np.clip(wave * 20, -1, 1)
    assert isinstance(transcriber.transcribe(clipped, 16000).greedy, str)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(samples=hnp.arrays(st.sampled_from([np.int16, np.float32, np.float64]),
                          hnp.array_shapes(min_dims=1, max_dims=2, min_side=0, max_side=20000),
                          elements=None),
       rate=st.sampled_from([8000, 16000, 44100, 48000, 0, 100]))
def test_random_arrays_give_a_transcript_or_an_audio_error(transcriber, samples, rate):
    try:
        result = transcriber.transcribe(samples, rate)
    except AudioError as e:
        assert str(e)
    else:
        assert isinstance(result.greedy, str) and isinstance(result.lm, str)


@pytest.mark.slow
def test_an_hour_of_audio_is_transcribed_in_segments_in_bounded_memory(tiny_model_dir, tmp_path):
    wave, rate = sf.read(ENTRIES[3]["audio"], dtype="float32")
    rng = np.random.default_rng(0)
    block = np.concatenate([wave, (rng.standard_normal(rate) * 1e-3).astype(np.float32)])
    path = tmp_path / "hour.flac"
    with sf.SoundFile(path, "w", rate, 1, format="FLAC") as f:
        for _ in range(int(3600 / (block.size / rate))):  # just under the one-hour limit
            f.write(block)
    # The peak is this process's VmHWM: ru_maxrss would report pytest's own peak, since Linux
    # keeps it across the vfork + exec that starts the child.
    code = ("import re, json, torch; torch.set_num_threads(1); from ds2.transcriber import Transcriber; "
            f"r = Transcriber({str(tiny_model_dir)!r}, lm='none').transcribe({str(path)!r}, beam=False); "
            "hwm = int(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)); "
            "print(json.dumps({'duration': r.duration, 'words': len(r.greedy.split()), 'peak_mb': hwm / 1024}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["duration"] > 3590 and report["words"] > 1000
    assert report["peak_mb"] < 2048, report


def test_sigkill_during_checkpoint_writes_leaves_a_loadable_checkpoint(tmp_path):
    """Kill a real training process at arbitrary moments while it checkpoints every step."""
    from ds2.training import train
    script = (f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r}); import torch; torch.set_num_threads(1); "
              "from conftest import tiny_config; from ds2.training import train; "
              f"train(tiny_config({str(tmp_path)!r}, steps=10_000, checkpoint_every=1), resume=True)")
    last = tmp_path / "last.pt"
    rng = np.random.default_rng(0)
    steps_seen = []
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(ROOT)})
        before = last.stat().st_mtime_ns if last.exists() else None
        deadline = time.time() + 60
        while (not last.exists() or last.stat().st_mtime_ns == before) and time.time() < deadline:
            time.sleep(0.02)  # until this process has written its first checkpoint
        time.sleep(float(rng.uniform(0.0, 1.0)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = load_resume_state(last)  # never torn: written to a temp file, then renamed
        steps_seen.append(state["state"]["step"])
    assert steps_seen == sorted(steps_seen) and steps_seen[-1] > steps_seen[0]  # each run resumed
    _, state = train(tiny_config(tmp_path, steps=steps_seen[-1] + 2), resume=True)
    assert state["step"] == steps_seen[-1] + 2


def test_corrupt_truncated_and_mismatched_checkpoints_name_the_file(tiny_model_dir, tmp_path):
    import shutil
    for kind in ("truncated", "garbage", "mismatch", "bad-config"):
        folder = tmp_path / kind
        shutil.copytree(tiny_model_dir, folder)
        weights, config = folder / "model.safetensors", folder / "config.json"
        if kind == "truncated":
            weights.write_bytes(weights.read_bytes()[:len(weights.read_bytes()) // 2])
        elif kind == "garbage":
            weights.write_bytes(b"\x00" * 1000)
        elif kind == "mismatch":
            cfg = json.loads(config.read_text())
            cfg["model"]["rnn_hidden"] = 128
            config.write_text(json.dumps(cfg))
        else:
            config.write_text("{not json")
        with pytest.raises(CheckpointError) as info:
            load_model(folder)
        assert str(folder) in str(info.value)
        if kind == "mismatch":
            assert "shape mismatch" in str(info.value)


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {_Payload.marker}",))


def test_a_pickle_with_a_payload_is_refused_not_run(tmp_path):
    _Payload.marker = tmp_path / "pwned"
    path = tmp_path / "last.pt"
    torch.save({"model": {}, "evil": _Payload()}, path)
    with pytest.raises(CheckpointError, match=str(path)):
        load_resume_state(path)
    assert not _Payload.marker.exists()
