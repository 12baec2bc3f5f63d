"""Photos from a folder (gan_inversion/photos.py): decoded as the service decodes an upload, split by content
hash so that names and order do not matter, identical files once, refusals that name the problem."""

import io
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from detector.imageio import prepare_image
from gan_inversion.data import DataError, fashion_mnist_framing
from gan_inversion.photos import PhotoFolder, in_test, load_photos

PAD = fashion_mnist_framing(32)


def _png(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def folder(tmp_path):
    """60 photos: grayscale 28x28 (the native size), colour 40x30 and grayscale 50x50 JPEGs, one duplicate, one
    file that is not an image, in nested folders."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    for i in range(40):
        (root / f"g{i:02d}.png").write_bytes(_png(rng.integers(0, 256, (28, 28), dtype=np.uint8)))
    for i in range(10):
        (root / "a" / f"c{i}.png").write_bytes(_png(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)))
    for i in range(10):
        (root / "a" / "b" / f"j{i}.jpg").write_bytes(_png(rng.integers(0, 256, (50, 50), dtype=np.uint8), "JPEG"))
    shutil.copy(root / "g00.png", root / "a" / "copy_of_g00.png")
    (root / "notes.png").write_bytes(b"not an image at all")
    return root


def as_bytes(t: torch.Tensor) -> bytes:
    """A model input in [-1, 1] as the uint8 bytes it came from."""
    return t.add(1).mul(127.5).round().to(torch.uint8).numpy().tobytes()


def _load(root, split, **kw):
    return load_photos(PhotoFolder(root, **kw), split=split, resolution=32, channels=1, framing=PAD, progress=False)


def test_split_by_content_disjoint_complete_and_independent_of_names(folder, tmp_path):
    train, test = _load(folder, "train", test_fraction=0.3), _load(folder, "test", test_fraction=0.3)
    every = _load(folder, "all", test_fraction=0.3)
    assert len(every) == 60 and len(train) + len(test) == 60  # 61 image files, one a duplicate; one unreadable
    assert 5 <= len(test) <= 35 and train.source["folder_fingerprint"] == test.source["folder_fingerprint"]
    assert {t.numpy().tobytes() for t in train.images}.isdisjoint({t.numpy().tobytes() for t in test.images})
    assert any("notes.png" in s and "not a readable image" in s for s in train.skipped + test.skipped)
    # the same photos under other names, in another order: the same datasets, the same fingerprints
    moved = tmp_path / "moved"
    moved.mkdir()
    for k, p in enumerate(sorted(folder.rglob("*.*"), reverse=True)):
        shutil.copy(p, moved / f"{k:03d}{p.suffix}")
    again = _load(moved, "train", test_fraction=0.3)
    assert again.fingerprint() == train.fingerprint() and torch.equal(again.images, train.images)
    # and another held-out share moves photos one way only: the new test split holds the old one
    more = _load(folder, "test", test_fraction=0.5)
    assert {t.numpy().tobytes() for t in test.images} <= {t.numpy().tobytes() for t in more.images}


def test_photos_are_framed_as_the_service_frames_an_upload(folder):
    every = _load(folder, "all")
    expected = set()
    for p in sorted(folder.rglob("*.*")):
        if p.name != "notes.png":
            t = prepare_image(p, channels=1, resolution=32, framing=PAD).tensor
            expected.add(as_bytes(t))
    assert {t.numpy().tobytes() for t in every.images} == expected
    colour = load_photos(PhotoFolder(folder), split="all", resolution=16, channels=3, framing=None, progress=False)
    assert colour.images.shape[1:] == (3, 16, 16)
    one = next(folder.glob("a/c*.png"))
    t = prepare_image(one, channels=3, resolution=16, framing=None).tensor
    assert as_bytes(t) in {x.numpy().tobytes() for x in colour.images}


def test_refusals_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        _load(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        _load(tmp_path / "empty", "train")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="no usable photo"):
        _load(tmp_path / "bad", "all")
    with pytest.raises(ValueError, match="split"):
        _load(tmp_path / "bad", "val")


def test_in_test_is_the_documented_rule():
    assert in_test("00000000" + "f" * 56, 0.1) and not in_test("000003e8" + "0" * 56, 0.1)  # 0 and 1000 of 10,000
