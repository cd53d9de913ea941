"""Transcripts as files: plain text, SRT and WebVTT subtitles, JSON with word timings.

    write(result, folder, "talk", ["txt", "srt"])   # -> folder/talk.txt, folder/talk.srt

Subtitles are cut from the LM transcript's timed words: a cue holds at most `max_words` words and
ends where the speaker pauses longer than `max_gap` seconds.
"""

import json
from pathlib import Path

FORMATS = ("txt", "srt", "vtt", "json")


def cues(words, max_words: int = 8, max_gap: float = 1.0) -> list[list]:
    """Words grouped into subtitle cues: at most `max_words` each, split at pauses over `max_gap` s."""
    groups = []
    for w in words:
        if groups and len(groups[-1]) < max_words and w.start - groups[-1][-1].end <= max_gap:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def _timestamp(seconds: float, decimal: str) -> str:
    minutes, ms = divmod(round(max(seconds, 0.0) * 1000), 60_000)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:{ms // 1000:02d}{decimal}{ms % 1000:03d}"


def srt(words, **options) -> str:
    """SubRip subtitles: numbered cues, times as HH:MM:SS,mmm."""
    return "".join(f"{i}\n{_timestamp(c[0].start, ',')} --> {_timestamp(c[-1].end, ',')}\n"
                   f"{' '.join(w.word for w in c)}\n\n" for i, c in enumerate(cues(words, **options), 1))


def vtt(words, **options) -> str:
    """WebVTT subtitles (what a browser's <track> reads): times as HH:MM:SS.mmm."""
    return "WEBVTT\n\n" + "".join(f"{_timestamp(c[0].start, '.')} --> {_timestamp(c[-1].end, '.')}\n"
                                  f"{' '.join(w.word for w in c)}\n\n" for c in cues(words, **options))


def word_dicts(words) -> list[dict]:
    return [{"word": w.word, "start": round(w.start, 2), "end": round(w.end, 2), "confidence": round(w.confidence, 3)}
            for w in words]


def as_json(result) -> str:
    """Both transcripts with their timed words."""
    return json.dumps({"greedy": result.greedy, "lm": result.lm, "duration": round(result.duration, 3),
                       "greedy_words": word_dicts(result.greedy_words), "words": word_dicts(result.words)},
                      indent=2) + "\n"


def render(result, fmt: str) -> str:
    """One transcript format of a `Transcriber` result; txt, srt and vtt are the LM transcript."""
    if fmt == "txt":
        return result.lm + "\n"
    if fmt == "srt":
        return srt(result.words)
    if fmt == "vtt":
        return vtt(result.words)
    if fmt == "json":
        return as_json(result)
    raise ValueError(f"unknown transcript format {fmt!r}: choose from {', '.join(FORMATS)}")


def write(result, folder, name: str, formats=FORMATS) -> list[Path]:
    """Write folder/name.<format> for each format; returns the paths."""
    folder = Path(folder)
    texts = {fmt: render(result, fmt) for fmt in formats}  # an unknown format fails before any file is written
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt, text in texts.items():
        path = folder / f"{name}.{fmt}"
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
