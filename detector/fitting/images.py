"""The fitting images: the data plan's photos and fresh samples, laundered, and their extra copies.

Every slice of the train split and every random stream comes from detector/plan.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict

import numpy as np
import torch

from gan_inversion.auxiliary import load_aux, sample_aux
from gan_inversion.data import ImageDataset, to_float, to_uint8
from gan_inversion.defaults import resolve_repo_path
from gan_inversion.fileio import sha256_file
from gan_inversion.metrics import generate
from gan_inversion.networks import Generator

from .. import laundering, plan
from .classifier import ClassifierConfig, split_indices
from .reconstructions import ReconstructionConfig, reconstruct, train_autoencoders


def quantize(x: torch.Tensor) -> torch.Tensor:
    """As saved to an 8-bit file and read back."""
    return to_float(to_uint8(x))


def fit_images(G: Generator, reals: ImageDataset, cfg, *, device="cpu"
               ) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The fitting images (reals, fakes, and what laundering each got), reproducible from the FitConfig."""
    g = torch.Generator().manual_seed(plan.seed("fit", cfg.seed))
    idx = torch.randperm(len(reals), generator=g)[: cfg.n_real]
    real = to_float(reals.get_batch(idx))
    fake = quantize(generate(G, cfg.n_fake, seed=plan.seed("fit_fakes", cfg.seed), device=device))
    real, real_what = laundering.random_launder(real, prob=cfg.launder_prob, generator=g)
    fake, fake_what = laundering.random_launder(fake, prob=cfg.launder_prob, generator=g)
    return real, fake, real_what, fake_what


