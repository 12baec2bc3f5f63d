"""A distilled encoder for a detector: teacher targets from its own refinement, then gan_inversion.distill.

The targets are the refined codes the detector's features come from (detector.features.extract_features with
the detector's feature settings: the encoder's guess, the degradation search, K projector steps), on train-split
photos and fresh samples of its generator, a share of both laundered as the fit launders (the service sees
laundered images). They are computed in chunks of `chunk` images into a work folder, each chunk written once
(a killed run recomputes only the chunk it was in); a folder made for another detector, data or plan is refused.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from gan_inversion.checkpoints import atomic_save, read_checkpoint
from gan_inversion.data import ImageDataset, to_float, to_uint8
from gan_inversion.distill import DistillConfig, train_distilled
from gan_inversion.fileio import atomic_write
from gan_inversion.metrics import generate

from .. import laundering, plan
from ..features import extract_features
from ..runtime import Detector


@dataclass(frozen=True)
class TargetPlan:
    n_photos: int = 6000        # train-split photos (a seeded permutation of the split)
    n_samples: int = 6000       # fresh samples of the detector's generator
    launder_prob: float = 0.5   # share of both laundered (the fit's ranges: JPEG, blur, down-up resize)
    chunk: int = 200            # images per chunk file (half photos, half samples)
    seed: int = 0

    def __post_init__(self):
        if self.chunk < 2 or self.chunk % 2:
            raise ValueError(f"chunk must be an even number >= 2, got {self.chunk}")
        if self.n_photos != self.n_samples or self.n_photos % (self.chunk // 2):
            raise ValueError(f"n_photos and n_samples must be equal multiples of chunk/2 = {self.chunk // 2} "
                             f"(got {self.n_photos} and {self.n_samples})")

    @property
    def num_chunks(self) -> int:
        return self.n_photos // (self.chunk // 2)


def chunk_images(det: Detector, reals: ImageDataset, tp: TargetPlan, c: int) -> tuple[torch.Tensor, list[str]]:
    """Chunk c's images [chunk, C, H, W] uint8 (its photos, then its samples) and what each is."""
    half = tp.chunk // 2
    if len(reals) < tp.n_photos:
        raise plan.PlanError(f"the train split holds {len(reals)} photos; the distillation asks for {tp.n_photos}")
    perm = torch.randperm(len(reals), generator=torch.Generator().manual_seed(plan.seed("distill", tp.seed)))
    photos = to_float(reals.get_batch(perm[c * half:(c + 1) * half]))
    samples = generate(det.G, half, seed=plan.seed("distill_fakes", tp.seed) * 1_000_003 + c, device=det.device)
    samples = to_float(to_uint8(samples))
    g = torch.Generator().manual_seed(plan.seed("distill_launder", tp.seed) * 1_000_003 + c)
    photos, what_p = laundering.random_launder(photos, prob=tp.launder_prob, generator=g)
    samples, what_s = laundering.random_launder(samples, prob=tp.launder_prob, generator=g)
    return to_uint8(torch.cat([photos, samples])), [f"photo:{w}" for w in what_p] + [f"sample:{w}" for w in what_s]


def _manifest(det: Detector, reals: ImageDataset, tp: TargetPlan) -> dict:
    m = {"detector": det.model_id, "features": det.feature_cfg.to_dict(), "data": reals.fingerprint(),
         "plan": dataclasses.asdict(tp)}
    return json.loads(json.dumps(m))  # as it reads back from the folder (tuples as lists)


def teacher_targets(det: Detector, reals: ImageDataset, work: str | Path, *, tp: TargetPlan = TargetPlan(),
                    batch: int = 50, progress: bool = True) -> dict:
    """Compute the missing chunks into `work`; returns the manifest. Every chunk holds its images (uint8), their
    refined codes `ws` [n, num_ws, w_dim], the detector's feature rows and what each image is."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    manifest = _manifest(det, reals, tp)
    mpath = work / "manifest.json"
    if mpath.exists():
        old = json.loads(mpath.read_text())
        if old != manifest:
            diff = sorted(k for k in manifest if old.get(k) != manifest[k])
            raise ValueError(f"{work} holds targets of another {', '.join(diff)}; give another --work folder")
    else:
        atomic_write(mpath, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    todo = [c for c in range(tp.num_chunks) if not (work / f"chunk_{c:04d}.pt").exists()]
    for c in tqdm(todo, disable=not progress, desc="teacher targets", unit="chunk", dynamic_ncols=True):
        images, what = chunk_images(det, reals, tp, c)
        ws, rows = [], []
        for i in range(0, len(images), batch):
            x = to_float(images[i:i + batch]).to(det.device)
            fb = extract_features(det.G, det.D, det.encoder, det.perceptual, x, cfg=det.feature_cfg)
            ws.append(fb.ws.float().cpu())
            rows.append(fb.values)
        atomic_save({"images": images, "ws": torch.cat(ws), "features": torch.cat(rows), "names": fb.names,
                     "what": what}, work / f"chunk_{c:04d}.pt")
    return manifest


def load_targets(work: str | Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str], list[str]]:
    """(images uint8, refined ws, feature rows, feature names, what each image is) of every chunk in `work`."""
    work = Path(work)
    tp = TargetPlan(**json.loads((work / "manifest.json").read_text())["plan"])
    chunks = [read_checkpoint(work / f"chunk_{c:04d}.pt") for c in range(tp.num_chunks)]
    return (torch.cat([c["images"] for c in chunks]), torch.cat([c["ws"] for c in chunks]),
            torch.cat([c["features"] for c in chunks]), chunks[0]["names"], sum((c["what"] for c in chunks), []))


def distill_encoder(det: Detector, detector_path: str | Path, reals: ImageDataset, out: str | Path, *,
                    work: str | Path, tp: TargetPlan = TargetPlan(), cfg: DistillConfig | None = None,
                    max_seconds: float | None = None, progress: bool = True) -> Path:
    """Teacher targets (resumed in `work`), then the student (resumed at `out`), started from the encoder of the
    detector file at `detector_path` (`det`, loaded from it)."""
    if not det.spec["encoder"]:
        raise ValueError(f"{detector_path}: fitted without an encoder; there is nothing to distil into")
    encoder_path = Path(detector_path).parent / det.spec["encoder"]["file"]
    cfg = cfg or DistillConfig(space=det.feature_cfg.space)
    if cfg.space != det.feature_cfg.space:
        raise ValueError(f"the student's space {cfg.space} is not the refinement's {det.feature_cfg.space}")
    manifest = teacher_targets(det, reals, work, tp=tp, progress=progress)
    images, ws, _, _, _ = load_targets(work)
    out = Path(out)
    return train_distilled(out, det.G, images, ws, perceptual=det.perceptual, init_from=encoder_path, cfg=cfg,
                           source=manifest, device=det.device, max_seconds=max_seconds, progress=progress,
                           log_path=out.with_suffix(".jsonl"))
