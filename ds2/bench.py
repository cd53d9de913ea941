"""Speed benchmark: file transcription, streaming, cold start and training throughput, side by side
with PocketSphinx and with the same network run naively.

    python -m ds2.bench                          # bundled model and LM, first 20 LibriSpeech test files
    python -m ds2.bench --model DIR --lm none --only file,stream --files 5 --json out.json --markdown

Figures are "median (min-max)" over --repeats runs unless they say otherwise. Definitions:
- RTF: compute seconds / audio seconds. In-process: Transcriber.transcribe() calls, reading the file
  included. Whole process: `python -m ds2 transcribe --json FILES`, or PocketSphinx in a process that
  never imports torch, timed from launch to exit.
- Streaming: test utterances concatenated to --stream-seconds, fed to StreamingSession.feed as 48 kHz
  int16 in 0.5 s chunks, each when its last sample would have been spoken (so a session's worker
  thread gets the time between updates that it would get live). Update latency: the time one feed()
  takes. Word lag: the k-th word of the final transcript ends at stream time e (greedy alignment of
  its final segment); the first update at or after e with at least k words on screen returns at t;
  lag = t - e. Final-text lag: the same for a segment's final (full model, full beam) text, from the
  end of its speech. Measured for the session as it ships (provisional text from the int8 network,
  final decodes on a worker thread) and as one pass (fp32 partials, the closing update decoding its
  segment itself, the session before 2026-12-04).
- Cold start: a fresh process runs `import ds2.transcriber`, Transcriber(), one transcribe().
- Training: --train-steps steps of the small recipe's data (its training manifests, when present),
  batches collated beforehand (data loading not timed). Ours: BucketBatchSampler's length-bucketed
  batches, picked evenly over an epoch's lengths; naive: the same utterances shuffled into batches
  of the same sizes. Audio-seconds are real (unpadded) audio; FLOPs (model_flops, x3 for forward +
  backward) are counted on the padded batches.
"""

import argparse
import copy
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .audio import SAMPLE_RATE, load_audio, resample, to_mono_16k
from .checkpoint import load_model
from .data import BucketBatchSampler, SpeechDataset, collate, read_manifest
from .decoding import greedy_decode
from .features import FeatureConfig, FeatureExtractor
from .model import DeepSpeech2, ModelConfig, model_config
from .text import wer_cer
from .training import TrainConfig
from .transcriber import DEFAULT_MODEL, Transcriber

ROOT = Path(__file__).resolve().parent.parent  # where `python -m ds2` runs from
DEFAULT_MANIFEST = Path("~/.cache/ds2/data/librispeech-test.jsonl").expanduser()
MEASUREMENTS = ("file", "naive", "quant", "peer", "stream", "cold", "train")
STREAM_RATE = 48000  # Hz, int16: what a browser microphone delivers
CHUNK_SECONDS = 0.5
SMALL_RECIPE = ROOT / "train" / "configs" / "small.toml"

# PocketSphinx runs in a process of its own that never imports torch: its start-up cost is its own.
SPHINX_SCRIPT = """
import json, sys, time
import numpy as np, soundfile as sf
from pocketsphinx import Decoder
decoder = Decoder()  # the wheel's bundled en-us acoustic model, LM and dictionary
for path in sys.argv[1:]:
    tic = time.perf_counter()
    wave, rate = sf.read(path, dtype="float32", always_2d=True)
    wave = wave.mean(axis=1)
    if rate != 16000:  # linear interpolation; test audio is 16 kHz already
        wave = np.interp(np.arange(0, len(wave), rate / 16000), np.arange(len(wave)), wave)
    decoder.start_utt()
    decoder.process_raw((np.clip(wave, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    decoder.end_utt()
    hyp = decoder.hyp()
    print(json.dumps({"text": hyp.hypstr if hyp else "", "seconds": time.perf_counter() - tic}))
"""

