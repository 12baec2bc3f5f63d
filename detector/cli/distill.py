"""`resynth distill-encoder`: an encoder whose guess is where a detector's refinement ends
(detector/fitting/distill.py)."""

from __future__ import annotations

import json
from pathlib import Path

from gan_inversion.defaults import DEFAULT_CACHE, DEFAULT_DATA, DEFAULT_DETECTOR
from gan_inversion.photos import add_real_arguments

from .common import add_device, bundle_photos, device_of


def cmd_distill_encoder(args) -> int:
    from gan_inversion.distill import DistillConfig

    from ..fitting.distill import TargetPlan, distill_encoder
    from ..runtime import Detector

    det = Detector.load(args.detector, device=device_of(args))
    reals = bundle_photos(args, det.bundle, "train")
    tp = TargetPlan(n_photos=args.n, n_samples=args.n, launder_prob=args.launder_prob, chunk=args.chunk)
    cfg = DistillConfig(steps=args.steps, batch=args.batch, lr=args.lr, image_weight=args.image_weight,
                        space=det.feature_cfg.space)
    out = Path(args.out)
    work = Path(args.work) if args.work else Path(DEFAULT_CACHE).parent / "distill" / det.model_id
    path = distill_encoder(det, args.detector, reals, out, work=work, tp=tp, cfg=cfg,
                           max_seconds=None if args.minutes is None else 60 * args.minutes)
    print(json.dumps({"encoder": str(path), "targets": str(work)}, indent=2))
    return 0


def add_commands(sub) -> None:
    from gan_inversion.distill import DistillConfig

    from ..fitting.distill import TargetPlan

    t, d = TargetPlan(), DistillConfig()
    s = sub.add_parser("distill-encoder", help="train an encoder whose guess is where the detector's refinement ends "
                                               "(teacher targets computed once, resumably; then the student)")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector whose refinement is the teacher")
    s.add_argument("--out", required=True, help="the student encoder file (resumed when it is unfinished)")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="the Fashion-MNIST folder")
    add_real_arguments(s)
    s.add_argument("--n", type=int, default=t.n_photos, help="train-split photos, and as many fresh samples")
    s.add_argument("--launder-prob", type=float, default=t.launder_prob,
                   help="share of both laundered as the fit launders (default %(default)s)")
    s.add_argument("--chunk", type=int, default=t.chunk, help="images per target file (a killed run redoes one)")
    s.add_argument("--work", default=None, help="the targets' folder (default .cache/distill/<model id>)")
    s.add_argument("--steps", type=int, default=d.steps, help="the student's training steps")
    s.add_argument("--batch", type=int, default=d.batch, help="images per training step")
    s.add_argument("--lr", type=float, default=d.lr, help="Adam's learning rate")
    s.add_argument("--image-weight", type=float, default=d.image_weight,
                   help="weight of the image loss between the two syntheses (0: the latent loss alone)")
    s.add_argument("--minutes", type=float, default=None, help="stop after this much wall-clock time (resumable)")
    add_device(s)
    s.set_defaults(func=cmd_distill_encoder)
