"""Run by torchrun in test_training.py: train a few steps under DDP, then save this rank's weights.

`ddp_worker.py OUT [INIT]`: with a model folder INIT, start from it with its lower layers frozen."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config  # noqa: E402

from ds2.training import train  # noqa: E402

out = Path(sys.argv[1])
torch.set_num_threads(1)
frozen = dict(init=sys.argv[2], freeze=["convs", "conv_norms", "rnns.0"], freeze_batchnorm=True) if len(sys.argv) > 2 else {}
model, state = train(tiny_config(out, steps=4, max_batch_seconds=4, **frozen))
rank = int(__import__("os").environ["RANK"])
torch.save(model.state_dict(), out / f"rank{rank}.pt")
