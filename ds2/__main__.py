"""The command line: a thin layer over ds2.Transcriber.

    python -m ds2 transcribe FILE... [--model DIR] [--lm DIR|none] [--json]
    python -m ds2 evaluate MANIFEST [--model DIR] [--lm DIR|none] [--save-emissions FILE.npz] [--sample-rate HZ]
"""

import argparse
import json
import sys

import numpy as np

from .audio import AudioError
from .checkpoint import CheckpointError
from .data import ManifestError, read_manifest
from .decoding import LMError
from .evaluation import evaluate as evaluate_entries


def _transcriber(args):
    from .transcriber import Transcriber
    return Transcriber(args.model, lm="default" if args.lm is None else args.lm)


def transcribe(args) -> int:
    transcriber = _transcriber(args)
    failed = 0
    for path, r in transcriber.transcribe_many(args.files):
        if isinstance(r, AudioError):
            failed += 1
            if args.json:
                print(json.dumps({"path": path, "error": str(r)}), flush=True)
            else:
                print(f"{path}: error: {r}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({
                "path": path, "greedy": r.greedy, "lm": r.lm, "duration": round(r.duration, 3),
                "words": [{"word": w.word, "start": round(w.start, 2), "end": round(w.end, 2),
                           "confidence": round(w.confidence, 3)} for w in r.words],
                "seconds": {k: round(v, 4) for k, v in r.timings.items()}}), flush=True)
        else:
            print(f"{path}\n  greedy: {r.greedy}\n  lm:     {r.lm}", flush=True)
    return 1 if failed else 0


def evaluate(args) -> int:
    report = evaluate_entries(_transcriber(args), read_manifest(args.manifest), beam=not args.greedy_only,
                              keep_emissions=bool(args.save_emissions), verbose=args.verbose,
                              sample_rate=args.sample_rate)
    if args.save_emissions:
        arrays = {f"lp_{i}": e for i, e in enumerate(report.pop("emissions"))}
        np.savez_compressed(args.save_emissions, refs=np.array(report.pop("refs")), **arrays)
    report = {"manifest": args.manifest, **({"sample_rate": args.sample_rate} if args.sample_rate else {}), **report}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{args.manifest}: {report['utterances']} utterances, {report['audio_hours'] * 60:.1f} min, "
              f"RTF {report['rtf']:.3f}")
        for name in ("greedy", "lm")[:1 if args.greedy_only else 2]:
            print(f"  {name:<6}  WER {report[f'{name}_wer']:.2%}  CER {report[f'{name}_cer']:.2%}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ds2", description="Deep Speech 2 speech recognition")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("transcribe", "transcribe audio files"), ("evaluate", "corpus WER/CER on a manifest")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--model", help="model folder (default: the bundled model in assets/models)")
        p.add_argument("--lm", help="LM folder, or 'none' for no LM (default: the bundled LM in assets/lm)")
        p.add_argument("--json", action="store_true", help="JSON output, one object per line")
    sub.choices["transcribe"].add_argument("files", nargs="+", metavar="FILE")
    sub.choices["evaluate"].add_argument("manifest")
    sub.choices["evaluate"].add_argument("--save-emissions", metavar="FILE.npz", help="cache log-probs for LM tuning")
    sub.choices["evaluate"].add_argument("--greedy-only", action="store_true", help="skip the beam search")
    sub.choices["evaluate"].add_argument("-v", "--verbose", action="store_true", help="print every transcript")
    sub.choices["evaluate"].add_argument("--sample-rate", type=int, metavar="HZ",
                                         help="first re-record every file at HZ (8000: a telephone band)")
    args = parser.parse_args(argv)
    try:
        return {"transcribe": transcribe, "evaluate": evaluate}[args.command](args)
    except (CheckpointError, AudioError, ManifestError, LMError, FileNotFoundError) as e:  # not bugs
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
