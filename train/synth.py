"""Synthetic training speech: sentences rendered by Debian's TTS voices, then noise and reverberation.

    python -m train.synth --out ~/.cache/ds2/synth --count 5000 --seed 1 --jobs 1
        5000 sentences sampled from the Gutenberg books (../shared/data/text/books-30m.txt.xz)
    python -m train.synth --out ~/.cache/ds2/synth-ls --count 2000 --seed 2 --max-words 30 \\
        --text ~/.cache/ds2/data/librispeech-train.jsonl --voices flite festival-slt-hts
        training transcripts (never test ones) with the flite voices and festival's HTS voice

Each utterance draws a voice (flite rms/slt/awb/kal16, festival slt-hts/kal/ked, and an espeak-ng
accent and variant about one time in ten), a tempo and a pitch, then silence padding, simple room
reverberation, white/pink/brown noise and a peak level, all from a generator seeded by (seed, index):
the same seed gives byte-identical FLAC files (16 kHz, PCM_16) and `OUT/manifest.jsonl`, whatever
--jobs is. Labels and the TTS input come from the same text: `ds2.text.normalize_text` for the label,
digits spelled by the same rule for the voice, and sentences a voice would read otherwise (Mr, 4th,
&, roman numerals) are skipped. One CPU core renders about 8 utterances (25-35 s of speech) a second,
after about 6 s spent sampling sentences from the books.
"""

import argparse
import itertools
import json
import lzma
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from ds2.audio import SAMPLE_RATE, resample
from ds2.data import write_manifest
from ds2.text import normalize_text, number_to_words

DEFAULT_TEXT = "../shared/data/text/books-30m.txt.xz"
# name: (engine, its voice, relative weight, Debian packages). flite rms/slt/awb and festival slt-hts
# sound closest to real speech (shared/data/README.md); espeak-ng is robotic, so it stays rare.
VOICES = {
    "flite-rms": ("flite", "rms", 1.5, "flite"), "flite-slt": ("flite", "slt", 1.5, "flite"),
    "flite-awb": ("flite", "awb", 1.5, "flite"), "flite-kal16": ("flite", "kal16", 1.0, "flite"),
    "festival-slt-hts": ("festival", "cmu_us_slt_arctic_hts", 1.5, "festival festvox-us-slt-hts"),
    "festival-kal": ("festival", "kal_diphone", 0.75, "festival festvox-kallpc16k"),
    "festival-ked": ("festival", "ked_diphone", 0.75, "festival festvox-kdlpc16k"),
    "espeak-ng": ("espeak-ng", "", 0.95, "espeak-ng"),
}
ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m7", "f1", "f2", "f3", "f4", "f5")
ESPEAK_WPM = 175  # espeak-ng's default rate, words per minute
NOISE_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectrum ~ 1 / f**exponent
TEXT_CHARS = re.compile(r"[A-Za-z0-9 ,.;:!?'\"()_\-\u2018\u2019\u201c\u201d]+")  # what voices and labels agree on
SENTENCE_END = re.compile(r'(?<=[.!?])["\')\u2019\u201d_]*\s+')
ROMAN = re.compile(r"(?=[ivxlc]{2})l?x{0,3}(ix|iv|v?i{0,3})")  # ii, iv, xii, ... ("i" is a word)
ABBREVIATIONS = {"etc", "viz", "esq", "co"}  # read out in full by the voices


@dataclass(frozen=True)
class SynthOptions:
    out: str
    count: int
    seed: int = 0
    text: tuple = (DEFAULT_TEXT,)  # books (.txt, .txt.xz) or manifests (.jsonl, their "text")
    voices: tuple = ()  # voice names or engines (flite, festival, espeak-ng); empty: all installed
    min_words: int = 3
    max_words: int = 20
    jobs: int = 1
    rate: tuple = (0.85, 1.2)  # tempo factor
    pitch: tuple = (0.88, 1.14)  # pitch and formant factor, by resampling (like a smaller/larger speaker)
    pad_s: tuple = (0.05, 0.3)  # silence before and after the trimmed speech
    reverb_prob: float = 0.4
    rt60_s: tuple = (0.1, 0.6)
    wet: tuple = (0.2, 0.7)  # reverberant share of the mix
    noise_prob: float = 0.8
    snr_db: tuple = (5.0, 35.0)
    peak_db: tuple = (-24.0, -1.0)  # final peak level, dBFS: random gain that never clips


