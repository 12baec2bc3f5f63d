"""Fitting and evaluating a detector for a bundle: features (cached), classifier, threshold, detector file.

Fitting data: train-split reals and fresh G_ema samples (8-bit quantised, as any saved fake is), with the
same random laundering applied to both classes. Evaluation data never overlaps: test-split reals and
G_ema samples from seeds never used in fitting, clean and laundered.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gan_inversion.auxiliary import load_aux, sample_aux
from gan_inversion.data import ImageDataset, to_float, to_uint8
from gan_inversion.encoder import Encoder, weights_fingerprint
from gan_inversion.fileio import atomic_write, atomic_write_bytes, sha256_file
from gan_inversion.metrics import generate
from gan_inversion.networks import Discriminator, Generator
from gan_inversion.perceptual import PerceptualDistance

from . import laundering
from .artifacts import ArtifactConfig, artifact_logits, save_artifact_cnn, train_artifact_cnn
from .classifier import ClassifierConfig, JsonClassifier, fit_classifier, split_indices
from .evidence import (
    ProbeModel,
    RealModelConfig,
    RealPhotoModel,
    appearance_features,
    fit_evidence,
    fit_probe,
    fit_real_model,
)
from .features import FeatureConfig, extract_features
from .latent_map import fit_latent_map, ws_code
from .metrics import point_metrics
from .reconstructions import ReconstructionConfig, reconstruct, train_autoencoders
from .scoring import DETECTOR_FORMAT, DETECTOR_VERSION

FIT_FAKE_SEED = 2_000_000_011   # fitting fakes; evaluation uses EVAL_FAKE_SEED: disjoint streams


@dataclass(frozen=True)
class FitConfig:
    n_real: int = 2000
    n_fake: int = 2000
    launder_prob: float = 0.5
    batch: int = 50
    seed: int = 0
    real_model: bool = True     # also fit the real-photo model and the linear probe, and combine (detector/evidence.py)
    n_reference: int = 1000     # reference photos for the evidence's tail probabilities: train-split photos the fit
                                # does not use (0, or too few left: half of the classifier's calibration photos)
    reference_offset: int = 5000  # they start this far past the fit's photos in its seeded permutation (past the
                                  # latent map's, the cascade's and the attribution's photos)
    reference_copies: bool = True  # the reference photos come with a laundered copy each (wider launderings)
    reference_chained: bool = True  # and with a chained copy each (blur, resize or noise, then JPEG; measured:
                                    # without them 3.7% of resized-then-JPEG photos were flagged at a 1% target)
    probe_noise_copies: bool = True  # the linear probe also sees a noisy copy of each of its fitting images
    latent_map: int = 300       # photos and samples whose refined codes make the 2D latent map (0: no map)
    artifact_cnn: bool = True   # also train the artifact CNN (detector/artifacts.py) as a fourth evidence
    n_artifact: int = 2000      # its training photos and samples (each): train-split photos past the reference
                                # photos and fresh samples (it needs no inversion, so more than the classifier's);
                                # 0, or too few photos left: the classifier's fit part
    reconstruction_fakes: bool = False  # its fakes also hold its photos' reconstructions by a bank of autoencoders
                                        # (detector/reconstructions.py). Measured on the embedded fit: the CNN
                                        # alone goes from 0.61 to 0.72 on DCGAN and 0.64 to 0.97 on the VAE, but
                                        # the combination loses the own generator under resize (0.96 -> 0.91) and
                                        # 1.7% of noisy photos are flagged: off by default
    n_reconstruction_train: int = 8000  # the autoencoders' training photos: train-split photos past the artifact
                                        # CNN's (too few left: the artifact CNN's own photos)
    aux_generators: tuple[str, ...] = ()  # auxiliary generator files (gan_inversion/auxiliary.py, another family
                                          # than every generator the ROC suite evaluates): their samples join the
                                          # linear probe's fakes, as many unused train-split photos its photos
    n_aux: int = 2000           # samples per auxiliary generator (photos past the autoencoders'; too few left:
                                # the classifier's fit part's photos)


class FeatureCache:
    """Feature batches on disk, keyed by a hash of the images' bytes and everything the features depend on."""

    def __init__(self, folder: str | Path, context: dict):
        self.folder = Path(folder)
        self.context = json.dumps(context, sort_keys=True)

    def key(self, images_u8: torch.Tensor) -> str:
        h = hashlib.sha256(self.context.encode())
        h.update(images_u8.contiguous().numpy().tobytes())
        return h.hexdigest()

    def get(self, key: str) -> tuple[np.ndarray, list[str]] | None:
        p = self.folder / f"{key}.npz"
        if not p.exists():
            return None
        with np.load(p, allow_pickle=False) as z:
            return z["values"], [str(n) for n in z["names"]]

    def put(self, key: str, values: np.ndarray, names: list[str]) -> None:
        atomic_write(self.folder / f"{key}.npz", lambda f: np.savez(f, values=values, names=np.asarray(names)))


