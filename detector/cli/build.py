"""`resynth build`: a generator bundle and photos to a detector ready to serve, in one resumable command
(detector/fitting/build.py)."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from gan_inversion.checkpoints import load_bundle
from gan_inversion.defaults import DEFAULT_BUNDLE, DEFAULT_DATA
from gan_inversion.encoder import EncoderTrainConfig
from gan_inversion.photos import add_real_arguments

from ..fitting.build import Build, BuildConfig, BuildError, Inputs, build_plan, format_plan, measure_device
from ..fitting.cascade import CascadeConfig
from .common import add_device, bundle_photos, device_of
from .fit import add_fit_config_arguments, config_from_args


def build_config(args) -> BuildConfig:
    enc = EncoderTrainConfig()
    return BuildConfig(detector=config_from_args(args),
                       encoder=dataclasses.replace(enc, steps=args.encoder_steps, batch_fake=args.encoder_batch,
                                                   batch_real=args.encoder_batch),
                       perceptual=args.perceptual,
                       cascade=None if args.no_cascade else CascadeConfig(n_real=args.n_cascade, n_fake=args.n_cascade),
                       n_eval=args.n_eval)


def cmd_build(args) -> int:
    device = device_of(args)
    bundle = load_bundle(args.bundle, device=device, require_D=True)
    cfg = build_config(args)
    train, test = bundle_photos(args, bundle, "train"), bundle_photos(args, bundle, "test")
    plan = build_plan(cfg, len(train), len(test), measure_device(bundle, cfg, device=device))
    print(format_plan(plan), file=sys.stderr if not args.plan else sys.stdout, flush=True)
    if args.plan:
        return 0 if not plan["missing"] else 2
    if plan["missing"]:
        raise BuildError("; ".join(plan["missing"]) + " (add photos, or lower the slice's size: see --plan)")
    build = Build(Path(args.out), Inputs(bundle=bundle, bundle_file=Path(args.bundle), train=train, test=test), cfg,
                  device=device)
    build.run(log=lambda m: print(m, file=sys.stderr, flush=True))
    out = Path(args.out)
    print(json.dumps({"detector": str(out / "detector.json"), "report": str(out / "REPORT.md"),
                      "serve": f"RESYNTH_DETECTOR={out / 'detector.json'} resynth serve"}, indent=2))
    return 0


def add_commands(sub) -> None:
    e = BuildConfig()
    s = sub.add_parser("build", help="from a generator bundle and a folder of photos to a served detector: encoder, "
                                     "fit, cascade, held-out evaluation and a report, in order and resumably")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="the generator bundle (resynth train/convert)")
    s.add_argument("--out", required=True, help="the build folder (encoder.pt, detector.json, REPORT.md, build.json)")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="the Fashion-MNIST folder, when --real is not given")
    add_real_arguments(s)
    s.add_argument("--plan", "--dry-run", action="store_true",
                   help="print the plan (photos per slice, what is missing, time per stage here) and stop")
    s.add_argument("--encoder-steps", type=int, default=e.encoder.steps, help="the encoder's training steps")
    s.add_argument("--encoder-batch", type=int, default=e.encoder.batch_fake,
                   help="samples and photos per encoder step (each)")
    s.add_argument("--perceptual", default=e.perceptual, help="the encoder's perceptual backend, name@size")
    s.add_argument("--no-cascade", action="store_true", help="no cascade stage")
    s.add_argument("--n-cascade", type=int, default=CascadeConfig().n_real,
                   help="held-out photos (the plan's cascade slice) and samples the cascade's band is set on")
    s.add_argument("--n-eval", type=int, default=e.n_eval, help="held-out photos and samples per laundering")
    add_fit_config_arguments(s)
    add_device(s)
    s.set_defaults(func=cmd_build)
