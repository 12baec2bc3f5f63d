"""Soak benchmark of the HTTP service: a long day of mixed traffic, with memory, threads, files and latency over time.

    python -m benchmarks.soak [--minutes 35] [--warmup 5] [--every 5]
    python -m benchmarks.soak --bursts-only [--bursts 16] [--burst 48] [--idle 15]

The long run starts `resynth serve` (embedded detector, the service's default limits and allocator settings, an
audit root and database in a temporary folder) on a free loopback port and, for `--minutes`, sends at once:

- steady detections, two at a time (their latencies are the p50/p99 series);
- a burst of 48 concurrent detections every minute, past the 32 images in flight (the rest must get 503 with
  Retry-After);
- a detection with `explain=true` every 10 s;
- a bad upload every 2 s, in turn: random bytes, a truncated PNG, an empty body, a text body, a PNG declaring
  100,000 x 100,000 pixels, a multipart form without its file, a body over RESYNTH_MAX_BYTES (each must get a
  JSON 4xx, or the documented 503 while every slot is busy);
- a stalled upload every 15 s (a request head then part of its body, then nothing; at most 6 open at once) and a
  stalled request head every 30 s (each must be answered with a JSON 408 and closed);
- an audit through the API every 4 minutes, of a fresh folder of 24 images, polled to the end, then its JSON,
  HTML and CSV reports.

Every `--every` seconds it reads the server's resident memory, threads and open file descriptors from /proc.
After the traffic stops it waits for the stalled connections to be closed and reads them again. The targets
(issue 32): after the warm-up, resident memory within 15% of its level at the warm-up's end, p99 not drifting
upwards, no 5xx but 503s with Retry-After, no descriptor leak. Writes results/soak.json, results/soak.png and
the 'soak' section of RESULTS.md.

`--bursts-only` is the allocator comparison: repeated bursts with the service's allocator settings
(RESYNTH_MALLOC_ARENAS=2, freed memory handed back when idle) and with glibc left as it is
(RESYNTH_MALLOC_ARENAS=0); results/soak_bursts.json and the 'soak_bursts' section.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import struct
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field

import httpx
import numpy as np

from .api_load import REPO, sample_pngs, server_process
from .common import RESULTS_DIR, write_section

RSS_BAND = 0.15      # resident memory after the warm-up stays within this fraction of its warm-up level
P99_DRIFT = 1.25     # the last third's p99 over the first third's, after the warm-up: above it is a drift
FD_SLACK = 4         # descriptors opened once and kept (database connections, log files) are not a leak


def proc_status(pid: int) -> dict:
    """The server's resident memory (MB), thread count and open file descriptors, from /proc."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def bomb_png(side: int = 100_000) -> bytes:
    """A valid PNG header declaring side x side pixels, with one tiny compressed row (a decompression bomb's head)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def bad_uploads(png: bytes, max_bytes: int) -> list[tuple[str, dict]]:
    """(name, httpx request arguments) of uploads the service must refuse with a 4xx."""
    rng = np.random.default_rng(0)
    return [
        ("random bytes", {"content": rng.bytes(2000), "headers": {"content-type": "image/png"}}),
        ("truncated PNG", {"content": png[: len(png) // 2], "headers": {"content-type": "image/png"}}),
        ("empty body", {"content": b"", "headers": {"content-type": "image/png"}}),
        ("text body", {"content": b"hello", "headers": {"content-type": "text/plain"}}),
        ("100k x 100k PNG", {"content": bomb_png(), "headers": {"content-type": "image/png"}}),
        ("form without file", {"files": {"other": ("a.png", png, "image/png")}}),
        ("body over the limit", {"content": b"\0" * (max_bytes + 1), "headers": {"content-type": "image/png"}}),
    ]


@dataclass
class Log:
    """What the traffic saw: latencies of the steady detections and every answer, by kind."""
    t0: float
    steady: list = field(default_factory=list)      # (t, seconds) of steady detections answered 200
    answers: list = field(default_factory=list)     # (t, kind, status, detail)
    audits: list = field(default_factory=list)      # per audit: seconds, files, report statuses

    def now(self) -> float:
        return time.monotonic() - self.t0

    def answer(self, kind: str, status: int | str, detail: str = "") -> None:
        self.answers.append((self.now(), kind, status, detail))


def _is_ok_refusal(r: httpx.Response) -> bool:
    """A 503 as documented: JSON {code, message} with Retry-After."""
    try:
        body = r.json()
    except ValueError:
        return False
    return r.status_code == 503 and "retry-after" in r.headers and {"code", "message"} <= set(body)


async def _detect(client, url, png, log: Log, kind: str, explain: bool = False) -> None:
    t = time.monotonic()
    try:
        r = await client.post(url + "/v1/detect" + ("?explain=true" if explain else ""), content=png,
                              headers={"content-type": "image/png"})
    except httpx.HTTPError as exc:
        log.answer(kind, "transport", type(exc).__name__)
        return
    if r.status_code == 200:
        if kind == "steady":
            log.steady.append((log.now(), time.monotonic() - t))
        detail = "evidence" if explain and r.json().get("evidence") else ""
        log.answer(kind, 200, detail)
    else:
        log.answer(kind, r.status_code, "documented" if _is_ok_refusal(r) else r.text[:200])


async def steady(url, images, log, stop: asyncio.Event, concurrency: int = 2) -> None:
    async def worker(k):
        async with httpx.AsyncClient(timeout=120) as client:
            i = k
            while not stop.is_set():
                await _detect(client, url, images[i % len(images)], log, "steady")
                i += concurrency
    await asyncio.gather(*(worker(k) for k in range(concurrency)))


async def every(period: float, stop: asyncio.Event, action, first: float = 0.0) -> None:
    """Run `action(k)` every `period` seconds (the k-th time), starting after `first`, until stopped."""
    try:
        await asyncio.wait_for(stop.wait(), first)
        return
    except TimeoutError:
        pass
    k = 0
    while not stop.is_set():
        t = time.monotonic()
        await action(k)
        k += 1
        try:
            await asyncio.wait_for(stop.wait(), max(0.0, period - (time.monotonic() - t)))
        except TimeoutError:
            pass


async def stalled(host: str, port: int, log: Log, *, head_only: bool, limit: asyncio.Semaphore) -> None:
    """A client that sends part of a request and then nothing: the server must answer a JSON 408 and close."""
    async with limit:
        t = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            if head_only:
                writer.write(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n")
            else:
                writer.write(b"POST /v1/detect HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                             b"Content-Length: 5000\r\n\r\n" + b"\x89PNG" + b"\0" * 96)
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 120)
            writer.close()
        except (OSError, TimeoutError) as exc:
            log.answer("stalled head" if head_only else "stalled body", "transport", type(exc).__name__)
            return
        head, _, body = data.partition(b"\r\n\r\n")
        status = int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else "no answer"
        try:
            is_json = {"code", "message"} <= set(json.loads(body or b"{}"))
        except ValueError:
            is_json = False
        log.answer("stalled head" if head_only else "stalled body", status,
                   f"{'json' if is_json else 'not json'} after {time.monotonic() - t:.0f} s")


async def audit_round(url: str, root: str, k: int, images: list[bytes], log: Log) -> None:
    folder = os.path.join(root, f"round{k:03d}")
    os.makedirs(folder)
    for i in range(24):
        with open(os.path.join(folder, f"img{i:02d}.png"), "wb") as f:
            f.write(images[(k * 24 + i) % len(images)])
    t = time.monotonic()
    async with httpx.AsyncClient(timeout=60) as client:
        r = await client.post(url + "/v1/audits", json={"folder": f"round{k:03d}"})
        log.answer("audit start", r.status_code)
        if r.status_code != 202:
            return
        aid = r.json()["id"]
        status = {}
        while time.monotonic() - t < 600:
            s = await client.get(f"{url}/v1/audits/{aid}")
            log.answer("audit status", s.status_code)
            status = s.json() if s.status_code == 200 else {}
            if status.get("status") in ("done", "failed", "interrupted"):
                break
            await asyncio.sleep(2)
        reports = {}
        for fmt in ("json", "html", "csv"):
            rep = await client.get(f"{url}/v1/audits/{aid}/report", params={"format": fmt})
            log.answer("audit report", rep.status_code)
            reports[fmt] = rep.status_code
    log.audits.append({"t": log.now(), "seconds": time.monotonic() - t, "status": status.get("status"),
                       "scored": status.get("scored"), "reports": reports})


async def traffic(url: str, images: list[bytes], log: Log, *, minutes: float, max_bytes: int,
                  audit_root: str) -> None:
    stop = asyncio.Event()
    host, port = url.removeprefix("http://").split(":")
    stall_limit = asyncio.Semaphore(6)
    bad = bad_uploads(images[0], max_bytes)
    client = httpx.AsyncClient(timeout=60)

    async def burst(_):
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=48)) as c:
            await asyncio.gather(*(_detect(c, url, images[i % len(images)], log, "burst") for i in range(48)))

    async def one_bad(k):
        name, kwargs = bad[k % len(bad)]
        try:
            r = await client.post(url + "/v1/detect", **kwargs)
            ok = 400 <= r.status_code < 500 and {"code", "message"} <= set(r.json())
            detail = "documented" if _is_ok_refusal(r) else name if ok else f"{name}: {r.text[:200]}"
            log.answer("bad upload", r.status_code, detail)
        except (httpx.HTTPError, ValueError) as exc:
            log.answer("bad upload", "transport", f"{name}: {type(exc).__name__}")

    stalls: set[asyncio.Task] = set()

    def stall(head_only):
        async def act(_):
            stalls.add(asyncio.ensure_future(stalled(host, int(port), log, head_only=head_only, limit=stall_limit)))
        return act

    async def explain(k):
        await _detect(client, url, images[k % len(images)], log, "explain", explain=True)

    async def audit(k):
        await audit_round(url, audit_root, k, images, log)

    tasks = [steady(url, images, log, stop), every(60, stop, burst, first=30), every(10, stop, explain),
             every(2, stop, one_bad), every(15, stop, stall(False)), every(30, stop, stall(True), first=7),
             every(240, stop, audit, first=20)]
    runner = asyncio.gather(*tasks)
    await asyncio.sleep(60 * minutes)
    stop.set()
    await runner
    await asyncio.gather(*stalls)   # every stalled client hears its answer
    await client.aclose()


def sample_loop(pid: int, log: Log, rows: list, period: float, stop_flag: list) -> None:
    while not stop_flag:
        rows.append({"t": log.now(), **proc_status(pid)})
        time.sleep(period)


def windows(log: Log, width_s: float = 60.0) -> list[dict]:
    """Per-minute p50/p99 of the steady detections' latency (ms) and their count."""
    t = np.array([a for a, _ in log.steady])
    lat = np.array([b for _, b in log.steady]) * 1000
    out = []
    for start in np.arange(0, (t.max() if len(t) else 0) + 1e-9, width_s):
        sel = lat[(t >= start) & (t < start + width_s)]
        if len(sel):
            out.append({"t": float(start + width_s / 2), "n": int(len(sel)), "p50_ms": float(np.percentile(sel, 50)),
                        "p99_ms": float(np.percentile(sel, 99))})
    return out


