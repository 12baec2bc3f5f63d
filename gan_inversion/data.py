"""Training data: Fashion-MNIST framed on a 32x32 canvas, and a generic image folder.

Datasets hand out uint8 batches `[B, C, R, R]`; `to_float` maps them to the networks' [-1, 1] range.
Each dataset carries a fingerprint (content hash) and a `framing` dict that the bundle records, so
that later an input of the data's native size can be framed the same way instead of stretched.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .fileio import atomic_write

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte")
FMNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")
FIT_FRAMING = {"kind": "fit", "policy": "shorter side to resolution, centre crop"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif"}


class DataError(RuntimeError):
    """The training data is missing or unreadable."""


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return x.float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255] (clamped, rounded)."""
    return x.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


def prepare_fashion_mnist(root: str | Path, *, debian_dir: Path = DEBIAN_FASHION_MNIST,
                          download: bool = True) -> Path:
    """Put Fashion-MNIST where torchvision's `FashionMNIST(root)` finds it; return the raw folder.

    Order: already there -> copy from Debian's `dataset-fashion-mnist` package -> torchvision's downloader.
    """
    raw = Path(root) / "FashionMNIST" / "raw"
    if all((raw / name).is_file() for name in FMNIST_FILES):
        return raw
    if all((debian_dir / f"{name}.gz").is_file() for name in FMNIST_FILES):
        for name in FMNIST_FILES:
            with gzip.open(debian_dir / f"{name}.gz", "rb") as src:
                atomic_write(raw / name, lambda dst, src=src: shutil.copyfileobj(src, dst))
        return raw
    if not download:
        raise DataError(f"Fashion-MNIST not found under {raw} nor {debian_dir}; run `make data` "
                        "(installs Debian's dataset-fashion-mnist or downloads it with torchvision)")
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(str(root), train=train, download=True)
    return raw


@dataclass
class ImageDataset:
    """uint8 images `[N, C, R, R]` held in memory, with optional labels."""

    images: torch.Tensor  # [N, C, R, R] uint8
    name: str
    framing: dict = field(default_factory=dict)
    labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.images[indices]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(self.name.encode())
        h.update(str(tuple(self.images.shape)).encode())
        h.update(self.images.contiguous().numpy().tobytes())
        return h.hexdigest()

    def info(self) -> dict:
        return {"name": self.name, "num_images": len(self), "resolution": self.resolution,
                "channels": self.channels, "fingerprint": self.fingerprint(), "framing": dict(self.framing)}


def fashion_mnist_framing(canvas: int = 32) -> dict:
    pad = (canvas - 28) // 2
    return {"kind": "pad", "native_resolution": 28, "canvas": canvas, "offset": pad, "fill": 0}


def frame_native(images: torch.Tensor, framing: dict) -> torch.Tensor:
    """Centre native-size uint8 images `[N, C, n, n]` on the bundle's canvas (no stretching)."""
    n, canvas, off = framing["native_resolution"], framing["canvas"], framing["offset"]
    if images.shape[-1] != n or images.shape[-2] != n:
        raise ValueError(f"expected native {n}x{n} images, got {list(images.shape[-2:])}")
    out = torch.full((*images.shape[:-2], canvas, canvas), int(framing.get("fill", 0)), dtype=images.dtype)
    out[..., off:off + n, off:off + n] = images
    return out