def available_voices(wanted=()) -> list[str]:
    """Installed voices among `wanted` (names or engine names; all if empty), with one warning for the rest."""
    engines = {engine for engine, *_ in VOICES.values()}
    if unknown := sorted(set(wanted) - set(VOICES) - engines):
        raise SystemExit(f"unknown voices {', '.join(unknown)}; choose among {' '.join(VOICES)} "
                         f"or the engines {' '.join(sorted(engines))}")
    names = [n for n, (engine, *_) in VOICES.items() if not wanted or n in wanted or engine in wanted]
    def installed(name):
        engine, voice, _, _ = VOICES[name]
        if engine == "festival":
            return shutil.which("text2wave") and any(Path("/usr/share/festival/voices").glob(f"*/{voice}"))
        return shutil.which(engine)
    missing = [n for n in names if not installed(n)]
    if missing:
        packages = sorted({package for n in missing for package in VOICES[n][3].split()})
        print(f"warning: skipping voices {', '.join(missing)}: not installed (apt-get install {' '.join(packages)})",
              file=sys.stderr)
    found = [n for n in names if n not in missing]
    if not found:
        raise SystemExit(f"no TTS voice installed among {', '.join(names)}: apt-get install flite festival espeak-ng")
    return found


def raw_sentences(path):
    """Sentences of a book (paragraphs split at . ! ?) or the "text" of each line of a JSONL manifest."""
    path = Path(path).expanduser()
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            yield from (json.loads(line)["text"] for line in f if line.strip())
        return
    with (lzma.open(path, "rt", encoding="utf-8") if path.suffix == ".xz" else open(path, encoding="utf-8")) as f:
        paragraph = []
        for line in itertools.chain(f, [""]):  # streamed: the books are 170 MB of text
            if line.strip():
                paragraph.append(line.strip())
            elif paragraph:
                yield from SENTENCE_END.split(" ".join(paragraph))
                paragraph = []


def spoken_and_label(sentence: str, min_words: int, max_words: int) -> tuple[str, str] | None:
    """(text for the voice, normalised label), or None where a voice would not say the label's words."""
    if not TEXT_CHARS.fullmatch(sentence) or re.search(r"\d{16}", sentence):
        return None
    label = normalize_text(sentence)
    words = label.split()
    if not min_words <= len(words) <= max_words or any(
            not re.search("[aeiouy]", w) or w in ABBREVIATIONS or ROMAN.fullmatch(w) for w in words):
        return None
    spoken = re.sub(r"\d+", lambda m: f" {number_to_words(int(m.group()))} ", sentence).replace("_", " ")
    return " ".join(spoken.lower().split()), label


def sample_sentences(options: SynthOptions) -> list[tuple[str, str]]:
    """`count` (spoken, label) pairs, a seeded uniform sample over all sources (reservoir sampling)."""
    rng, size, seen, pool = random.Random(options.seed), 2 * options.count + 10, 0, []  # room for rejects
    for path in options.text:
        for sentence in raw_sentences(path):
            if not options.min_words <= len(sentence.split()) <= options.max_words:
                continue  # cheap first filter: spelling out and splitting only add words
            seen += 1
            if len(pool) < size:
                pool.append(sentence)
            elif (j := rng.randrange(seen)) < size:
                pool[j] = sentence
    rng.shuffle(pool)
    pairs = [p for s in pool if (p := spoken_and_label(s, options.min_words, options.max_words))]
    if not pairs:
        raise SystemExit(f"no usable sentences of {options.min_words}-{options.max_words} words in "
                         f"{', '.join(options.text)}")
    return [pairs[i % len(pairs)] for i in range(options.count)]  # a small text source repeats