def judge(rows: list[dict], log: Log, idle: dict, start_idle: dict, *, warmup_s: float) -> dict:
    """The targets, measured: RSS band after the warm-up, p99 drift, unexpected answers, descriptors."""
    # the warm-up level is the highest resident memory the warm-up reached (its bursts included): the working set
    # of this traffic; growth past it by more than the band is what a long day must not show
    level = max(r["rss_mb"] for r in rows if r["t"] <= warmup_s)
    after = [r for r in rows if r["t"] > warmup_s]
    rss_max = max(r["rss_mb"] for r in after)
    t_lat = np.array([a for a, _ in log.steady])
    lat = np.array([b for _, b in log.steady]) * 1000
    post = t_lat > warmup_s
    thirds = np.array_split(np.arange(post.sum()), 3)
    p99_first = float(np.percentile(lat[post][thirds[0]], 99))
    p99_last = float(np.percentile(lat[post][thirds[-1]], 99))
    unexpected = [a for a in log.answers
                  if (a[2] == "transport" or (isinstance(a[2], int) and a[2] >= 500 and a[3] != "documented"))
                  and not a[1].startswith("stalled")]
    stall_bad = [a for a in log.answers if a[1].startswith("stalled") and (a[2] != 408 or "not json" in a[3])]
    bad_not_4xx = [a for a in log.answers if a[1] == "bad upload" and a[3] != "documented"
                   and not (isinstance(a[2], int) and 400 <= a[2] < 500)]
    return {
        "rss_warmup_mb": level, "rss_max_after_warmup_mb": rss_max, "rss_end_mb": rows[-1]["rss_mb"],
        "rss_idle_end_mb": idle["rss_mb"], "rss_within_band": rss_max <= level * (1 + RSS_BAND),
        "p99_first_third_ms": p99_first, "p99_last_third_ms": p99_last,
        "p99_no_drift": p99_last <= p99_first * P99_DRIFT,
        "unexpected": len(unexpected), "unexpected_examples": unexpected[:10],
        "stalled_not_json_408": len(stall_bad), "stalled_examples": stall_bad[:5],
        "bad_not_4xx": len(bad_not_4xx), "bad_examples": bad_not_4xx[:5],
        "fds_idle_start": start_idle["fds"], "fds_idle_end": idle["fds"], "fds_max": max(r["fds"] for r in rows),
        "no_fd_leak": idle["fds"] <= start_idle["fds"] + FD_SLACK,
        "threads_start": start_idle["threads"], "threads_max": max(r["threads"] for r in rows),
        "threads_idle_end": idle["threads"],
    }


