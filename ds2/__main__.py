"""The command line: a thin layer over ds2.Transcriber.

    python -m ds2 transcribe FILE...|- [--model DIR] [--lm DIR|none] [--json] [--output-dir DIR [--output-format srt,vtt]]
        [--hotword WORD]... [--hotword-weight W]
    python -m ds2 evaluate MANIFEST [--model DIR] [--lm DIR|none] [--save-emissions FILE.npz] [--sample-rate HZ]
        [--start-ms MS] [--hotword WORD]... [--hotword-weight W]
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .audio import AudioError, start_samples
from .checkpoint import CheckpointError
from .data import ManifestError, read_manifest
from .decoding import HOTWORD_WEIGHT, LMError, finite, hotword_list
from .evaluation import evaluate as evaluate_entries
from .transcripts import FORMATS, word_dicts
from .transcripts import write as write_transcripts


def _transcriber(args):
    from .transcriber import Transcriber
    return Transcriber(args.model, lm="default" if args.lm is None else args.lm)


def _output_names(files: list[str], output_dir: str, formats: list[str]) -> dict[str, str]:
    """Each input's output name (its file name without the suffix), after checking that no two inputs
    share one and that no output would overwrite an input; creates `output_dir`. ValueError says why not."""
    names, taken = {}, {}
    for path in files:
        name = "stdin" if path == "-" else Path(path).stem
        if name in taken and taken[name] != path:
            raise ValueError(f"{taken[name]} and {path} would both be written as {name}.* in {output_dir}: "
                             "transcribe them into different --output-dir folders")
        names[path], taken[name] = name, path
    inputs = {Path(f).resolve() for f in files}
    clobbered = [f"{name}.{fmt}" for name in taken for fmt in formats
                 if (Path(output_dir) / f"{name}.{fmt}").resolve() in inputs]
    if clobbered:
        raise ValueError(f"writing {clobbered[0]} into {output_dir} would overwrite an input file")
    try:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the output folder {output_dir}: {e.strerror or e}") from None
    return names


def _output_formats(text: str) -> list[str]:
    formats = list(FORMATS) if text == "all" else [f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"{text!r}: give 'all' or some of {','.join(FORMATS)}, comma-separated")
    return list(dict.fromkeys(formats))


def _finite_weight(text: str) -> float:
    try:
        return finite("--hotword-weight", text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a finite number, e.g. 10") from None


def _beam_options(args) -> dict:
    return dict(hotwords=args.hotword, hotword_weight=args.hotword_weight) if args.hotword else {}


def transcribe(args) -> int:
    transcriber = _transcriber(args)
    failed = 0
    sources = [sys.stdin.buffer.read() if path == "-" else path for path in args.files]  # "-": audio piped in
    names = ["stdin" if path == "-" else path for path in args.files]
    for path, (_, r) in zip(args.files, transcriber.transcribe_many(sources, names=names, **_beam_options(args))):
        if isinstance(r, AudioError):
            failed += 1
            if args.json:
                print(json.dumps({"path": path, "error": str(r)}), flush=True)
            else:
                print(f"error: {r}", file=sys.stderr)  # r names the file
            continue
        if args.json:
            print(json.dumps({
                "path": path, "greedy": r.greedy, "lm": r.lm, "duration": round(r.duration, 3),
                "words": word_dicts(r.words),
                "seconds": {k: round(v, 4) for k, v in r.timings.items()}}), flush=True)
        else:
            print(f"{path}\n  greedy: {r.greedy}\n  lm:     {r.lm}", flush=True)
        if args.output_dir:
            write_transcripts(r, args.output_dir, args.names[path], args.output_format)
    return 1 if failed else 0


def evaluate(args) -> int:
    report = evaluate_entries(_transcriber(args), read_manifest(args.manifest), beam=not args.greedy_only,
                              keep_emissions=bool(args.save_emissions), verbose=args.verbose,
                              sample_rate=args.sample_rate, start_ms=args.start_ms, **_beam_options(args))
    if args.save_emissions:
        arrays = {f"lp_{i}": e for i, e in enumerate(report.pop("emissions"))}
        np.savez_compressed(args.save_emissions, refs=np.array(report.pop("refs")), **arrays)
    report = {"manifest": args.manifest, **({"sample_rate": args.sample_rate} if args.sample_rate else {}),
              **({"start_ms": args.start_ms} if args.start_ms else {}), **report}
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
        p.add_argument("--hotword", action="append", default=[], metavar="WORD",
                       help="a word or phrase the beam search should favour, e.g. a name in the recording "
                       "(repeat for more; the greedy text is not changed)")
        p.add_argument("--hotword-weight", type=_finite_weight, default=HOTWORD_WEIGHT, metavar="W",
                       help=f"score bonus of a hotword (default: {HOTWORD_WEIGHT:g})")
    sub.choices["transcribe"].add_argument("files", nargs="+", metavar="FILE", help="audio files; - reads one from stdin")
    sub.choices["transcribe"].add_argument("-o", "--output-dir", metavar="DIR",
                                           help="also write each transcript as DIR/NAME.txt, .srt, .vtt and .json")
    sub.choices["transcribe"].add_argument("--output-format", type=_output_formats, default=list(FORMATS),
                                           metavar="LIST", help=f"with --output-dir: some of {','.join(FORMATS)} "
                                           "(default: all); txt, srt and vtt hold the LM transcript")
    sub.choices["evaluate"].add_argument("manifest")
    sub.choices["evaluate"].add_argument("--save-emissions", metavar="FILE.npz", help="cache log-probs for LM tuning")
    sub.choices["evaluate"].add_argument("--greedy-only", action="store_true", help="skip the beam search")
    sub.choices["evaluate"].add_argument("-v", "--verbose", action="store_true", help="print every transcript")
    sub.choices["evaluate"].add_argument("--sample-rate", type=int, metavar="HZ",
                                         help="first re-record every file at HZ (8000: a telephone band)")
    sub.choices["evaluate"].add_argument("--start-ms", type=float, default=0.0, metavar="MS",
                                         help="first drop every file's first MS milliseconds (0 to 999): the "
                                         "network sees another phase of its frame grid, a check of dev noise")
    args = parser.parse_args(argv)
    if args.command == "evaluate":
        try:
            start_samples(args.start_ms)
        except ValueError as e:
            parser.error(str(e))
    dropped = [w for w in args.hotword if not hotword_list(w)]
    if dropped:
        parser.error(f"--hotword {dropped[0]!r}: nothing left after normalising to the letters a-z and '")
    if args.command == "transcribe" and args.files.count("-") > 1:
        parser.error("stdin (-) can be read only once")
    if args.command == "transcribe" and args.output_dir:
        try:
            args.names = _output_names(args.files, args.output_dir, args.output_format)
        except ValueError as e:
            parser.error(str(e))
    try:
        return {"transcribe": transcribe, "evaluate": evaluate}[args.command](args)
    except (CheckpointError, AudioError, ManifestError, LMError, FileNotFoundError) as e:  # not bugs
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
