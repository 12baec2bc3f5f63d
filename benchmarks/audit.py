"""Audit throughput: files/s on a folder of generated and real images at 1, 2 and 4 workers, and on videos;
with `--engine ray`, also on a local Ray instance with 1 and 2 actors (detector/audit/ray_engine.py).

    python -m benchmarks.audit [--n 2000] [--workers 1,2,4] [--videos 3] [--engine local|ray] [--actors 1,2]

The folder (built under runs/audit-bench/): n/2 test-split photos (native 28x28 PNG) and n/2 fresh G_ema
samples (32x32 PNG); the videos: 10 s at 10 fps of generator samples (MJPG AVI), sampled at 1 frame/s.
Each worker setting audits into a fresh database. Writes results/audit.json and a RESULTS.md section.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import time
from pathlib import Path

import cv2
from PIL import Image

from detector import plan
from detector.audit import AuditConfig, open_db, run_audit, walk_media
from detector.audit.db import ensure_audit
from detector.runtime import Detector
from gan_inversion.data import load_fashion_mnist, to_uint8
from gan_inversion.defaults import DEFAULT_DATA, DEFAULT_DETECTOR
from gan_inversion.metrics import generate
from gan_inversion.ort import DEFAULT_CACHE as ORT_CACHE
from gan_inversion.ort import OrtConfig

from .common import RESULTS_DIR, write_section

EVAL_FAKE_SEED = plan.seed("eval_fakes")

WORK = Path(__file__).resolve().parent.parent / "runs" / "audit-bench"


def build_folder(det: Detector, n: int, n_videos: int) -> tuple[Path, Path]:
    images, videos = WORK / "images", WORK / "videos"
    shutil.rmtree(WORK, ignore_errors=True)
    images.mkdir(parents=True)
    videos.mkdir(parents=True)
    test = load_fashion_mnist(DEFAULT_DATA, split="test")
    for i in range(n // 2):
        Image.fromarray(test.images[i, 0, 2:30, 2:30].numpy()).save(images / f"real_{i:05d}.png")
    fakes = to_uint8(generate(det.G, n - n // 2, seed=EVAL_FAKE_SEED))
    for i, f in enumerate(fakes):
        Image.fromarray(f[0].numpy()).save(images / f"fake_{i:05d}.png")
    for v in range(n_videos):
        frames = to_uint8(generate(det.G, 100, seed=3_000_000_000 + v))
        w = cv2.VideoWriter(str(videos / f"clip{v}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
        for f in frames:
            w.write(cv2.cvtColor(f[0].numpy(), cv2.COLOR_GRAY2BGR))
        w.release()
    return images, videos


def timed_audit(folder: Path, det: Detector, workers: int, detector_path: str, *, actors: int | None = None
                ) -> dict:
    """One audit into a fresh database: local processes (`workers`), or Ray actors (`actors`, a local Ray
    instance started for the run; its start-up is not timed, its actors' model loading is)."""
    ray_cfg = None
    if actors is not None:
        import ray

        from detector.audit.ray_engine import RayConfig

        ray.shutdown()
        ray.init(num_cpus=actors, include_dashboard=False, log_to_driver=False)
        ray_cfg = RayConfig(actors=actors)
    db = WORK / f"bench_{folder.name}_{workers}_{actors}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    engine = open_db(db)
    # as `resynth audit` loads it (its default runtime and ONNX cache)
    loader = functools.partial(Detector.load, detector_path, runtime="auto", onnx=OrtConfig(cache_dir=str(ORT_CACHE)))
    t0 = time.perf_counter()
    run_audit(engine, folder, detector=det, cfg=AuditConfig(workers=workers), loader=loader, progress=True,
              ray=ray_cfg)
    dt = time.perf_counter() - t0
    n = sum(1 for p in folder.rglob("*") if p.is_file())
    row = {"folder": folder.name, "workers": workers, "files": n, "seconds": dt, "files_per_s": n / dt,
           "engine": "local" if actors is None else "ray"}
    if actors is not None:
        row["actors"] = actors
        import ray

        ray.shutdown()
    return row


def driver_costs(folder: Path, n_outcomes: int = 2000) -> dict:
    """What the driver does alone, whatever the number of actors: walking and hashing the folder (planning),
    and storing outcomes (one commit per outcome with its file row, into a fresh SQLite database)."""
    from detector.audit.run import Outcome, Store
    from detector.audit.walk import file_hash

    t0 = time.perf_counter()
    entries = list(walk_media(folder))
    for e in entries:
        file_hash(e.path)
    plan_s = time.perf_counter() - t0
    db = WORK / "bench_driver.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    engine = open_db(db)
    cfg = AuditConfig()
    aid = ensure_audit(engine, folder, "driver-bench", cfg)
    store = Store(engine, aid, "driver-bench", cfg, done_before=0, total=n_outcomes, progress=False, on_progress=None)
    thumb = (entries[0].path.read_bytes() if entries else b"")  # a small PNG stands in for the evidence images
    t0 = time.perf_counter()
    for i in range(n_outcomes):
        e = entries[i % len(entries)]
        fake_entry = type(e)(path=e.path, rel=f"{i:06d}/{e.rel}", kind=e.kind, size=e.size)
        store.outcome(Outcome(f"{i:064x}", p_fake=0.5, summary={"warnings": []}, thumbnail=thumb, heatmap=thumb),
                      [fake_entry])
    store_s = time.perf_counter() - t0
    store.close()
    return {"files": len(entries), "plan_files_per_s": len(entries) / plan_s,
            "store_outcomes_per_s": n_outcomes / store_s}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    ap.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="ray: also audit the images on a local Ray instance with --actors actors")
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--driver-only", action="store_true",
                    help="only the driver's own costs (walk and hash, store) that bound a cluster's throughput")
    args = ap.parse_args(argv)
    det = Detector.load(args.detector, runtime="auto", onnx=OrtConfig(cache_dir=str(ORT_CACHE)))  # as `resynth audit`
    images, videos = build_folder(det, args.n, args.videos)
    if args.driver_only:
        d = driver_costs(images)
        print(json.dumps(d))
        (RESULTS_DIR / "audit_driver.json").write_text(json.dumps(d, indent=2))
        write_section("audit_driver", "\n".join([
            "## What one audit driver can keep up with (`python -m benchmarks.audit --driver-only`)", "",
            f"{d['files']} PNGs on this machine's disk: walking and hashing (the plan) "
            f"{d['plan_files_per_s']:,.0f} files/s; storing outcomes (one commit each, with its file row and "
            f"two small PNGs, SQLite) {d['store_outcomes_per_s']:,.0f} outcomes/s."]))
        return 0
    rows = [timed_audit(images, det, int(w), args.detector) for w in args.workers.split(",")]
    if args.engine == "ray":
        rows += [timed_audit(images, det, 1, args.detector, actors=int(a)) for a in args.actors.split(",")]
    if args.videos:
        rows.append(timed_audit(videos, det, 1, args.detector))
    for r in rows:
        print(json.dumps(r), flush=True)
    meta = {"model_id": det.model_id, "cpus": os.cpu_count(), "machine": platform.machine(), "n_images": args.n}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / ("audit_ray.json" if args.engine == "ray" else "audit.json")
    out.write_text(json.dumps({"meta": meta, "runs": rows}, indent=2))
    ray_run = args.engine == "ray"
    command = "`python -m benchmarks.audit" + (" --engine ray`" if ray_run else "`")
    write_section("audit_ray" if ray_run else "audit", audit_table(meta, rows, command, args.videos))
    return 0


def audit_table(meta: dict, rows: list[dict], command: str, videos: int) -> str:
    vid = (f"; {videos} videos of 10 s at 10 fps sampled at 1 frame/s" if videos else "")
    lines = [f"## Audit throughput ({command})", "",
             f"Model `{meta['model_id']}`, {meta['cpus']} CPUs ({meta['machine']}); {meta['n_images']} PNGs (half "
             f"28x28 test photos, half 32x32 generator samples){vid}. "
             "Each row audits into a fresh database (hashing, decoding, scoring, committing).", "",
             "| folder | engine | workers / actors | files | seconds | files/s |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['folder']} | {r.get('engine', 'local')} | {r.get('actors', r['workers'])} | {r['files']} | "
              f"{r['seconds']:.1f} | {r['files_per_s']:.2f} |" for r in rows]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
