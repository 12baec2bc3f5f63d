import torch

from detector import laundering


def _img(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (2, 1, 32, 32), generator=g).float() / 127.5 - 1)


def test_each_laundering_changes_images_and_keeps_shape():
    x = _img()
    for kind, strength in (("jpeg", 50), ("blur", 1.0), ("resize", 0.5), ("noise", 0.02)):
        y = laundering.apply(x, kind, strength)
        assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
        assert (y - x).abs().mean() > 0.005, kind
    assert torch.equal(laundering.apply(x, "noise", 0.02), laundering.apply(x, "noise", 0.02))  # reproducible


def test_stronger_is_further():
    x = _img(1)
    d = lambda y: (y - x).abs().mean()  # noqa: E731
    assert d(laundering.apply(x, "jpeg", 50)) > d(laundering.apply(x, "jpeg", 95))
    assert d(laundering.apply(x, "blur", 1.0)) > d(laundering.apply(x, "blur", 0.3))


def test_random_launder_reports_what_it_did():
    x = torch.cat([_img(i) for i in range(10)])
    y, what = laundering.random_launder(x, prob=0.5, generator=torch.Generator().manual_seed(0))
    assert len(what) == 20 and "clean" in what and any(w != "clean" for w in what)
    for img_in, img_out, w in zip(x, y, what, strict=True):
        assert torch.equal(img_in, img_out) == (w == "clean")


def test_random_launder_takes_other_ranges_and_is_reproducible():
    x = torch.cat([_img(i) for i in range(10)])
    ranges = laundering.REFERENCE_RANGES
    y1, what = laundering.random_launder(x, prob=1.0, generator=torch.Generator().manual_seed(1), ranges=ranges)
    y2, _ = laundering.random_launder(x, prob=1.0, generator=torch.Generator().manual_seed(1), ranges=ranges)
    assert torch.equal(y1, y2)  # noise draws included
    assert "clean" not in what and {w.split(":")[0] for w in what} <= set(ranges)
    for w in what:
        kind, strength = w.split(":")
        lo, hi = ranges[kind]
        assert lo <= float(strength) <= hi
    only_noise, what = laundering.random_launder(x, prob=1.0, generator=torch.Generator().manual_seed(2),
                                                 ranges={"noise": (0.02, 0.02)})
    assert all(w == "noise:0.02" for w in what) and not torch.equal(only_noise, x)
