"""The accuracy table of the README and the model card: every held-out test set, greedy and LM
WER/CER and real-time factor, with PocketSphinx 5 on the same audio.

    python -m train.results                      # the bundled model and LM, Markdown table
    python -m train.results --model DIR --lm DIR --json results.json

Test sets are the speaker-disjoint test splits written by `python -m train.prepare shared`; they
are used for this report only, never to choose a model or LM weights.
"""

import argparse
import hashlib
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

from ds2.bench import pocketsphinx
from ds2.data import read_manifest
from ds2.evaluation import evaluate
from ds2.transcriber import Transcriber

TEST_SETS = {  # name -> manifest in --data
    "LibriSpeech mini, 3 test speakers": "librispeech-test.jsonl",
    "AN4, 9 test speakers (spelled letters and digits)": "an4-test.jsonl",
    "Spoken digits, 1 test speaker (8 kHz)": "digits-test.jsonl",
}


def peer_results(entries: list[dict], threads: int = 1, cache_dir="~/.cache/ds2/peer") -> dict:
    """PocketSphinx on `entries` (ds2.bench.pocketsphinx). Its transcripts depend only on the audio
    files, the references and its version, so a run is kept in `cache_dir` under a key of those
    (each file's path, size and modification time) and reused; None for no cache. A reused run says
    so ("cached": the file), and its RTF is that run's."""
    try:
        peer_version = version("pocketsphinx")
    except PackageNotFoundError:
        return pocketsphinx(entries, repeats=1, threads=threads)  # "not installed"
    key = hashlib.sha256(json.dumps([peer_version] + [
        (e["audio"], os.path.getsize(e["audio"]), os.path.getmtime(e["audio"]), e["text"]) for e in entries
    ]).encode()).hexdigest()[:16]
    path = Path(cache_dir).expanduser() / f"pocketsphinx-{key}.json" if cache_dir else None
    if path is not None and path.exists():
        return {**json.loads(path.read_text()), "cached": str(path)}
    peer = pocketsphinx(entries, repeats=1, threads=threads)
    if path is not None and peer.get("status") == "ok":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(peer) + "\n")
    return peer


def results(transcriber: Transcriber, data_dir, threads: int = 1, peer_cache="~/.cache/ds2/peer") -> list[dict]:
    rows = []
    for name, manifest in TEST_SETS.items():
        path = Path(data_dir).expanduser() / manifest
        if not path.exists():
            continue
        entries = read_manifest(path)
        ours = evaluate(transcriber, entries)
        peer = peer_results(entries, threads, peer_cache)
        rows.append({"test_set": name, "manifest": manifest, **ours, "pocketsphinx": {
            k: v for k, v in peer.items() if k in ("status", "version", "wer", "cer", "rtf", "cached")}})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| test set | utt. | min | greedy WER | greedy CER | LM WER | LM CER | RTF (LM) | PocketSphinx WER | PocketSphinx CER |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["pocketsphinx"]
        peer = (f"{p['wer']:.1%} | {p['cer']:.1%}" if p.get("status") == "ok" else f"{p.get('status')} | –")
        lines.append(f"| {r['test_set']} | {r['utterances']} | {r['audio_hours'] * 60:.1f} | {r['greedy_wer']:.1%} | "
                     f"{r['greedy_cer']:.1%} | {r['lm_wer']:.1%} | {r['lm_cer']:.1%} | {r['rtf']:.3f} | {peer} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model folder (default: the bundled model)")
    parser.add_argument("--lm", default="default", help="LM folder, or 'none' (default: the bundled LM)")
    parser.add_argument("--data", default="~/.cache/ds2/data", help="folder with the test manifests")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--peer-cache", default="~/.cache/ds2/peer",
                        help="where PocketSphinx's runs are kept and reused (its result depends only on the "
                             "audio, the references and its version); 'none' to run it afresh")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = results(Transcriber(args.model, lm=args.lm), args.data, args.threads,
                   None if args.peer_cache == "none" else args.peer_cache)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
