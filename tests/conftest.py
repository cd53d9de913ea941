import os
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
