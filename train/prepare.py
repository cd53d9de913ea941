"""Write JSONL manifests (audio, text, duration) from the corpora this project trains on.

    python -m train.prepare shared --data ../shared/data --out ~/.cache/ds2/data
        mini LibriSpeech, AN4 and the spoken digits, split by speaker into train / dev / test
    python -m train.prepare librispeech --subsets train-clean-100 dev-clean --root DIR --out DIR
        download (needs a network) and lay out full LibriSpeech subsets, then write their manifests
    python -m train.prepare folder DIR --out FILE.jsonl
        any LibriSpeech-layout folder (SPK/CHAPTER/SPK-CHAPTER.trans.txt with .flac, .wav or .opus)

The speaker splits are fixed below, so dev (model and LM-weight selection) and test (reported only)
never share a speaker with training or with each other.
"""

import argparse
import tarfile
import urllib.request
from pathlib import Path

import soundfile as sf

from ds2.data import write_manifest

# Speaker-disjoint splits. Everything not listed here trains.
SPLITS = {
    "librispeech": {"dev": {"3664", "4640"}, "test": {"1970", "2136", "5789"}},
    "an4": {"dev": {"ffmm", "fsaf2", "mcsc", "mjbh", "mmdg", "msjm"},
            "test": {"fash", "fkdo", "ftal", "mcrt", "mema", "mjhp", "mmsh", "msct", "mtxj"}},
    "digits": {"dev": {"yweweler"}, "test": {"theo"}},
}
LIBRISPEECH_URL = "https://www.openslr.org/resources/12/{subset}.tar.gz"
AUDIO_SUFFIXES = (".flac", ".wav", ".opus", ".ogg")


def librispeech_entries(root) -> list[dict]:
    """Entries from a LibriSpeech-layout folder; `speaker` is the top-level folder name."""
    entries = []
    for trans in sorted(Path(root).rglob("*.trans.txt")):
        audio_files = {p.stem: p for p in trans.parent.iterdir() if p.suffix in AUDIO_SUFFIXES}
        for line in trans.read_text(encoding="utf-8").splitlines():
            utt_id, _, text = line.strip().partition(" ")
            if utt_id in audio_files:
                path = audio_files[utt_id]
                entries.append({"audio": str(path), "text": text.lower(), "duration": round(sf.info(path).duration, 3),
                                "speaker": utt_id.split("-")[0], "id": utt_id})
    return entries


def tsv_entries(folder, speaker_of) -> list[dict]:
    """Entries from `folder/transcripts.tsv` (id<TAB>TEXT) with audio in `folder/wav/ID.flac`."""
    folder = Path(folder)
    entries = []
    for line in (folder / "transcripts.tsv").read_text(encoding="utf-8").splitlines():
        utt_id, _, text = line.partition("\t")
        path = folder / "wav" / f"{utt_id}.flac"
        if path.exists():
            entries.append({"audio": str(path), "text": text.lower(), "duration": round(sf.info(path).duration, 3),
                            "speaker": speaker_of(utt_id), "id": utt_id})
    return entries



def split(entries: list[dict], splits: dict) -> dict[str, list[dict]]:
    out = {"train": [], "dev": [], "test": []}
    for e in entries:
        name = next((s for s, speakers in splits.items() if e["speaker"] in speakers), "train")
        out[name].append(e)
    return out


def prepare_shared(data_dir, out_dir) -> None:
    data_dir, out_dir = Path(data_dir), Path(out_dir).expanduser()
    corpora = {
        "librispeech": librispeech_entries(data_dir / "librispeech-mini" / "train-clean-5"),
        "an4": tsv_entries(data_dir / "an4-train", lambda i: i.split("-")[1]),
        "digits": tsv_entries(data_dir / "fsdd", lambda i: i.split("_")[1]),
    }
    for corpus, entries in corpora.items():
        for name, part in split(entries, SPLITS[corpus]).items():
            write_manifest(out_dir / f"{corpus}-{name}.jsonl", part)
            print(f"{corpus}-{name}: {len(part)} utterances, {sum(e['duration'] for e in part) / 3600:.2f} h, "
                  f"{len({e['speaker'] for e in part})} speakers")


def download_librispeech(subset: str, root, url_template: str = LIBRISPEECH_URL) -> Path:
    """Download and unpack one LibriSpeech subset under root/LibriSpeech/SUBSET (skipped if there)."""
    root = Path(root).expanduser()
    target = root / "LibriSpeech" / subset
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    archive = root / f"{subset}.tar.gz"
    if not archive.exists():
        url = url_template.format(subset=subset)
        print(f"downloading {url}")
        tmp = archive.with_suffix(".part")
        with urllib.request.urlopen(url) as response, open(tmp, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
        tmp.rename(archive)
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    if not target.is_dir():
        raise RuntimeError(f"{archive} did not contain LibriSpeech/{subset}")
    return target


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("shared", help="manifests for the offline corpora in shared/data")
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--out", default="~/.cache/ds2/data")
    p = sub.add_parser("librispeech", help="download LibriSpeech subsets and write their manifests")
    p.add_argument("--subsets", nargs="+", default=["train-clean-100", "dev-clean", "test-clean"])
    p.add_argument("--root", default="~/.cache/ds2/librispeech")
    p.add_argument("--out", default="~/.cache/ds2/data")
    p.add_argument("--url", default=LIBRISPEECH_URL, help="URL template with {subset} (a mirror, or file://)")
    p = sub.add_parser("folder", help="manifest for one LibriSpeech-layout folder")
    p.add_argument("folder")
    p.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "shared":
        prepare_shared(args.data, args.out)
    elif args.command == "librispeech":
        for subset in args.subsets:
            entries = librispeech_entries(download_librispeech(subset, args.root, args.url))
            write_manifest(Path(args.out).expanduser() / f"librispeech-{subset}.jsonl", entries)
            print(f"librispeech-{subset}: {len(entries)} utterances")
    else:
        write_manifest(args.out, librispeech_entries(args.folder))


if __name__ == "__main__":
    main()
