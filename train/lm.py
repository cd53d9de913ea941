"""The language-model recipe: build a KenLM n-gram model from books, then tune alpha/beta on dev.

    python -m train.lm build --out ~/.cache/ds2/lm                                  # books only
    python -m train.lm build --out DIR --manifest ~/.cache/ds2/data/train.jsonl     # + transcripts
    python -m train.lm build --out DIR --manifest ../shared/data/text/librispeech-dev-clean.txt  # ID TEXT lines
    python -m train.lm tune --emissions dev-emissions.npz --lm-dir DIR
    python -m train.lm beams --emissions dev-emissions.npz --lm-dir DIR
    python -m train.lm overlap ~/.cache/ds2/data/librispeech-test.jsonl --manifest TRAIN.jsonl  # leak check

`build` compiles KenLM's own `lmplz` and `build_binary` once from the kenlm sdist on PyPI (needs
the Debian packages in APT_PACKAGES), normalises the books and the manifests' transcripts one
sentence per line, pipes them through lmplz and writes DIR/lm.bin (a quantised trie, at most
--max-mb), DIR/unigrams.txt (the LM's words, for pyctcdecode) and DIR/lm.json (decoder settings).
Pass training manifests only: an LM that has read the test transcripts makes test WER meaningless.

`tune` grid-searches alpha (LM weight) and beta (word bonus) for corpus-level WER on dev-set
emissions (an .npz with arrays lp_0, lp_1, ... of (T, V) log-probs and `refs`, their transcripts)
and writes the best pair into lm.json (with --unk-offsets and --blank-offsets, the penalty for
out-of-vocabulary words and the offset on the blank's log-prob join the grid). `beams` then times
beam widths and pyctcdecode's pruning thresholds at that alpha/beta and keeps the fastest setting
within a WER tolerance of the best.

`overlap` checks that the LM has not read the test sentences some other way: LibriSpeech speakers
read public-domain books, and the book text may hold what a test speaker read. It counts the
transcripts that share a word n-gram (8 words by default) with the LM text. `tune
--leave-out-overlap TEXT_DIR` tunes without the dev utterances that do: the LM would predict them
too well and favour a high alpha.
"""

import argparse
import itertools
import json
import lzma
import math
import multiprocessing
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import deque
from pathlib import Path

import numpy as np

from ds2.decoding import BeamDecoder, LMParams
from ds2.text import normalize_text, wer_cer

KENLM_CACHE = Path.home() / ".cache" / "ds2" / "kenlm"
APT_PACKAGES = ("build-essential", "cmake", "libboost-program-options-dev", "libboost-system-dev",
                "libboost-thread-dev", "libboost-test-dev", "zlib1g-dev", "libbz2-dev", "liblzma-dev")

_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}  # as LibriSpeech transcribes them
_ABBREVIATION_RE = re.compile(r"\b(mrs?|dr)\.", re.IGNORECASE)
_BRACKETS_RE = re.compile(r"\[[^\]]*\]")  # [Illustration: ...], [Footnote 3: ...]
_CLITIC_RE = re.compile(r" ('(?:s|re|ve|ll|d|m)|n't)\b")  # NLTK-tokenised "sister 's" -> "sister's"
_SENTENCE_END_RE = re.compile(r"[.!?]+")
_LINE_END_RE = re.compile(r"[.!?][\"'\u201d\u2019)_]*\s*$")


def sentences(paragraph: str) -> list[str]:
    """Normalised sentences of prose: 'Mr. Weston came. "Well?"' -> ['mister weston came', 'well']."""
    paragraph = _ABBREVIATION_RE.sub(lambda m: _ABBREVIATIONS[m.group(1).lower()], paragraph)
    paragraph = _CLITIC_RE.sub(r"\1", _BRACKETS_RE.sub(" ", paragraph))
    return [s for s in map(normalize_text, _SENTENCE_END_RE.split(paragraph)) if s]


