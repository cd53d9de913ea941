"""Average the weights of several model folders of one run (the last epochs of a cosine schedule),
or of runs that went on from one another: a cheap ensemble in one model, at no cost at inference.

    python -m train.average ~/.cache/ds2/runs/small-s3/epochs/00{5,6,7,8} --out ~/.cache/ds2/runs/small-s3/avg \\
        --dev ~/.cache/ds2/data/dev.jsonl

Floating-point tensors are averaged, BatchNorm's running statistics included (an approximation of the
statistics the averaged weights would produce; measure it with --dev); integer buffers are taken from
the last folder. Folders must share the model config and features. --dev prints the greedy dev
WER/CER of each input and of the average, so you keep the average only when it is better.
The average's meta is the last folder's; folders of several runs leave out its epoch and step and
list every run's training manifests.
"""

import argparse
from pathlib import Path

import torch

from ds2.checkpoint import CheckpointError, load_model, require_same_setup, save_model


def average(folders: list, out) -> Path:
    """Write the mean of the folders' weights to `out`; returns `out`."""
    if not folders:
        raise ValueError("nothing to average")
    models = [load_model(Path(f).expanduser()) for f in folders]
    first, features, _ = models[0]
    for (model, feats, _), folder in zip(models[1:], folders[1:]):
        require_same_setup(f"{folder} (against {folders[0]})", model.config, feats, first.config, features)
    states = [m.state_dict() for m, _, _ in models]
    mean = {name: torch.stack([s[name] for s in states]).mean(0) if tensor.is_floating_point() else states[-1][name]
            for name, tensor in states[0].items()}
    first.load_state_dict(mean)
    metas = [m for _, _, m in models]
    meta = {k: v for k, v in metas[-1].items() if k not in ("dev_wer", "dev_cer")}  # not the average's
    if any(m.get("train") != metas[-1].get("train") for m in metas):  # folders of several runs: no one epoch
        meta = {k: v for k, v in meta.items() if k not in ("epoch", "step")}
        meta["train"] = list(dict.fromkeys(p for m in metas for p in m.get("train", [])))
    return save_model(Path(out).expanduser(), first, features, {**meta, "averaged": [str(f) for f in folders]})


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folders", nargs="+", help="model folders (e.g. RUN/epochs/NNN)")
    parser.add_argument("--out", required=True, help="where to write the averaged model folder")
    parser.add_argument("--dev", nargs="+", metavar="MANIFEST",
                        help="print the greedy WER/CER of each folder and of the average on these manifests "
                             "(pooled, and each one's when there are several)")
    args = parser.parse_args(argv)
    try:
        average(args.folders, args.out)
    except CheckpointError as e:
        parser.exit(2, f"error: {e}\n")
    if args.dev:
        from ds2.data import SpeechDataset, read_manifest
        from ds2.features import FeatureExtractor
        from ds2.training import evaluate_parts, format_dev
        dev = None  # one set of datasets for all: average() checked that the folders share their features
        for folder in [*args.folders, args.out]:
            model, features, _ = load_model(Path(folder).expanduser())
            dev = dev or {m: SpeechDataset(read_manifest(m), FeatureExtractor(features), cache_audio=True)
                          for m in args.dev}
            (wer, cer), scores = evaluate_parts(model, dev, "cpu")
            print(f"{folder}: {format_dev(wer, cer, scores)}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
