"""Load benchmark of the HTTP service: the real server on loopback, real images, bounded concurrency.

    python -m benchmarks.api_load [--requests 48] [--concurrency 1,4,16] [--overload-inflight 2]
    python -m benchmarks.api_load --batch-max 4,8,16 [--detector FILE]      # the batcher's largest batch
    python -m benchmarks.api_load --torch-threads 1,2 [--detector FILE]     # the scoring thread count

Starts `resynth serve` on a free loopback port with the embedded detector, waits for /readyz, then for
each concurrency level sends a fixed number of POST /v1/detect requests (test-split photos and fresh
generator samples as PNG) and reports p50/p95/p99 latency of the successful ones and images/s, with the
in-flight limit at the highest concurrency (nothing refused). A last run keeps concurrency 16 but lowers
RESYNTH_MAX_INFLIGHT to show what happens past the limit: the share answered 503 (clients here do not
retry). Writes results/api_load.json and a table in RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

import httpx
import numpy as np
from PIL import Image

from detector import plan
from gan_inversion.checkpoints import load_bundle
from gan_inversion.data import load_fashion_mnist, to_uint8
from gan_inversion.defaults import DEFAULT_DATA

from .common import RESULTS_DIR, write_section

EVAL_FAKE_SEED = plan.seed("eval_fakes")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_pngs(n: int, bundle_path: str) -> list[bytes]:
    """Half test-split photos (native 28x28), half generator samples (32x32), as PNG bytes."""
    from gan_inversion.metrics import generate

    test = load_fashion_mnist(DEFAULT_DATA, split="test")
    bundle = load_bundle(bundle_path)
    fakes = to_uint8(generate(bundle.G_ema, n - n // 2, seed=EVAL_FAKE_SEED))
    out = []
    for i in range(n // 2):
        arr = test.images[i, 0, 2:30, 2:30].numpy()  # the original 28x28 photo
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out.append(buf.getvalue())
    for f in fakes:
        buf = io.BytesIO()
        Image.fromarray(f[0].numpy()).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


async def run_level(url: str, images: list[bytes], concurrency: int, n: int) -> dict:
    sem = asyncio.Semaphore(concurrency)
    lat_ok, statuses = [], []

    async def one(i: int, client: httpx.AsyncClient):
        async with sem:
            t0 = time.perf_counter()
            r = await client.post(url + "/v1/detect", content=images[i % len(images)],
                                  headers={"content-type": "image/png"})
            dt = time.perf_counter() - t0
            statuses.append(r.status_code)
            if r.status_code == 200:
                lat_ok.append(dt)

    async with httpx.AsyncClient(timeout=300) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, client) for i in range(n)))
        wall = time.perf_counter() - t0
    ok = np.asarray(lat_ok) * 1000
    pct = (lambda q: float(np.percentile(ok, q))) if len(ok) else (lambda q: float("nan"))
    return {"concurrency": concurrency, "requests": n, "ok": int((np.asarray(statuses) == 200).sum()),
            "status_503": int((np.asarray(statuses) == 503).sum()),
            "other": int(((np.asarray(statuses) != 200) & (np.asarray(statuses) != 503)).sum()),
            "share_503": float((np.asarray(statuses) == 503).mean()), "p50_ms": pct(50), "p95_ms": pct(95),
            "p99_ms": pct(99), "images_per_s": len(ok) / wall, "wall_s": wall}


@contextlib.contextmanager
def server_process(max_inflight: int | None = None, *, env_extra: dict | None = None):
    """`resynth serve` in a subprocess on a free loopback port, ready; yields (URL, process) (max_inflight None: the
    service's default)."""
    port = _free_port()
    env = {**os.environ, "RESYNTH_PORT": str(port), "RESYNTH_HOST": "127.0.0.1", **(env_extra or {})}
    if max_inflight is not None:
        env["RESYNTH_MAX_INFLIGHT"] = str(max_inflight)
    # the server's log goes to a file: a pipe nobody reads would stall a long run once it fills
    log = tempfile.TemporaryFile()
    server = subprocess.Popen([sys.executable, "-m", "api.cli", "serve"], env=env, cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                log.seek(0)
                raise SystemExit(f"server exited: {log.read().decode(errors='replace')[-2000:]}")
            try:
                if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server not ready after 300 s")
            time.sleep(0.5)
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@contextlib.contextmanager
def serving(max_inflight: int | None, *, env_extra: dict | None = None):
    """`resynth serve` in a subprocess on a free loopback port, ready; yields its URL."""
    with server_process(max_inflight, env_extra=env_extra) as (url, _):
        yield url


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=48, help="requests per concurrency level")
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--overload-inflight", type=int, default=2, help="in-flight limit of the overload run")
    ap.add_argument("--bundle", default=os.path.join(REPO, "models", "fmnist32.pt"))
    ap.add_argument("--no-write", action="store_true", help="print only; do not update RESULTS.md")
    ap.add_argument("--detector", default=None, help="detector file the service loads (default: the embedded one)")
    ap.add_argument("--batch-max", default=None,
                    help="comma-separated RESYNTH_BATCH_MAX values: instead of the levels above, concurrency 1 and "
                         "16 under each (the 'batch_max' section of RESULTS.md)")
    ap.add_argument("--torch-threads", default=None,
                    help="comma-separated RESYNTH_TORCH_THREADS values, measured as --batch-max is (the "
                         "'torch_threads' section)")
    args = ap.parse_args(argv)

    images = sample_pngs(32, args.bundle)
    for var, values, section in (("RESYNTH_BATCH_MAX", args.batch_max, "batch_max"),
                                 ("RESYNTH_TORCH_THREADS", args.torch_threads, "torch_threads")):
        if values:
            return env_sweep(images, var, [int(x) for x in values.split(",")], args.requests, args.detector,
                             section=section, write=not args.no_write)
    levels_c = [int(x) for x in args.concurrency.split(",")]
    plan = [(c, max(levels_c)) for c in levels_c] + [(max(levels_c), args.overload_inflight)]
    levels, model = [], None
    for inflight in sorted({i for _, i in plan}, reverse=True):
        with serving(inflight) as url:
            model = httpx.get(url + "/v1/model").json()
            asyncio.run(run_level(url, images, 1, 4))  # warm-up
            for c, i in plan:
                if i == inflight:
                    r = {**asyncio.run(run_level(url, images, c, args.requests)), "max_inflight": inflight}
                    levels.append(r)
                    print(json.dumps(r), flush=True)
    levels.sort(key=lambda r: (-r["max_inflight"], r["concurrency"]))
    meta = {"model_id": model["model_id"], "refine_steps": model["refine_steps"],
            "cpus": os.cpu_count(), "machine": platform.machine(), "requests_per_level": args.requests}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "api_load.json").write_text(json.dumps({"meta": meta, "levels": levels}, indent=2))
    if not args.no_write:
        write_section("api_load", load_table(meta, levels, "`python -m benchmarks.api_load`"))
    return 0


