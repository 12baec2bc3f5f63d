"""Fitting a detector for a bundle: features (cached), classifier, evidences, threshold, detector file, and its
operating point (detector/fitting/operating.py) where the train split holds the photos for it.

Fitting data: the data plan's photos and fresh samples (8-bit quantised, as any saved fake is), with the same
random laundering for both classes. Evaluation data never overlaps them (detector/plan.py).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from gan_inversion.data import ImageDataset
from gan_inversion.encoder import Encoder, weights_fingerprint
from gan_inversion.networks import Discriminator, Generator
from gan_inversion.perceptual import PerceptualDistance

from .. import spec as spec_file
from ..components.artifact_cnn import artifact_logits
from ..components.classifier import JsonClassifier
from ..components.evidence import ProbeModel, RealPhotoModel, degradation_columns
from ..features import FeatureCache, FeatureNets, appearance_features, feature_context, features_for
from .artifacts import save_artifact_cnn, train_artifact_cnn
from .classifier import ClassifierConfig, fit_classifier, split_indices
from .config import DetectorConfig
from .evidence import RealModelConfig, fit_evidence, fit_probe, fit_real_model
from .images import (
    artifact_images,
    auxiliary_probe_images,
    chained_copies,
    data_plan,
    fit_images,
    has_photos,
    laundered_copies,
    noisy_copies,
    reconstruction_fakes,
    unused_reals,
)
from .latent_map import compute_latent_map
from .operating import OperatingConfig, add_operating_point


@dataclass
class _Fit:
    """What every step of one fit shares: the networks, the configuration and the feature cache."""

    nets: FeatureNets
    config: DetectorConfig
    cache: FeatureCache | None
    device: object
    progress: bool

    def features(self, images: torch.Tensor, desc: str) -> tuple[np.ndarray, list[str]]:
        n = self.nets
        return features_for(images.to(self.device), G=n.G, D=n.D, encoder=n.encoder, perceptual=n.perceptual,
                            feature_cfg=n.feature_cfg, batch=self.config.fit.batch, cache=self.cache, desc=desc,
                            progress=self.progress)

    def appearance(self, images: torch.Tensor) -> np.ndarray:
        return appearance_features(self.nets.perceptual, images.to(self.device))


def fit_detector(out_path: str | Path, *, G: Generator, D: Discriminator, encoder: Encoder | None,
                 perceptual: PerceptualDistance, reals: ImageDataset, bundle_file: str, encoder_file: str | None,
                 config: DetectorConfig = DetectorConfig(), cache_dir: str | Path | None = None, device="cpu",
                 progress: bool = True) -> dict:
    """Extract features, fit the classifier and the evidences, and write the detector file at `out_path` (and the
    artifact CNN's weights beside it, `<stem>.artifacts.pt`). Returns the spec written."""
    out_path, cfg = Path(out_path), config.fit
    nets = FeatureNets(G=G, D=D, encoder=encoder, perceptual=perceptual, feature_cfg=config.features)
    fit = _Fit(nets=nets, config=config, cache=FeatureCache(cache_dir, feature_context(nets)) if cache_dir else None,
               device=device, progress=progress)
    real, fake, real_what, fake_what = fit_images(G, reals, cfg, device=device)
    X_real, names = fit.features(real, "real features")
    X_fake, _ = fit.features(fake, "fake features")
    X = np.concatenate([X_real, X_fake])
    y = np.concatenate([np.zeros(len(X_real), dtype=np.int64), np.ones(len(X_fake), dtype=np.int64)])
    spec_clf, _ = fit_classifier(X, y, names, cfg=config.classifier)
    evidence, record = None, {}
    if cfg.real_model:
        evidence, record = _fit_evidences(fit, reals, torch.cat([real, fake]), X, y, spec_clf, out_path)
    latent_map = None
    n_map = min(cfg.latent_map, data_plan(cfg).slots()["latent_map"][1])
    if n_map >= 3:  # the plan's photos; a train split too small for its slot: the fit's own photos (a picture)
        in_plan = has_photos(reals, cfg, "latent_map", n_map)
        photos = unused_reals(reals, cfg, n_map, part="latent_map") if in_plan else real[:n_map]
        latent_map = compute_latent_map(G=G, D=D, encoder=encoder, perceptual=perceptual,
                                        feature_cfg=config.features, photos=photos, n=min(n_map, len(photos)),
                                        batch=cfg.batch, device=device, progress=progress)
        if in_plan:
            record.setdefault("used", {})["latent_map"] = n_map
    lo, hi = np.percentile(X, 0.1, axis=0), np.percentile(X, 99.9, axis=0)
    clf_fp = hashlib.sha256(json.dumps([spec_clf, evidence]).encode()).hexdigest()
    G_fp = weights_fingerprint(G)
    used = {"fit": cfg.n_real, **record.get("used", {})}
    streams = ["fit", "fit_fakes"] + record.get("streams", []) + (["latent_map_fakes"] if latent_map else [])
    spec = {
        "kind": "single",
        "model_id": f"{Path(bundle_file).stem}-{G_fp[:8]}-{clf_fp[:8]}",
        "bundle": {"file": bundle_file, "generator_fingerprint": G_fp},
        "encoder": {"file": encoder_file, "fingerprint": weights_fingerprint(encoder)} if encoder_file else None,
        "perceptual": perceptual.backend_id,
        "features": config.features.to_dict(),
        "classifier": spec_clf,
        **({"evidence": evidence} if evidence else {}),
        "domain": {"feature_lo": lo.tolist(), "feature_hi": hi.tolist(), "colour_limit": 8.0},
        **({"latent_map": latent_map} if latent_map else {}),
        "fit": {"real_data": reals.name, "real_fingerprint": reals.fingerprint(),
                "reference_photos": record.get("reference"), "auxiliary_fakes": record.get("auxiliary"),
                "laundered": {"real": sum(w != "clean" for w in real_what),
                              "fake": sum(w != "clean" for w in fake_what)}},
        "data_plan": {**data_plan(cfg).record(used, split=reals.name, fingerprint=reals.fingerprint(),
                                              fit_seed=cfg.seed, streams=streams),
                      # a folder's photos (--real): which folder, its fingerprint and the split rule
                      **({"photos": reals.source} if getattr(reals, "source", None) else {})},
        "config": {**config.to_dict(), "command": config.command()},
        "metrics": {},
    }
    spec = spec_file.write_spec(out_path, spec)
    if evidence and has_photos(reals, cfg, "operating", cfg.n_operating):  # photos the fit did not use
        spec = add_operating_point(out_path, reals, cfg=OperatingConfig(target_fpr=config.classifier.target_fpr,
                                                                        batch=cfg.batch),
                                   cache_dir=cache_dir, device=device, progress=progress)
    return spec


def _fit_evidences(fit: _Fit, reals: ImageDataset, images: torch.Tensor, X: np.ndarray, y: np.ndarray,
                   spec_clf: dict, out_path: Path) -> tuple[dict, dict]:
    """The photo model, the probe, the artifact CNN and their combination; and what the file records of them."""
    cfg, clf_cfg = fit.config.fit, fit.config.classifier
    A = fit.appearance(images)
    reference, record = _reference_photos(fit, reals, images, X, y)
    artifacts = None
    if cfg.artifact_cnn:
        artifacts, used = _artifact_evidence(fit, reals, images, reference, y, out_path)
        record["used"].update(used)
        record["streams"].append("artifact_fakes")
    extra, (fit_idx, _) = [], split_indices(y, clf_cfg)  # the probe's extra (appearance, labels) parts
    if cfg.probe_noise_copies:
        extra.append((fit.appearance(noisy_copies(images[fit_idx], seed=cfg.seed)), y[fit_idx]))
        record["streams"].append("probe_noise")
    if cfg.aux_generators:  # more kinds of fake for the probe: other generator families' samples
        aux = auxiliary_probe_images(reals, cfg, photos_fallback=images[fit_idx][y[fit_idx] == 0])
        y_aux = np.r_[np.zeros(len(aux["photos"]), dtype=np.int64), np.ones(len(aux["fakes"]), dtype=np.int64)]
        extra.append((fit.appearance(torch.cat([aux["photos"], aux["fakes"]])), y_aux))
        record["auxiliary"] = aux["summary"]
        record["streams"] += ["aux_fakes", "aux_launder"]
        if aux["from_plan"]:
            record["used"]["auxiliary"] = len(aux["photos"])
    probe_extra = (np.concatenate([a for a, _ in extra]), np.concatenate([t for _, t in extra])) if extra else None
    evidence = fit_combined_evidence(X, A, y, spec_clf, clf_cfg=clf_cfg, backbone=fit.nets.perceptual.backend_id,
                                     seed=cfg.seed, reference=reference, probe_extra=probe_extra,
                                     artifacts=artifacts, real_cfg=fit.config.real_model)
    return evidence, record


def _reference_photos(fit: _Fit, reals: ImageDataset, images: torch.Tensor, X: np.ndarray, y: np.ndarray
                      ) -> tuple[ReferencePhotos, dict]:
    """The reference photos (the plan's 'reference' slice, or half of the calibration photos) with their copies."""
    cfg = fit.config.fit
    record = {"used": {}, "streams": []}
    from_fit = None
    if has_photos(reals, cfg, "reference", cfg.n_reference):
        photos = unused_reals(reals, cfg, cfg.n_reference, part="reference")
        X_ph, _ = fit.features(photos, "reference photos")
        record["used"]["reference"] = cfg.n_reference
    else:
        from_fit = reference_indices(y, fit.config.classifier, seed=cfg.seed)
        photos, X_ph = images[from_fit], X[from_fit]
    n = len(photos)
    record["reference"] = {"photos": "half of the calibration photos" if from_fit is not None else
                           "the data plan's 'reference' slice", "n_photos": n,
                           "laundered_copies": n if cfg.reference_copies else 0,
                           "chained_copies": n if cfg.reference_copies and cfg.reference_chained else 0}
    if cfg.reference_copies:  # with a laundered copy of each, and a chained one (a laundering, then JPEG)
        extra = [laundered_copies(photos, seed=cfg.seed)[0]]
        record["streams"].append("reference_launder")
        if cfg.reference_chained:
            extra.append(chained_copies(photos, seed=cfg.seed)[0])
            record["streams"].append("reference_chain")
        Xc = [fit.features(c, "reference copies")[0] for c in extra]
        photos, X_ph = torch.cat([photos, *extra]), np.concatenate([X_ph, *Xc])
    return ReferencePhotos(X=X_ph, A=fit.appearance(photos), from_fit=from_fit, images=photos), record


def _artifact_evidence(fit: _Fit, reals: ImageDataset, images: torch.Tensor, reference: ReferencePhotos,
                       y: np.ndarray, out_path: Path) -> tuple[ArtifactEvidence, dict]:
    """Train the artifact CNN, write its file beside the detector file, and score the fit's and reference images."""
    cfg, art_cfg, device = fit.config.fit, fit.config.artifacts, fit.device
    a_real, a_fake, a_source = artifact_images(fit.nets.G, reals, cfg, y, fit.config.classifier, device=device)
    used = {"artifact": cfg.n_artifact} if "'artifact'" in a_source else {}
    recon = None
    if cfg.reconstruction_fakes and fit.config.reconstruction.upsamplers:
        recon = reconstruction_fakes(reals, a_real, cfg, fit.config.reconstruction, device=device,
                                     progress=fit.progress)
        a_fake = torch.cat([a_fake, recon["images"]])
        if "'reconstruction'" in recon["summary"]["autoencoders_trained_on"]:
            used["reconstruction"] = cfg.n_reconstruction_train
    net, history = train_artifact_cnn(a_real, a_fake, cfg=art_cfg, device=device, progress=fit.progress)
    file = out_path.with_name(f"{out_path.stem}.artifacts.pt")
    sha = save_artifact_cnn(file, net, cfg=art_cfg, history=history)
    best = max(history, key=lambda h: h[2])
    entry = {"file": file.name, "sha256": sha, "args": dict(net.args), "config": asdict(art_cfg),
             "epochs": len(history), "best_epoch": best[0], "val_auc": best[2],
             "trained_on": {"real": len(a_real), "fake": len(a_fake), "source": a_source,
                            "reconstructions": None if recon is None else recon["summary"]}}
    return ArtifactEvidence(entry=entry, fit=artifact_logits(net, images.to(device)),
                            reference=artifact_logits(net, reference.images.to(device))), used


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
    images: torch.Tensor | None = None  # [N, C, H, W] the photos themselves


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
    """The photo model, the linear probe and the combination (detector/fitting/evidence.py), on the classifier's
    own split.

    The real-photo model is fitted on the photos of the classifier's fit part (photos only), the probe on all of
    its fit part (and `probe_extra` = (appearance, labels) of more images, when given). The tail probabilities are
    measured against the `reference` photos; the calibration part (less any reference photos taken from it) fits
    the sigmoid and sets the threshold.
    """
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
