import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detector.cli import main
from detector.features import extract_features, is_finite
from detector.fitting.evaluate import binary_metrics
from detector.imageio import ImageDecodeError, prepare_image
from detector.runtime import Detector, DetectorError
from gan_inversion.data import to_uint8
from gan_inversion.perceptual import build_perceptual

from .conftest import TINY_FRAMING

FRAMING = TINY_FRAMING


def _png(arr, mode=None, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    (Image.fromarray(arr) if mode is None else Image.fromarray(arr).convert(mode)).save(buf, format=fmt, **kw)
    return buf.getvalue()


# ---------------------------------------------------------------- decoding

@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF"])
def test_every_format_decodes(fmt):
    arr = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
    p = prepare_image(_png(arr, fmt=fmt), channels=1, resolution=16)
    assert p.tensor.shape == (1, 16, 16) and p.format == fmt and p.framing == "fit"
    assert -1 <= p.tensor.min() and p.tensor.max() <= 1


def test_modes_and_channels():
    rgb = np.zeros((20, 20, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    assert prepare_image(_png(rgb), channels=3, resolution=16).tensor.shape == (3, 16, 16)
    red = prepare_image(_png(rgb), channels=1, resolution=16)
    assert red.colourfulness > 100 and red.tensor.shape == (1, 16, 16)
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[..., :3] = 255  # white but fully transparent -> black
    assert prepare_image(_png(rgba), channels=1, resolution=16).tensor.max() == -1
    pal = _png(np.full((20, 20), 200, dtype=np.uint8), mode="P")
    assert prepare_image(pal, channels=1, resolution=16).tensor.mean() > 0.5
    deep = Image.fromarray(np.full((20, 20), 65535, dtype=np.uint16))
    buf = io.BytesIO()
    deep.save(buf, format="PNG")
    assert torch.allclose(prepare_image(buf.getvalue(), channels=1, resolution=16).tensor, torch.ones(1, 16, 16))


def test_native_size_is_framed_not_stretched():
    p = prepare_image(_png(np.full((12, 12), 255, dtype=np.uint8)), channels=1, resolution=16, framing=FRAMING)
    assert p.framing == "native-pad"
    assert (p.tensor[0, 2:14, 2:14] == 1).all() and (p.tensor[0, :2] == -1).all()


def test_exif_orientation_applied():
    arr = np.zeros((10, 20), dtype=np.uint8)
    arr[:, :10] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    p = prepare_image(buf.getvalue(), channels=1, resolution=10)
    assert p.original_size == (10, 20)  # width, height after rotation
    assert p.tensor[0, :4].mean() > 0.5 and p.tensor[0, -4:].mean() < -0.5  # white half now on top


def test_gif_first_frame():
    frames = [Image.fromarray(np.full((8, 8), v, dtype=np.uint8)) for v in (255, 0)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert prepare_image(buf.getvalue(), channels=1, resolution=8).tensor.mean() > 0.9


@pytest.mark.parametrize("data,kind", [
    (b"", "empty"),
    (b"hello, I am text", "unsupported"),
    (b"%PDF-1.4 not really", "unsupported"),
])
def test_bad_inputs(data, kind):
    with pytest.raises(ImageDecodeError) as e:
        prepare_image(data, channels=1, resolution=16, source="upload.bin")
    assert e.value.kind == kind and "upload.bin" in str(e.value)


def test_truncated_bomb_missing_and_ico(tmp_path):
    png = _png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(ImageDecodeError) as e:
        prepare_image(png[: len(png) // 2], channels=1, resolution=16)
    assert e.value.kind == "corrupt"
    with pytest.raises(ImageDecodeError) as e:
        prepare_image(png, channels=1, resolution=16, max_pixels=1000)
    assert e.value.kind == "too_large" and "4096" in str(e.value)
    with pytest.raises(ImageDecodeError) as e:
        prepare_image(tmp_path / "missing.png", channels=1, resolution=16)
    assert e.value.kind == "unreadable" and "missing.png" in str(e.value)
    buf = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buf, format="ICO")
    with pytest.raises(ImageDecodeError, match="unsupported image format ICO"):
        prepare_image(buf.getvalue(), channels=1, resolution=16)


# ---------------------------------------------------------------- features and scoring

def test_features_complete_finite_and_batch_independent(tiny_detector):
    _, det = tiny_detector
    x = det.G(torch.randn(3, det.G.z_dim, generator=torch.Generator().manual_seed(1))).clamp(-1, 1)
    fb = extract_features(det.G, det.D, det.encoder, det.perceptual, x, cfg=det.feature_cfg, explain=True)
    assert fb.values.shape == (3, len(fb.names)) and len(set(fb.names)) == len(fb.names)
    assert fb.names == det.classifier.feature_names and is_finite(fb.values)
    for prefix in ("pix_", "psnr", "perc_stage", "d_logit", "d_b16_", "w_dist", "enc_shift", "loss_drop"):
        assert any(n.startswith(prefix) for n in fb.names), prefix
    alone = extract_features(det.G, det.D, det.encoder, det.perceptual, x[1:2], cfg=det.feature_cfg)
    assert torch.allclose(alone.values[0], fb.values[1], rtol=1e-4, atol=1e-5)
    assert fb.pixel_map.shape == (3, 1, 16, 16) and fb.perceptual_map.shape == (3, 1, 16, 16)


def test_score_result_and_evidence(tiny_detector):
    _, det = tiny_detector
    fake = to_uint8(det.G(torch.randn(1, det.G.z_dim))[0]).numpy()[0]
    r = det.score(_png(fake), explain=True, source="fake.png")
    assert 0 <= r.p_fake <= 1 and r.verdict in ("real", "fake") and r.threshold == det.threshold
    assert r.model_id == det.model_id and set(r.features) == set(det.classifier.feature_names)
    assert {"decode", "encode", "refine", "features", "classify", "total"} <= set(r.timings_ms)
    for name in ("input", "reconstruction", "pixel_heatmap", "perceptual_heatmap"):
        img = Image.open(io.BytesIO(r.evidence[name]))
        assert img.size == (64, 64)
    d = r.to_dict()
    json.dumps(d)
    assert d["source"] == "fake.png"


def test_reload_gives_identical_scores(tiny_detector):
    path, det = tiny_detector
    again = Detector.load(path / "det.json")
    img = _png(np.random.default_rng(3).integers(0, 255, (16, 16), dtype=np.uint8))
    assert det.score(img).p_fake == again.score(img).p_fake


def test_out_of_domain_warning(tiny_detector):
    _, det = tiny_detector
    rgb = np.random.default_rng(4).integers(0, 255, (40, 40, 3), dtype=np.uint8)
    r = det.score(_png(rgb))
    assert any("colour image" in w for w in r.warnings)
    assert r.verdict == "uncertain"  # out of the fitted domain: no confident answer
    assert any("resized from 40x40" in w for w in r.warnings)


def test_verdict_policy():
    from detector.runtime import VerdictPolicy

    ood = ["out of domain: a colour image (colourfulness 40.0) given to a grayscale model; ..."]
    assert VerdictPolicy().verdict(0.99, 0.5, ood) == "uncertain"
    assert VerdictPolicy(out_of_domain=False).verdict(0.99, 0.5, ood) == "fake"
    assert VerdictPolicy().verdict(0.99, 0.5, ["resized from 40x40"]) == "fake"
    unstable = ["unstable: the verdict flips under mild re-degradation (jpeg 90)"]
    assert VerdictPolicy(out_of_domain=False, stability_checks=1).verdict(0.99, 0.5, unstable) == "uncertain"
    band = VerdictPolicy(margin=0.5)  # logit band: 0.5 -> 0; 0.6 -> 0.405 (inside); 0.7 -> 0.847 (outside)
    assert [band.verdict(p, 0.5, []) for p in (0.3, 0.45, 0.5, 0.6, 0.7)] == [
        "real", "uncertain", "uncertain", "uncertain", "fake"]
    p = np.random.default_rng(0).random(1000)  # abstaining never makes a photo 'fake' that was 'real'
    assert all(band.verdict(x, 0.8, []) != "fake" for x in p[p <= 0.8])


def test_backend_mismatch_is_an_error(tiny_detector):
    path, _ = tiny_detector
    with pytest.raises(DetectorError, match="fitted with perceptual backend mobilenet_v2-random@32"):
        Detector.load(path / "det.json", perceptual=build_perceptual("mobilenet_v2-random", input_size=64))
    spec = json.loads((path / "det.json").read_text())
    spec["bundle"]["generator_fingerprint"] = "0" * 64
    (path / "other.json").write_text(json.dumps(spec))
    with pytest.raises(DetectorError, match="another generator"):
        Detector.load(path / "other.json")
    (path / "junk.json").write_text("{not json")
    with pytest.raises(DetectorError, match="not a readable detector"):
        Detector.load(path / "junk.json")


def test_swapped_encoder_is_refused(tiny_detector, tmp_path):
    import shutil

    from gan_inversion.checkpoints import atomic_save, read_checkpoint

    path, _ = tiny_detector
    for name in ("g.pt", "det.json"):
        shutil.copy(path / name, tmp_path / name)
    enc = read_checkpoint(path / "e.pt")
    key = next(k for k, v in enc["state_dict"].items() if v.is_floating_point())
    enc["state_dict"][key] = enc["state_dict"][key] + 0.01  # same generator, same architecture, other weights
    atomic_save(enc, tmp_path / "e.pt")
    with pytest.raises(DetectorError, match="another encoder than e.pt"):
        Detector.load(tmp_path / "det.json")
    spec = json.loads((tmp_path / "det.json").read_text())
    del spec["encoder"]["fingerprint"]
    (tmp_path / "det.json").write_text(json.dumps(spec))
    with pytest.raises(DetectorError, match="no fingerprint for its encoder"):
        Detector.load(tmp_path / "det.json")


def test_feature_cache_hits_and_misses(tiny_detector, tmp_path, monkeypatch):
    from detector.features import cache as fit
    from detector.fitting.images import quantize

    path, det = tiny_detector
    # the fixture fitted 96 photos and 96 samples in batches of 24, then 24 unused reference photos, their
    # laundered copies and their chained copies
    n_batches = 2 * (96 // 24) + 3
    assert len(list((path / "cache").glob("*.npz"))) == n_batches and not list((path / "cache").glob("*.tmp"))
    x = quantize(torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    kw = dict(G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual, feature_cfg=det.feature_cfg,
              batch=3, progress=False)
    first, names = fit.features_for(x, cache=fit.FeatureCache(tmp_path, {"ctx": 1}), **kw)

    def miss(*a, **k):
        raise AssertionError("features recomputed")

    monkeypatch.setattr(fit, "extract_features", miss)
    again, names2 = fit.features_for(x, cache=fit.FeatureCache(tmp_path, {"ctx": 1}), **kw)  # a hit
    np.testing.assert_array_equal(first, again)
    assert names2 == names
    with pytest.raises(AssertionError, match="recomputed"):  # another context (model, settings): a miss
        fit.features_for(x, cache=fit.FeatureCache(tmp_path, {"ctx": 2}), **kw)
    with pytest.raises(AssertionError, match="recomputed"):  # other pixels: a miss
        fit.features_for(quantize(x.flip(-1)), cache=fit.FeatureCache(tmp_path, {"ctx": 1}), **kw)


def test_binary_metrics():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    m = binary_metrics(y, p, threshold=0.5)
    assert m["auc"] == pytest.approx(15 / 16) and m["accuracy"] == 0.75
    assert 0 <= m["eer"] <= 0.5 and 0 <= m["ece"] <= 1


def test_cli_detect(tiny_detector, tmp_path, capsys):
    path, _ = tiny_detector
    good = tmp_path / "a.png"
    good.write_bytes(_png(np.full((16, 16), 90, dtype=np.uint8)))
    bad = tmp_path / "b.png"
    bad.write_bytes(b"garbage")
    rc = main(["detect", str(good), str(bad), "--detector", str(path / "det.json"), "--json",
               "--explain", str(tmp_path / "ev"), "--device", "cpu"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rc == 1  # one file failed
    assert 0 <= lines[0]["p_fake"] <= 1 and len(lines[0]["evidence"]) == 5  # with the 2D latent plot
    assert lines[0]["evidence"][-1].endswith("a_latent_2d.png")
    assert lines[1]["error"] == "unsupported" and "b.png" in lines[1]["message"]
    assert (tmp_path / "ev" / "a_reconstruction.png").exists()
    rc = main(["detect", str(good), "--detector", str(path / "det.json"), "--device", "cpu"])
    assert rc == 0 and "p_fake=" in capsys.readouterr().out


def test_stability_checks_make_a_flipping_verdict_uncertain(tiny_detector, monkeypatch):
    import detector.runtime.pipeline as scoring
    from detector.runtime import VerdictPolicy

    _, det = tiny_detector
    img = _png(np.random.default_rng(5).integers(0, 255, (16, 16), dtype=np.uint8))
    from detector.components.evidence import Evidence

    calls = {"features": 0, "proba": 0}
    real_extract = scoring.extract_features

    def counting_extract(*a, **k):
        calls["features"] += 1
        return real_extract(*a, **k)

    # the input scores far over the threshold; every copy far under it
    def proba(X, images, appearance=None, artifacts=None):
        calls["proba"] += 1
        p = np.full(len(X), 0.999 if calls["proba"] == 1 else 0.0)
        return Evidence(p_fake=p, q={"generator": 1 - p, "photos": np.ones(len(X))})

    monkeypatch.setattr(scoring, "extract_features", counting_extract)
    monkeypatch.setattr(det, "policy", VerdictPolicy(stability_checks=3))
    monkeypatch.setattr(det, "probabilities", proba)
    r = det.score(img)
    assert calls["features"] == 4 and r.verdict == "uncertain" and r.p_fake == 0.999
    assert any(w.startswith("unstable") and "jpeg 90" in w and "resize 0.9" in w for w in r.warnings)
    monkeypatch.undo()
    monkeypatch.setattr(scoring, "extract_features", counting_extract)
    calls["features"] = 0
    monkeypatch.setattr(det, "policy", VerdictPolicy())  # off by default: one inversion, no such warning
    r = det.score(img)
    assert calls["features"] == 1 and not any(w.startswith("unstable") for w in r.warnings)


def test_the_cache_key_covers_every_network_the_features_read(tiny_detector):
    import copy

    from detector.features import FeatureNets, feature_context

    _, det = tiny_detector
    nets = FeatureNets(G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual, feature_cfg=det.feature_cfg)
    base = feature_context(nets)
    assert base == det.feature_context()
    D2 = copy.deepcopy(det.D)
    with torch.no_grad():
        next(D2.parameters()).add_(1e-3)
    other = feature_context(FeatureNets(G=det.G, D=D2, encoder=det.encoder, perceptual=det.perceptual,
                                        feature_cfg=det.feature_cfg))
    assert other != base and other["D"] != base["D"] and other["G"] == base["G"]  # a new D misses the cache
    G2 = copy.deepcopy(det.G)
    with torch.no_grad():
        next(G2.parameters()).add_(1e-3)
    assert feature_context(FeatureNets(G=G2, D=det.D, encoder=det.encoder, perceptual=det.perceptual,
                                       feature_cfg=det.feature_cfg))["G"] != base["G"]


def test_cli_detect_in_batches_answers_as_one_at_a_time(tiny_detector, tmp_path, capsys):
    path, _ = tiny_detector
    rng = np.random.default_rng(21)
    files = []
    for i in range(5):
        f = tmp_path / f"img{i}.png"
        f.write_bytes(_png(rng.integers(0, 255, (16, 16), dtype=np.uint8)))
        files.append(str(f))
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    order = files[:2] + [str(bad)] + files[2:]
    out = {}
    for batch in ("1", "2", "16"):
        rc = main(["detect", *order, "--detector", str(path / "det.json"), "--json", "--batch", batch,
                   "--device", "cpu"])
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert rc == 1 and [d["source"].rsplit("/", 1)[-1] for d in lines] == [Path(p).name for p in order]
        out[batch] = lines
    for one, two, many in zip(out["1"], out["2"], out["16"], strict=True):
        if "error" in one:
            assert one == two == many
            continue
        assert one["verdict"] == two["verdict"] == many["verdict"]
        for other in (two, many):  # float rounding through the refinement differs with the batch, nothing more
            assert other["p_fake"] == pytest.approx(one["p_fake"], rel=1e-4, abs=1e-6)
