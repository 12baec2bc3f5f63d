"""Decoding user images into the model's input, by one documented policy.

Policy (`prepare_image`):
1. Decode with Pillow (PNG, JPEG, WebP, BMP, TIFF, GIF: first frame), refusing images whose pixel count
   exceeds `max_pixels` before the pixels are decoded (decompression bombs).
2. Apply the EXIF orientation.
3. Convert the mode: transparency is composited on black; 16-bit and 32-bit integer images are scaled
   to 8 bits; palette, CMYK, LA, etc. go through RGB; then to the model's channels (L or RGB).
4. Geometry: an image of the bundle's native size with a 'pad' framing (Fashion-MNIST: 28x28) is
   centred on the canvas exactly as the training data was (never stretched); a face model ('face' framing,
   gan_inversion/faces.py) gets its largest face found, eyes levelled and cropped as its training images were
   (no face: the whole image, with an out-of-domain warning); anything else has its shorter side resized to
   the model's resolution (area interpolation when shrinking, bicubic when enlarging) and is centre-cropped.
Errors name the file and the reason (`ImageDecodeError`).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from gan_inversion.data import fit_square, flatten_to_rgb_or_l, frame_native, to_float, to_uint8
from gan_inversion.faces import Face, crop_face, find_faces

DEFAULT_MAX_PIXELS = 40_000_000
SUPPORTED_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF", "MPO")


class ImageDecodeError(ValueError):
    """An input could not be turned into a model input; `kind` is 'unsupported', 'corrupt', 'empty' or 'too_large'."""

    def __init__(self, source: str, reason: str, kind: str = "corrupt"):
        super().__init__(f"{source}: {reason}")
        self.source, self.reason, self.kind = source, reason, kind


@dataclass
class PreparedImage:
    tensor: torch.Tensor            # [C, R, R] float in [-1, 1]
    source: str
    format: str | None
    original_size: tuple[int, int]  # (width, height) after EXIF orientation
    original_mode: str
    framing: str                    # 'native-pad', 'fit' or 'face'
    colourfulness: float            # mean |R-G|, |G-B| spread of the decoded image, in [0, 255]
    notes: list[str] = field(default_factory=list)
    face: dict | None = None        # 'face' framing: the face's box, eye-levelling angle, faces found


def colourfulness(img: Image.Image) -> float:
    """Mean absolute R-G and G-B difference of an RGB image (0 for gray content), in [0, 255]."""
    if img.mode != "RGB":
        return 0.0
    a = np.asarray(img, dtype=np.int16)
    return float((np.abs(a[..., 0] - a[..., 1]).mean() + np.abs(a[..., 1] - a[..., 2]).mean()) / 2)


def decode(data: bytes, source: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[Image.Image, str, str]:
    """Bytes -> (oriented Pillow image of the first frame, format, original mode), or ImageDecodeError."""
    if not data:
        raise ImageDecodeError(source, "empty input (0 bytes)", "empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in SUPPORTED_FORMATS:
                raise ImageDecodeError(source, f"unsupported image format {img.format}", "unsupported")
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(source, f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}",
                                       "too_large")
            if w == 0 or h == 0:
                raise ImageDecodeError(source, "image has zero width or height", "corrupt")
            img.seek(0)
            img.load()
            fmt, mode = img.format, img.mode
            img = ImageOps.exif_transpose(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(source, "not a recognised image (supported: PNG, JPEG, WebP, BMP, TIFF, GIF)",
                               "unsupported") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(source, f"decompression bomb refused: {exc}", "too_large") from exc
    except (OSError, ValueError, SyntaxError, EOFError, IndexError) as exc:
        raise ImageDecodeError(source, f"corrupt or truncated image: {exc}", "corrupt") from exc
    return img, fmt, mode


def prepare_image(data: bytes | str | Path, *, channels: int, resolution: int, framing: dict | None = None,
                  source: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> PreparedImage:
    """Decode bytes (or read a file) into the model's input by the module's policy."""
    if isinstance(data, (str, Path)):
        source = source or str(data)
        try:
            data = Path(data).read_bytes()
        except OSError as exc:
            raise ImageDecodeError(source, f"cannot read file: {exc.strerror or exc}", "unreadable") from exc
    source = source or "<bytes>"
    img, fmt, mode = decode(data, source, max_pixels=max_pixels)
    size = img.size
    img = flatten_to_rgb_or_l(img)
    colour = colourfulness(img)
    framing = framing or {}
    if framing.get("kind") == "face":
        rgb = np.asarray(img.convert("RGB"))
        faces = find_faces(rgb)
        if faces:
            return _face_input(rgb, faces[0], len(faces), channels=channels, resolution=resolution,
                               framing=framing, source=source, fmt=fmt, mode=mode, size=size, colour=colour)
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    notes = []
    if framing.get("kind") == "face":
        notes.append("out of domain: no face found for this face model; the whole image was scored")
    native = framing.get("native_resolution")
    if framing.get("kind") == "pad" and size == (native, native):
        t = torch.from_numpy(arr.copy()).reshape(native, native, channels).permute(2, 0, 1)
        t = frame_native(t, framing)
        how = "native-pad"
    else:
        arr = fit_square(arr, resolution)
        t = torch.from_numpy(arr.copy()).reshape(resolution, resolution, channels).permute(2, 0, 1)
        how = "fit"
        if size != (resolution, resolution):
            notes.append(f"resized from {size[0]}x{size[1]} to {resolution}x{resolution}")
    tensor = t.float().div(127.5).sub(1.0)
    return PreparedImage(tensor=tensor, source=source, format=fmt, original_size=size, original_mode=mode,
                         framing=how, colourfulness=colour, notes=notes)


def _face_input(rgb: np.ndarray, face: Face, found: int, *, channels: int, resolution: int, framing: dict,
                source: str, fmt: str, mode: str, size: tuple[int, int], colour: float) -> PreparedImage:
    """The model input of one face of an RGB image [H, W, 3]."""
    margin = float(framing.get("margin", 0.25))
    crop = crop_face(rgb, face, size=resolution, margin=margin, channels=channels)
    t = torch.from_numpy(crop).permute(2, 0, 1)
    info = {**face.to_dict(), "faces_found": found, "margin": margin}
    notes = [] if face.eyes_found else ["eyes not found in the face: the crop was not rotated"]
    return PreparedImage(tensor=t.float().div(127.5).sub(1.0), source=source, format=fmt, original_size=size,
                         original_mode=mode, framing="face", colourfulness=colour, notes=notes, face=info)


def prepare_faces(data: bytes, *, channels: int, resolution: int, framing: dict | None = None,
                  source: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[PreparedImage]:
    """Every frontal face of an image as a model input (audits' --crop faces): aligned as a face model's
    framing says, else a square crop with a 20% margin fitted to the resolution. [] when there is none."""
    source = source or "<bytes>"
    img, fmt, mode = decode(data, source, max_pixels=max_pixels)
    img = flatten_to_rgb_or_l(img)
    colour = colourfulness(img)
    rgb = np.asarray(img.convert("RGB"))
    faces = find_faces(rgb)
    is_face_model = (framing or {}).get("kind") == "face"
    fr = framing if is_face_model else {"margin": 0.2}
    out = []
    for k, f in enumerate(faces):
        f = f if is_face_model else Face(box=f.box, angle=0.0, eyes_found=False)
        p = _face_input(rgb, f, len(faces), channels=channels, resolution=resolution, framing=fr,
                        source=f"{source}#face{k}", fmt=fmt, mode=mode, size=img.size, colour=colour)
        if not is_face_model:
            p.notes, p.framing = [], "fit"
        out.append(p)
    return out


def as_files(images: torch.Tensor, framing: dict | None, *, launder=None) -> torch.Tensor:
    """Model inputs [N, C, R, R] in [-1, 1] as they would reach the model saved as a user's files of the data's
    native size: for a bundle that pads native-size images (Fashion-MNIST: 28×28 on a black 32×32 canvas), the
    native-size centre, laundered at that size (`launder`: float images -> float images, or None), saved as 8-bit
    and framed on the canvas exactly as `prepare_image` frames such a file; for any other bundle, laundered at
    the model's size and 8-bit quantised. A generated border that no file of the native size can carry is
    dropped, as it is for every upload."""
    framing = framing or {}
    x = images.detach().cpu()
    if framing.get("kind") == "pad":
        n, off = framing["native_resolution"], framing["offset"]
        x = x[..., off:off + n, off:off + n]
    if launder is not None:
        x = launder(x)
    u8 = to_uint8(x)
    return to_float(frame_native(u8, framing) if framing.get("kind") == "pad" else u8)
