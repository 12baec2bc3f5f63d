"""Image laundering: the perturbations a fake goes through on its way to a user (re-compression, resizing,
blur). Used to make the classifier robust while fitting (applied equally to both classes, as Wang et
al. 2020 did) and by the benchmarks to measure robustness.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFilter

from gan_inversion.data import to_float, to_uint8


def _to_pil(x: torch.Tensor) -> Image.Image:
    """float [C, H, W] in [-1, 1] -> PIL image."""
    arr = to_uint8(x).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)


def _from_pil(img: Image.Image, channels: int) -> torch.Tensor:
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return to_float(torch.from_numpy(arr.copy()).reshape(arr.shape[0], arr.shape[1], channels).permute(2, 0, 1))


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    buf = io.BytesIO()
    _to_pil(x).save(buf, format="JPEG", quality=int(quality))
    return _from_pil(Image.open(buf), x.shape[0])


def webp(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Lossy WebP at a quality (another codec than JPEG: never used in fitting, a held-out laundering)."""
    buf = io.BytesIO()
    _to_pil(x).save(buf, format="WEBP", quality=int(quality))
    return _from_pil(Image.open(buf), x.shape[0])


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return _from_pil(_to_pil(x).filter(ImageFilter.GaussianBlur(radius=float(sigma))), x.shape[0])


def resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Down-scale by `factor` (< 1) and back up to the original size (bilinear both ways)."""
    img = _to_pil(x)
    w, h = img.size
    small = img.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.BILINEAR)
    return _from_pil(small.resize((w, h), Image.Resampling.BILINEAR), x.shape[0])


def noise(x: torch.Tensor, sigma: float, *, seed: int = 0) -> torch.Tensor:
    """Additive Gaussian noise of std `sigma` on the [0, 1] scale, re-quantised to 8 bits."""
    g = torch.Generator().manual_seed(seed)
    noisy = x + 2 * sigma * torch.randn(x.shape, generator=g)
    return to_float(to_uint8(noisy))


def resize_jpeg(x: torch.Tensor, factor: float, quality: int = 70) -> torch.Tensor:
    """Down-up resize by `factor`, then JPEG at `quality`: two launderings in a row, as a re-shared image gets
    (fitting images get one at most)."""
    return jpeg(resize(x, factor), quality)


LAUNDERINGS = {"jpeg": jpeg, "webp": webp, "blur": blur, "resize": resize, "noise": noise,
               "resize_jpeg": resize_jpeg}


def apply(x: torch.Tensor, kind: str, strength: float) -> torch.Tensor:
    """One laundering of a batch [N, C, H, W] (or one image [C, H, W])."""
    fn = LAUNDERINGS[kind]
    if x.ndim == 3:
        return fn(x, strength)
    if kind == "noise":  # a different noise draw per image, reproducibly
        return torch.stack([noise(img, strength, seed=i) for i, img in enumerate(x)])
    return torch.stack([fn(img, strength) for img in x])


# The laundering conditions that a user's files are judged under: the ROC suite's, and the ones the operating
# point's photos are presented in (detector/fitting/operating.py). name -> None (as is) or (kind, strength).
CONDITIONS = {"clean": None, "jpeg95": ("jpeg", 95), "jpeg75": ("jpeg", 75), "jpeg50": ("jpeg", 50),
              "resize0.5": ("resize", 0.5), "blur1": ("blur", 1.0), "noise0.02": ("noise", 0.02),
              "webp70": ("webp", 70), "resize0.75+jpeg70": ("resize_jpeg", 0.75)}


def apply_condition(x: torch.Tensor, cond: tuple[str, float] | None) -> torch.Tensor:
    """x laundered by an evaluation condition: None (x unchanged) or (kind, strength) as in `apply`."""
    return x if cond is None else apply(x, *cond)


# What a fitting image may go through: (low, high) strength per kind, drawn uniformly.
FIT_RANGES = {"jpeg": (60, 100), "blur": (0.3, 1.0), "resize": (0.5, 0.9)}
# Wider, for the reference photos the evidence's tail probabilities and threshold are measured against
# (detector/components/evidence.py): a user's photos arrive re-encoded harder, blurred or shrunk more, and noisy.
REFERENCE_RANGES = {"jpeg": (40, 100), "blur": (0.3, 1.5), "resize": (0.4, 0.9), "noise": (0.005, 0.03)}


def random_launder(x: torch.Tensor, *, prob: float, generator: torch.Generator,
                   ranges: dict[str, tuple[float, float]] = FIT_RANGES) -> tuple[torch.Tensor, list[str]]:
    """With probability `prob` per image, one random perturbation: a kind of `ranges` (default JPEG q60-100,
    Gaussian blur sigma 0.3-1.0, or down-up resize x0.5-0.9) at a uniform strength in its range. Returns the
    images and what was done to each."""
    kinds = list(ranges)
    out, what = [], []
    for img in x:
        u = torch.rand(3, generator=generator).tolist()
        if u[0] >= prob:
            out.append(img)
            what.append("clean")
            continue
        kind = kinds[min(len(kinds) - 1, int(u[1] * len(kinds)))]
        lo, hi = ranges[kind]
        strength = lo + round((hi - lo) * u[2]) if kind == "jpeg" else lo + (hi - lo) * u[2]
        if kind == "noise":  # its draw seeded from this generator, so that a copy is reproducible
            out.append(noise(img, strength, seed=int(torch.randint(2**31, (1,), generator=generator))))
        else:
            out.append(apply(img, kind, strength))
        what.append(f"{kind}:{strength:.2f}" if kind != "jpeg" else f"jpeg:{strength}")
    return torch.stack(out), what
