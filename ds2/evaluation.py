"""Corpus-level evaluation: errors summed over every utterance, then divided once.

    report = evaluate(Transcriber(), read_manifest("test.jsonl"))
    report["greedy_wer"], report["lm_wer"], report["rtf"]
"""

import sys
import time

from .audio import AudioError
from .text import wer_cer


def evaluate(transcriber, entries: list[dict], beam: bool = True, keep_emissions: bool = False,
             verbose: bool = False) -> dict:
    """Transcribe every manifest entry -> {utterances, skipped, audio_hours, rtf, greedy_wer,
    greedy_cer, [lm_wer, lm_cer], [emissions, refs]}; unreadable audio is skipped and counted."""
    greedy, lm, emissions, audio_seconds = [], [], [], 0.0
    tic = time.perf_counter()
    results = (r for _, r in transcriber.transcribe_many([e["audio"] for e in entries], beam=beam))
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