COLD_SCRIPT = """
import json, sys, time
tic = time.perf_counter()
from ds2.transcriber import Transcriber
imported = time.perf_counter()
t = Transcriber(None if sys.argv[1] == "-" else sys.argv[1], lm=sys.argv[2])
loaded = time.perf_counter()
t.transcribe(sys.argv[3])
done = time.perf_counter()
print(json.dumps({"import": imported - tic, "load": loaded - imported, "first_transcript": done - loaded}))
"""


def spread(values) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def run_process(args: list[str], threads: int) -> tuple[float, list[dict]]:
    """Run `python ARGS` from the repository root -> (wall seconds, its stdout's JSON lines)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    tic = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tic
    if done.returncode:
        command = " ".join("<script>" if "\n" in a else a for a in args[:4])
        raise RuntimeError(f"python {command} ... exited with {done.returncode}: {done.stderr[-800:]}")
    return wall, [json.loads(line) for line in done.stdout.splitlines()]


# --- file transcription ---
def file_rtf(t: Transcriber, entries: list[dict], repeats: int, many: bool = True) -> dict:
    """In-process RTF and WER of greedy alone (beam=False) and of greedy + beam search (+ LM);
    with `many`, also of the files in a row through transcribe_many."""
    t.transcribe(entries[0]["audio"])  # warm-up: first-call allocations
    audio = sum(e["duration"] for e in entries)
    greedy, full = [], []
    for _ in range(repeats):
        g = f = 0.0
        results = []
        for e in entries:
            tic = time.perf_counter()
            t.transcribe(e["audio"], beam=False)
            g += time.perf_counter() - tic
            tic = time.perf_counter()
            results.append(t.transcribe(e["audio"]))
            f += time.perf_counter() - tic
        greedy.append(g / audio)
        full.append(f / audio)
    report = {"files": len(entries), "audio_seconds": audio, "lm": t.lm_dir is not None,
              "rtf_greedy": spread(greedy), "rtf_lm": spread(full),
              "wer_greedy": wer_cer([(e["text"], r.greedy) for e, r in zip(entries, results)])[0],
              "wer_lm": wer_cer([(e["text"], r.lm) for e, r in zip(entries, results)])[0]}
    if many:  # the CLI's way: transcribe_many runs the network one file ahead in a second thread
        rtfs = []
        for _ in range(repeats):
            tic = time.perf_counter()
            overlapped = [r for _, r in t.transcribe_many([e["audio"] for e in entries])]
            rtfs.append((time.perf_counter() - tic) / audio)
        assert [r.lm for r in overlapped] == [r.lm for r in results]
        report["rtf_many"] = spread(rtfs)
    return report


def cli_rtf(model, lm: str, entries: list[dict], repeats: int, threads: int) -> dict:
    """Whole-process RTF of `python -m ds2 transcribe --json [--model M] --lm LM FILES`."""
    args = ["-m", "ds2", "transcribe", "--json", *(["--model", str(model)] if model else []), "--lm", lm]
    audio = sum(e["duration"] for e in entries)
    walls = [run_process(args + [e["audio"] for e in entries], threads)[0] for _ in range(repeats)]
    return {"rtf": spread([w / audio for w in walls]), "wall_seconds": spread(walls)}


def pocketsphinx(entries: list[dict], repeats: int, threads: int) -> dict:
    """PocketSphinx 5 with its bundled en-us models on the same files: WER, in-process RTF (decoding
    seconds, model loading left out) and whole-process RTF."""
    if importlib.util.find_spec("pocketsphinx") is None:
        return {"status": "not installed"}
    from importlib.metadata import version
    audio = sum(e["duration"] for e in entries)
    walls, computes = [], []
    for _ in range(repeats):
        wall, lines = run_process(["-c", SPHINX_SCRIPT, *(e["audio"] for e in entries)], threads)
        walls.append(wall / audio)
        computes.append(sum(r["seconds"] for r in lines) / audio)
    wer, cer = wer_cer([(e["text"], r["text"]) for e, r in zip(entries, lines)])
    return {"status": "ok", "version": version("pocketsphinx"), "rtf": spread(computes),
            "rtf_process": spread(walls), "wer": wer, "cer": cer}


@torch.inference_mode()
def naive_rtf(model_dir, entries: list[dict], repeats: int) -> dict:
    """The same network the plain way: eager fp32, one file at a time, greedy decoding."""
    model, features, _ = load_model(model_dir)
    extractor = FeatureExtractor(features)
    frame_seconds = model.config.time_stride / features.frames_per_second
    rtfs = []
    for _ in range(repeats):
        tic = time.perf_counter()
        for e in entries:
            feats = extractor(torch.from_numpy(load_audio(e["audio"])))
            log_probs, _ = model(feats[None], torch.tensor([feats.shape[0]]))
            greedy_decode(log_probs[0].numpy(), frame_seconds)
        rtfs.append((time.perf_counter() - tic) / sum(e["duration"] for e in entries))
    return {"rtf_greedy": spread(rtfs)}


def quantized(t: Transcriber, entries: list[dict], repeats: int, baseline: dict) -> dict:
    """file_rtf with the GRUs and linear layers dynamically quantised to int8, and the WER change in
    points against `baseline` (file_rtf's float result): adoptable if no WER worsens by over 0.5."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice
        int8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(t.model), {torch.nn.GRU, torch.nn.Linear},
                                                      dtype=torch.qint8)
    original, t.model = t.model, int8
    try:
        result = file_rtf(t, entries, repeats, many=False)
    finally:
        t.model = original
    change = {k: 100 * (result[f"wer_{k}"] - baseline[f"wer_{k}"]) for k in ("greedy", "lm")}
    return {**result, "wer_change_points": change, "adoptable": max(change.values()) <= 0.5}


