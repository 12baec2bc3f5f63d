"""The one place that opens a detector file and what it names: the bundle, the encoder, the perceptual network,
the artifact CNN and an attribution detector's members, each checked against the fingerprint the file records."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from gan_inversion import ort
from gan_inversion.checkpoints import Bundle, BundleError, load_bundle
from gan_inversion.encoder import Encoder, load_encoder, weights_fingerprint
from gan_inversion.perceptual import PerceptualDistance, build_perceptual, parse_backend_id

from ..components.artifact_cnn import ArtifactCNN, load_artifact_cnn
from ..components.attribution import AttributionError, Member, load_member
from ..spec import DetectorError, read_spec


@dataclass
class Parts:
    """A single detector file's spec and the networks it names, loaded and checked."""

    spec: dict
    bundle: Bundle
    encoder: Encoder | None
    perceptual: PerceptualDistance
    artifact_net: ArtifactCNN | None


def load_parts(path: str | Path, spec: dict | None = None, *, device="cpu",
               perceptual: PerceptualDistance | None = None, onnx: ort.OrtConfig | None = None) -> Parts:
    """Open a single detector file (or use its already read `spec`) and load what it names. A perceptual network
    passed in must be the backend the detector was fitted with. With `onnx` (and on the CPU), the networks' calls
    that need no gradient run on ONNX Runtime (on_onnx_runtime)."""
    path = Path(path)
    spec = read_spec(path) if spec is None else spec
    if spec["kind"] != "single":
        raise DetectorError(f"{path}: a {spec['kind']} detector file, not a single detector")
    base = path.parent
    try:
        bundle = load_bundle(base / spec["bundle"]["file"], device=device, require_D=True)
    except BundleError as exc:
        raise DetectorError(str(exc)) from exc
    if weights_fingerprint(bundle.G_ema) != spec["bundle"]["generator_fingerprint"]:
        raise DetectorError(f"{path}: fitted for another generator than {spec['bundle']['file']}")
    encoder = None
    if spec["encoder"]:
        try:
            encoder, _ = load_encoder(base / spec["encoder"]["file"], G=bundle.G_ema, device=device)
        except BundleError as exc:
            raise DetectorError(str(exc)) from exc
        recorded = spec["encoder"].get("fingerprint")
        if recorded is None:
            raise DetectorError(f"{path}: records no fingerprint for its encoder {spec['encoder']['file']}; "
                                "refit the detector (resynth fit)")
        if weights_fingerprint(encoder) != recorded:
            raise DetectorError(f"{path}: fitted with another encoder than {spec['encoder']['file']} "
                                "(fingerprint differs); use the encoder it was fitted with, or refit")
    if perceptual is None:
        name, size = parse_backend_id(spec["perceptual"])
        perceptual = build_perceptual(name, input_size=size)
    if perceptual.backend_id != spec["perceptual"]:
        raise DetectorError(f"{path}: fitted with perceptual backend {spec['perceptual']}, "
                            f"but {perceptual.backend_id} was given; refit or use the matching backend")
    artifact_net = None
    if "artifacts" in spec["contents"]:
        entry = spec["evidence"]["artifacts"]
        try:
            artifact_net = load_artifact_cnn(base / entry["file"], sha256=entry["sha256"], device=device)
        except (OSError, ValueError, RuntimeError) as exc:
            raise DetectorError(f"{path}: its artifact CNN: {exc}") from exc
    parts = Parts(spec=spec, bundle=bundle, encoder=encoder, perceptual=perceptual.to(device),
                  artifact_net=artifact_net)
    if onnx is not None and torch.device(device).type == "cpu":
        try:
            parts = on_onnx_runtime(parts, onnx)
        except ort.OrtUnavailable as exc:
            raise DetectorError(str(exc)) from exc
    return parts


def on_onnx_runtime(parts: Parts, cfg: ort.OrtConfig) -> Parts:
    """The same parts (their weights checked above, shared) with every call that needs no gradient on ONNX Runtime:
    the encoder, the synthesis from a latent, the discriminator's per-image features, the perceptual net's stages
    (also the appearance features) and the artifact CNN. The refinement steps' calls stay on torch."""
    b = parts.bundle
    G, res, ch = b.G_ema, b.G_ema.img_resolution, b.G_ema.img_channels
    example = torch.zeros(2, ch, res, res)  # [N, C, H, W]
    bundle = dataclasses.replace(b, G_ema=ort.ort_generator(G, cfg=cfg), D=ort.OrtDiscriminator(b.D, cfg=cfg))
    encoder = None if parts.encoder is None else ort.OrtForward(parts.encoder, example, name="encoder", cfg=cfg)
    art = None if parts.artifact_net is None else ort.OrtForward(parts.artifact_net, example, name="artifact_cnn",
                                                                 cfg=cfg)
    return dataclasses.replace(parts, bundle=bundle, encoder=encoder, artifact_net=art,
                               perceptual=ort.OrtPerceptual(parts.perceptual, cfg=cfg))


def load_members(path: str | Path, spec: dict, *, device="cpu") -> list[Member]:
    """The registered generators of an attribution detector file, checked against their recorded fingerprints."""
    base = Path(path).parent
    try:
        return [load_member(m["name"], base / m["bundle"]["file"],
                            None if not m.get("encoder") else base / m["encoder"]["file"], device=device, expect=m)
                for m in spec["members"]]
    except AttributionError as exc:
        raise DetectorError(f"{path}: {exc}") from exc
