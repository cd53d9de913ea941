"""Pack manifests and their audio into one folder, to train on another machine (a rented GPU):

    python -m train.pack ~/.cache/ds2/data/librispeech-{train,dev}.jsonl --out /tmp/pack
    python -m train.pack ~/.cache/ds2/data/an4-train.jsonl --out /tmp/pack --opus-kbps 46

OUT/NAME.jsonl is each manifest with its audio copied to OUT/NAME/ and referred to relatively, so
the folder can go anywhere (`rsync -a /tmp/pack/ gpu:~/.cache/ds2/data/` and the configs' paths
hold there too). Files are copied byte for byte, unless `--opus-kbps` re-encodes them to Ogg/Opus at
about that bit rate: lossy, for moving a corpus through a narrow link; the manifest then says
`"packed": "opus 46 kb/s"` on each line so that nobody mistakes it for the original.
"""

import argparse
import shutil
from pathlib import Path

import soundfile as sf

from ds2.data import read_manifest, write_manifest

# libsndfile sets Opus's bit rate from a compression level in [0, 1], linearly: measured 262 kb/s at
# level 0 and 59 kb/s at level 0.8 (mono, 16 kHz).
OPUS_KBPS_AT_LEVEL_0, OPUS_KBPS_PER_LEVEL = 261.7, 252.9
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)  # what libopus takes


def opus_level(kbps: float) -> float:
    """The compression level that gives about `kbps` kb/s."""
    return min(1.0, max(0.0, (OPUS_KBPS_AT_LEVEL_0 - kbps) / OPUS_KBPS_PER_LEVEL))


def pack(manifests, out, opus_kbps: float | None = None) -> dict:
    """Copy (or re-encode) each manifest's audio under out/NAME/ and write out/NAME.jsonl -> sizes
    in bytes of what was written, by manifest name."""
    out = Path(out).expanduser()
    sizes = {}
    for manifest in map(Path, manifests):
        name = manifest.name.removesuffix(".jsonl")
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        entries, total, seen = [], 0, set()
        for e in read_manifest(manifest):
            source = Path(e["audio"])
            stem = e.get("id") or source.stem
            if stem in seen:
                raise ValueError(f"{manifest}: two entries would both be packed as {stem}")
            seen.add(stem)
            if opus_kbps is None:
                target = folder / f"{stem}{source.suffix}"
                shutil.copyfile(source, target)
            else:
                samples, rate = sf.read(source, dtype="float32")
                if rate not in OPUS_RATES:
                    raise ValueError(f"{source}: {rate} Hz cannot be Opus-encoded (it takes {OPUS_RATES})")
                target = folder / f"{stem}.opus"
                sf.write(target, samples, rate, format="OGG", subtype="OPUS", compression_level=opus_level(opus_kbps))
                e = {**e, "packed": f"opus {opus_kbps:g} kb/s"}
            total += target.stat().st_size
            entries.append({**e, "audio": str(target)})
        write_manifest(out / f"{name}.jsonl", entries)
        sizes[name] = total
    return sizes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifests", nargs="+", help="JSONL manifests (train/prepare.py's or train.synth's)")
    parser.add_argument("--out", required=True, help="the folder to fill")
    parser.add_argument("--opus-kbps", type=float, help="re-encode to Ogg/Opus at about this bit rate (lossy)")
    args = parser.parse_args(argv)
    try:
        sizes = pack(args.manifests, args.out, args.opus_kbps)
    except (OSError, ValueError, sf.LibsndfileError) as e:
        parser.exit(2, f"error: {e}\n")
    for name, size in sizes.items():
        print(f"{name}: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
