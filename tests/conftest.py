import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TINY_MANIFEST = FIXTURES / "tiny" / "manifest.jsonl"

torch.set_num_threads(1)  # two cores: one torch thread per test process avoids oversubscription


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A `tiny` model trained on the ten synthetic fixture utterances (about 15 s on one core)."""
    from ds2.training import TrainConfig, train
    out = tmp_path_factory.mktemp("tiny-run")
    train(tiny_config(out, steps=120))
    return out / "best"


def tiny_config(out_dir, steps: int, **overrides):
    from ds2.training import TrainConfig
    settings = dict(train=[str(TINY_MANIFEST)], out_dir=str(out_dir), model="tiny", features={"n_mels": 40},
                    epochs=steps, max_steps=steps, lr=3e-3, warmup_steps=10, speeds=[1.0], noise_prob=0.0,
                    specaugment=False, max_batch_seconds=30, checkpoint_every=10_000, threads=1)
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def samples_dir(tmp_path_factory) -> Path:
    """A folder laid out like assets/samples: four fixture clips and their samples.jsonl."""
    import json
    import shutil
    folder = tmp_path_factory.mktemp("samples")
    entries = [json.loads(line) for line in TINY_MANIFEST.read_text().splitlines()]
    with open(folder / "samples.jsonl", "w") as f:
        for entry in (entries[i] for i in (0, 2, 3, 8)):
            shutil.copy(TINY_MANIFEST.parent / entry["audio"], folder / entry["audio"])
            f.write(json.dumps({**entry, "source": "synthetic, tests/fixtures/tiny"}) + "\n")
    return folder


def widened_and_refeatured(model_dir, out) -> tuple[Path, Path]:
    """Two model folders made from `model_dir` under `out`: its network widened by 8 recurrent units
    (Net2WiderNet: the same function to rounding, so the same errors), and its own network saved with
    another window length (features that a comparison must refuse)."""
    from dataclasses import replace
    from ds2.checkpoint import load_model, save_model
    from train.widen import widen
    model, features, _ = load_model(model_dir)
    wide = save_model(Path(out) / "wide", widen(model, model.config.rnn_hidden + 8, seed=1), features)
    other = save_model(Path(out) / "other", model, replace(features, window_ms=features.window_ms + 5))
    return wide, other


def padded_clip(audio, pad_seconds: float = 0.3):
    """A fixture clip with `pad_seconds` of its own background noise on each side -> (wave, rate):
    a pause that a streaming session cuts at, without digital silence the tiny model never heard."""
    import numpy as np
    import soundfile as sf
    wave, rate = sf.read(audio, dtype="float32")
    pad = np.resize(wave[:int(0.2 * rate)], int(pad_seconds * rate))  # the clip's quiet lead-in
    return np.concatenate([pad, wave, pad]), rate


def high_band_share(wave, above_hz: float = 4200) -> float:
    """The share of a 16 kHz waveform's power above `above_hz` (what a telephone band removes)."""
    import numpy as np
    power = np.abs(np.fft.rfft(np.asarray(wave, dtype=np.float64))) ** 2
    return float(power[int(above_hz / 8000 * (power.size - 1)):].sum() / power.sum())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def demo_server(model_dir, samples_dir, workdir: Path, start_timeout_s: float = 90):
    """demo.py (LM none) in a subprocess on a free 127.0.0.1 port, with its log (workdir/demo.log),
    Gradio cache and temp folder in `workdir`; yields (url, process) once the page answers, and stops
    it afterwards with SIGTERM, as a service manager would: after a body that passed, the server must
    then exit 0 by itself and leave its temp folder empty (the downloads folder removed)."""
    port, log, tmp = free_port(), workdir / "demo.log", workdir / "tmp"
    tmp.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "GRADIO_TEMP_DIR": str(workdir / "gradio"), "TMPDIR": str(tmp)}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "demo.py", "--model", str(model_dir), "--lm", "none",
                                 "--samples", str(samples_dir), "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url, passed = f"http://127.0.0.1:{port}/", False
    deadline = time.monotonic() + start_timeout_s
    try:
        while True:
            try:
                urllib.request.urlopen(url, timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"demo.py did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url, proc
        passed = True
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if passed:
        assert proc.returncode == 0, f"demo.py exited {proc.returncode} on SIGTERM:\n{log.read_text()[-3000:]}"
        assert not list(tmp.iterdir()), f"demo.py left {[p.name for p in tmp.iterdir()]} in its temp folder"