def laundered_copies(images: torch.Tensor, *, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """One copy of each image under a random laundering of the wider reference ranges (every copy laundered:
    JPEG q40-100, blur sigma 0.3-1.5, resize x0.4-0.9, noise 0.005-0.03), reproducible from the seed."""
    g = torch.Generator().manual_seed(plan.seed("reference_launder", seed))
    return laundering.random_launder(images, prob=1.0, generator=g, ranges=laundering.REFERENCE_RANGES)


def chained_copies(images: torch.Tensor, *, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """One copy of each image under a blur, resize or noise of the reference ranges followed by a JPEG re-encoding
    (q40-100): an edit, then a re-save, as images met in the wild are. Reproducible from the seed."""
    g = torch.Generator().manual_seed(plan.seed("reference_chain", seed))
    first = {k: v for k, v in laundering.REFERENCE_RANGES.items() if k != "jpeg"}
    x, what1 = laundering.random_launder(images, prob=1.0, generator=g, ranges=first)
    x, what2 = laundering.random_launder(x, prob=1.0, generator=g, ranges={"jpeg": laundering.REFERENCE_RANGES["jpeg"]})
    return x, [f"{a}+{b}" for a, b in zip(what1, what2, strict=True)]


def noisy_copies(images: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """One copy of each image with additive Gaussian noise (the reference ranges' noise strengths)."""
    g = torch.Generator().manual_seed(plan.seed("probe_noise", seed))
    ranges = {"noise": laundering.REFERENCE_RANGES["noise"]}
    return laundering.random_launder(images, prob=1.0, generator=g, ranges=ranges)[0]


def data_plan(cfg) -> plan.DataPlan:
    """The data plan of a fit (a FitConfig): the fixed slots and the chained slices at its sizes."""
    if not cfg.compact_plan:
        return plan.DataPlan(n_fit=cfg.n_real, n_reference=cfg.n_reference, n_artifact=cfg.n_artifact,
                             n_reconstruction=cfg.n_reconstruction_train,
                             n_auxiliary=cfg.n_aux * len(cfg.aux_generators), n_operating=cfg.n_operating,
                             reference_offset=cfg.reference_offset)
    used = cfg.real_model  # a compact plan holds only the parts this fit uses
    return plan.DataPlan(n_fit=cfg.n_real, n_reference=cfg.n_reference if used else 0,
                         n_artifact=cfg.n_artifact if used and cfg.artifact_cnn else 0,
                         n_reconstruction=cfg.n_reconstruction_train if cfg.reconstruction_fakes else 0,
                         n_auxiliary=cfg.n_aux * len(cfg.aux_generators) if used else 0,
                         n_operating=cfg.n_operating if used else 0,
                         slot_sizes=(cfg.n_cascade, 0, cfg.latent_map))


def has_photos(reals: ImageDataset, cfg, name: str, n: int) -> bool:
    """Whether the train split holds n photos of slice `name` of the fit's data plan."""
    return n > 0 and data_plan(cfg).fits(name, n, len(reals))


def unused_reals(reals: ImageDataset, cfg, n: int, *, part: str) -> torch.Tensor:
    """The first n photos of slice `part` of the fit's data plan (cfg: a FitConfig), as float images."""
    s = data_plan(cfg).slice(part, n)
    g = torch.Generator().manual_seed(plan.seed("fit", cfg.seed))
    idx = torch.randperm(len(reals), generator=g)[s.start: s.stop]
    if len(idx) < n:
        raise plan.PlanError(f"{plan.DESCRIPTIONS[part]} need {n} train-split photos at positions {s.start}-{s.stop} "
                             f"of the permutation; the split has {len(reals)}")
    return to_float(reals.get_batch(idx))


def artifact_images(G: Generator, reals: ImageDataset, cfg, y: np.ndarray, clf_cfg: ClassifierConfig, *,
                    device="cpu") -> tuple[torch.Tensor, torch.Tensor, str]:
    """The artifact CNN's training images (unlaundered: it launders its own batches) and where they come from:
    `cfg.n_artifact` train-split photos past the reference photos and as many fresh samples; with too few
    photos left, the classifier's fit part (never its calibration part nor the reference photos)."""
    if has_photos(reals, cfg, "artifact", cfg.n_artifact):
        photos = unused_reals(reals, cfg, cfg.n_artifact, part="artifact")
        fake_seed = plan.seed("artifact_fakes", cfg.seed)
        samples = quantize(generate(G, cfg.n_artifact, seed=fake_seed, device=device)).cpu()
        return photos, samples, f"the data plan's 'artifact' photos and fresh samples (seed {fake_seed})"
    fit_idx, _ = split_indices(y, clf_cfg)
    clean_real, clean_fake, _, _ = fit_images(G, reals, dataclasses.replace(cfg, launder_prob=0.0), device=device)
    clean = torch.cat([clean_real, clean_fake.cpu()])[fit_idx]
    return clean[y[fit_idx] == 0], clean[y[fit_idx] == 1], "the classifier's fit part"


def auxiliary_probe_images(reals: ImageDataset, cfg, *, photos_fallback: torch.Tensor) -> dict:
    """The linear probe's extra fitting images from `cfg.aux_generators`: `cfg.n_aux` samples of each, and as many
    train-split photos past every other part of the fit (too few left: `photos_fallback`, the classifier's fit
    part's photos, repeated as needed), both laundered like the fit's own images. Returns {"photos", "fakes"
    (float [N, C, H, W], 8-bit values), "from_plan" (whether the photos are the plan's 'auxiliary' slice), "summary"
    (what the detector file records)}."""
    fakes, files = [], []
    for k, file in enumerate(cfg.aux_generators):
        G_aux = load_aux(resolve_repo_path(file))
        res, ch = G_aux.init_kwargs["img_resolution"], G_aux.init_kwargs["img_channels"]
        if (res, ch) != (reals.resolution, reals.channels):
            raise ValueError(f"{file}: the auxiliary generator makes {res}px {ch}-channel images; the fit's photos "
                             f"are {reals.resolution}px {reals.channels}-channel")
        fake_seed = plan.seed("aux_fakes", k=k)
        fakes.append(quantize(sample_aux(G_aux, cfg.n_aux, seed=fake_seed)))
        files.append({"file": str(file), "sha256": sha256_file(resolve_repo_path(file)), "n": cfg.n_aux,
                      "seed": fake_seed})
    fake = torch.cat(fakes)
    if has_photos(reals, cfg, "auxiliary", len(fake)):
        photos = unused_reals(reals, cfg, len(fake), part="auxiliary")
        source = "the data plan's 'auxiliary' photos"
    else:
        if len(photos_fallback) == 0:
            raise ValueError("no photos for the auxiliary fakes (the classifier's fit part holds none)")
        photos = photos_fallback[torch.arange(len(fake)) % len(photos_fallback)].cpu()
        source = "the classifier's fit part's photos (too few train-split photos left)"
    g = torch.Generator().manual_seed(plan.seed("aux_launder", cfg.seed))
    photos, _ = laundering.random_launder(photos, prob=cfg.launder_prob, generator=g)
    fake, _ = laundering.random_launder(fake, prob=cfg.launder_prob, generator=g)
    return {"photos": photos, "fakes": fake, "from_plan": source.startswith("the data plan"),
            "summary": {"generators": files, "photos": source, "n_photos": len(photos), "n_fakes": len(fake)}}


def reconstruction_fakes(reals: ImageDataset, photos: torch.Tensor, cfg, recon_cfg: ReconstructionConfig,
                         *, device="cpu", progress: bool = True) -> dict:
    """The artifact CNN's aligned fakes: its photos [N, C, H, W] reconstructed by autoencoders trained on
    `cfg.n_reconstruction_train` train-split photos past its own (too few left: on its photos themselves).
    Returns {"images": [N, C, H, W], "summary": what the fit records}."""
    n = cfg.n_reconstruction_train
    if has_photos(reals, cfg, "reconstruction", n):
        train = unused_reals(reals, cfg, n, part="reconstruction")
        source = f"{n} photos of the data plan's 'reconstruction' slice"
    else:
        train, source = photos, "the artifact CNN's photos"
    nets, errors = train_autoencoders(train, cfg=recon_cfg, device=device, progress=progress)
    return {"images": reconstruct(nets, photos, seed=recon_cfg.seed),
            "summary": {"n": len(photos), "autoencoders_trained_on": source, "config": asdict(recon_cfg),
                        "mean_abs_error": dict(zip(recon_cfg.upsamplers, [round(e, 5) for e in errors], strict=True))}}
