import gzip

import numpy as np
import pytest
import torch
from PIL import Image

from gan_inversion.data import (
    DataError,
    fashion_mnist_framing,
    fit_square,
    frame_native,
    load_fashion_mnist,
    load_image_folder,
    prepare_fashion_mnist,
    to_float,
    to_uint8,
)
from gan_inversion.defaults import DEFAULT_DATA


def test_framing_centres_without_stretching():
    img = torch.full((2, 1, 28, 28), 200, dtype=torch.uint8)
    framed = frame_native(img, fashion_mnist_framing(32))
    assert framed.shape == (2, 1, 32, 32)
    assert (framed[..., 2:30, 2:30] == 200).all()
    assert framed[..., :2, :].sum() == 0 and framed[..., :, 30:].sum() == 0
    with pytest.raises(ValueError, match="native 28x28"):
        frame_native(torch.zeros(1, 1, 32, 32, dtype=torch.uint8), fashion_mnist_framing(32))


def test_float_round_trip():
    x = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    assert to_float(x).min() == -1 and to_float(x).max() == 1
    assert torch.equal(to_uint8(to_float(x)), x)


def _write_idx(path, arr: np.ndarray, magic: int):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_prepare_from_debian_layout(tmp_path):
    deb = tmp_path / "deb"
    deb.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(deb / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)), 2051)
        _write_idx(deb / f"{split}-labels-idx1-ubyte.gz", rng.integers(0, 10, (n,)), 2049)
    raw = prepare_fashion_mnist(tmp_path / "data", debian_dir=deb, download=False)
    assert (raw / "train-images-idx3-ubyte").stat().st_size == 16 + 12 * 28 * 28
    ds = load_fashion_mnist(tmp_path / "data", split="test")
    assert ds.images.shape == (5, 1, 32, 32) and ds.labels.shape == (5,)
    assert ds.framing["offset"] == 2 and len(ds.fingerprint()) == 64
    with pytest.raises(DataError, match="make data"):
        prepare_fashion_mnist(tmp_path / "elsewhere", debian_dir=tmp_path / "none", download=False)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist(tmp_path / "data", split="val")


@pytest.mark.skipif(not (DEFAULT_DATA / "FashionMNIST" / "raw").is_dir(), reason="Fashion-MNIST is not prepared "
                    "(`make data` puts it under data/)")
def test_real_fashion_mnist_splits():
    train, test = load_fashion_mnist(DEFAULT_DATA, split="train"), load_fashion_mnist(DEFAULT_DATA, split="test")
    assert len(train) == 60000 and len(test) == 10000
    assert train.images.shape[1:] == (1, 32, 32) and train.images.dtype == torch.uint8
    assert train.images[:, :, :2].max() == 0  # the padding border is black
    assert train.fingerprint() != test.fingerprint()
    assert sorted(train.labels.unique().tolist()) == list(range(10))


def test_image_folder(tmp_path):
    Image.new("RGB", (64, 40), (255, 0, 0)).save(tmp_path / "wide.png")
    Image.new("L", (20, 30), 128).save(tmp_path / "small.jpg")
    rgba = Image.new("RGBA", (16, 16), (0, 255, 0, 0))  # fully transparent -> black background
    rgba.save(tmp_path / "sub_alpha.png")
    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((10, 10), 60000, dtype=np.uint16)).save(tmp_path / "sub" / "deep.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_image_folder(tmp_path, resolution=16, channels=3)
    assert ds.images.shape == (4, 3, 16, 16)
    assert len(ds.skipped) == 1 and "broken.png" in ds.skipped[0]
    gray = load_image_folder(tmp_path, resolution=8, channels=1)
    assert gray.images.shape == (4, 1, 8, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_image_folder(tmp_path / "empty", resolution=8, channels=1)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "missing", resolution=8, channels=1)


def test_fit_square_crops_centre():
    arr = np.zeros((10, 30), dtype=np.uint8)
    arr[:, 10:20] = 255  # a bright centre band
    out = fit_square(arr, 10)
    assert out.shape == (10, 10) and out.min() == 255
    big = np.zeros((64, 96, 3), dtype=np.uint8)
    big[:, 16:80] = 200
    out = fit_square(big, 16)  # 64x96 -> 16x24 by area averaging -> centre 16x16
    assert out.shape == (16, 16, 3) and out.min() == 200


def test_as_files_scores_a_set_as_its_files_would_arrive(tmp_path):
    """A benchmark set presented by `as_files` is what the service's input path makes of the same images saved as
    files of the native size: a generated border is dropped, launderings apply at the file's size."""
    import io as _io

    from detector import laundering
    from detector.imageio import as_files, prepare_image
    from gan_inversion.data import fashion_mnist_framing

    framing = fashion_mnist_framing(32)
    g = torch.Generator().manual_seed(3)
    images = torch.rand(4, 1, 32, 32, generator=g) * 2 - 1  # a generator's output: its border is not black
    for launder in (None, lambda x: laundering.apply(x, "jpeg", 75), lambda x: laundering.apply(x, "blur", 1.0)):
        got = as_files(images, framing, launder=launder)
        for i in range(len(images)):
            native = images[i:i + 1, :, 2:30, 2:30]
            if launder is not None:
                native = launder(native)
            u8 = native.add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8)[0, 0].numpy()
            buf = _io.BytesIO()
            Image.fromarray(u8).save(buf, "PNG")
            served = prepare_image(buf.getvalue(), channels=1, resolution=32, framing=framing).tensor
            torch.testing.assert_close(got[i], served, rtol=0, atol=0)
        assert (got[..., :2, :] == -1).all() and (got[..., :, 30:] == -1).all()  # the canvas is black
    # without native-size framing: laundered and quantised at the model's size
    plain = as_files(images, {"kind": "fit"})
    torch.testing.assert_close(plain, images.add(1).mul(127.5).round().div(127.5).sub(1), rtol=0, atol=1e-6)
