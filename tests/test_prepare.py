import io
import os
import tarfile

import numpy as np
import soundfile as sf

from ds2.data import read_manifest
from train.prepare import download_librispeech, librispeech_entries, split, tsv_entries


def _librispeech_tree(root, subset="dev-tiny"):
    chapter = root / "LibriSpeech" / subset / "84" / "121123"
    chapter.mkdir(parents=True)
    for i, text in enumerate(["GO DO YOU HEAR", "BUT IN LESS THAN FIVE MINUTES"]):
        sf.write(chapter / f"84-121123-000{i}.flac", np.random.default_rng(i).normal(0, .1, 8000), 16000)
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 GO DO YOU HEAR\n84-121123-0001 BUT IN LESS THAN FIVE MINUTES\n")


def test_librispeech_download_and_manifest_offline(tmp_path):
    source = tmp_path / "server"
    _librispeech_tree(source)
    archive = tmp_path / "dev-tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "LibriSpeech", arcname="LibriSpeech")
    root = download_librispeech("dev-tiny", tmp_path / "data", url_template=f"file://{tmp_path}/{{subset}}.tar.gz")
    entries = librispeech_entries(root)
    assert [e["text"] for e in entries] == ["go do you hear", "but in less than five minutes"]
    assert entries[0]["speaker"] == "84" and abs(entries[0]["duration"] - 0.5) < 1e-3
    assert download_librispeech("dev-tiny", tmp_path / "data", url_template="file:///nonexistent/{subset}") == root


def test_tsv_corpora_and_speaker_splits(tmp_path):
    (tmp_path / "wav").mkdir()
    for utt in ["an1-fash-b", "an2-mblw-b", "an3-mcen-b"]:
        sf.write(tmp_path / "wav" / f"{utt}.flac", np.zeros(1600), 16000)
    (tmp_path / "transcripts.tsv").write_text("an1-fash-b\tR O B\nan2-mblw-b\tENTER SEVEN\nan3-mcen-b\tYES\n")
    entries = tsv_entries(tmp_path, lambda i: i.split("-")[1])
    parts = split(entries, {"dev": {"mblw"}, "test": {"fash"}})
    assert [e["text"] for e in parts["test"]] == ["r o b"]
    assert [e["speaker"] for e in parts["dev"]] == ["mblw"] and len(parts["train"]) == 1


def test_pack_copies_or_reencodes_audio_beside_a_relative_manifest(tmp_path):
    import shutil
    from conftest import TINY_MANIFEST
    from train.pack import main
    main([str(TINY_MANIFEST), "--out", str(tmp_path / "copy")])
    main([str(TINY_MANIFEST), "--out", str(tmp_path / "opus"), "--opus-kbps", "32"])
    shutil.move(tmp_path / "opus", tmp_path / "moved")  # the packed folder works wherever it goes
    original, copied, opus = (read_manifest(p) for p in (
        TINY_MANIFEST, tmp_path / "copy" / "manifest.jsonl", tmp_path / "moved" / "manifest.jsonl"))
    assert [e["text"] for e in copied] == [e["text"] for e in opus] == [e["text"] for e in original]
    for a, b, c in zip(original, copied, opus):
        assert open(a["audio"], "rb").read() == open(b["audio"], "rb").read()
        assert c["audio"].endswith(".opus") and c["packed"] == "opus 32 kb/s" and "packed" not in b
        wave, rate = sf.read(c["audio"])
        assert abs(len(wave) / rate - a["duration"]) < 0.01  # the same length, decoder delay removed
    size = sum(os.path.getsize(e["audio"]) for e in opus)
    seconds = sum(e["duration"] for e in opus)
    assert size * 8 / seconds / 1000 < 45  # about the bit rate asked for (Ogg headers add a little)


def test_pack_refuses_a_rate_opus_cannot_take_in_one_line(tmp_path, capsys):
    import json
    import pytest
    from train.pack import main
    sf.write(tmp_path / "cd.wav", np.random.default_rng(0).normal(0, .1, 44100), 44100)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"audio": "cd.wav", "text": "x", "duration": 1.0}) + "\n")
    with pytest.raises(SystemExit) as exit_info:
        main([str(manifest), "--out", str(tmp_path / "out"), "--opus-kbps", "32"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "44100 Hz cannot be Opus-encoded" in err and "Traceback" not in err
    main([str(manifest), "--out", str(tmp_path / "copy")])  # copied as it is, any rate
    assert (tmp_path / "copy" / "m" / "cd.wav").read_bytes() == (tmp_path / "cd.wav").read_bytes()