def long_run(images: list[bytes], *, minutes: float, warmup: float, period: float) -> dict:
    tmp = tempfile.mkdtemp(prefix="resynth-soak-")
    root = os.path.join(tmp, "media")
    os.makedirs(root)
    max_bytes = 10 * 2**20
    env = {"RESYNTH_AUDIT_ROOT": root, "RESYNTH_AUDIT_DB": os.path.join(tmp, "audits.sqlite"),
           "RESYNTH_MAX_BYTES": str(max_bytes)}
    for var in ("MALLOC_ARENA_MAX", "RESYNTH_MALLOC_ARENAS"):   # the service's own settings are under test
        os.environ.pop(var, None)
    try:
        with server_process(None, env_extra=env) as (url, server):
            time.sleep(2)
            start_idle = proc_status(server.pid)
            log = Log(t0=time.monotonic())
            rows: list[dict] = []
            stop_flag: list = []
            sampler = threading.Thread(target=sample_loop, args=(server.pid, log, rows, period, stop_flag))
            sampler.start()
            try:
                asyncio.run(traffic(url, images, log, minutes=minutes, max_bytes=max_bytes, audit_root=root))
            finally:
                stop_flag.append(True)
                sampler.join()
            time.sleep(15)
            idle = proc_status(server.pid)
            model = httpx.get(url + "/v1/model").json()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    counts: dict = {}
    for _, kind, status, _ in log.answers:
        counts.setdefault(kind, {}).setdefault(str(status), 0)
        counts[kind][str(status)] += 1
    return {"rows": rows, "latency": windows(log), "counts": counts, "audits": log.audits,
            "judged": judge(rows, log, idle, start_idle, warmup_s=60 * warmup),
            "idle_end": idle, "idle_start": start_idle, "model_id": model.get("model_id")}


