"""Soak benchmark of the HTTP service: does resident memory stay bounded under repeated bursts?

    python -m benchmarks.soak [--bursts 16] [--burst 48] [--idle 15]

Starts `resynth serve` (embedded detector, default limits: 32 images in flight) on a free loopback port, sends
`--bursts` bursts of `--burst` concurrent detections (half photos, half samples; past the in-flight limit some
get 503, as in the issue's test), and records after each burst the server's resident memory (VmRSS) and thread
count, then again after `--idle` seconds without requests. Once with the service's allocator settings
(api/memory.py: RESYNTH_MALLOC_ARENAS=2, freed memory handed back when idle) and once with glibc left as it is
(RESYNTH_MALLOC_ARENAS=0). Writes results/soak.json and the 'soak' section of RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import time

import httpx

from .api_load import REPO, _free_port, sample_pngs
from .common import RESULTS_DIR, write_section


def proc_status(pid: int) -> dict:
    """The server's resident memory (MB) and thread count, from /proc."""
    fields = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines() if ":" in line)
    return {"rss_mb": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"])}


async def burst(url: str, images: list[bytes], n: int) -> dict:
    async def one(i, client):
        r = await client.post(url + "/v1/detect", content=images[i % len(images)],
                              headers={"content-type": "image/png"})
        return r.status_code

    async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=n)) as client:
        codes = await asyncio.gather(*(one(i, client) for i in range(n)))
    return {"200": codes.count(200), "503": codes.count(503), "other": len(codes) - codes.count(200) - codes.count(503)}


def soak(arenas: int, images: list[bytes], *, bursts: int, n: int, idle: float) -> dict:
    port = _free_port()
    env = {**os.environ, "RESYNTH_PORT": str(port), "RESYNTH_HOST": "127.0.0.1", "RESYNTH_MALLOC_ARENAS": str(arenas)}
    env.pop("MALLOC_ARENA_MAX", None)  # the setting under test decides
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve"], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        rows = [{"burst": 0, **proc_status(server.pid), "codes": None}]
        for b in range(1, bursts + 1):
            codes = asyncio.run(burst(url, images, n))
            rows.append({"burst": b, **proc_status(server.pid), "codes": codes})
            print(arenas, rows[-1], flush=True)
        time.sleep(idle)
        after = proc_status(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    first, last = rows[1]["rss_mb"], rows[-1]["rss_mb"]
    half = rows[len(rows) // 2]["rss_mb"]
    return {"malloc_arenas": arenas, "rows": rows, "after_idle": after, "growth_mb_per_burst_second_half":
            (last - half) / max(1, len(rows) - 1 - len(rows) // 2), "rss_first_burst_mb": first, "rss_last_mb": last}


def render(meta: dict, runs: list[dict]) -> str:
    lines = ["## Soak: memory under repeated bursts (`python -m benchmarks.soak`)", "",
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
    lines += ["", "Per burst: `benchmarks/results/soak.json`."]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bursts", type=int, default=16, help="bursts per run")
    ap.add_argument("--burst", type=int, default=48, help="concurrent detections per burst")
    ap.add_argument("--idle", type=float, default=15.0, help="seconds without requests before the last reading")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    args = ap.parse_args(argv)
    images = sample_pngs(64, os.path.join(REPO, "models", "fmnist32.pt"))
    runs = [soak(a, images, bursts=args.bursts, n=args.burst, idle=args.idle) for a in (2, 0)]
    meta = {"bursts": args.bursts, "burst": args.burst, "idle": args.idle, "cpus": os.cpu_count(),
            "machine": platform.machine(), "date": time.strftime("%Y-%m-%d")}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "soak.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
    text = render(meta, runs)
    print(text)
    if not args.no_write:
        write_section("soak", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