def load_fashion_mnist(root: str | Path, *, split: str = "train", canvas: int = 32) -> ImageDataset:
    """Fashion-MNIST `split` ('train': 60,000, 'test': 10,000) framed on a black canvas x canvas."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    from torchvision.datasets import FashionMNIST

    prepare_fashion_mnist(root, download=False)
    ds = FashionMNIST(str(root), train=(split == "train"), download=False)
    framing = fashion_mnist_framing(canvas)
    images = frame_native(ds.data.unsqueeze(1), framing)  # [N, 1, 32, 32]
    return ImageDataset(images=images, name=f"fashion-mnist-{split}", framing=framing, labels=ds.targets.clone())


def fit_square(arr: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 [H, W(, C)]: shorter side to `resolution` (area interpolation when shrinking, bicubic when
    enlarging), then centre crop to resolution x resolution."""
    import cv2

    h, w = arr.shape[:2]
    scale = resolution / min(h, w)
    if scale != 1.0:
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        arr = cv2.resize(arr, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    h, w = arr.shape[:2]
    top, left = (h - resolution) // 2, (w - resolution) // 2
    return np.ascontiguousarray(arr[top:top + resolution, left:left + resolution])


def to_8bit(img: Image.Image) -> Image.Image:
    """16/32-bit integer and float images -> 8-bit L, scaled to the full range of their type."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img).astype(np.float64) / 257.0
        return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L")
    if img.mode in ("I", "F"):
        arr = np.asarray(img).astype(np.float64)
        top = (65535.0 if arr.max() > 255 else 255.0) if img.mode == "I" else max(float(arr.max()), 1.0)
        return Image.fromarray(np.clip(np.round(arr / top * 255), 0, 255).astype(np.uint8), "L")
    return img


def flatten_to_rgb_or_l(img: Image.Image) -> Image.Image:
    """Palette, alpha (composited on black), CMYK, 1-bit, ... -> 'L' or 'RGB'."""
    img = to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    if img.mode == "1":
        img = img.convert("L")
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    return img


def pil_to_array(img: Image.Image, channels: int, resolution: int) -> np.ndarray:
    """Oriented Pillow image -> uint8 [resolution, resolution, channels] by the fit policy."""
    img = flatten_to_rgb_or_l(ImageOps.exif_transpose(img)).convert("L" if channels == 1 else "RGB")
    arr = fit_square(np.asarray(img, dtype=np.uint8), resolution)
    return arr.reshape(resolution, resolution, channels)


def face_to_array(img: Image.Image, channels: int, resolution: int, margin: float) -> np.ndarray | None:
    """The largest face of an image, eyes levelled and cropped (gan_inversion/faces.py), or None without one."""
    from .faces import crop_face, find_faces

    rgb = np.asarray(flatten_to_rgb_or_l(ImageOps.exif_transpose(img)).convert("RGB"), dtype=np.uint8)
    faces = find_faces(rgb)
    if not faces:
        return None
    return crop_face(rgb, faces[0], size=resolution, margin=margin, channels=channels)


def load_image_folder(folder: str | Path, *, resolution: int, channels: int,
                      face_margin: float | None = None) -> ImageDataset:
    """Every image under `folder` (recursively), converted to `channels` and fitted to `resolution`; with
    `face_margin`, the largest face of each instead (a face model's framing; images without one are skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"image folder {folder} does not exist")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}")
    arrays, skipped = [], []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.seek(0)
                if face_margin is None:
                    arrays.append(pil_to_array(im, channels, resolution))
                elif (a := face_to_array(im, channels, resolution, face_margin)) is not None:
                    arrays.append(a)
                else:
                    skipped.append(f"{p}: no face found")
        except (OSError, ValueError) as exc:
            skipped.append(f"{p}: {exc}")
    if not arrays:
        raise DataError(f"none of the {len(paths)} files under {folder} could be decoded: {skipped[:3]}")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    if face_margin is None:
        framing = dict(FIT_FRAMING)
    else:
        from .faces import face_framing

        framing = face_framing(face_margin)
    ds = ImageDataset(images=images, name=f"folder:{folder.name}", framing=framing)
    ds.skipped = skipped  # type: ignore[attr-defined]
    return ds


def save_grid(images: torch.Tensor, path: str | Path, *, nrow: int = 8) -> Path:
    """Save float images `[N, C, H, W]` in [-1, 1] as one PNG grid (2 px black gutters)."""
    from torchvision.utils import make_grid

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(to_uint8(images.detach().cpu()), nrow=nrow, padding=2)  # [C, H, W]
    arr = grid.permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if images.shape[1] == 1 else arr).save(path)
    return path


def save_png(image: torch.Tensor, path: str | Path) -> Path:
    """Save one float image `[C, H, W]` in [-1, 1] as a PNG at its native size."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(image.detach().cpu()).permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)
    return path
