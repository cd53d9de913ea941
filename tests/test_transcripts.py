import io
import json
import sys
from pathlib import Path

import pytest

from conftest import TINY_MANIFEST
from ds2 import transcripts
from ds2.__main__ import main
from ds2.data import read_manifest
from ds2.decoding import Word
from ds2.transcriber import Result

ENTRIES = read_manifest(TINY_MANIFEST)
WORDS = [Word(f"w{i}", i * 0.5, i * 0.5 + 0.4, 0.9) for i in range(10)] + [Word("late", 3661.5, 3662.25, 0.9)]


def result(words=WORDS) -> Result:
    text = " ".join(w.word for w in words)
    return Result(greedy=text, lm=text, greedy_words=tuple(words), words=tuple(words), duration=3663.0,
                  emissions=None)


def test_srt_cues_split_at_pauses_and_at_eight_words():
    cues = transcripts.srt(WORDS).strip().split("\n\n")
    assert [cue.split("\n")[0] for cue in cues] == ["1", "2", "3"]
    assert [cue.split("\n")[2] for cue in cues] == ["w0 w1 w2 w3 w4 w5 w6 w7", "w8 w9", "late"]
    assert cues[0].split("\n")[1] == "00:00:00,000 --> 00:00:03,900"
    assert cues[2].split("\n")[1] == "01:01:01,500 --> 01:01:02,250"


def test_vtt_has_its_header_and_dotted_milliseconds():
    text = transcripts.vtt(WORDS)
    assert text.startswith("WEBVTT\n\n")
    cues = text.removeprefix("WEBVTT\n\n").strip().split("\n\n")
    assert cues[2] == "01:01:01.500 --> 01:01:02.250\nlate"
    assert transcripts.vtt([]) == "WEBVTT\n\n" and transcripts.srt([]) == ""


def test_write_only_the_asked_formats_and_nothing_for_an_unknown_one(tmp_path):
    paths = transcripts.write(result(), tmp_path / "out", "talk", ["txt", "json"])
    assert [p.name for p in paths] == ["talk.txt", "talk.json"]
    assert sorted((tmp_path / "out").iterdir()) == sorted(paths)
    assert paths[0].read_text(encoding="utf-8") == result().lm + "\n"
    report = json.loads(paths[1].read_text(encoding="utf-8"))
    assert report["words"][-1] == {"word": "late", "start": 3661.5, "end": 3662.25, "confidence": 0.9}
    with pytest.raises(ValueError, match="unknown transcript format 'doc'"):
        transcripts.write(result(), tmp_path / "other", "talk", ["txt", "doc"])
    assert not (tmp_path / "other").exists()


def cli(tiny_model_dir, *args) -> int:
    return main(["transcribe", *args, "--model", str(tiny_model_dir), "--lm", "none"])


def test_cli_writes_subtitles_for_each_good_file(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    files = [ENTRIES[0]["audio"], str(bad), ENTRIES[1]["audio"]]
    out = tmp_path / "subs" / "new"  # created, parents too
    assert cli(tiny_model_dir, *files, "-o", str(out), "--output-format", "SRT,.vtt,srt") == 1  # one file failed
    assert "bad.wav: cannot read this as audio" in capsys.readouterr().err
    stems = [Path(e["audio"]).stem for e in ENTRIES[:2]]
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{s}.{f}" for s in stems for f in ("srt", "vtt"))
    for stem, entry in zip(stems, ENTRIES):
        srt = (out / f"{stem}.srt").read_text(encoding="utf-8")
        assert srt.startswith("1\n00:00:00,") and " ".join(srt.strip().split("\n")[2::4]) == entry["text"]
        assert (out / f"{stem}.vtt").read_text(encoding="utf-8").startswith("WEBVTT\n\n00:00:")


def test_cli_refuses_outputs_that_would_clash_or_overwrite_before_any_work(tiny_model_dir, tmp_path, capsys):
    audio = Path(ENTRIES[0]["audio"])
    twin = tmp_path / "twin" / audio.name
    twin.parent.mkdir()
    twin.write_bytes(audio.read_bytes())
    with pytest.raises(SystemExit) as exit_:
        cli(tiny_model_dir, str(audio), str(twin), "-o", str(tmp_path / "out"))
    assert exit_.value.code == 2 and "would both be written as" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    odd = tmp_path / "odd.srt"  # audio with a subtitle's name, written next to itself
    odd.write_bytes(audio.read_bytes())
    with pytest.raises(SystemExit):
        cli(tiny_model_dir, str(odd), "-o", str(tmp_path))
    assert "would overwrite an input file" in capsys.readouterr().err and odd.read_bytes() == audio.read_bytes()
    with pytest.raises(SystemExit):
        cli(tiny_model_dir, str(audio), "-o", str(tmp_path / "x"), "--output-format", "srt,docx")
    assert "'srt,docx': give 'all' or some of txt,srt,vtt,json" in capsys.readouterr().err
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit):
        cli(tiny_model_dir, str(audio), "-o", str(tmp_path / "file"))
    assert "cannot create the output folder" in capsys.readouterr().err


def test_cli_reads_audio_piped_to_stdin(tiny_model_dir, tmp_path, capsys, monkeypatch):
    audio = Path(ENTRIES[0]["audio"]).read_bytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(audio)))
    assert cli(tiny_model_dir, "-", "--json", "-o", str(tmp_path), "--output-format", "txt") == 0
    line = json.loads(capsys.readouterr().out)
    assert line["path"] == "-" and line["greedy"] == ENTRIES[0]["text"]
    assert (tmp_path / "stdin.txt").read_text(encoding="utf-8") == line["lm"] + "\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"not audio at all")))
    assert cli(tiny_model_dir, "-") == 1
    err = capsys.readouterr().err
    assert err.startswith("error: stdin: cannot read this as audio (") and "BytesIO" not in err
    with pytest.raises(SystemExit):
        cli(tiny_model_dir, "-", "-")
    assert "stdin (-) can be read only once" in capsys.readouterr().err