def paragraphs(lines):
    """Join hard-wrapped lines into paragraphs, which end at a blank line or a line ending a sentence."""
    block = []
    for line in lines:
        if line.strip():
            block.append(line.strip())
        if block and (not line.strip() or _LINE_END_RE.search(line)):
            yield " ".join(block)
            block = []
    if block:
        yield " ".join(block)


def book_files(text_dir) -> list[Path]:
    """The books under text_dir: *.txt.xz and gutenberg/*.txt (never the LibriSpeech transcripts)."""
    text_dir = Path(text_dir)
    return sorted(text_dir.glob("*.txt.xz")) + sorted(text_dir.glob("gutenberg/*.txt"))


def transcripts(path) -> list[str]:
    """The normalised transcripts of a manifest (.jsonl, a "text" per line) or of a transcript list
    (any other file: "ID TEXT" per line, as LibriSpeech's *.trans.txt)."""
    path = Path(path).expanduser()
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    if path.suffix == ".jsonl":
        return [normalize_text(json.loads(line)["text"]) for line in lines]
    fields = [line.split(maxsplit=1) for line in lines]
    return [normalize_text(f[1]) for f in fields if len(f) == 2]  # an ID alone is an empty transcript


def corpus(books, manifests, manifest_repeat=1):
    """Yield the LM training text, one normalised sentence per line; the manifests' transcripts
    `manifest_repeat` times, so that in-domain n-grams (spelled letters, digits) survive pruning."""
    for path in books:
        with (lzma.open if path.suffix == ".xz" else open)(path, "rt", encoding="utf-8") as f:
            for paragraph in paragraphs(f):
                yield from sentences(paragraph)
    for path in manifests:
        texts = transcripts(path)
        for _ in range(manifest_repeat):
            yield from filter(None, texts)


OVERLAP_WORDS = 8  # n-gram length for the leak check: long enough that a shared one is no accident


def ngrams(words: list[str], n: int) -> list[tuple]:
    return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]


def shared_ngrams(transcripts, text_dir="../shared/data/text", manifests=(), n=OVERLAP_WORDS) -> set[tuple]:
    """The word n-grams of `transcripts` (lists of words) that occur in the LM text: the books under
    text_dir and the transcripts of `manifests`, read as one stream of words (so n-grams across
    sentence ends count too: this errs towards finding overlap)."""
    wanted = {g for words in transcripts for g in ngrams(words, n)}
    found, window = set(), deque(maxlen=n)
    for sentence in corpus(book_files(text_dir), manifests):
        for word in sentence.split():
            window.append(word)
            if len(window) == n and (key := tuple(window)) in wanted:
                found.add(key)
    return found


def overlap(check_manifests, text_dir="../shared/data/text", manifests=(), n=OVERLAP_WORDS) -> list[dict]:
    """For each of check_manifests: how many transcripts of at least n words share a word n-gram
    with the LM text (see shared_ngrams)."""
    texts = {}
    for path in check_manifests:
        texts[path] = [t.split() for t in transcripts(path)]
    found = shared_ngrams([words for ts in texts.values() for words in ts], text_dir, manifests, n)
    report = []
    for path, ts in texts.items():
        grams = [ngrams(words, n) for words in ts]
        long = [g for g in grams if g]
        report.append(dict(manifest=str(path), transcripts=len(ts), long_enough=len(long),
                           sharing=sum(any(x in found for x in g) for g in long),
                           ngrams=sum(map(len, long)), ngrams_found=sum(x in found for g in long for x in g)))
    return report


def _missing_apt_packages() -> list[str]:
    if shutil.which("dpkg-query") is None:
        return list(APT_PACKAGES)
    status = lambda p: subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout
    return [p for p in APT_PACKAGES if not status(p).endswith("ok installed")]