def colored_noise(samples: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """(samples,) unit-RMS white, pink (1/f) or brown (1/f^2) noise, shaped in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(samples))
    freqs = np.fft.rfftfreq(samples)
    freqs[0] = freqs[1] if samples > 1 else 1.0
    noise = np.fft.irfft(spectrum / freqs ** (NOISE_EXPONENTS[color] / 2), samples)
    return noise / (np.sqrt(np.mean(noise ** 2)) + 1e-12)


def add_noise(x: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """x (samples,) plus noise at `snr_db` dB below x's mean power (over the whole signal)."""
    return x + colored_noise(x.size, color, rng) * np.sqrt(np.mean(x ** 2) / 10 ** (snr_db / 10))


def room_impulse_response(rt60_s: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(rt60_s * sample_rate,) unit-energy noise decaying by 60 dB over rt60_s: a diffuse room's tail."""
    t = np.arange(max(int(rt60_s * sample_rate), 1)) / sample_rate
    h = rng.standard_normal(t.size) * np.exp(-3 * math.log(10) * t / rt60_s)  # 20 log10 e^(-a t) = -60 dB at rt60
    return h / np.sqrt(np.sum(h ** 2))


def reverberate(x: np.ndarray, rt60_s: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """(samples,) -> (samples + rt60_s * rate - 1,): dry and reverberant signal mixed, the tail rings out."""
    h = room_impulse_response(rt60_s, rng)
    reverberant = AF.fftconvolve(torch.from_numpy(np.asarray(x, np.float64)), torch.from_numpy(h)).numpy()
    return (1 - wet) * np.pad(x, (0, h.size - 1)) + wet * reverberant


def trim_silence(x: np.ndarray, floor_db: float = -40.0, frame: int = SAMPLE_RATE // 100) -> np.ndarray:
    """x without the leading and trailing 10 ms frames quieter than `floor_db` below its loudest frame."""
    rms = np.sqrt(np.mean(np.pad(x, (0, -x.size % frame)).reshape(-1, frame) ** 2, axis=1))
    active = np.flatnonzero(rms > rms.max() * 10 ** (floor_db / 20))
    return x[active[0] * frame:(active[-1] + 1) * frame] if active.size else x[:0]


def tts(voice: str, variant: str, text: str, tempo: float, workdir: Path) -> tuple[np.ndarray, int]:
    """Render text with one voice at a tempo factor -> ((samples,) float, sample rate)."""
    engine, name, _, _ = VOICES[voice]
    (txt := workdir / "text.txt").write_text(text + "\n", encoding="utf-8")
    wav = workdir / "out.wav"
    if engine == "flite":
        command = ["flite", "-voice", name, "--setf", f"duration_stretch={1 / tempo:.4f}", "-f", txt, "-o", wav]
    elif engine == "festival":
        speed = (f'(set! hts_engine_params (append hts_engine_params (list (list "-r" {tempo:.4f}))))' if "hts" in name
                 else f"(Parameter.set 'Duration_Stretch {1 / tempo:.4f})")
        command = ["text2wave", "-eval", f"(begin (voice_{name}) {speed})", "-o", wav, txt]
    else:
        command = ["espeak-ng", "-v", variant, "-s", str(round(ESPEAK_WPM * tempo)), "-f", txt, "-w", wav]
    subprocess.run([str(c) for c in command], check=True, capture_output=True, timeout=120)
    x, rate = sf.read(wav, dtype="float64", always_2d=True)
    return x.mean(axis=1), rate


def render(job: tuple[int, str, str], options: SynthOptions, voices: list[str]) -> dict | None:
    """One utterance -> its manifest entry (file written to OUT/audio/), or None if the voice failed."""
    index, spoken, label = job
    rng = np.random.default_rng([options.seed, index])
    weights = np.array([VOICES[v][2] for v in voices])
    voice = voices[rng.choice(len(voices), p=weights / weights.sum())]
    variant = f"{rng.choice(ESPEAK_ACCENTS)}+{rng.choice(ESPEAK_VARIANTS)}" if voice == "espeak-ng" else ""
    tempo, pitch = rng.uniform(*options.rate), rng.uniform(*options.pitch)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            x, rate = tts(voice, variant, spoken, tempo / pitch, Path(tmp))
    except (subprocess.SubprocessError, OSError, RuntimeError) as e:
        print(f"warning: {voice} failed on utterance {index} ({e}); skipped", file=sys.stderr)
        return None
    claimed = round(rate * pitch, -2)  # played back faster by `pitch`, which brings the tempo to `tempo`
    x = trim_silence(resample(x.astype(np.float32), int(claimed)).astype(np.float64))
    if x.size < SAMPLE_RATE // 10:
        print(f"warning: {voice} rendered no speech for utterance {index}; skipped", file=sys.stderr)
        return None
    x = np.pad(x, [int(rng.uniform(*options.pad_s) * SAMPLE_RATE) for _ in range(2)])
    entry = {"voice": f"{voice}:{variant}" if variant else voice, "tempo": round(tempo, 3),
             "pitch": round(claimed / rate, 3)}
    if rng.random() < options.reverb_prob:
        entry["rt60_s"], entry["wet"] = round(rng.uniform(*options.rt60_s), 3), round(rng.uniform(*options.wet), 3)
        x = reverberate(x, entry["rt60_s"], entry["wet"], rng)
    if rng.random() < options.noise_prob:
        entry["noise"], entry["snr_db"] = str(rng.choice(list(NOISE_EXPONENTS))), round(rng.uniform(*options.snr_db), 1)
        x = add_noise(x, entry["snr_db"], entry["noise"], rng)
    entry["peak_db"] = round(rng.uniform(*options.peak_db), 1)
    x *= 10 ** (entry["peak_db"] / 20) / np.abs(x).max()
    path = Path(options.out) / "audio" / f"{index:06d}.flac"
    sf.write(path, x, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return {"audio": str(path), "text": label, "duration": round(x.size / SAMPLE_RATE, 3), **entry}


def synthesize(options: SynthOptions) -> list[dict]:
    """Render options.count utterances into options.out and write its manifest.jsonl; returns the entries."""
    voices = available_voices(options.voices)
    jobs = [(i, *pair) for i, pair in enumerate(sample_sentences(options))]
    (Path(options.out) / "audio").mkdir(parents=True, exist_ok=True)
    work = partial(render, options=options, voices=voices)
    if options.jobs > 1:
        with Pool(options.jobs, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            entries = list(pool.imap(work, jobs, chunksize=4))
    else:
        entries = [work(job) for job in jobs]
    entries = [e for e in entries if e]
    write_manifest(Path(options.out) / "manifest.jsonl", entries)
    return entries


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for audio/ and manifest.jsonl")
    p.add_argument("--count", type=int, required=True, help="utterances to render")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text", nargs="+", default=[DEFAULT_TEXT], help="books (.txt, .txt.xz) or manifests (.jsonl)")
    p.add_argument("--voices", nargs="+", default=[], help=f"voices ({' '.join(VOICES)}) or engines (flite festival "
                   "espeak-ng); default: all installed")
    p.add_argument("--min-words", type=int, default=3, help="1 takes one-word lines, such as the spoken digits'")
    p.add_argument("--max-words", type=int, default=20)
    p.add_argument("--jobs", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    options = SynthOptions(out=str(Path(a.out).expanduser()), count=a.count, seed=a.seed, text=tuple(a.text),
                           voices=tuple(a.voices), min_words=a.min_words, max_words=a.max_words, jobs=a.jobs)
    entries = synthesize(options)
    hours = sum(e["duration"] for e in entries) / 3600
    print(f"{len(entries)} utterances, {hours:.2f} h -> {Path(options.out) / 'manifest.jsonl'}")
    (Path(options.out) / "options.json").write_text(json.dumps(asdict(options), indent=1) + "\n")


if __name__ == "__main__":
    main()