def plot(run: dict, meta: dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([r["t"] for r in run["rows"]]) / 60
    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    j = run["judged"]
    ax[0].plot(t, [r["rss_mb"] for r in run["rows"]], color="C0", label="resident memory")
    ax[0].axhspan(j["rss_warmup_mb"] * (1 - RSS_BAND), j["rss_warmup_mb"] * (1 + RSS_BAND), color="C2", alpha=0.15,
                  label=f"warm-up level ±{RSS_BAND:.0%}")
    ax[0].axvline(meta["warmup_min"], color="grey", ls="--", lw=1)
    ax[0].set_ylabel("MB")
    ax[0].legend(loc="lower right")
    ax[1].plot(t, [r["threads"] for r in run["rows"]], label="threads")
    ax[1].plot(t, [r["fds"] for r in run["rows"]], label="open file descriptors")
    ax[1].legend(loc="upper right")
    lt = np.array([w["t"] for w in run["latency"]]) / 60
    ax[2].plot(lt, [w["p50_ms"] for w in run["latency"]], label="p50")
    ax[2].plot(lt, [w["p99_ms"] for w in run["latency"]], label="p99")
    ax[2].set_ylabel("ms (steady detections, per minute)")
    ax[2].set_xlabel("minutes")
    ax[2].legend(loc="upper right")
    fig.suptitle(f"resynth serve under {meta['minutes']:g} min of mixed traffic ({meta['date']}, {meta['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render_long(meta: dict, run: dict) -> str:
    j, c = run["judged"], run["counts"]

    def share(kind):
        return ", ".join(f"{k}: {v}" for k, v in sorted(c.get(kind, {}).items()))

    yes = {True: "yes", False: "**no**"}
    lines = [
        "## Soak: a long day of mixed traffic (`python -m benchmarks.soak`)", "",
        f"{meta['minutes']:g} minutes against `resynth serve` (detector `{run['model_id']}`, the service's default "
        f"limits and allocator settings), {meta['cpus']} CPUs ({meta['machine']}), run {meta['date']}: steady "
        "detections two at a time, a burst of 48 every minute (32 in flight: the rest get 503), `explain=true` every "
        "10 s, a bad upload every 2 s (a JSON 4xx, or a JSON 503 while every slot is busy), stalled uploads "
        "(every 15 s) and stalled request heads (every 30 s), an audit of 24 "
        f"images through the API every 4 minutes with its three reports. Sampled every {meta['every']:g} s; the "
        f"first {meta['warmup_min']:g} minutes are the warm-up.", "",
        "![memory, threads, descriptors and latency over the run](results/soak.png)", "",
        "| target | measured | met |", "|---|---|---|",
        f"| resident memory within {RSS_BAND:.0%} of its warm-up level (the warm-up's highest) | warm-up "
        f"{j['rss_warmup_mb']:.0f} MB, highest "
        f"after {j['rss_max_after_warmup_mb']:.0f} MB, at the end {j['rss_end_mb']:.0f} MB "
        f"({j['rss_idle_end_mb']:.0f} MB after 15 s idle) | {yes[j['rss_within_band']]} |",
        f"| p99 does not drift upwards (last third ≤ {P99_DRIFT:g}× first, after the warm-up) | "
        f"{j['p99_first_third_ms']:.0f} ms → {j['p99_last_third_ms']:.0f} ms | {yes[j['p99_no_drift']]} |",
        f"| no 5xx but documented 503s (JSON, Retry-After), no dropped connection | {j['unexpected']} others | "
        f"{yes[j['unexpected'] == 0]} |",
        f"| every stalled client answered a JSON 408 | {j['stalled_not_json_408']} not | "
        f"{yes[j['stalled_not_json_408'] == 0]} |",
        f"| every bad upload answered a JSON 4xx (or a documented 503) | {j['bad_not_4xx']} not | "
        f"{yes[j['bad_not_4xx'] == 0]} |",
        f"| no descriptor leak (idle at the end ≤ idle at the start + {FD_SLACK}) | {j['fds_idle_start']} → "
        f"{j['fds_idle_end']} (highest {j['fds_max']}) | {yes[j['no_fd_leak']]} |",
        f"| threads | {j['threads_start']} at the start, highest {j['threads_max']}, {j['threads_idle_end']} idle at "
        "the end | — |", "",
        "Answers by kind of traffic:", "",
        f"- steady detections: {share('steady')}; bursts: {share('burst')}; `explain=true`: {share('explain')};",
        f"- bad uploads: {share('bad upload')};",
        f"- stalled bodies: {share('stalled body')}; stalled heads: {share('stalled head')};",
        f"- audits: {len(run['audits'])} ({', '.join(sorted({a['status'] or '?' for a in run['audits']}))}), "
        f"{sum(a['scored'] or 0 for a in run['audits'])} files scored; their requests: {share('audit start')} "
        f"(start), {share('audit report')} (reports).", "",
        "Samples and per-minute latency: `benchmarks/results/soak.json`.",
    ]
    return "\n".join(lines)


# --- the allocator comparison: repeated bursts, with and without the service's allocator settings ---

async def _burst(url: str, images: list[bytes], n: int) -> dict:
    async def one(i, client):
        r = await client.post(url + "/v1/detect", content=images[i % len(images)],
                              headers={"content-type": "image/png"})
        return r.status_code

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=n)) as client:
        codes = await asyncio.gather(*(one(i, client) for i in range(n)))
    return {"200": codes.count(200), "503": codes.count(503), "other": len(codes) - codes.count(200) - codes.count(503)}