# --- streaming ---
def streaming(t: Transcriber, waves: list[np.ndarray], seconds: float = 60.0, realtime: bool = True,
              **options) -> dict:
    """Stream `seconds` of the concatenated 16 kHz `waves` as 48 kHz int16 chunks, each fed when its
    audio would have been spoken (`realtime`; else back to back), to `t.stream(**options)`: update
    latency, word lag and final-text lag."""
    speech = np.concatenate(waves * int(np.ceil(seconds * SAMPLE_RATE / sum(w.size for w in waves))))
    pcm = np.clip(resample(speech[:int(seconds * SAMPLE_RATE)], SAMPLE_RATE, STREAM_RATE), -1, 1) * 32767
    step = int(CHUNK_SECONDS * STREAM_RATE)
    chunks = [pcm[i:i + step].astype(np.int16) for i in range(0, pcm.size, step)]
    heard = np.concatenate([to_mono_16k(c, STREAM_RATE, whole=False) for c in chunks])  # as the session hears it
    # shown: (audio seconds, on-screen time, words on screen, final segments on screen)
    session, latencies, shown = t.stream(**options), [], []
    start = time.perf_counter()
    for i, chunk in enumerate(chunks):
        if realtime:  # a microphone's chunk arrives once its last sample has been spoken
            time.sleep(max(0.0, start + (i + 1) * CHUNK_SECONDS - time.perf_counter()))
        tic = time.perf_counter()
        state = session.feed(chunk, STREAM_RATE)
        latencies.append(time.perf_counter() - tic)
        at = time.perf_counter() - start if realtime else state.seconds + latencies[-1]
        shown.append((state.seconds, at, len(state.greedy.split()), len(state.segments) - state.pending))
    tic = time.perf_counter()
    state = session.finish()
    at = time.perf_counter() - start if realtime else state.seconds + time.perf_counter() - tic
    shown.append((state.seconds, at, len(state.greedy.split()), len(state.segments)))
    word_ends = []
    for start_s, end_s in state.segments:
        piece = heard[round(start_s * SAMPLE_RATE):round(end_s * SAMPLE_RATE)]
        word_ends += [start_s + w.end for w in greedy_decode(t.emissions(piece), t.frame_seconds).words]
    lags = [next((at - end for audio, at, words, _ in shown if audio >= end and words > k), None)
            for k, end in enumerate(word_ends)]
    lags = [lag for lag in lags if lag is not None]
    final_lags = [next(at - end for _, at, _, finals in shown if finals > k) for k, (_, end) in enumerate(state.segments)]
    ms, half = 1000 * np.array(latencies), len(latencies) // 2
    p95 = lambda x: float(np.percentile(x, 95))
    spread = lambda x: {"p50": float(np.percentile(x, 50)), "p95": p95(x)} if x else None
    return {"seconds": seconds, "updates": len(latencies), "words": len(lags), "segments": len(final_lags),
            "options": options, "realtime": realtime,
            "latency_ms": {"p50": float(np.percentile(ms, 50)), "p95": p95(ms), "max": float(ms.max()),
                           "p95_first_half": p95(ms[:half]), "p95_second_half": p95(ms[half:])},
            "word_lag_s": spread(lags), "final_lag_s": spread(final_lags)}


