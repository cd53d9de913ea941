"""Is one model better or worse than another on each part of dev, beyond chance?

    python -m train.compare assets/models/ds2-small ~/.cache/ds2/runs/small-s32/avg \\
        --dev ~/.cache/ds2/data/{librispeech,an4,digits}-dev.jsonl

Both models decode every utterance greedily (as the dev figures of `train.fit` and `train.average` are
made); the two networks may differ in shape, as long as they take the same features and give the
same output classes. For each manifest it prints both models' word errors, how many utterances each one gets
more right, and a paired bootstrap (Bisani and Ney, 2004): the utterances are drawn with replacement
`--resamples` times (seeded), and `p_worse` is the fraction of draws in which the second model makes
more word errors than the first, `p_better` the fraction in which it makes fewer. A difference of a
few words on a part of 78 utterances is often well inside what a redraw of the speech would give;
a `p_worse` of 0.95 or more says the second model is worse there beyond chance.
"""

import argparse
import json
from pathlib import Path

import numpy as np

from ds2.text import error_counts


def utterance_counts(model, dataset, device="cpu") -> tuple[list[str], np.ndarray]:
    """(references, counts) of the utterances of `dataset`, greedy decoding: one row of counts per
    utterance, (word errors, reference words, char errors, reference chars) as `error_counts` gives."""
    from ds2.training import greedy_pairs
    pairs = greedy_pairs(model, dataset, device)
    counts = np.array([error_counts(ref, hyp) for ref, hyp in pairs], dtype=np.int64).reshape(-1, 4)
    return [ref for ref, _ in pairs], counts


def bootstrap(base: np.ndarray, cand: np.ndarray, resamples: int = 10_000, seed: int = 0) -> dict:
    """Paired bootstrap over utterances of two models' per-utterance error counts: the fractions of
    `resamples` draws (with replacement, the same utterances for both) in which `cand` has more
    (`p_worse`) and fewer (`p_better`) errors than `base`; ties count for neither."""
    base, cand = np.asarray(base), np.asarray(cand)
    if base.shape != cand.shape or base.ndim != 1:
        raise ValueError(f"per-utterance errors must pair up: {base.shape} against {cand.shape}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, not {resamples}")
    if not len(base):
        return {"p_worse": 0.0, "p_better": 0.0}
    diff = cand - base
    rng = np.random.default_rng(seed)
    totals = np.zeros(resamples, dtype=np.int64)
    for start in range(0, resamples, 1000):  # 1,000 draws at a time: memory stays small for long sets
        n = min(1000, resamples - start)
        totals[start:start + n] = diff[rng.integers(0, len(diff), size=(n, len(diff)))].sum(1)
    return {"p_worse": float((totals > 0).mean()), "p_better": float((totals < 0).mean())}


def compare_errors(name: str, words: np.ndarray, base: np.ndarray, cand: np.ndarray,
                   resamples: int = 10_000, seed: int = 0) -> dict:
    """One part's comparison from per-utterance counts (see `bootstrap`)."""
    return {"part": name, "utterances": len(words), "words": int(np.sum(words)),
            "errors": [int(np.sum(base)), int(np.sum(cand))],
            "utterances_better": int(np.sum(cand < base)), "utterances_worse": int(np.sum(cand > base)),
            **bootstrap(base, cand, resamples, seed)}


def compare(base_folder, cand_folder, manifests: list, resamples: int = 10_000, seed: int = 0) -> list[dict]:
    """`compare_errors` for each manifest, the two model folders decoding the same utterances."""
    from ds2.checkpoint import load_model, require_same_setup
    from ds2.data import SpeechDataset, read_manifest
    from ds2.features import FeatureExtractor
    base, features, _ = load_model(Path(base_folder).expanduser())
    cand, cand_features, _ = load_model(Path(cand_folder).expanduser())
    # both decode the base's features; the networks may differ (say, a widened model against its start)
    require_same_setup(f"{cand_folder} (against {base_folder})", cand.config, cand_features, base.config, features,
                       network=False)
    results = []
    for manifest in manifests:
        dataset = SpeechDataset(read_manifest(manifest), FeatureExtractor(features), cache_audio=True)
        refs, base_counts = utterance_counts(base, dataset)
        cand_refs, cand_counts = utterance_counts(cand, dataset)
        if refs != cand_refs:  # the same seeded batches for both; this would be a bug
            raise RuntimeError(f"{manifest}: the two models were not given the same utterances in the same order")
        results.append(compare_errors(Path(manifest).name, base_counts[:, 1], base_counts[:, 0], cand_counts[:, 0],
                                      resamples, seed))
    return results


def format_row(r: dict) -> str:
    (a, b), words = r["errors"], r["words"]
    return (f"{r['part']}: {r['utterances']} utterances, {words} words; word errors {a} -> {b} "
            f"({a / max(words, 1):.2%} -> {b / max(words, 1):.2%}); utterances better {r['utterances_better']}, "
            f"worse {r['utterances_worse']}; bootstrap p_better {r['p_better']:.3f}, p_worse {r['p_worse']:.3f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", help="the model folder to compare against (e.g. the bundled model)")
    parser.add_argument("candidate", help="the model folder being judged")
    parser.add_argument("--dev", nargs="+", required=True, metavar="MANIFEST", help="one comparison per manifest")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap draws (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--json", action="store_true", help="one JSON object per manifest")
    args = parser.parse_args(argv)
    if args.resamples < 1:
        parser.error(f"--resamples must be at least 1, not {args.resamples}")
    from ds2.checkpoint import CheckpointError
    try:
        results = compare(args.base, args.candidate, args.dev, args.resamples, args.seed)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        parser.exit(2, f"error: {e}\n")
    for r in results:
        print(json.dumps(r) if args.json else format_row(r))


if __name__ == "__main__":
    main()