def cached_rows(images: torch.Tensor, compute, *, batch: int, cache: FeatureCache | None, desc: str,
                progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """compute(x) -> (rows [n, F], names) over float images [N, C, H, W] (8-bit values), batch by batch,
    through the cache."""
    out, names = [], None
    for i in tqdm(range(0, len(images), batch), disable=not progress, desc=desc):
        x = images[i:i + batch]
        key = cache.key(to_uint8(x)) if cache else None
        hit = cache.get(key) if cache else None
        if hit is None:
            values, names = compute(x)
            if cache:
                cache.put(key, values, names)
        else:
            values, names = hit
        out.append(values)
    return np.concatenate(out), names


def features_for(images: torch.Tensor, *, G, D, encoder, perceptual, feature_cfg: FeatureConfig, batch: int,
                 cache: FeatureCache | None, desc: str = "features", progress: bool = True
                 ) -> tuple[np.ndarray, list[str]]:
    """Features of float images [N, C, H, W] (8-bit values), batch by batch, through the cache."""
    def compute(x):
        fb = extract_features(G, D, encoder, perceptual, x, cfg=feature_cfg)
        return fb.values.numpy(), fb.names

    return cached_rows(images, compute, batch=batch, cache=cache, desc=desc, progress=progress)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """As saved to an 8-bit file and read back."""
    return to_float(to_uint8(x))


def fit_images(G: Generator, reals: ImageDataset, cfg: FitConfig, *, device="cpu"
               ) -> tuple[torch.Tensor, torch.Tensor, list[str], list[str]]:
    """The fitting images (reals, fakes, and what laundering each got), reproducible from the FitConfig."""
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(reals), generator=g)[: cfg.n_real]
    real = to_float(reals.get_batch(idx))
    fake = quantize(generate(G, cfg.n_fake, seed=FIT_FAKE_SEED + cfg.seed, device=device))
    real, real_what = laundering.random_launder(real, prob=cfg.launder_prob, generator=g)
    fake, fake_what = laundering.random_launder(fake, prob=cfg.launder_prob, generator=g)
    return real, fake, real_what, fake_what


REFERENCE_LAUNDER_SEED = 3_000_000_019  # the laundered copies of the reference photos
PROBE_NOISE_SEED = 3_000_000_037  # the noisy copies of the probe's fitting images


