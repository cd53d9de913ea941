"""Recompute a model's BatchNorm statistics from training speech ("precise BN", Wu & Johnson 2021),
each corpus weighted as you choose:

    python -m train.bnstats RUN/best --out DIR --dev ~/.cache/ds2/data/{librispeech,an4,digits}-dev.jsonl \\
        --manifest ~/.cache/ds2/data/librispeech-train.jsonl=0.7 \\
        --manifest ~/.cache/ds2/data/an4-train.jsonl=0.15 --manifest ~/.cache/ds2/data/digits-train.jsonl=0.15

Why: in training, BatchNorm normalises each batch by that batch's own statistics, and length-bucketed
batches hold one kind of speech each (15 s book sentences, 3 s spelled letters, half-second digits
recorded at 8 kHz). At inference one set of statistics serves every kind, and the one training
leaves behind is an exponential average over the last few batches of the run, whichever kind they
were: stage 5's digit dev WER moved by 30 points with them alone. Here each manifest's statistics
are the average over up to --seconds of its audio (unaugmented, forward passes in training mode,
weighted by length), and the model gets their weighted mean (by default each manifest's share of the
audio). Only the running means and variances change; --dev prints the greedy WER/CER before and after.
"""

import argparse
from pathlib import Path

import torch

from ds2.checkpoint import CheckpointError, load_model, save_model
from ds2.data import ManifestError, SpeechDataset, read_manifest
from ds2.features import FeatureExtractor
from ds2.training import batchnorm_layers, evaluate_parts, format_dev, recompute_batchnorm


def corpus_statistics(model, dataset: SpeechDataset, seconds: float, seed: int = 0) -> list:
    """[(running_mean, running_var)] of each BatchNorm layer, averaged over `seconds` of `dataset`."""
    recompute_batchnorm(model, dataset, "cpu", max_seconds=seconds, seed=seed)
    return [(m.running_mean.clone(), m.running_var.clone()) for m in batchnorm_layers(model)]


def set_mixture(model, statistics: list, weights: list) -> None:
    """Give each BatchNorm layer the weighted mean of the corpora's statistics (weights sum to 1)."""
    for i, layer in enumerate(batchnorm_layers(model)):
        layer.running_mean.copy_(sum(w * stats[i][0] for w, stats in zip(weights, statistics)))
        layer.running_var.copy_(sum(w * stats[i][1] for w, stats in zip(weights, statistics)))


def parse_manifest_weight(text: str) -> tuple[str, float | None]:
    """'PATH=0.7' -> (PATH, 0.7); 'PATH' -> (PATH, None): weighted by its audio."""
    path, sep, weight = text.rpartition("=")
    if not sep:
        return text, None
    try:
        value = float(weight)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: the weight after '=' must be a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a weight must be >= 0")
    return path, value


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model folder (RUN/best, assets/models/ds2-small)")
    parser.add_argument("--out", required=True, help="where to write the model folder with the new statistics")
    parser.add_argument("--manifest", action="append", required=True, type=parse_manifest_weight,
                        metavar="MANIFEST[=WEIGHT]",
                        help="training speech to take statistics from; give it once per corpus, with a weight "
                             "each or none at all (then each is weighted by its share of the audio)")
    parser.add_argument("--seconds", type=float, default=2000.0,
                        help="audio per manifest at most, drawn at random (default: %(default)g)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dev", nargs="+", metavar="MANIFEST", help="print greedy WER/CER before and after")
    args = parser.parse_args(argv)
    given = [w for _, w in args.manifest]
    if any(w is None for w in given) and any(w is not None for w in given):
        parser.error("give every --manifest a weight, or none")
    try:
        model, features, meta = load_model(Path(args.model).expanduser())
        extractor = FeatureExtractor(features)
        corpora = [read_manifest(path, max_duration=20.0) for path, _ in args.manifest]
        dev = {m: SpeechDataset(read_manifest(m), extractor, cache_audio=True) for m in args.dev or []}
    except (CheckpointError, ManifestError, OSError) as e:
        parser.exit(2, f"error: {e}\n")
    if any(not entries for entries in corpora):
        parser.exit(2, "error: a --manifest has no utterances of 20 s or less\n")
    if given[0] is None:
        given = [sum(e["duration"] for e in entries) for entries in corpora]
    if sum(given) <= 0:
        parser.exit(2, "error: the weights add up to 0\n")
    weights = [w / sum(given) for w in given]

    def report(label):
        if dev:
            (wer, cer), scores = evaluate_parts(model, dev, "cpu")
            print(f"{label}: {format_dev(wer, cer, scores)}", flush=True)

    report(args.model)
    statistics = [corpus_statistics(model, SpeechDataset(entries, extractor), args.seconds, args.seed)
                  for entries in corpora]
    set_mixture(model, statistics, weights)  # recompute_batchnorm left the model in eval mode, as loaded
    report(args.out)
    meta = {k: v for k, v in meta.items() if k not in ("dev_wer", "dev_cer")}  # measured with other statistics
    save_model(Path(args.out).expanduser(), model, features, {
        **meta, "batchnorm": {"manifests": {path: round(w, 4) for (path, _), w in zip(args.manifest, weights)},
                              "seconds_each": args.seconds, "seed": args.seed}})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
