"""`resynth` command line: one argparse program, one subcommand per library function."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = REPO_ROOT / "models" / "fmnist32.pt"
DEFAULT_DATA = REPO_ROOT / "data"
DEFAULT_FID_NET = REPO_ROOT / "models" / "fmnist_fid_net.pt"

# Architecture of the embedded default (32x32 grayscale Fashion-MNIST); see models/MODEL_CARD.md.
PRESETS = {
    "fmnist32": {
        "G": dict(z_dim=128, w_dim=128, img_resolution=32, img_channels=1, mapping_layers=8, channel_base=2048,
                  channel_max=64),
        "D": dict(img_resolution=32, img_channels=1, channel_base=2048, channel_max=64),
    },
}

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)

def cmd_prepare_data(args) -> int:
    from gan_inversion.data import prepare_fashion_mnist

    raw = prepare_fashion_mnist(args.data)
    print(f"Fashion-MNIST ready in {raw}")
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
    print(f"training on {dataset.name} ({len(dataset)} images) on {device}; run folder {args.run}")
    ckpt = train(args.run, dataset, G_kwargs=G_kwargs, D_kwargs=D_kwargs, cfg=cfg, device=device,
                 max_steps=args.max_steps)
    print(f"checkpoint: {ckpt}")
    return 0

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resynth", description="GAN-inversion deepfake detection.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("prepare-data", help="put Fashion-MNIST where the loaders find it")
    s.add_argument("--data", default=str(DEFAULT_DATA))
    s.set_defaults(func=cmd_prepare_data)

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
    s.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (resumable)")
    s.add_argument("--device", default="auto")
    s.set_defaults(func=cmd_train)
    return p

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

if __name__ == "__main__":
    sys.exit(main())
