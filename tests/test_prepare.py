import io
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
