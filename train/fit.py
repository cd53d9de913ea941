"""Train a DS2 model: `python -m train.fit CONFIG.toml [key=value ...] [--resume]`.

See ds2/training.py for the loop and the torchrun commands for several GPUs and nodes.
"""

import argparse
import os

from ds2.checkpoint import CheckpointError
from ds2.data import ManifestError
from ds2.training import ConfigError, TrainConfig, train


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", nargs="?", help="TOML config (train/configs/*.toml)")
    parser.add_argument("overrides", nargs="*", help="key=value settings that replace the config's")
    parser.add_argument("--resume", action="store_true", help="continue from OUT_DIR/last.pt if it exists")
    args = parser.parse_args(argv)
    try:
        config = TrainConfig.load(args.config, args.overrides)
        _, state = train(config, resume=args.resume)
    except (CheckpointError, ConfigError, ManifestError, FileNotFoundError) as e:  # not bugs: tracebacks for those
        parser.exit(2, f"error: {e}\n")
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return
    best = f"best dev WER {state['best_wer']:.2%}" if config.dev else "no dev set: best/ holds the last model"
    print(f"done: step {state['step']}, {best}")


if __name__ == "__main__":
    main()
