"""Corpus-level evaluation: errors summed over every utterance, then divided once.

    report = evaluate(Transcriber(), read_manifest("test.jsonl"))
    report["greedy_wer"], report["lm_wer"], report["rtf"]
"""

import io
import sys
import time

import soundfile as sf

from .audio import SAMPLE_RATE, AudioError, check_sample_rate, load_audio, resample, start_samples
from .text import wer_cer


def rewritten(paths, start_ms: float = 0.0, sample_rate: int | None = None):
    """Each file as the bytes of a WAV file without its first `start_ms` milliseconds, recorded at
    `sample_rate` (None: 16 kHz), in one read per file. A file that cannot be read is passed on as
    it is; one no longer than the shift becomes empty; `transcribe_many` reports both.

    `sample_rate` (8000: a telephone band) measures how a model copes with such input; `start_ms`,
    how much of a dev difference is the stride's phase (`ds2.audio.start_samples`).
    """
    drop = start_samples(start_ms)  # both checks before any file is read
    if sample_rate is not None:
        check_sample_rate(sample_rate, "re-recording")  # an AudioError, a ValueError
    return _rewritten(paths, drop, sample_rate)


def _rewritten(paths, drop: int, sample_rate: int | None):
    for path in paths:
        try:
            wave = load_audio(path)[drop:]
        except AudioError:
            yield path
            continue
        buffer = io.BytesIO()
        if wave.size:
            if sample_rate is not None:
                wave = resample(wave, SAMPLE_RATE, sample_rate)
            sf.write(buffer, wave, sample_rate or SAMPLE_RATE, format="WAV", subtype="FLOAT")
        yield buffer.getvalue()


def evaluate(transcriber, entries: list[dict], beam: bool = True, keep_emissions: bool = False,
             verbose: bool = False, sample_rate: int | None = None, start_ms: float = 0.0, **beam_options) -> dict:
    """Transcribe every manifest entry -> {utterances, skipped, audio_hours, rtf, greedy_wer,
    greedy_cer, [lm_wer, lm_cer], [emissions, refs]}; unreadable audio is skipped and counted.
    `start_ms` and `sample_rate` first shift each file and turn it into a recording at that rate
    (see `rewritten`); `beam_options` go to every beam search (`Transcriber.transcribe`)."""
    greedy, lm, emissions, audio_seconds = [], [], [], 0.0
    tic = time.perf_counter()
    sources = [e["audio"] for e in entries]
    if start_ms or sample_rate is not None:
        sources = rewritten(sources, start_ms, sample_rate)
    # errors name the manifest's file, also when a shifted or re-recorded copy is what failed
    names = [e["audio"] for e in entries]
    results = (r for _, r in transcriber.transcribe_many(sources, beam=beam, names=names, **beam_options))
    for entry, r in zip(entries, results):
        if isinstance(r, AudioError):
            print(f"skipped: {r}", file=sys.stderr)
            continue
        greedy.append((entry["text"], r.greedy))
        lm.append((entry["text"], r.lm))
        audio_seconds += r.duration
        if keep_emissions:
            emissions.append(r.emissions)
        if verbose:
            print(f"{entry['audio']}\n  ref:    {entry['text']}\n  greedy: {r.greedy}\n  lm:     {r.lm}")
    elapsed = time.perf_counter() - tic
    report = {"utterances": len(greedy), "skipped": len(entries) - len(greedy),
              "audio_hours": round(audio_seconds / 3600, 4), "rtf": round(elapsed / max(audio_seconds, 1e-9), 4)}
    for name, pairs in (("greedy", greedy), ("lm", lm))[:2 if beam else 1]:
        wer, cer = wer_cer(pairs)
        report[f"{name}_wer"], report[f"{name}_cer"] = round(wer, 4), round(cer, 4)
    if keep_emissions:
        report["emissions"], report["refs"] = emissions, [ref for ref, _ in greedy]
    return report
