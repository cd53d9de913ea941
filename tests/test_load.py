"""The app under load: `demo.py` with the tiny model, 8 `gradio_client` clients uploading the fixture
clips without pause for two minutes. The first minute brings the server to its steady state; over
both, every request must be answered with the text a single request gives for that clip, and the
server's memory at the end may be at most 10 % above its memory after the first minute. Latencies
and the memory timeline go to test-artifacts/load.json."""

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gradio_client import Client, handle_file

from conftest import FIXTURES, ROOT, TINY_MANIFEST, demo_server
from ds2.data import read_manifest
from ds2.text import wer_cer

pytestmark = pytest.mark.slow

CLIENTS = 8
WARMUP_S = 60.0  # the first minute: load that brings the server to its steady state ...
MEASURED_S = 60.0  # ... then a minute whose latencies are reported
MAX_MEMORY_GROWTH = 0.10  # RSS at the end vs RSS after the first minute
REQUEST_TIMEOUT_S = 60.0
MAX_CER = 0.15  # of the single-request texts against the fixture transcripts: the expected texts are sane
API = "/transcribe"
CLIPS = sorted((FIXTURES / "tiny").glob("*.flac"))
ARTIFACTS = ROOT / "test-artifacts"


def tree_rss(pid: int) -> int:
    """Resident memory in bytes of a process and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):  # it ended while we looked
            pass
    return total


def transcribe(client: Client, clip: Path) -> tuple:
    """One upload through the file endpoint -> (greedy, LM, message, download files)."""
    out = client.submit(handle_file(clip), "", api_name=API).result(timeout=REQUEST_TIMEOUT_S)
    return out[0], out[1], out[2], out[5]


def test_eight_clients_uploading_for_two_minutes(tiny_model_dir, samples_dir, tmp_path, capsys):
    with demo_server(tiny_model_dir, samples_dir, tmp_path) as (url, proc):
        # what a single request gives for each clip, with nothing else running
        solo = Client(url, verbose=False, download_files=False)
        try:
            expected = {clip.name: transcribe(solo, clip)[:2] for clip in CLIPS}
        finally:
            solo.close()
        references = {Path(e["audio"]).name: e["text"] for e in read_manifest(TINY_MANIFEST)}
        assert all(greedy for greedy, _ in expected.values()), expected
        assert wer_cer([(references[name], lm) for name, (_, lm) in expected.items()])[1] <= MAX_CER, expected

        clients = [Client(url, verbose=False, download_files=False) for _ in range(CLIENTS)]
        records, errors, lock = [], [], threading.Lock()
        t0 = time.monotonic()
        stop_at = t0 + WARMUP_S + MEASURED_S

        def load(k: int, client: Client) -> None:
            n = k  # each client starts at another clip, then takes them in turn
            try:
                while time.monotonic() < stop_at:
                    clip, n = CLIPS[n % len(CLIPS)], n + 1
                    start = time.monotonic()
                    try:
                        greedy, lm, message, files = transcribe(client, clip)
                    except Exception as e:  # noqa: BLE001 - every failure counts, whatever its kind
                        with lock:
                            errors.append({"client": k, "clip": clip.name, "t": round(start - t0, 2),
                                           "error": f"{type(e).__name__}: {e}"[:300]})
                        continue
                    ok = ((greedy, lm) == expected[clip.name] and not message.startswith("⚠️")
                          and len(files or []) == 4)  # the .txt, .srt, .vtt and .json downloads
                    with lock:
                        records.append({"client": k, "clip": clip.name, "t": round(start - t0, 3),
                                        "latency_s": round(time.monotonic() - start, 4), "ok": ok,
                                        "phase": "warmup" if start - t0 < WARMUP_S else "measured",
                                        **({} if ok else {"greedy": greedy, "lm": lm, "message": message})})
            finally:
                client.close()  # here, in parallel: closing waits up to 1 s for the client's heartbeat thread

        threads = [threading.Thread(target=load, args=(k, c), daemon=True) for k, c in enumerate(clients)]
        for thread in threads:
            thread.start()
        memory, rss_first_minute = [], None  # (seconds since the start, bytes) every second
        while (now := time.monotonic()) < stop_at:
            memory.append((round(now - t0, 1), tree_rss(proc.pid)))
            if rss_first_minute is None and now - t0 >= WARMUP_S:
                rss_first_minute = memory[-1][1]
            time.sleep(min(1.0, max(stop_at - time.monotonic(), 0.0)))
        rss_end = tree_rss(proc.pid)  # the last moment of load
        for thread in threads:
            thread.join(timeout=REQUEST_TIMEOUT_S + 10)
        rss_idle = tree_rss(proc.pid)  # once the last requests are answered
        server_alive = proc.poll() is None
        elapsed = time.monotonic() - t0

    measured = [r["latency_s"] for r in records if r["phase"] == "measured"]
    warmup = [r["latency_s"] for r in records if r["phase"] == "warmup"]
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 3) if xs else None
    summary = {
        "clients": CLIENTS, "warmup_s": WARMUP_S, "measured_s": MEASURED_S, "elapsed_s": round(elapsed, 1),
        "requests": len(records) + len(errors), "answered": len(records), "errors": len(errors),
        "wrong": sum(not r["ok"] for r in records),
        "requests_per_client": [sum(r["client"] == k for r in records) for k in range(CLIENTS)],
        "measured": {"requests": len(measured), "per_s": round(len(measured) / MEASURED_S, 2),
                     "p50_s": pct(measured, 50), "p95_s": pct(measured, 95), "max_s": max(measured, default=None)},
        "warmup": {"requests": len(warmup), "p50_s": pct(warmup, 50), "p95_s": pct(warmup, 95)},
        "rss_mb": {"first_minute": round(rss_first_minute / 2**20, 1) if rss_first_minute else None,
                   "end": round(rss_end / 2**20, 1), "idle_after": round(rss_idle / 2**20, 1),
                   "growth": round(rss_end / rss_first_minute - 1, 4) if rss_first_minute else None},
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps({
        **summary, "error_list": errors[:50], "wrong_list": [r for r in records if not r["ok"]][:50],
        "memory_timeline": [[t, round(b / 2**20, 1)] for t, b in memory], "requests_list": records}, indent=1) + "\n")
    with capsys.disabled():
        m, rss = summary["measured"], summary["rss_mb"]
        print(f"\nload: {summary['requests']} requests from {CLIENTS} clients in {summary['elapsed_s']} s, "
              f"{summary['errors']} errors, {summary['wrong']} wrong; last minute {m['requests']} requests "
              f"({m['per_s']}/s), p50 {m['p50_s']} s, p95 {m['p95_s']} s, max {m['max_s']} s; server RSS "
              f"{rss['first_minute']} MB after the first minute, {rss['end']} MB at the end "
              f"({rss['growth']:+.1%}), {rss['idle_after']} MB idle after")

    assert server_alive, "the server died under load"
    assert not errors, f"{len(errors)} requests failed, e.g. {errors[:3]}"
    assert not any(t.is_alive() for t in threads), "a client still waits for an answer"
    assert summary["wrong"] == 0, f"wrong answers, e.g. {[r for r in records if not r['ok']][:3]}"
    assert all(summary["requests_per_client"]) and measured, summary  # every client was served, in both minutes
    assert rss_first_minute and abs(rss_end / rss_first_minute - 1) <= MAX_MEMORY_GROWTH, summary["rss_mb"]