def env_sweep(images: list[bytes], var: str, values: list[int], requests: int, detector: str | None, *,
              section: str, write: bool) -> int:
    """A service setting chosen by measurement: p50 at concurrency 1 and images/s at 16 (requests x 2 of them)
    under each value of the environment variable `var`, one server each, everything else as shipped."""
    rows, model = [], None
    flag = "--" + section.replace("_", "-")
    for v in values:
        env = {var: str(v), **({"RESYNTH_DETECTOR": detector} if detector else {})}
        with serving(None, env_extra=env) as url:
            model = httpx.get(url + "/v1/model").json()
            asyncio.run(run_level(url, images, 4, 16))  # warm-up
            c1 = asyncio.run(run_level(url, images, 1, requests))
            c16 = asyncio.run(run_level(url, images, 16, 2 * requests))
        rows.append({"value": v, "p50_ms_c1": c1["p50_ms"], "images_per_s_c16": c16["images_per_s"],
                     "p50_ms_c16": c16["p50_ms"], "status_503_c16": c16["status_503"]})
        print(json.dumps(rows[-1]), flush=True)
    lines = [f"## The service's {var} (`python -m benchmarks.api_load {flag} {','.join(map(str, values))}"
             + (f" --detector {detector}`)" if detector else "`)"), "",
             f"Model `{model['model_id']}` (K={model['refine_steps']}), {os.cpu_count()} CPUs ({platform.machine()}), "
             f"run {time.strftime('%Y-%m-%d')}; one server per row, {requests} requests at concurrency 1 and "
             f"{2 * requests} at 16, client and server on the same machine.", "",
             f"| {var} | p50 ms, concurrency 1 | images/s, concurrency 16 | p50 ms, concurrency 16 | 503 |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['value']} | {r['p50_ms_c1']:.0f} | {r['images_per_s_c16']:.1f} | {r['p50_ms_c16']:.0f} | "
              f"{r['status_503_c16']} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if write:
        write_section(section, text)
    return 0


def load_table(meta: dict, levels: list[dict], command: str) -> str:
    lines = [f"## HTTP service load ({command})", "",
             f"Model `{meta['model_id']}` (K={meta['refine_steps']} refinement steps"
             f"{', cascade on' if meta.get('cascade') else ''}), {meta['cpus']} CPUs ({meta['machine']}), "
             f"{meta['requests_per_level']} requests per level, "
             "real 28x28 test photos and 32x32 generator samples as PNG, server and client on loopback. "
             "Latency of the 200 answers; 503 = refused past the in-flight limit (with Retry-After).", "",
             "| concurrency | max in flight | requests | 200 | 503 | 503 share | p50 ms | p95 ms | p99 ms "
             "| images/s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['concurrency']} | {r['max_inflight']} | {r['requests']} | {r['ok']} | {r['status_503']} | "
              f"{r['share_503']:.0%} | "
              f"{r['p50_ms']:.0f} | {r['p95_ms']:.0f} | {r['p99_ms']:.0f} | {r['images_per_s']:.2f} |"
              for r in levels]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