def laundered_copies(images: torch.Tensor, *, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """One copy of each image under a random laundering of the wider reference ranges (every copy laundered:
    JPEG q40-100, blur sigma 0.3-1.5, resize x0.4-0.9, noise 0.005-0.03), reproducible from the seed."""
    g = torch.Generator().manual_seed(REFERENCE_LAUNDER_SEED + seed)
    return laundering.random_launder(images, prob=1.0, generator=g, ranges=laundering.REFERENCE_RANGES)


REFERENCE_CHAIN_SEED = 77  # the chained copies of the reference photos


def chained_copies(images: torch.Tensor, *, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """One copy of each image under a blur, resize or noise of the reference ranges followed by a JPEG re-encoding
    (q40-100): an edit, then a re-save, as images met in the wild are. Reproducible from the seed."""
    g = torch.Generator().manual_seed(REFERENCE_CHAIN_SEED + seed)
    first = {k: v for k, v in laundering.REFERENCE_RANGES.items() if k != "jpeg"}
    x, what1 = laundering.random_launder(images, prob=1.0, generator=g, ranges=first)
    x, what2 = laundering.random_launder(x, prob=1.0, generator=g, ranges={"jpeg": laundering.REFERENCE_RANGES["jpeg"]})
    return x, [f"{a}+{b}" for a, b in zip(what1, what2, strict=True)]


def noisy_copies(images: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """One copy of each image with additive Gaussian noise (the reference ranges' noise strengths)."""
    g = torch.Generator().manual_seed(PROBE_NOISE_SEED + seed)
    ranges = {"noise": laundering.REFERENCE_RANGES["noise"]}
    return laundering.random_launder(images, prob=1.0, generator=g, ranges=ranges)[0]


def unused_reals(reals: ImageDataset, cfg: FitConfig, n: int, *, offset: int = 0) -> torch.Tensor:
    """n train-split reals the fit (cfg) did not use: the next ones in the same seeded permutation, from `offset`
    past the fit's."""
    g = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(reals), generator=g)[cfg.n_real + offset: cfg.n_real + offset + n]
    if len(idx) < n:
        raise ValueError(f"only {len(idx)} train-split reals left beyond the {cfg.n_real} used in fitting")
    return to_float(reals.get_batch(idx))


def feature_context(detector) -> dict:
    """What the cached features of a loaded detector depend on: the feature settings and the networks' weights
    (generator, encoder, perceptual net). The fit's own cache uses the same context, so evaluations find the
    fitting features again, and a refit that keeps the inversion (a new classifier or evidence) reuses them."""
    return {"features": detector.feature_cfg.to_dict(), "G": weights_fingerprint(detector.G),
            "encoder": weights_fingerprint(detector.encoder) if detector.encoder is not None else None,
            "perceptual": detector.perceptual.backend_id}


def fit_detector(out_path: str | Path, *, G: Generator, D: Discriminator, encoder: Encoder | None,
                 perceptual: PerceptualDistance, reals: ImageDataset, bundle_file: str, encoder_file: str | None,
                 feature_cfg: FeatureConfig = FeatureConfig(), clf_cfg: ClassifierConfig = ClassifierConfig(),
                 cfg: FitConfig = FitConfig(), artifact_cfg: ArtifactConfig = ArtifactConfig(),
                 recon_cfg: ReconstructionConfig = ReconstructionConfig(), cache_dir: str | Path | None = None,
                 device="cpu", progress: bool = True) -> dict:
    """Extract features, fit and calibrate the classifier, and write the detector JSON at `out_path` (and the
    artifact CNN's weights beside it, `<stem>.artifacts.pt`)."""
    out_path = Path(out_path)
    real, fake, real_what, fake_what = fit_images(G, reals, cfg, device=device)
    G_fp = weights_fingerprint(G)
    enc_fp = weights_fingerprint(encoder) if encoder is not None else None
    context = {"features": feature_cfg.to_dict(), "G": G_fp, "encoder": enc_fp, "perceptual": perceptual.backend_id}
    cache = FeatureCache(cache_dir, context) if cache_dir else None
    kw = dict(G=G, D=D, encoder=encoder, perceptual=perceptual, feature_cfg=feature_cfg, batch=cfg.batch,
              cache=cache, progress=progress)
    X_real, names = features_for(real.to(device), desc="real features", **kw)
    X_fake, _ = features_for(fake.to(device), desc="fake features", **kw)
    X = np.concatenate([X_real, X_fake])
    y = np.concatenate([np.zeros(len(X_real), dtype=np.int64), np.ones(len(X_fake), dtype=np.int64)])
    spec_clf, _ = fit_classifier(X, y, names, cfg=clf_cfg)
    evidence, reference_source, aux_summary = None, None, None
    if cfg.real_model:
        images = torch.cat([real, fake])
        A = appearance_features(perceptual, images.to(device))
        # the reference photos: unused train-split photos, or half of the calibration photos (`from_fit`)
        from_fit = None
        if cfg.n_reference and len(reals) >= cfg.n_real + cfg.reference_offset + cfg.n_reference:
            photos = unused_reals(reals, cfg, cfg.n_reference, offset=cfg.reference_offset)
            X_ph, _ = features_for(photos.to(device), desc="reference photos", **kw)
        else:
            from_fit = reference_indices(y, clf_cfg, seed=cfg.seed)
            photos, X_ph = images[from_fit], X[from_fit]
        reference_source = {"photos": "half of the calibration photos" if from_fit is not None else
                            f"train-split photos the fit does not use (from {cfg.reference_offset} past its own)",
                            "n_photos": len(photos), "laundered_copies": len(photos) if cfg.reference_copies else 0,
                            "chained_copies": len(photos) if cfg.reference_copies and cfg.reference_chained else 0}
        if cfg.reference_copies:  # with a laundered copy of each, and a chained one (a laundering, then JPEG)
            extra = [laundered_copies(photos, seed=cfg.seed)[0]]
            if cfg.reference_chained:
                extra.append(chained_copies(photos, seed=cfg.seed)[0])
            Xc = [features_for(c.to(device), desc="reference copies", **kw)[0] for c in extra]
            photos, X_ph = torch.cat([photos, *extra]), np.concatenate([X_ph, *Xc])
        reference = ReferencePhotos(X=X_ph, A=appearance_features(perceptual, photos.to(device)), from_fit=from_fit)
        artifacts = None
        if cfg.artifact_cnn:
            a_real, a_fake, a_source = artifact_images(G, reals, cfg, y, clf_cfg, device=device)
            recon = None
            if cfg.reconstruction_fakes and recon_cfg.upsamplers:
                recon = reconstruction_fakes(reals, a_real, cfg, recon_cfg, device=device, progress=progress)
                a_fake = torch.cat([a_fake, recon["images"]])
            net, history = train_artifact_cnn(a_real, a_fake, cfg=artifact_cfg, device=device, progress=progress)
            file = out_path.with_name(f"{out_path.stem}.artifacts.pt")
            sha = save_artifact_cnn(file, net, cfg=artifact_cfg, history=history)
            best = max(history, key=lambda h: h[2])
            artifacts = ArtifactEvidence(
                entry={"file": file.name, "sha256": sha, "args": dict(net.args), "config": asdict(artifact_cfg),
                       "epochs": len(history), "best_epoch": best[0], "val_auc": best[2],
                       "trained_on": {"real": len(a_real), "fake": len(a_fake), "source": a_source,
                                      "reconstructions": None if recon is None else recon["summary"]}},
                fit=artifact_logits(net, images.to(device)), reference=artifact_logits(net, photos.to(device)))
        extra, (fit_idx, _) = [], split_indices(y, clf_cfg)  # the probe's extra (appearance, labels) parts
        if cfg.probe_noise_copies:  # measured: without them the probe flags most noisy photos
            extra.append((appearance_features(perceptual, noisy_copies(images[fit_idx], seed=cfg.seed).to(device)),
                          y[fit_idx]))
        if cfg.aux_generators:  # more kinds of fake for the probe: other generator families' samples
            aux = auxiliary_probe_images(reals, cfg, photos_fallback=images[fit_idx][y[fit_idx] == 0])
            y_aux = np.r_[np.zeros(len(aux["photos"]), dtype=np.int64), np.ones(len(aux["fakes"]), dtype=np.int64)]
            extra.append((appearance_features(perceptual, torch.cat([aux["photos"], aux["fakes"]]).to(device)), y_aux))
            aux_summary = aux["summary"]
        probe_extra = (np.concatenate([a for a, _ in extra]), np.concatenate([t for _, t in extra])) if extra else None
        evidence = fit_combined_evidence(X, A, y, spec_clf, clf_cfg=clf_cfg, backbone=perceptual.backend_id,
                                         seed=cfg.seed, reference=reference, probe_extra=probe_extra,
                                         artifacts=artifacts)
    lo, hi = np.percentile(X, 0.1, axis=0), np.percentile(X, 99.9, axis=0)
    latent_map = None
    if cfg.latent_map > 0 and len(reals) - cfg.n_real >= 3:
        latent_map = compute_latent_map(G=G, D=D, encoder=encoder, perceptual=perceptual, feature_cfg=feature_cfg,
                                        photos=unused_reals(reals, cfg, min(cfg.latent_map, len(reals) - cfg.n_real)),
                                        n=cfg.latent_map, batch=cfg.batch, device=device, progress=progress)
    clf_fp = hashlib.sha256(json.dumps([spec_clf, evidence]).encode()).hexdigest()
    spec = {
        "format": DETECTOR_FORMAT, "format_version": DETECTOR_VERSION,
        "model_id": f"{Path(bundle_file).stem}-{G_fp[:8]}-{clf_fp[:8]}",
        "bundle": {"file": bundle_file, "generator_fingerprint": G_fp},
        "encoder": {"file": encoder_file, "fingerprint": enc_fp} if encoder_file else None,
        "perceptual": perceptual.backend_id,
        "features": feature_cfg.to_dict(),
        "classifier": spec_clf,
        **({"evidence": evidence} if evidence else {}),
        "domain": {"feature_lo": lo.tolist(), "feature_hi": hi.tolist(), "colour_limit": 8.0},
        **({"latent_map": latent_map} if latent_map else {}),
        "fit": {**asdict(cfg), "real_data": reals.name, "real_fingerprint": reals.fingerprint(),
                "fake_seed": FIT_FAKE_SEED + cfg.seed, "reference_photos": reference_source,
                "auxiliary_fakes": aux_summary,
                "laundered": {"real": sum(w != "clean" for w in real_what),
                              "fake": sum(w != "clean" for w in fake_what)}},
        "metrics": {},
    }
    write_spec(out_path, spec)
    return spec


LATENT_MAP_SEED = 4_000_000_007  # samples drawn for the latent map


def compute_latent_map(*, G: Generator, D: Discriminator, encoder: Encoder | None, perceptual: PerceptualDistance,
                       feature_cfg: FeatureConfig, photos: torch.Tensor, n: int = 300, batch: int = 50,
                       device="cpu", progress: bool = True) -> dict:
    """The 2D latent map (detector/latent_map.py) from the refined codes of `photos` (train-split photos the
    fit did not use) and of n fresh samples, inverted exactly as the features are."""
    samples = quantize(generate(G, n, seed=LATENT_MAP_SEED, device=device))
    codes = []
    for imgs in (photos[:n], samples):
        part = []
        for i in tqdm(range(0, len(imgs), batch), disable=not progress, desc="latent map"):
            fb = extract_features(G, D, encoder, perceptual, imgs[i:i + batch].to(device), cfg=feature_cfg)
            part.append(ws_code(fb.ws))
        codes.append(np.concatenate(part))
    return fit_latent_map(codes[0], codes[1], source=f"{len(codes[0])} unused train-split photos, {n} samples "
                          f"(seed {LATENT_MAP_SEED}), refined as the features are")


def reference_indices(y: np.ndarray, clf_cfg: ClassifierConfig, *, seed: int = 0) -> np.ndarray:
    """The reference photos of a fit: a seeded half of the photos in the classifier's calibration part."""
    _, cal_idx = split_indices(y, clf_cfg)
    cal_real = cal_idx[y[cal_idx] == 0]
    return np.sort(np.random.default_rng(seed).permutation(cal_real)[: len(cal_real) // 2])


@dataclass
class ReferencePhotos:
    """The photos the evidence's tail probabilities are measured against (with their laundered copies)."""
    X: np.ndarray       # [N, F] feature rows
    A: np.ndarray       # [N, F'] appearance features
    from_fit: np.ndarray | None = None  # the rows of the fit's images they come from (left out of calibration);
                                        # None: photos the fit did not use


ARTIFACT_FAKE_SEED = 5_000_000_003  # the artifact CNN's samples: a stream no other fit nor evaluation uses


def artifact_images(G: Generator, reals: ImageDataset, cfg: FitConfig, y: np.ndarray, clf_cfg: ClassifierConfig, *,
                    device="cpu") -> tuple[torch.Tensor, torch.Tensor, str]:
    """The artifact CNN's training images (unlaundered: it launders its own batches) and where they come from:
    `cfg.n_artifact` train-split photos past the reference photos and as many fresh samples; with too few
    photos left, the classifier's fit part (never its calibration part nor the reference photos)."""
    offset = cfg.reference_offset + cfg.n_reference
    if cfg.n_artifact and len(reals) >= cfg.n_real + offset + cfg.n_artifact:
        photos = unused_reals(reals, cfg, cfg.n_artifact, offset=offset)
        samples = quantize(generate(G, cfg.n_artifact, seed=ARTIFACT_FAKE_SEED + cfg.seed, device=device)).cpu()
        return photos, samples, (f"train-split photos the other fits do not use (from {offset} past the fit's "
                                 f"own) and fresh samples (seed {ARTIFACT_FAKE_SEED + cfg.seed})")
    fit_idx, _ = split_indices(y, clf_cfg)
    clean_real, clean_fake, _, _ = fit_images(G, reals, dataclasses.replace(cfg, launder_prob=0.0), device=device)
    clean = torch.cat([clean_real, clean_fake.cpu()])[fit_idx]
    return clean[y[fit_idx] == 0], clean[y[fit_idx] == 1], "the classifier's fit part"


AUX_FAKE_SEED = 6_000_000_011  # the auxiliary generators' samples (+ k for the k-th file)
AUX_LAUNDER_SEED = 6_000_000_029  # their launderings and their photos'


def auxiliary_probe_images(reals: ImageDataset, cfg: FitConfig, *, photos_fallback: torch.Tensor) -> dict:
    """The linear probe's extra fitting images from `cfg.aux_generators`: `cfg.n_aux` samples of each, and as many
    train-split photos past every other part of the fit (too few left: `photos_fallback`, the classifier's fit
    part's photos, repeated as needed), both laundered like the fit's own images. Returns {"photos", "fakes"
    (float [N, C, H, W], 8-bit values), "summary" (what the detector file records)}."""
    fakes, files = [], []
    for k, file in enumerate(cfg.aux_generators):
        G_aux = load_aux(file)
        res, ch = G_aux.init_kwargs["img_resolution"], G_aux.init_kwargs["img_channels"]
        if (res, ch) != (reals.resolution, reals.channels):
            raise ValueError(f"{file}: the auxiliary generator makes {res}px {ch}-channel images; the fit's photos "
                             f"are {reals.resolution}px {reals.channels}-channel")
        fakes.append(quantize(sample_aux(G_aux, cfg.n_aux, seed=AUX_FAKE_SEED + k)))
        files.append({"file": str(file), "sha256": sha256_file(file), "n": cfg.n_aux, "seed": AUX_FAKE_SEED + k})
    fake = torch.cat(fakes)
    offset = cfg.reference_offset + cfg.n_reference + cfg.n_artifact + cfg.n_reconstruction_train
    if len(reals) >= cfg.n_real + offset + len(fake):
        photos = unused_reals(reals, cfg, len(fake), offset=offset)
        source = f"train-split photos no other part of the fit uses (from {offset} past the fit's own)"
    else:
        if len(photos_fallback) == 0:
            raise ValueError("no photos for the auxiliary fakes (the classifier's fit part holds none)")
        photos = photos_fallback[torch.arange(len(fake)) % len(photos_fallback)].cpu()
        source = "the classifier's fit part's photos (too few train-split photos left)"
    g = torch.Generator().manual_seed(AUX_LAUNDER_SEED + cfg.seed)
    photos, _ = laundering.random_launder(photos, prob=cfg.launder_prob, generator=g)
    fake, _ = laundering.random_launder(fake, prob=cfg.launder_prob, generator=g)
    return {"photos": photos, "fakes": fake,
            "summary": {"generators": files, "photos": source, "n_photos": len(photos), "n_fakes": len(fake)}}


def reconstruction_fakes(reals: ImageDataset, photos: torch.Tensor, cfg: FitConfig, recon_cfg: ReconstructionConfig,
                         *, device="cpu", progress: bool = True) -> dict:
    """The artifact CNN's aligned fakes: its photos [N, C, H, W] reconstructed by autoencoders trained on
    `cfg.n_reconstruction_train` train-split photos past its own (too few left: on its photos themselves).
    Returns {"images": [N, C, H, W], "summary": what the fit records}."""
    offset = cfg.reference_offset + cfg.n_reference + cfg.n_artifact
    n = cfg.n_reconstruction_train
    if n and len(reals) >= cfg.n_real + offset + n:
        train = unused_reals(reals, cfg, n, offset=offset)
        source = f"{n} train-split photos from {offset} past the fit's"
    else:
        train, source = photos, "the artifact CNN's photos"
    nets, errors = train_autoencoders(train, cfg=recon_cfg, device=device, progress=progress)
    return {"images": reconstruct(nets, photos, seed=recon_cfg.seed),
            "summary": {"n": len(photos), "autoencoders_trained_on": source, "config": asdict(recon_cfg),
                        "mean_abs_error": dict(zip(recon_cfg.upsamplers, [round(e, 5) for e in errors], strict=True))}}


@dataclass
class ArtifactEvidence:
    """The trained artifact CNN as the fit sees it: its file entry and its logits."""
    entry: dict             # the evidence spec's "artifacts" (file, sha256, args, training summary)
    fit: np.ndarray         # [N] logits of the fit's images (rows as X)
    reference: np.ndarray   # [N_ref] logits of the reference photos (rows as ReferencePhotos.X)


def fit_combined_evidence(X: np.ndarray, A: np.ndarray, y: np.ndarray, spec_clf: dict, *,
                          clf_cfg: ClassifierConfig, backbone: str, reference: ReferencePhotos, seed: int = 0,
                          real_cfg: RealModelConfig = RealModelConfig(),
                          probe_extra: tuple[np.ndarray, np.ndarray] | None = None,
                          artifacts: ArtifactEvidence | None = None) -> dict:
    """The real-photo model, the linear probe and the combination (detector/evidence.py), on the classifier's own
    split.

    The real-photo model is fitted on the photos of the classifier's fit part (photos only), the probe on all of
    its fit part (and `probe_extra` = (appearance, labels) of more images, when given). The tail probabilities are
    measured against the `reference` photos; the calibration part (less any reference photos taken from it) fits
    the sigmoid and sets the threshold (detector/evidence.py).
    """
    from .scoring import degradation_columns

    fit_idx, cal_idx = split_indices(y, clf_cfg)
    real_model = fit_real_model(A[fit_idx][y[fit_idx] == 0], cfg=real_cfg, backbone=backbone)
    A_probe, y_probe = A[fit_idx], y[fit_idx]
    if probe_extra is not None:
        A_probe, y_probe = np.concatenate([A_probe, probe_extra[0]]), np.concatenate([y_probe, probe_extra[1]])
    probe = fit_probe(A_probe, y_probe, backbone=backbone, seed=seed)
    cal = cal_idx if reference.from_fit is None else np.setdiff1d(cal_idx, reference.from_fit)
    clf = JsonClassifier(spec_clf)
    photo_model, probe_model = RealPhotoModel(real_model), ProbeModel(probe)

    def scores(X_, A_, L_):
        out = {"generator": clf.decision(X_), "photos": photo_model.score(A_), "probe": probe_model.score(A_)}
        return out if L_ is None else {**out, "artifacts": L_}

    L_ref, L_cal = (None, None) if artifacts is None else (artifacts.reference, artifacts.fit[cal])
    return fit_evidence(ref=scores(reference.X, reference.A, L_ref), cal=scores(X[cal], A[cal], L_cal), y_cal=y[cal],
                        real_model=real_model, probe=probe, target_fpr=clf_cfg.target_fpr,
                        artifacts=None if artifacts is None else artifacts.entry,
                        ref_degradation=degradation_columns(reference.X, clf),
                        cal_degradation=degradation_columns(X[cal], clf), tail_fraction=real_cfg.tail_fraction)


def write_spec(path: str | Path, spec: dict) -> None:
    """Write a detector file atomically (temporary file, then rename)."""
    atomic_write_bytes(path, json.dumps(spec, indent=1).encode())


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Held-out metrics of calibrated probabilities at the stored threshold (see detector/metrics.py)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=np.float64)
    m = point_metrics(y, p, threshold, probabilities=True)
    return {"n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()), **m,
            "fpr_at_threshold": 1.0 - m["real_accuracy"], "tpr_at_threshold": m["fake_accuracy"]}


EVAL_FAKE_SEED = 1_000_000_007  # never used by training (seed * 1_000_003 + step) nor by fitting
EVAL_CONDITIONS = {"clean": None, "jpeg75": ("jpeg", 75), "resize0.5": ("resize", 0.5), "blur1.0": ("blur", 1.0)}


def evaluate_detector(detector, test_reals: ImageDataset, *, n: int = 1000, batch: int = 50,
                      conditions: dict = EVAL_CONDITIONS, cache_dir: str | Path | None = None,
                      progress: bool = True) -> dict:
    """Held-out evaluation: first n test-split reals vs n fresh G_ema samples, per laundering condition."""
    if getattr(detector, "attribution", None) is not None:
        raise ValueError("an attribution detector is evaluated by python -m benchmarks.attribution (its p_fake "
                         "needs every registered generator's inversion); evaluate its primary detector here")
    G = detector.G
    real = to_float(test_reals.images[:n])
    fake = quantize(generate(G, n, seed=EVAL_FAKE_SEED, device=detector.device))
    cache = FeatureCache(cache_dir, feature_context(detector)) if cache_dir else None
    kw = dict(G=G, D=detector.D, encoder=detector.encoder, perceptual=detector.perceptual,
              feature_cfg=detector.feature_cfg, batch=batch, cache=cache, progress=progress)
    out = {}
    for name, cond in conditions.items():
        r, f = laundering.apply_condition(real, cond), laundering.apply_condition(fake, cond)
        X_r, _ = features_for(r.to(detector.device), desc=f"{name} real", **kw)
        X_f, _ = features_for(f.to(detector.device), desc=f"{name} fake", **kw)
        X, images = np.concatenate([X_r, X_f]), torch.cat([r, f])
        y = np.concatenate([np.zeros(len(X_r)), np.ones(len(X_f))]).astype(int)
        if detector.first_stage is None:
            out[name] = binary_metrics(y, detector.probabilities(X, images).p_fake, detector.threshold)
            continue
        X1 = first_stage_features(detector, images, batch=batch, cache_dir=cache_dir, progress=progress,
                                  desc=f"{name} stage 1")
        p, decided = detector.cascade_probabilities(X1, X, images)
        out[name] = {**binary_metrics(y, p, detector.threshold), "decided_at_first_stage": float(decided.mean())}
    return {"n_per_class": n, "fake_seed": EVAL_FAKE_SEED, "real_data": test_reals.name, "conditions": out,
            "cascade": detector.first_stage is not None}


def first_stage_features(detector, images: torch.Tensor, *, batch: int = 50, cache_dir=None, progress: bool = True,
                         desc: str = "stage 1") -> np.ndarray:
    """The cascade's stage-1 feature rows of images (a detector with a cascade), through the cache."""
    cfg1 = detector.first_stage.feature_cfg
    cache = FeatureCache(cache_dir, {**feature_context(detector), "features": cfg1.to_dict()}) if cache_dir else None
    X1, _ = features_for(images.to(detector.device), G=detector.G, D=detector.D, encoder=detector.encoder,
                         perceptual=detector.perceptual, feature_cfg=cfg1, batch=batch, cache=cache, desc=desc,
                         progress=progress)
    return X1