def bursts_run(arenas: int, images: list[bytes], *, bursts: int, n: int, idle: float) -> dict:
    os.environ.pop("MALLOC_ARENA_MAX", None)  # the setting under test decides
    with server_process(None, env_extra={"RESYNTH_MALLOC_ARENAS": str(arenas)}) as (url, server):
        rows = [{"burst": 0, **proc_status(server.pid), "codes": None}]
        for b in range(1, bursts + 1):
            codes = asyncio.run(_burst(url, images, n))
            rows.append({"burst": b, **proc_status(server.pid), "codes": codes})
            print(arenas, rows[-1], flush=True)
        time.sleep(idle)
        after = proc_status(server.pid)
    first, last = rows[1]["rss_mb"], rows[-1]["rss_mb"]
    half = rows[len(rows) // 2]["rss_mb"]
    return {"malloc_arenas": arenas, "rows": rows, "after_idle": after, "growth_mb_per_burst_second_half":
            (last - half) / max(1, len(rows) - 1 - len(rows) // 2), "rss_first_burst_mb": first, "rss_last_mb": last}


def render_bursts(meta: dict, runs: list[dict]) -> str:
    lines = ["## Soak: the allocator under repeated bursts (`python -m benchmarks.soak --bursts-only`)", "",
             f"{meta['bursts']} bursts of {meta['burst']} concurrent detections against `resynth serve` (embedded "
             "detector, 32 images in flight: the rest get 503), resident memory and threads after each burst and "
             f"after {meta['idle']:g} s idle; {meta['cpus']} CPUs ({meta['machine']}), run {meta['date']}.", "",
             "| allocator | RSS after burst 1 | after the last | growth per burst, second half | after idle | threads "
             "(first → last) | answered 200 / 503 / other |", "|---|---|---|---|---|---|---|"]
    for r in runs:
        label = ("service default (RESYNTH_MALLOC_ARENAS=2, trim when idle)" if r["malloc_arenas"]
                 else "glibc as it is (RESYNTH_MALLOC_ARENAS=0)")
        codes = {k: sum(row["codes"][k] for row in r["rows"][1:]) for k in ("200", "503", "other")}
        lines.append(f"| {label} | {r['rss_first_burst_mb']:.0f} MB | {r['rss_last_mb']:.0f} MB | "
                     f"{r['growth_mb_per_burst_second_half']:+.1f} MB | {r['after_idle']['rss_mb']:.0f} MB | "
                     f"{r['rows'][1]['threads']} → {r['rows'][-1]['threads']} | "
                     f"{codes['200']} / {codes['503']} / {codes['other']} |")
    lines += ["", "Per burst: `benchmarks/results/soak_bursts.json`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=35.0, help="length of the mixed traffic (the issue asks >= 30)")
    ap.add_argument("--warmup", type=float, default=5.0, help="minutes of warm-up before the memory band applies")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between two readings of the server's /proc")
    ap.add_argument("--bursts-only", action="store_true",
                    help="run the allocator comparison (repeated bursts, two allocator settings) instead")
    ap.add_argument("--bursts", type=int, default=16, help="--bursts-only: bursts per run")
    ap.add_argument("--burst", type=int, default=48, help="--bursts-only: concurrent detections per burst")
    ap.add_argument("--idle", type=float, default=15.0, help="--bursts-only: seconds idle before the last reading")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = ap.parse_args(argv)
    images = sample_pngs(64, os.path.join(REPO, "models", "fmnist32.pt"))
    meta = {"cpus": os.cpu_count(), "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    if args.bursts_only:
        runs = [bursts_run(a, images, bursts=args.bursts, n=args.burst, idle=args.idle) for a in (2, 0)]
        meta.update(bursts=args.bursts, burst=args.burst, idle=args.idle)
        text, name = render_bursts(meta, runs), "soak_bursts"
        (RESULTS_DIR / "soak_bursts.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    else:
        if args.minutes <= args.warmup:
            ap.error(f"--minutes ({args.minutes:g}) must be longer than the warm-up ({args.warmup:g})")
        run = long_run(images, minutes=args.minutes, warmup=args.warmup, period=args.every)
        meta.update(minutes=args.minutes, warmup_min=args.warmup, every=args.every)
        if not args.no_write:
            plot(run, meta, RESULTS_DIR / "soak.png")
            (RESULTS_DIR / "soak.json").write_text(json.dumps({"meta": meta, **run}, indent=1, default=str))
        text, name = render_long(meta, run), "soak"
    print(text)
    if not args.no_write:
        write_section(name, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
