"""Photos from a folder: a user's own real images, as every command that reads photos takes them (`--real DIR`).

Each file is decoded the way the service decodes an upload of it for this generator (detector.imageio's
`prepare_image`; tests/test_photos.py checks that they agree): a file of a padded dataset's native size is
centred on the canvas, a face model's photo is reduced to its largest face, levelled and cropped (photos without
a face are left out), anything else is resized (shorter side) and centre-cropped to the resolution; colour or
grayscale as the generator has it.

The split is decided by content, not by file names or order: a file's SHA-256 puts it in the held-out `test`
split when its first eight hex digits, read as a number, modulo 10,000 fall below `test_fraction` x 10,000; the
photos of a split are ordered by that hash, so the data plan's slices (a seeded permutation of the train split,
detector/plan.py) and everything fitted on them stay the same when files are renamed, moved or listed in another
order, and a photo added later never moves another from one split to the other. Identical files count once.
The folder's fingerprint is the hash of its files' sorted hashes.
"""

from __future__ import annotations

import hashlib
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm import tqdm

from . import data
from .data import IMAGE_SUFFIXES, DataError, ImageDataset, face_to_array, fit_square, flatten_to_rgb_or_l, frame_native

TEST_FRACTION = 0.1           # share of a folder's photos held out for evaluation (the `test` split)
MAX_PIXELS = 40_000_000       # larger files are left out (the service's default limit)
SPLITS = ("train", "test", "all")


@dataclass(frozen=True)
class PhotoFolder:
    """Where a command's photos come from: a folder, split by content hash."""

    folder: Path
    test_fraction: float = TEST_FRACTION

    def files(self) -> list[Path]:
        if not self.folder.is_dir():
            raise DataError(f"--real {self.folder}: not a folder of photos")
        paths = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not paths:
            raise DataError(f"--real {self.folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in it")
        return paths


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def in_test(digest: str, test_fraction: float) -> bool:
    """Whether a file of this SHA-256 belongs to the held-out split."""
    return int(digest[:8], 16) % 10_000 < round(test_fraction * 10_000)


def photo_array(data: bytes, *, resolution: int, channels: int, framing: dict | None) -> np.ndarray | None:
    """uint8 [channels, resolution, resolution] of one file, framed as the service frames an upload for this
    generator (module docstring); None for a face model's photo without a face. Unreadable files raise
    DataError."""
    framing = framing or {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.size[0] * img.size[1] > MAX_PIXELS:
                raise DataError(f"{img.size[0]}x{img.size[1]} pixels: over the limit of {MAX_PIXELS}")
            img.seek(0)
            img.load()
            img = ImageOps.exif_transpose(img)
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"not a readable image: {exc}") from exc
    if framing.get("kind") == "face":
        arr = face_to_array(img, channels, resolution, float(framing.get("margin", 0.25)))
        return None if arr is None else np.ascontiguousarray(arr.transpose(2, 0, 1))
    img = flatten_to_rgb_or_l(img)
    arr = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.uint8).reshape(
        img.size[1], img.size[0], channels)
    native = framing.get("native_resolution")
    if framing.get("kind") == "pad" and img.size == (native, native):
        return frame_native(torch.from_numpy(arr.copy()).permute(2, 0, 1), framing).numpy()
    return np.ascontiguousarray(fit_square(arr, resolution).reshape(resolution, resolution, channels)
                                .transpose(2, 0, 1))


def load_photos(source: PhotoFolder, *, split: str, resolution: int, channels: int, framing: dict | None,
                progress: bool = True) -> ImageDataset:
    """The photos of one split of a folder ('train', 'test' or 'all') as uint8 [N, C, R, R], ordered by content
    hash. The dataset's `source` says which folder and split, its rule and the folder's fingerprint; `skipped`
    lists the files left out, with why."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= source.test_fraction < 1:
        raise DataError(f"the held-out share must lie in [0, 1), got {source.test_fraction}")
    rows: dict[str, np.ndarray] = {}
    digests, skipped = set(), []
    for path in tqdm(source.files(), desc=f"photos ({split})", disable=not progress):
        try:
            data = path.read_bytes()
        except OSError as exc:
            skipped.append(f"{path}: cannot read ({exc.strerror or exc})")
            continue
        digest = content_hash(data)
        digests.add(digest)
        if digest in rows or (split != "all" and in_test(digest, source.test_fraction) != (split == "test")):
            continue
        try:
            arr = photo_array(data, resolution=resolution, channels=channels, framing=framing)
        except DataError as exc:
            skipped.append(f"{path}: {exc}")
            continue
        if arr is None:
            skipped.append(f"{path}: no face found")
        else:
            rows[digest] = arr
    if not rows:
        raise DataError(f"--real {source.folder}: no usable photo in its '{split}' split "
                        f"({len(digests)} files; {'; '.join(skipped[:3]) or 'none held out'})")
    order = sorted(rows)
    images = torch.from_numpy(np.stack([rows[d] for d in order]))
    ds = ImageDataset(images=images, name=f"photos-{split}", framing=dict(framing or {}))
    ds.source = {"folder": source.folder.name, "split": split, "test_fraction": source.test_fraction,  # type: ignore[attr-defined]
                 "rule": "SHA-256 of the file; int(first 8 hex digits) % 10000 < test_fraction * 10000: test; "
                         "ordered by the hash",
                 "files": len(digests), "photos": len(order), "skipped": len(skipped),
                 "folder_fingerprint": hashlib.sha256("".join(sorted(digests)).encode()).hexdigest()}
    ds.skipped = skipped  # type: ignore[attr-defined]
    return ds


def add_real_arguments(parser, *, evaluates: bool = False) -> None:
    """`--real DIR` (and `--test-fraction`; with `evaluates`, `--test-real DIR`) on a command that reads photos."""
    parser.add_argument("--real", default=None,
                        help="a folder of your own photos instead of Fashion-MNIST (searched recursively; any format "
                             "and size the service reads, framed as the bundle frames an upload); its train split "
                             "by content hash is what fitting reads")
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                        help="with --real: the share of the folder held out for evaluation, chosen by content hash "
                             "(the same photos whatever their names or order; default %(default)s)")
    if evaluates:
        parser.add_argument("--test-real", default=None,
                            help="a folder of photos to evaluate on, whole (default: the held-out split of --real, "
                                 "else Fashion-MNIST's test split)")


def photos_for(args, *, split: str, resolution: int, channels: int, framing: dict | None,
               progress: bool = True) -> ImageDataset:
    """The photos a command reads: split `split` of `--real` (for 'test', all of `--test-real` when given), else
    Fashion-MNIST's split of `--data` on a canvas of `resolution`."""
    test_real = getattr(args, "test_real", None)
    if split == "test" and test_real:
        source, split = PhotoFolder(Path(test_real), 0.0), "all"
    elif getattr(args, "real", None):
        source = PhotoFolder(Path(args.real), args.test_fraction)
    else:
        return data.load_fashion_mnist(args.data, split=split, canvas=resolution)
    ds = load_photos(source, split=split, resolution=resolution, channels=channels, framing=framing,
                     progress=progress)
    if ds.skipped:
        print(f"{len(ds.skipped)} files of {source.folder} left out, e.g. {ds.skipped[0]}", file=sys.stderr)
    return ds