def kenlm_binaries(cache=KENLM_CACHE) -> Path:
    """Compile lmplz and build_binary from the PyPI kenlm sdist (once) and return their folder."""
    cache = Path(cache)
    bin_dir = cache / "bin"
    if (bin_dir / "lmplz").exists() and (bin_dir / "build_binary").exists():
        return bin_dir
    print(f"compiling KenLM's lmplz and build_binary into {bin_dir} (once; about a minute)", file=sys.stderr)
    try:
        # --no-binary kenlm, not :all:, which would also compile kenlm's build requirements (cmake!)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", "kenlm", "--no-deps", "-q",
                        "-d", str(cache / "sdist"), "kenlm"], check=True)
        with tarfile.open(max((cache / "sdist").glob("kenlm-*.tar.gz"))) as tar:
            source = cache / "src" / tar.getnames()[0].split("/")[0]
            tar.extractall(cache / "src", filter="data")
        build = cache / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], check=True)
        subprocess.run(["cmake", "--build", str(build), "--target", "lmplz", "build_binary", "-j",
                        str(multiprocessing.cpu_count())], check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        missing = _missing_apt_packages()
        hint = f"install: apt-get install {' '.join(missing)}" if missing else "see the compiler output above"
        raise RuntimeError(f"could not build KenLM ({e}); {hint}") from e
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in ("lmplz", "build_binary"):
        shutil.copy2(build / "bin" / name, bin_dir / name)
    return bin_dir


def arpa_words(arpa) -> list[str]:
    """The words of an ARPA model's unigram section, without <s>, </s> and <unk>."""
    words = []
    with open(arpa, encoding="utf-8") as f:
        for line in itertools.dropwhile(lambda l: l.strip() != "\\1-grams:", f):
            if line.startswith("\\2-grams:") or line.startswith("\\end\\"):
                break
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2 and parts[1] not in ("<s>", "</s>", "<unk>"):
                words.append(parts[1])
    return words


def pruning(prune: str, order: int, more: int = 0) -> str:
    """lmplz --prune thresholds, one per order (the last repeated, extras dropped), plus `more`
    above unigrams: ('0 1 1 2', 4, more=1) -> '0 2 2 3'."""
    thresholds = [int(t) for t in prune.split()][:order]
    thresholds += thresholds[-1:] * (order - len(thresholds))
    return " ".join(str(t + more * (i > 0)) for i, t in enumerate(thresholds))


def build(out_dir, text_dir="../shared/data/text", manifests=(), order=4, prune="0 1 1 2", max_mb=30.0,
          memory="30%", bin_dir=None, manifest_repeat=1) -> dict:
    """Build out_dir/lm.bin, unigrams.txt and lm.json; raise the pruning until lm.bin fits max_mb."""
    bin_dir, prune = Path(bin_dir) if bin_dir else kenlm_binaries(), pruning(prune, order)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    books, start = book_files(text_dir), time.time()
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".work-") as tmp:
        text, arpa, n_sentences, n_words = Path(tmp) / "corpus.txt", Path(tmp) / "lm.arpa", 0, 0
        with open(text, "w", encoding="utf-8") as f:
            for sentence in corpus(books, manifests, manifest_repeat):
                f.write(sentence + "\n")
                n_sentences, n_words = n_sentences + 1, n_words + sentence.count(" ") + 1
        print(f"{n_sentences:,} sentences, {n_words:,} words from {len(books)} book files and "
              f"{len(manifests)} manifests ({time.time() - start:.0f} s)", file=sys.stderr)
        for _ in range(6):
            with open(text, "rb") as f:
                subprocess.run([bin_dir / "lmplz", "-o", str(order), "--prune", *prune.split(), "-S", memory,
                                "-T", tmp, "--discount_fallback", "--arpa", arpa], stdin=f, check=True)
            subprocess.run([bin_dir / "build_binary", "-S", memory, "-T", tmp, "-a", "22", "-q", "8", "-b", "7",
                            "trie", arpa, out_dir / "lm.bin"], check=True, stdout=subprocess.DEVNULL)
            size_mb = (out_dir / "lm.bin").stat().st_size / 2**20
            if size_mb <= max_mb:
                break
            print(f"lm.bin is {size_mb:.1f} MB with --prune {prune}; pruning more", file=sys.stderr)
            prune = pruning(prune, order, more=1)
        else:
            raise RuntimeError(f"lm.bin is still {size_mb:.1f} MB > {max_mb} MB after 6 pruning steps; lower --order")
        words = arpa_words(arpa)
    (out_dir / "unigrams.txt").write_text("\n".join(sorted(words)) + "\n", encoding="utf-8")
    defaults = LMParams()
    info = dict(lm="lm.bin", unigrams="unigrams.txt", alpha=defaults.alpha, beta=defaults.beta,
                beam_width=defaults.beam_width, order=order, prune=prune, size_mb=round(size_mb, 1),
                vocabulary=len(words), sentences=n_sentences, words=n_words,
                sources=[p.name for p in books] + [Path(m).name for m in manifests],
                manifest_repeat=manifest_repeat, build_seconds=round(time.time() - start))
    (out_dir / "lm.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def update_lm_json(lm_dir, **values) -> None:
    """Set `values` in lm_dir/lm.json, where every caller of the LM reads its decoder settings."""
    config_path = Path(lm_dir) / "lm.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config.update(values)
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


_GRID = {}  # the decoder and items for the tuning workers, set before they fork


def _grid_point(point):
    alpha, beta, unk, blank = point
    decoder, items, beam_width = _GRID["decoder"], _GRID["items"], _GRID["beam_width"]
    hyps = [decoder.decode(lp, 1.0, alpha=alpha, beta=beta, beam_width=beam_width, unk_score_offset=unk,
                           blank_offset=blank).text
            for lp, _ in items]
    return alpha, beta, unk, blank, wer_cer(zip((ref for _, ref in items), hyps))[0]


def tune(items, lm_dir, alphas=(0.3, 0.5, 0.8, 1.2, 1.6), betas=(0.0, 1.0, 2.0, 3.0), beam_width=64, jobs=1,
         unk_offsets=(None,), blank_offsets=(None,)):
    """Grid-search alpha, beta (and the log10 penalty for out-of-vocabulary words, unk_score_offset,
    and the offset on the blank's log-prob, blank_offset; None keeps lm.json's) for corpus WER on
    items [(log_probs (T, V), reference text)].

    Writes the best point into lm_dir/lm.json and returns
    (alpha, beta, unk, blank, [(alpha, beta, unk, blank, wer), ...]); equal WERs: the first point wins.
    """
    items = list(items)
    decoder = BeamDecoder.from_dir(lm_dir)
    unk_offsets = [decoder.params.unk_score_offset if u is None else float(u) for u in unk_offsets]
    blank_offsets = [decoder.params.blank_offset if b is None else float(b) for b in blank_offsets]
    _GRID.update(decoder=decoder, items=items, beam_width=beam_width)
    grid = list(itertools.product(alphas, betas, unk_offsets, blank_offsets))
    try:
        if jobs > 1:
            with multiprocessing.get_context("fork").Pool(jobs) as pool:
                table = pool.map(_grid_point, grid)
        else:
            table = list(map(_grid_point, grid))
    finally:
        _GRID.clear()
    alpha, beta, unk, blank, wer = min(table, key=lambda row: row[4])
    update_lm_json(lm_dir, alpha=alpha, beta=beta, unk_score_offset=unk, blank_offset=blank,
                   tuned_wer=round(wer, 4), tuned_utterances=len(items))
    return alpha, beta, unk, blank, table


def sweep_beams(items, lm_dir, widths=(8, 16, 24, 32, 48, 64), prune_logps=(-10.0, -6.0),
                token_min_logps=(-5.0, -3.0), tolerance=0.003):
    """Time beam search settings at the tuned alpha/beta on items [(log_probs, reference)].

    Every (beam width, beam_prune_logp, token_min_logp) decodes all items in this process, one
    after another, timed in CPU seconds. The fastest setting whose corpus WER is within `tolerance`
    of the best one's is written into lm_dir/lm.json. Returns (chosen row, rows), each row a dict
    with beam_width, beam_prune_logp, token_min_logp, wer and seconds.
    """
    from dataclasses import replace
    items = list(items)
    decoder = BeamDecoder.from_dir(lm_dir)
    base, rows = decoder.params, []
    for width, prune, token in itertools.product(widths, prune_logps, token_min_logps):
        decoder.params = replace(base, beam_width=width, beam_prune_logp=prune, token_min_logp=token)
        tic = time.process_time()
        hyps = [decoder.decode(lp, 1.0).text for lp, _ in items]
        seconds = time.process_time() - tic
        wer = wer_cer(zip((ref for _, ref in items), hyps))[0]
        rows.append(dict(beam_width=width, beam_prune_logp=prune, token_min_logp=token, wer=wer, seconds=seconds))
    best = min(row["wer"] for row in rows)
    chosen = min((row for row in rows if row["wer"] <= best + tolerance), key=lambda row: row["seconds"])
    update_lm_json(lm_dir, **{k: chosen[k] for k in ("beam_width", "beam_prune_logp", "token_min_logp")},
                   tuned_wer=round(chosen["wer"], 4), tuned_utterances=len(items))
    return chosen, rows


def load_emissions(path) -> list[tuple[np.ndarray, str]]:
    """Items from an .npz holding lp_0, lp_1, ... ((T, V) log-probs) and `refs` (their transcripts)."""
    with np.load(path, allow_pickle=False) as data:
        return [(data[f"lp_{i}"], str(ref)) for i, ref in enumerate(data["refs"])]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.lm", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build", help="build lm.bin, unigrams.txt and lm.json")
    p.add_argument("--out", default=str(Path.home() / ".cache" / "ds2" / "lm"))
    p.add_argument("--text", default="../shared/data/text", help="folder with books-*.txt.xz and gutenberg/")
    p.add_argument("--manifest", action="append", default=[],
                   help="add the transcripts of this manifest (.jsonl) or transcript list (ID TEXT lines); never test!")
    p.add_argument("--manifest-repeat", type=int, default=1, help="repeat the manifests' transcripts N times")
    p.add_argument("--order", type=int, default=4)
    p.add_argument("--prune", default="0 1 1 2", help="lmplz --prune count thresholds per order")
    p.add_argument("--max-mb", type=float, default=30.0)
    p.add_argument("--memory", default="30%", help="lmplz -S sorting memory")
    p = sub.add_parser("tune", help="grid-search alpha and beta on dev emissions")
    p.add_argument("--emissions", required=True)
    p.add_argument("--lm-dir", required=True)
    p.add_argument("--alphas", type=float, nargs="+", default=[0.3, 0.5, 0.8, 1.2, 1.6])
    p.add_argument("--betas", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    p.add_argument("--unk-offsets", type=float, nargs="+", default=[None],
                   help="log10 penalties for a word the LM does not know (default: lm.json's, else -10)")
    p.add_argument("--blank-offsets", type=float, nargs="+", default=[None],
                   help="offsets added to the blank's log-prob before the search, e.g. 0 -1 -2 "
                        "(default: lm.json's, else 0)")
    p.add_argument("--beam-width", type=int, default=64, help="beam width for the alpha/beta grid")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--leave-out-overlap", metavar="TEXT_DIR", help="leave out the dev utterances that share an "
                   f"{OVERLAP_WORDS}-gram with the books in TEXT_DIR (they would favour a high alpha)")
    p = sub.add_parser("beams", help="time beam widths and pruning at the tuned alpha/beta on dev emissions; "
                                     "keep the fastest within --tolerance of the best WER")
    p.add_argument("--emissions", required=True)
    p.add_argument("--lm-dir", required=True)
    p.add_argument("--widths", type=int, nargs="+", default=[8, 16, 24, 32, 48, 64])
    p.add_argument("--prune-logps", type=float, nargs="+", default=[-10.0, -6.0])
    p.add_argument("--token-min-logps", type=float, nargs="+", default=[-5.0, -3.0])
    p.add_argument("--tolerance", type=float, default=0.003, help="WER (fraction) given up for speed, at most")
    p = sub.add_parser("overlap", help="count the transcripts that share a word n-gram with the LM text")
    p.add_argument("check", nargs="+", metavar="MANIFEST", help="manifests to check (dev, test)")
    p.add_argument("--text", default="../shared/data/text", help="the books, as for build")
    p.add_argument("--manifest", action="append", default=[], help="the LM's training manifests, as for build")
    p.add_argument("-n", type=int, default=OVERLAP_WORDS, help="n-gram length in words")
    args = parser.parse_args(argv)
    if args.command in ("tune", "beams"):  # before minutes of work, not after
        if not Path(args.emissions).is_file():
            parser.error(f"--emissions {args.emissions}: no such file (python -m ds2 evaluate DEV.jsonl --lm none "
                         "--greedy-only --save-emissions FILE writes one)")
        if not (Path(args.lm_dir) / "lm.json").is_file():
            parser.error(f"--lm-dir {args.lm_dir}: no lm.json there (give a folder that python -m train.lm build "
                         "wrote, or a copy of assets/lm: the best point is written into its lm.json)")
    if args.command == "tune" and not all(math.isfinite(b) for b in args.blank_offsets if b is not None):
        parser.error(f"--blank-offsets {' '.join(map(str, args.blank_offsets))}: give finite numbers")
    if args.command == "overlap":
        for r in overlap(args.check, args.text, args.manifest, args.n):
            print(f"{r['manifest']}: {r['sharing']} of {r['long_enough']} transcripts of {args.n}+ words share "
                  f"at least one {args.n}-gram with the LM text ({r['ngrams_found']} of {r['ngrams']} {args.n}-grams)")
    elif args.command == "build":
        info = build(args.out, args.text, args.manifest, args.order, args.prune, args.max_mb, args.memory,
                     manifest_repeat=args.manifest_repeat)
        print(json.dumps(info, indent=2))
    elif args.command == "beams":
        chosen, rows = sweep_beams(load_emissions(args.emissions), args.lm_dir, args.widths, args.prune_logps,
                                   args.token_min_logps, args.tolerance)
        for r in rows:
            print(f"beam {r['beam_width']:3d}  prune {r['beam_prune_logp']:5.1f}  token min {r['token_min_logp']:4.1f}"
                  f"  WER {r['wer']:6.2%}  {r['seconds']:6.2f} s")
        print(f"chosen: {json.dumps(chosen)}, written to {Path(args.lm_dir) / 'lm.json'}")
    else:
        items = load_emissions(args.emissions)
        if args.leave_out_overlap:
            words = [normalize_text(ref).split() for _, ref in items]
            found = shared_ngrams(words, args.leave_out_overlap)
            items = [item for item, w in zip(items, words) if not found.intersection(ngrams(w, OVERLAP_WORDS))]
            print(f"left out {len(words) - len(items)} of {len(words)} utterances that share an {OVERLAP_WORDS}-gram "
                  "with the books")
        alpha, beta, unk, blank, table = tune(items, args.lm_dir, args.alphas, args.betas, args.beam_width,
                                              args.jobs, args.unk_offsets, args.blank_offsets)
        for a, b, u, k, wer in table:
            print(f"alpha {a:4.2f}  beta {b:4.2f}  unk {u:5.1f}  blank {k:5.2f}  WER {wer:6.2%}")
        print(f"best: alpha {alpha} beta {beta} unk_score_offset {unk} blank_offset {blank}, "
              f"written to {Path(args.lm_dir) / 'lm.json'}")


if __name__ == "__main__":
    main()
