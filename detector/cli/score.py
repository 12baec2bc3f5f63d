"""The commands that score with a detector file: detect (files), audit (a folder, resumably), roc (your folders)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from gan_inversion.defaults import DEFAULT_DETECTOR

from ..audit.config import AuditConfig
from ..audit.ray_engine import RayConfig
from ..roc import roc_on_folders
from .common import add_device, add_runtime, default_of, device_of, runtime_of

CASCADE_HELP = ("use the detector's cascade: clear cases decided on the encoder's guess (faster, ranks worse: "
                "benchmarks/RESULTS.md)")


def _print_result(r, path: str, args, files) -> None:
    if args.json:
        d = r.to_dict(include_features=True)
        if files is not None:
            d["evidence"] = [str(f) for f in files]
        print(json.dumps(d))
        return
    warn = f"  [{'; '.join(r.warnings)}]" if r.warnings else ""
    why = f"  because: {'; '.join(r.reasons)}" if r.reasons else ""
    why += f"  doubts: {'; '.join(r.doubts)}" if r.doubts else ""
    stage = f" [{r.stage} stage]" if r.stage else ""
    attr = ""
    if r.attribution is not None:
        attr = f"  attributed to {r.attributed_to} (" + ", ".join(
            f"{k} {v:.3f}" for k, v in sorted(r.attribution.items(), key=lambda kv: -kv[1])) + ")"
    print(f"{path}: p_fake={r.p_fake:.4f} verdict={r.verdict} (threshold {r.threshold:.4f}){stage}{attr}{why}{warn}")


def _decode_error(path: str, exc, args) -> None:
    if args.json:
        print(json.dumps({"source": path, "error": exc.kind, "message": str(exc)}))
    else:
        print(f"{path}: error: {exc.reason}", file=sys.stderr)


def cmd_detect(args) -> int:
    """Score the files in batches of --batch (the same answers as one at a time): decode each, then score the
    decodable ones of a batch together; results are printed in the order given."""
    from ..imageio import ImageDecodeError
    from ..runtime import Detector, evidence_to_files

    if args.batch < 1:
        raise ValueError("--batch must be at least 1")
    det = Detector.load(args.detector, device=device_of(args), cascade=args.cascade, **runtime_of(args))
    failures = 0
    bar = tqdm(total=len(args.paths), disable=len(args.paths) <= args.batch, file=sys.stderr, desc="scoring",
               unit="file")
    for i in range(0, len(args.paths), args.batch):
        chunk, preps, errors = args.paths[i:i + args.batch], {}, {}
        for path in chunk:
            try:
                preps[path] = det.prepare(path)
            except ImageDecodeError as exc:
                errors[path] = exc
        results = {}
        if preps:
            scored = det.score_tensors(torch.stack([p.tensor for p in preps.values()]), preps=list(preps.values()),
                                       sources=[p.source for p in preps.values()], explain=bool(args.explain))
            results = dict(zip(preps, scored, strict=True))
        for path in chunk:  # in the order given
            if path in errors:
                failures += 1
                _decode_error(path, errors[path], args)
                continue
            r = results[path]
            files = evidence_to_files(r, args.explain, Path(path).stem) if args.explain else None
            _print_result(r, path, args, files)
        bar.update(len(chunk))
    bar.close()
    return 1 if failures else 0


def cmd_audit(args) -> int:
    import functools

    from ..audit import audit_id_for, audit_progress, open_db, run_audit, write_report
    from ..runtime import Detector

    loader = functools.partial(Detector.load, args.detector, device="cpu", cascade=args.cascade, **runtime_of(args))
    det = Detector.load(args.detector, device=device_of(args), cascade=args.cascade, **runtime_of(args))
    cfg = AuditConfig(workers=args.workers, frames_per_second=args.frames_per_second, crop_faces=args.crop == "faces",
                      batch=args.batch, confine_to=str(Path(args.root).resolve()) if args.root else None)
    engine = open_db(args.db)
    ray_cfg = None
    if args.engine == "ray":
        from ..audit.ray_engine import RayConfig, import_ray

        import_ray()  # a clear message when Ray is not installed
        ray_cfg = RayConfig(address=args.ray_address, actors=args.actors, batch_size=args.batch_size)
    if args.report_only:
        aid = audit_id_for(Path(args.folder).resolve(), det.model_id, cfg)
    else:
        aid = run_audit(engine, args.folder, detector=det, cfg=cfg, loader=loader, ray=ray_cfg)
    for out in args.out or []:
        print(f"report: {write_report(engine, aid, out)}")
    print(json.dumps(audit_progress(engine, aid)))
    return 0


def cmd_roc(args) -> int:
    from ..roc import resolve_folders, roc_on_folders
    from ..runtime import Detector

    real_dir, fake_dir = resolve_folders(args.real, args.fake, args.folder)
    det = Detector.load(args.detector, device=device_of(args))
    result = roc_on_folders(det, real_dir, fake_dir, args.out, batch=args.batch)
    print((Path(args.out) / "table.md").read_text())
    if result["skipped"]:
        print(f"{len(result['skipped'])} files could not be decoded (listed in metrics.json)")
    print(f"wrote {args.out}/metrics.json, table.md, roc.png")
    return 0


def add_detect(sub) -> None:
    s = sub.add_parser("detect", help="score image files: p_fake, verdict, reasons, evidence")
    s.add_argument("paths", nargs="+", help="image files (PNG, JPEG, WebP, BMP, TIFF, GIF)")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector file")
    s.add_argument("--json", action="store_true", help="one JSON object per file")
    s.add_argument("--explain", metavar="DIR", help="write input, reconstruction and heatmap PNGs here")
    s.add_argument("--batch", type=int, default=AuditConfig().batch,
                   help="files scored together (default %(default)s; a progress bar on stderr past one batch)")
    s.add_argument("--cascade", action="store_true", help=CASCADE_HELP)
    add_device(s)
    add_runtime(s)
    s.set_defaults(func=cmd_detect)


def add_audit(sub) -> None:
    a = AuditConfig()
    s = sub.add_parser("audit", help="score every image and video under a folder into a database, resumably")
    s.add_argument("folder", help="the media folder to audit")
    s.add_argument("--out", action="append", help="report file: .csv, .json or .html (repeatable)")
    s.add_argument("--db", default="resynth-audit.sqlite", help="SQLite file or SQLAlchemy URL")
    s.add_argument("--workers", type=int, default=a.workers, help="scoring processes (local engine)")
    s.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where to score: this machine's processes, or a Ray cluster (pip install -e \".[ray]\")")
    s.add_argument("--ray-address", default=None,
                   help="with --engine ray: 'auto' (the cluster this machine belongs to) or ray://HOST:PORT "
                        "(default: start a local Ray instance)")
    s.add_argument("--actors", type=int, default=RayConfig().actors,
                   help="with --engine ray: scoring actors (one detector each)")
    s.add_argument("--batch-size", type=int, default=RayConfig().batch_size,
                   help="with --engine ray: scoring tasks per actor call (a task is --batch images or video frames)")
    s.add_argument("--batch", type=int, default=a.batch, help="images or video frames scored together")
    s.add_argument("--frames-per-second", type=float, default=a.frames_per_second, help="video sampling rate")
    s.add_argument("--crop", choices=("faces",), default=None, help="score face crops (Haar cascade) instead")
    s.add_argument("--report-only", action="store_true", help="rebuild the reports from the database, no scoring")
    s.add_argument("--root", default=None,
                   help="never read outside this folder: links leading out are skipped, as the service does "
                        "(default: links are followed, loops cut)")
    s.add_argument("--cascade", action="store_true", help=CASCADE_HELP)
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector file")
    add_device(s)
    add_runtime(s)
    s.set_defaults(func=cmd_audit)


def add_roc(sub) -> None:
    s = sub.add_parser("roc", help="ROC metrics of the detector on your folders of real and fake images")
    s.add_argument("folder", nargs="?", help="a folder holding 0_real/ and 1_fake/ (CNNDetection layout)")
    s.add_argument("--real", help="folder of real images")
    s.add_argument("--fake", help="folder of fake images")
    s.add_argument("--out", default="roc-out", help="where metrics.json, table.md and roc.png go")
    s.add_argument("--batch", type=int, default=default_of(roc_on_folders, "batch"), help="images scored together")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector file")
    add_device(s)
    s.set_defaults(func=cmd_roc)


def add_commands(sub) -> None:
    add_detect(sub)
    add_audit(sub)
    add_roc(sub)
