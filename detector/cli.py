"""`resynth` command line: one argparse program, one subcommand per library function.

The detector commands live here (fit, eval-detector, detect, audit, roc); the generator commands beside their
library in gan_inversion/cli.py; `serve` in api/cli.py. `build_parser` puts them together.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gan_inversion import cli as gan_cli
from gan_inversion.defaults import (
    DEFAULT_BUNDLE,
    DEFAULT_CACHE,
    DEFAULT_DATA,
    DEFAULT_DETECTOR,
    DEFAULT_ENCODER,
    pick_device,
)


def cmd_fit_attribution(args) -> int:
    from detector.attribution import AttributionError

    try:
        return _fit_attribution(args)
    except AttributionError as exc:
        raise SystemExit(f"resynth fit --register: {exc}") from exc


def _fit_attribution(args) -> int:
    from detector.attribution import AttributionConfig, fit_attribution, load_member
    from gan_inversion.data import load_fashion_mnist

    device = pick_device(args.device)
    members = []
    for item in args.register:
        name, sep, files = item.partition("=")
        if not sep or not name or not files:
            raise SystemExit(f"--register {item!r}: expected NAME=BUNDLE or NAME=BUNDLE,ENCODER")
        bundle, _, enc = files.partition(",")
        members.append(load_member(name, bundle, enc or None, device=device))
    primary = args.primary or str(DEFAULT_DETECTOR)
    out = Path(args.out) if args.out != str(DEFAULT_DETECTOR) else DEFAULT_DETECTOR.parent / "attribution_detector.json"
    if out.resolve() == Path(primary).resolve():
        raise SystemExit(f"--out {out} would overwrite the primary detector; choose another file")
    reals = load_fashion_mnist(args.data, split="train", canvas=members[0].G.img_resolution)
    spec = fit_attribution(out, primary_path=primary, primary_name=args.primary_name, members=members, reals=reals,
                           cfg=AttributionConfig(n_per_class=args.n_per_class, batch=args.batch),
                           device=device, cache_dir=args.cache)
    a = spec["attribution"]
    print(json.dumps({"detector": str(out), "model_id": spec["model_id"], "classes": a["classes"],
                      "threshold": a["threshold"], "calibration_split": a["calibration_split"]}, indent=2))
    return 0


def cmd_fit(args) -> int:
    if args.register:
        return cmd_fit_attribution(args)
    from detector.artifacts import ArtifactConfig
    from detector.classifier import ClassifierConfig
    from detector.features import FeatureConfig
    from detector.fit import FitConfig, fit_detector
    from gan_inversion.checkpoints import load_bundle
    from gan_inversion.data import load_fashion_mnist
    from gan_inversion.degradation import DEFAULT_GRID
    from gan_inversion.encoder import load_encoder
    from gan_inversion.perceptual import build_perceptual, parse_backend_id

    device = pick_device(args.device)
    bundle = load_bundle(args.bundle, device=device, require_D=True)
    out = Path(args.out)
    encoder, e_info = (None, None)
    if args.encoder != "none":
        encoder, e_info = load_encoder(args.encoder, G=bundle.G_ema, device=device)
    backend = args.perceptual or (e_info["perceptual"] if e_info else "mobilenet_v2@64")
    name, size = parse_backend_id(backend)
    perc = build_perceptual(name, input_size=size).to(device)
    reals = load_fashion_mnist(args.data, split="train", canvas=bundle.G_ema.img_resolution)
    rel = lambda p: os.path.relpath(Path(p).resolve(), out.resolve().parent)  # noqa: E731
    spec = fit_detector(
        out, G=bundle.G_ema, D=bundle.D, encoder=encoder, perceptual=perc, reals=reals,
        bundle_file=rel(args.bundle), encoder_file=rel(args.encoder) if encoder is not None else None,
        feature_cfg=FeatureConfig(refine_steps=args.refine_steps, space=args.space,
                                  degradations=tuple((d.blur_sigma, d.scale) for d in DEFAULT_GRID)
                                  if args.degradation_aware else (),
                                  search_steps=args.search_steps if args.degradation_aware and args.search_steps >= 0
                                  else None),
        clf_cfg=ClassifierConfig(calibration=args.calibration, target_fpr=args.target_fpr),
        cfg=FitConfig(n_real=args.n_real, n_fake=args.n_fake, launder_prob=args.launder_prob, batch=args.batch,
                      real_model=not args.no_real_model, n_reference=args.n_reference,
                      artifact_cnn=not args.no_artifact_cnn, n_artifact=args.n_artifact,
                      reconstruction_fakes=args.reconstruction_fakes,
                      aux_generators=tuple(args.aux_generator or ()), n_aux=args.n_aux),
        artifact_cfg=ArtifactConfig(max_epochs=args.artifact_epochs,
                                    min_epochs=min(ArtifactConfig().min_epochs, args.artifact_epochs)),
        cache_dir=args.cache, device=device)
    c, ev = spec["classifier"], spec.get("evidence")
    print(json.dumps({"detector": str(out), "model_id": spec["model_id"], "chosen": c["selection"],
                      "threshold": ev["threshold"] if ev else c["threshold"],
                      "calibration_split": c["calibration_split"], "sizes": c["sizes"]}, indent=2))
    return 0


def cmd_latent_map(args) -> int:
    from detector.fit import FitConfig, compute_latent_map, unused_reals, write_spec
    from detector.scoring import Detector
    from gan_inversion.data import load_fashion_mnist

    det = Detector.load(args.detector, device=pick_device(args.device))
    if det.attribution is not None:
        raise SystemExit(f"{args.detector} is an attribution detector: add the map to its primary detector")
    fit = det.spec.get("fit") or {}
    reals = load_fashion_mnist(args.data, split="train", canvas=det.G.img_resolution)
    fit_cfg = FitConfig(n_real=int(fit.get("n_real", FitConfig().n_real)), seed=int(fit.get("seed", 0)))
    photos = unused_reals(reals, fit_cfg, args.n)
    m = compute_latent_map(G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual,
                           feature_cfg=det.feature_cfg, photos=photos, n=args.n, batch=args.batch, device=det.device)
    spec = json.loads(Path(args.detector).read_text())
    spec["latent_map"] = m  # a picture for people: the scores, the model id and the metrics do not change
    write_spec(args.detector, spec)
    print(json.dumps({"detector": args.detector, "held_out_auc": m["held_out_auc"],
                      "n": m["n"]}))
    return 0


def cmd_eval_detector(args) -> int:
    from detector.fit import evaluate_detector, write_spec
    from detector.scoring import Detector
    from gan_inversion.data import load_fashion_mnist

    det = Detector.load(args.detector, device=pick_device(args.device))
    test = load_fashion_mnist(args.data, split="test", canvas=det.G.img_resolution)
    result = evaluate_detector(det, test, n=args.n, batch=args.batch, cache_dir=args.cache)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.store:
        spec = json.loads(Path(args.detector).read_text())
        spec["metrics"] = result
        write_spec(args.detector, spec)
    return 0


def cmd_detect(args) -> int:
    from detector.imageio import ImageDecodeError
    from detector.scoring import Detector, evidence_to_files

    det = Detector.load(args.detector, device=pick_device(args.device), cascade=args.cascade)
    failures = 0
    for path in args.paths:
        try:
            r = det.score(path, explain=bool(args.explain))
        except ImageDecodeError as exc:
            failures += 1
            if args.json:
                print(json.dumps({"source": path, "error": exc.kind, "message": str(exc)}))
            else:
                print(f"{path}: error: {exc.reason}", file=sys.stderr)
            continue
        if args.explain:
            files = evidence_to_files(r, args.explain, Path(path).stem)
        if args.json:
            d = r.to_dict(include_features=True)
            if args.explain:
                d["evidence"] = [str(f) for f in files]
            print(json.dumps(d))
        else:
            warn = f"  [{'; '.join(r.warnings)}]" if r.warnings else ""
            why = f"  because: {'; '.join(r.reasons)}" if r.reasons else ""
            stage = f" [{r.stage} stage]" if r.stage else ""
            attr = ""
            if r.attribution is not None:
                attr = f"  attributed to {r.attributed_to} (" + ", ".join(
                    f"{k} {v:.3f}" for k, v in sorted(r.attribution.items(), key=lambda kv: -kv[1])) + ")"
            print(f"{path}: p_fake={r.p_fake:.4f} verdict={r.verdict} (threshold {r.threshold:.4f}){stage}{attr}{why}"
                  f"{warn}")
    return 1 if failures else 0


def cmd_audit(args) -> int:
    import functools

    from detector.audit import AuditConfig, audit_id_for, audit_progress, open_db, run_audit, write_report
    from detector.scoring import Detector

    device = pick_device(args.device)
    loader = functools.partial(Detector.load, args.detector, device="cpu", cascade=args.cascade)
    det = Detector.load(args.detector, device=device, cascade=args.cascade)
    cfg = AuditConfig(workers=args.workers, frames_per_second=args.frames_per_second, crop_faces=args.crop == "faces",
                      batch=args.batch, confine_to=str(Path(args.root).resolve()) if args.root else None)
    engine = open_db(args.db)
    ray_cfg = None
    if args.engine == "ray":
        from detector.audit.ray_engine import RayConfig, import_ray

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


def cmd_calibrate(args) -> int:
    from detector.calibrate import calibrate, score_folder
    from detector.fit import write_spec
    from detector.roc import list_images
    from detector.scoring import Detector

    folder = Path(args.real)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of reference photos")
    det = Detector.load(args.detector, device=pick_device(args.device))
    paths = list_images(folder)
    p, skipped = score_folder(det, paths, batch=args.batch)
    spec = calibrate(args.detector, p, fpr=args.fpr, out_path=args.out, source=folder.name,
                     skipped=len(skipped))
    write_spec(args.out, spec)
    c = spec["calibration"]
    print(json.dumps({"detector": str(args.out), "model_id": spec["model_id"], **c}, indent=2))
    if skipped:
        print(f"{len(skipped)} files could not be decoded and were left out", file=sys.stderr)
    return 0


def cmd_fit_cascade(args) -> int:
    from detector.cascade import CascadeConfig, fit_cascade
    from detector.fit import write_spec
    from detector.scoring import Detector
    from gan_inversion.data import load_fashion_mnist

    det = Detector.load(args.detector, device=pick_device(args.device))
    reals = load_fashion_mnist(args.data, split="train")
    cfg = CascadeConfig(max_missed=args.max_missed, max_extra_fpr=args.max_extra_fpr, n_real=args.n_real,
                        n_fake=args.n_fake, decide_real=not args.fakes_only)
    spec = fit_cascade(det, reals, cfg=cfg, cache_dir=args.cache or None)
    out = args.out or args.detector
    if Path(out).resolve().parent != Path(args.detector).resolve().parent:
        raise ValueError("--out must sit beside the detector file (it names its bundle and encoder relatively)")
    write_spec(out, spec)
    c = spec["cascade"]
    print(json.dumps({"detector": str(out), "model_id": spec["model_id"], "band": c["band"],
                      "held_out": c["held_out"],
                      "first_stage_cv": c["classifier"]["selection"]["cv"]}, indent=2))
    return 0


def cmd_roc(args) -> int:
    from detector.roc import resolve_folders, roc_on_folders
    from detector.scoring import Detector

    real_dir, fake_dir = resolve_folders(args.real, args.fake, args.folder)
    det = Detector.load(args.detector, device=pick_device(args.device))
    result = roc_on_folders(det, real_dir, fake_dir, args.out, batch=args.batch)
    print((Path(args.out) / "table.md").read_text())
    if result["skipped"]:
        print(f"{len(result['skipped'])} files could not be decoded (listed in metrics.json)")
    print(f"wrote {args.out}/metrics.json, table.md, roc.png")
    return 0




def add_commands(sub) -> None:
    """Register the detector commands on an argparse subparsers object."""
    s = sub.add_parser("fit", help="fit the detector (features, classifier, calibration, threshold) for a bundle")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    s.add_argument("--encoder", default=str(DEFAULT_ENCODER), help="encoder file, or 'none'")
    s.add_argument("--out", default=str(DEFAULT_DETECTOR))
    s.add_argument("--data", default=str(DEFAULT_DATA))
    s.add_argument("--perceptual", default=None, help="backend@size (default: the encoder's)")
    s.add_argument("--refine-steps", type=int, default=25)
    s.add_argument("--space", default="W", choices=("W", "W+"))
    s.add_argument("--degradation-aware", action="store_true",
                   help="invert under a grid of blurs and down-up resizes, the best per image")
    s.add_argument("--search-steps", type=int, default=5,
                   help="with --degradation-aware: steps per candidate before the best continues (default "
                        "%(default)s: about 2x the plain cost; -1: every candidate refined fully, 6x)")
    s.add_argument("--no-real-model", action="store_true",
                   help="the generator-specific classifier alone, without the real-photo model, the linear probe and "
                        "the artifact CNN")
    s.add_argument("--no-artifact-cnn", action="store_true",
                   help="without the artifact CNN (a fourth evidence: a small CNN on the pixels, trained on the fit "
                        "part; its weights go beside the detector file as <name>.artifacts.pt)")
    s.add_argument("--n-artifact", type=int, default=2000,
                   help="the artifact CNN's training photos and samples, each (train-split photos past the reference "
                        "photos, fresh samples; 0: the classifier's fit part)")
    s.add_argument("--reconstruction-fakes", action="store_true",
                   help="the artifact CNN's fakes also hold its photos' reconstructions by autoencoders with a "
                        "generator's upsampling layers (transposed convolution, nearest, bilinear, pixel shuffle); "
                        "measured: better on unseen generators' pixels, worse on resized samples of the own one")
    s.add_argument("--aux-generator", action="append", metavar="FILE",
                   help="an auxiliary generator of another family (resynth train-aux): its samples join the linear "
                        "probe's fakes, as many unused train-split photos its photos (repeatable)")
    s.add_argument("--n-aux", type=int, default=2000, help="samples per auxiliary generator")
    s.add_argument("--artifact-epochs", type=int, default=60,
                   help="the artifact CNN's most epochs (it stops earlier when its validation AUC stops improving)")
    s.add_argument("--n-real", type=int, default=2000)
    s.add_argument("--n-fake", type=int, default=2000)
    s.add_argument("--n-reference", type=int, default=1000,
                   help="train-split photos the fit does not use, each with a laundered copy, as the reference of the "
                        "evidence's tail probabilities (0: half of the calibration photos)")
    s.add_argument("--launder-prob", type=float, default=0.5)
    s.add_argument("--calibration", default="sigmoid", choices=("sigmoid", "isotonic"))
    s.add_argument("--target-fpr", type=float, default=0.01)
    s.add_argument("--batch", type=int, default=50)
    s.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache folder")
    s.add_argument("--register", action="append", default=[], metavar="NAME=BUNDLE[,ENCODER]",
                   help="fit an attribution detector instead: register this generator beside the primary "
                        "detector's (repeatable); --out defaults to models/attribution_detector.json")
    s.add_argument("--primary", default=None, help="with --register: the primary detector (default: the embedded)")
    s.add_argument("--primary-name", default="fmnist32", help="with --register: the primary generator's name")
    s.add_argument("--n-per-class", type=int, default=400,
                   help="with --register: photos and samples of each generator to fit the attribution on")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("latent-map", help="add the 2D latent map (PCA of refined codes of photos and samples) to "
                       "an existing detector file; scores and model id do not change")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    s.add_argument("--data", default=str(DEFAULT_DATA))
    s.add_argument("--n", type=int, default=300, help="photos (train split, unused by the fit) and samples")
    s.add_argument("--batch", type=int, default=50)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_latent_map)

    s = sub.add_parser("eval-detector", help="held-out evaluation: test-split reals vs fresh fakes, laundered too")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    s.add_argument("--data", default=str(DEFAULT_DATA))
    s.add_argument("--n", type=int, default=1000)
    s.add_argument("--batch", type=int, default=50)
    s.add_argument("--cache", default=str(DEFAULT_CACHE))
    s.add_argument("--json", help="also write the result here")
    s.add_argument("--store", action="store_true", help="store the result as the detector file's metrics")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_eval_detector)

    s = sub.add_parser("detect", help="score image files: p_fake, verdict, evidence")
    s.add_argument("paths", nargs="+")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    s.add_argument("--json", action="store_true", help="one JSON object per file")
    s.add_argument("--explain", metavar="DIR", help="write input, reconstruction and heatmap PNGs here")
    s.add_argument("--cascade", action="store_true",
                   help="use the detector's cascade: clear cases decided on the encoder's guess (faster, ranks "
                        "worse: benchmarks/RESULTS.md)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_detect)

    s = sub.add_parser("audit", help="score every image and video under a folder into a database, resumably")
    s.add_argument("folder")
    s.add_argument("--out", action="append", help="report file: .csv, .json or .html (repeatable)")
    s.add_argument("--db", default="resynth-audit.sqlite", help="SQLite file or SQLAlchemy URL")
    s.add_argument("--workers", type=int, default=1, help="scoring processes (local engine)")
    s.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where to score: this machine's processes, or a Ray cluster (pip install -e \".[ray]\")")
    s.add_argument("--ray-address", default=None,
                   help="with --engine ray: 'auto' (the cluster this machine belongs to) or ray://HOST:PORT "
                        "(default: start a local Ray instance)")
    s.add_argument("--actors", type=int, default=1, help="with --engine ray: scoring actors (one detector each)")
    s.add_argument("--batch-size", type=int, default=1,
                   help="with --engine ray: scoring tasks per actor call (a task is --batch images or video frames)")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--frames-per-second", type=float, default=1.0, help="video sampling rate")
    s.add_argument("--crop", choices=("faces",), default=None, help="score face crops (Haar cascade) instead")
    s.add_argument("--report-only", action="store_true", help="rebuild the reports from the database, no scoring")
    s.add_argument("--root", default=None,
                   help="never read outside this folder: links leading out are skipped, as the service does "
                        "(default: links are followed, loops cut)")
    s.add_argument("--cascade", action="store_true",
                   help="use the detector's cascade: clear cases decided on the encoder's guess (faster, ranks "
                        "worse: benchmarks/RESULTS.md)")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("calibrate", help="set the threshold from your own real photos: a new detector file")
    s.add_argument("--real", required=True, help="folder of real reference photos (searched recursively)")
    s.add_argument("--fpr", type=float, default=0.01, help="false-positive rate allowed on them (default 1%%)")
    s.add_argument("--out", required=True, help="the new detector file (.json)")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_calibrate)

    s = sub.add_parser("fit-cascade", help="add a two-stage cascade to a detector: the encoder's guess decides "
                                           "clear cases, the rest are refined (detector/cascade.py)")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    s.add_argument("--out", default=None, help="the new detector file, beside the old one (default: replace it)")
    s.add_argument("--data", default=str(DEFAULT_DATA))
    s.add_argument("--n-real", type=int, default=600, help="held-out train-split photos for the band")
    s.add_argument("--n-fake", type=int, default=600, help="held-out fresh samples for the band")
    s.add_argument("--max-missed", type=float, default=0.01,
                   help="share of the fakes the full detector flags that stage 1 may clear (default 1%%)")
    s.add_argument("--max-extra-fpr", type=float, default=0.0,
                   help="share of the held-out photos stage 1 may flag (default 0)")
    s.add_argument("--fakes-only", action="store_true",
                   help="stage 1 only flags confident fakes; every other image is refined (keeps the ranking)")
    s.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache folder ('' for none)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_fit_cascade)

    s = sub.add_parser("roc", help="ROC metrics of the detector on your folders of real and fake images")
    s.add_argument("folder", nargs="?", help="a folder holding 0_real/ and 1_fake/ (CNNDetection layout)")
    s.add_argument("--real", help="folder of real images")
    s.add_argument("--fake", help="folder of fake images")
    s.add_argument("--out", default="roc-out")
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_roc)


def build_parser(extra: tuple = ()) -> argparse.ArgumentParser:
    """The `resynth` parser: the generator commands, the detector commands, then each `extra(sub)` (the
    service adds `serve` this way)."""
    p = argparse.ArgumentParser(prog="resynth", description="GAN-inversion deepfake detection.")
    sub = p.add_subparsers(dest="command", required=True)
    gan_cli.add_commands(sub)
    add_commands(sub)
    for register in extra:
        register(sub)
    return p


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse and run a subcommand; domain errors become one line on stderr and exit status 2."""
    from detector.audit.ray_engine import RayUnavailable
    from detector.audit.walk import OutsideRoot
    from detector.scoring import DetectorError
    from gan_inversion.checkpoints import BundleError
    from gan_inversion.data import DataError
    from gan_inversion.perceptual import PerceptualUnavailable

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (BundleError, DataError, PerceptualUnavailable, DetectorError, FileNotFoundError, NotADirectoryError,
            OutsideRoot, RayUnavailable, KeyError, ValueError) as exc:
        print(f"resynth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