# --- cold start ---
def cold_start(model, lm: str, audio: str, repeats: int, threads: int) -> dict:
    """Seconds a fresh process spends on the import, Transcriber() and the first transcribe(), and in all."""
    runs = []
    for _ in range(repeats):
        wall, (times,) = run_process(["-c", COLD_SCRIPT, str(model or "-"), lm, audio], threads)
        runs.append({**times, "after_import": times["load"] + times["first_transcript"], "process": wall})
    return {k: spread([r[k] for r in runs]) for k in runs[0]}


# --- training ---
def model_flops(config: ModelConfig, batch: int, frames: int) -> float:
    """Forward FLOPs (2 per multiply-add) of DeepSpeech2(config) on (batch, frames, n_feats) features:
    convolutions, the recurrent gates' input and hidden products, lookahead, output layer. Norms,
    activations and the gates' elementwise work are left out (a few percent)."""
    flops, freq, steps, channels = 0, config.n_feats, frames, 1
    for i, (kf, kt) in enumerate(config.conv_kernels[:config.conv_layers]):
        freq = (freq + 2 * (kf // 2) - kf) // 2 + 1
        steps = (steps + 2 * (kt // 2) - kt) // (config.time_stride if i == 0 else 1) + 1
        flops += 2 * kf * kt * channels * config.conv_channels * freq * steps
        channels = config.conv_channels
    gates, directions = {"gru": 3, "lstm": 4}[config.rnn_type], 2 if config.bidirectional else 1
    size, hidden = channels * freq, config.rnn_hidden
    for _ in range(config.rnn_layers):
        flops += directions * 2 * gates * hidden * (size + hidden) * steps
        size = hidden
    if not config.bidirectional:
        flops += 2 * hidden * (config.lookahead + 1) * steps
    return float(batch * (flops + 2 * hidden * config.n_classes * steps))


def recipe_manifests() -> list[str]:
    """The small recipe's training manifests, if they all exist (they have its real mix of lengths)."""
    manifests = TrainConfig.load(SMALL_RECIPE).train
    return manifests if all(Path(m).expanduser().is_file() for m in manifests) else []


def training(entries: list[dict], name: str = "small", features: FeatureConfig = FeatureConfig(),
             device: str = "cpu", batch_seconds: float = 120.0, steps: int = 4,
             peak_tflops: float | None = None) -> dict:
    """Training steps (as ds2.training takes them) on length-bucketed batches and on naive batches."""
    config = model_config(name, n_feats=features.n_feats)
    torch.manual_seed(0)
    model = DeepSpeech2(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cuda = device.startswith("cuda")  # bf16 autocast on GPUs, fp32 on CPU, as ds2.training does
    dataset = SpeechDataset(entries, FeatureExtractor(features))
    # `steps` batches spread evenly over SortaGrad's length order: an epoch's mix of lengths in a few steps.
    every = BucketBatchSampler([e["duration"] for e in entries], batch_seconds, sortagrad=True).batches()
    bucketed = [every[int((i + 0.5) * len(every) / steps)] for i in range(min(steps, len(every)))]
    pool = [i for b in bucketed for i in b]
    random.Random(0).shuffle(pool)
    bounds = np.cumsum([0] + [len(b) for b in bucketed])
    naive = [pool[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def step(batch):
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=cuda):
            log_probs, out_lengths = model(batch["feats"].to(device), batch["feat_lengths"])
        loss = F.ctc_loss(log_probs.float().transpose(0, 1), batch["targets"].to(device), out_lengths,
                          batch["target_lengths"].to(device), blank=0, zero_infinity=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()

    def measure(index_batches):
        batches = [collate([dataset[i] for i in b]) for b in index_batches]
        step(batches[0])  # warm-up: kernel choice, allocator
        seconds = []
        for batch in batches:
            tic = time.perf_counter()
            step(batch)
            seconds.append(time.perf_counter() - tic)
        total, audio = sum(seconds), sum(b["seconds"] for b in batches)
        padded = sum(b["feats"].shape[0] * b["feats"].shape[1] for b in batches) / features.frames_per_second
        flops = sum(3 * model_flops(config, *b["feats"].shape[:2]) for b in batches)
        out = {"audio_s_per_s": audio / total, "utt_per_s": sum(b["size"] for b in batches) / total,
               "step_audio_s_per_s": spread([b["seconds"] / s for b, s in zip(batches, seconds)]),
               "padding": 1 - audio / padded, "tflop_per_s": flops / total / 1e12}
        return {**out, "mfu": out["tflop_per_s"] / peak_tflops} if peak_tflops else out

    ours, baseline = measure(bucketed), measure(naive)
    return {"model": name, "device": device, "steps": len(bucketed), "batch_seconds": batch_seconds,
            "params_m": model.num_parameters / 1e6, "bucketed": ours, "naive": baseline,
            "speedup": ours["audio_s_per_s"] / baseline["audio_s_per_s"]}


# --- the report ---
def fmt(s: dict, digits: int = 3) -> str:
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def rows(report: dict) -> list[tuple[str, str, str]]:
    """The results table: (measurement, result, target) rows."""
    out, f, p = [], report.get("file"), report.get("peer")
    if f:
        beam = "LM" if f["lm"] else "beam (no LM)"
        out += [("RTF in-process, greedy", fmt(f["rtf_greedy"]), ""),
                (f"RTF in-process, greedy + {beam}", fmt(f["rtf_lm"]), "<= 0.05"),
                (f"RTF in-process, greedy + {beam}, files in a row (network one file ahead, 2nd thread)",
                 fmt(f["rtf_many"]), ""),
                (f"WER greedy / {beam}", f"{f['wer_greedy']:.1%} / {f['wer_lm']:.1%}", "")]
        out += [(f"RTF whole process, {label}", fmt(f[key]["rtf"]), "") for key, label in
                (("cli_lm", "greedy + LM"), ("cli_no_lm", "--lm none (beam, no LM)")) if key in f]
    if p and p["status"] != "ok":
        out.append(("PocketSphinx", p["status"], ""))
    elif p:
        out += [(f"PocketSphinx {p['version']}: RTF in-process", fmt(p["rtf"]), ""),
                ("PocketSphinx: RTF whole process", fmt(p["rtf_process"]), ""),
                ("PocketSphinx: WER", f"{p['wer']:.1%}", "")]
        if f and (ours := f.get("cli_lm", f.get("cli_no_lm"))):
            out.append(("ds2 speed-up over PocketSphinx, whole process",
                        f"{p['rtf_process']['median'] / ours['rtf']['median']:.1f}x", ">= 4x"))
    if n := report.get("naive"):
        ratio = f" = {n['rtf_greedy']['median'] / f['rtf_greedy']['median']:.2f}x ours" if f else ""
        out.append(("naive (eager fp32, file by file): RTF greedy", fmt(n["rtf_greedy"]) + ratio, ""))
    if q := report.get("quant"):
        change = q["wer_change_points"]
        out += [("int8 dynamic quantisation: RTF greedy / + LM", f"{fmt(q['rtf_greedy'])} / {fmt(q['rtf_lm'])}", ""),
                ("int8: WER change greedy / LM (points)", f"{change['greedy']:+.2f} / {change['lm']:+.2f} "
                 + ("(adoptable)" if q["adoptable"] else "(not adoptable)"), "<= +0.5")]
    if s := report.get("stream"):
        ms, lag = s["latency_ms"], s["word_lag_s"]
        out += [(f"stream update p50 / p95 / max, {s['seconds']:.0f} s in {CHUNK_SECONDS} s chunks",
                 f"{ms['p50']:.0f} / {ms['p95']:.0f} / {ms['max']:.0f} ms", "p95 <= 150 ms"),
                ("stream update p95, first / second half",
                 f"{ms['p95_first_half']:.0f} / {ms['p95_second_half']:.0f} ms", "constant")]
        if lag:
            out.append((f"stream word lag p50 / p95 ({s['words']} words)",
                        f"{lag['p50']:.2f} / {lag['p95']:.2f} s", ""))
        if final := s.get("final_lag_s"):
            out.append((f"stream final (LM) text lag p50 / p95 ({s['segments']} segments)",
                        f"{final['p50']:.2f} / {final['p95']:.2f} s", ""))
    if s := report.get("stream_one_pass"):
        ms, final = s["latency_ms"], s["final_lag_s"]
        out.append(("stream, one pass (fp32 partials, final decode inside the update): update p50 / p95 / max",
                    f"{ms['p50']:.0f} / {ms['p95']:.0f} / {ms['max']:.0f} ms", ""))
        if final:
            out.append(("stream, one pass: final text lag p50 / p95", f"{final['p50']:.2f} / {final['p95']:.2f} s", ""))
    for key, label in (("cold", "cold start"), ("cold_no_lm", "cold start, no LM")):
        if c := report.get(key):
            out += [(f"{label}: import ds2.transcriber", fmt(c["import"], 2) + " s", ""),
                    (f"{label}: Transcriber() + first transcript", fmt(c["after_import"], 2) + " s",
                     "<= 3 s" if key == "cold" else ""),
                    (f"{label}: whole process", fmt(c["process"], 2) + " s", "")]
    for tr in (report.get("train"), report.get("train_gpu")):
        if tr and "bucketed" in tr:
            b, n = tr["bucketed"], tr["naive"]
            mfu = f", MFU {b['mfu']:.1%}" if "mfu" in b else ""
            out += [(f"train {tr['model']} on {tr['device']}: bucketed batches", f"{b['audio_s_per_s']:.1f} "
                     f"audio-s/s, {b['utt_per_s']:.2f} utt/s, {b['padding']:.0%} padding{mfu}", ""),
                    (f"train {tr['model']} on {tr['device']}: naive random batches", f"{n['audio_s_per_s']:.1f} "
                     f"audio-s/s, {n['padding']:.0%} padding: ours {tr['speedup']:.2f}x", ">= 2x")]
        elif tr:
            out.append(("train large on GPU", tr["status"], ""))
    return out


def render(table: list[tuple[str, str, str]], markdown: bool = False) -> str:
    header = ("measurement", "result: median (min-max)", "target")
    if markdown:
        return "\n".join(f"| {' | '.join(r)} |" for r in [header, ("---",) * 3, *table])
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *table])


def run(args) -> dict:
    """Every measurement named in args.only -> the report."""
    only = set(args.only.split(","))
    if unknown := only - set(MEASUREMENTS):
        raise SystemExit(f"unknown measurements {sorted(unknown)}: choose from {','.join(MEASUREMENTS)}")
    manifest = Path(args.manifest or DEFAULT_MANIFEST).expanduser()
    if not manifest.is_file():
        raise SystemExit(f"no test manifest at {manifest}: pass --manifest (python -m train.prepare writes one)")
    entries = read_manifest(manifest)[:args.files]
    model = Path(args.model).resolve() if args.model else None
    if model is None and only - {"peer", "train"} and not (DEFAULT_MODEL / "config.json").exists():
        raise SystemExit(f"no bundled model in {DEFAULT_MODEL}: pass --model DIR")
    lm = "default" if args.lm is None else args.lm if args.lm == "none" else str(Path(args.lm).resolve())
    report = {"settings": {"model": str(model or DEFAULT_MODEL), "lm": lm, "manifest": str(manifest),
                           "files": len(entries), "audio_seconds": sum(e["duration"] for e in entries),
                           "repeats": args.repeats, "threads": args.threads, "torch": torch.__version__,
                           "cpus": os.cpu_count()}}
    say = lambda what: print(f"bench: {what}", file=sys.stderr, flush=True)
    t = Transcriber(model, lm=lm) if only & {"file", "quant", "stream"} else None
    if only & {"file", "quant"}:
        say("file transcription")
        report["file"] = file_rtf(t, entries, args.repeats)
    if "file" in only:
        report["file"]["cli_no_lm"] = cli_rtf(model, "none", entries, args.repeats, args.threads)
        if t.lm_dir is not None:
            report["file"]["cli_lm"] = cli_rtf(model, str(t.lm_dir), entries, args.repeats, args.threads)
    if "naive" in only:
        say("naive inference")
        report["naive"] = naive_rtf(model or DEFAULT_MODEL, entries, args.repeats)
    if "quant" in only:
        say("int8 quantisation")
        report["quant"] = quantized(t, entries, args.repeats, report["file"])
    if "peer" in only:
        say("PocketSphinx")
        report["peer"] = pocketsphinx(entries, args.repeats, args.threads)
    if "stream" in only:
        say(f"streaming {args.stream_seconds:.0f} s")
        waves = [load_audio(e["audio"]) for e in entries]
        report["stream"] = streaming(t, waves, args.stream_seconds)
        say(f"streaming {args.stream_seconds:.0f} s, one pass")
        report["stream_one_pass"] = streaming(t, waves, args.stream_seconds, background=False, fast_partials=False)
    if "cold" in only:
        say("cold start")
        report["cold"] = cold_start(model, lm, entries[0]["audio"], args.repeats, args.threads)
        if lm != "none":
            report["cold_no_lm"] = cold_start(model, "none", entries[0]["audio"], args.repeats, args.threads)
    if "train" in only:
        say("training throughput")
        manifests = args.train_manifest or recipe_manifests() or [str(manifest)]
        report["settings"]["train_manifests"] = manifests
        train_entries = [e for m in manifests for e in read_manifest(Path(m).expanduser())]
        report["train"] = training(train_entries, args.train_model, FeatureConfig(),
                                   batch_seconds=args.train_batch_seconds, steps=args.train_steps)
        report["train_gpu"] = training(train_entries, "large", FeatureConfig(kind="linear"), "cuda", 240.0,
                                       args.train_steps, args.peak_tflops) \
            if torch.cuda.is_available() else {"status": "no GPU"}
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ds2.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="model folder (default: the bundled model)")
    p.add_argument("--lm", help="LM folder, or 'none' (default: the bundled LM)")
    p.add_argument("--manifest", help=f"test manifest (default: {DEFAULT_MANIFEST})")
    p.add_argument("--files", type=int, default=20, help="use the manifest's first N files (default: 20)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--only", default=",".join(MEASUREMENTS), help="a comma-separated subset of the default")
    p.add_argument("--threads", type=int, default=1, help="torch threads, here and in the timed processes")
    p.add_argument("--stream-seconds", type=float, default=60.0, help="length of the streamed input")
    p.add_argument("--train-model", default="small", help="model config trained on the CPU")
    p.add_argument("--train-manifest", nargs="+", help="manifests to draw training batches from "
                   f"(default: those of {SMALL_RECIPE.relative_to(ROOT)} if present, else --manifest)")
    p.add_argument("--train-steps", type=int, default=4)
    p.add_argument("--train-batch-seconds", type=float, default=120.0, help="padded audio seconds per CPU batch")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak bf16 TFLOP/s (H100 SXM dense)")
    p.add_argument("--json", metavar="OUT.json", help="write the whole report as JSON")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown (for the README)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    report = run(args)
    print(render(rows(report), args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
