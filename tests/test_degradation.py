"""Degradation-aware inversion: the differentiable degradations match the laundering, and the search finds
the degradation a generator's own sample went through."""

import pytest
import torch

from detector import laundering
from gan_inversion.data import to_float, to_uint8
from gan_inversion.degradation import Degradation, down_up, gaussian_blur, invert_degraded
from gan_inversion.encoder import InvertConfig, invert


def _images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, 1, 32, 32, generator=g), 2) * 2 - 1  # smooth-ish 16px
    return to_float(to_uint8(x))


@pytest.mark.parametrize("kind,strength,model", [("blur", 1.0, Degradation(blur_sigma=1.0)),
                                                  ("blur", 0.6, Degradation(blur_sigma=0.6)),
                                                  ("resize", 0.5, Degradation(scale=0.5))])
def test_differentiable_degradations_match_the_laundering(kind, strength, model):
    x = _images()
    pil = laundering.apply(x, kind, strength)
    ours = to_float(to_uint8(model(x)))
    err = (ours - pil).abs().mean()
    assert err < 0.5 * (pil - x).abs().mean(), (kind, float(err))  # much closer to Pillow than doing nothing


def test_degradations_are_differentiable_and_shape_preserving():
    x = _images().requires_grad_(True)
    y = Degradation(blur_sigma=0.8, scale=0.5)(x)
    assert y.shape == x.shape
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(Degradation()(x), x)
    assert torch.allclose(gaussian_blur(torch.ones(1, 1, 8, 8), 1.5), torch.ones(1, 1, 8, 8), atol=1e-6)
    assert torch.allclose(down_up(torch.ones(1, 1, 8, 8), 0.5), torch.ones(1, 1, 8, 8), atol=1e-6)
    with pytest.raises(ValueError):
        Degradation(scale=0)


def _own_blurred(G, n=2, sigma=1.2):
    with torch.no_grad():
        x = G(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(7)), noise_mode="const")
    return gaussian_blur(x, sigma)


def test_blur_model_explains_a_blurred_sample_better(G, perc):
    target = _own_blurred(G)
    cfg = InvertConfig(refine_steps=30, space="W+", initial_lr=0.1)
    plain, _ = invert(G, target, encoder=None, perceptual=perc, cfg=cfg)
    modelled, _ = invert(G, target, encoder=None, perceptual=perc, cfg=cfg, degradation=Degradation(blur_sigma=1.2))
    assert (modelled.final_loss < plain.final_loss).all()


class PerfectGuess:
    """An 'encoder' that knows the latents the targets were made from (the search is tested, not the encoder)."""

    def __init__(self, targets, ws):
        self.targets, self.ws = targets, ws

    def __call__(self, x):
        rows = [int((self.targets - img).abs().flatten(1).sum(1).argmin()) for img in x]
        return self.ws[rows] + 0.05  # near, not at, the answer


def test_search_picks_the_degradation_and_is_batch_independent(G, perc):
    with torch.no_grad():
        ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(7)))
        target = gaussian_blur(G.synthesis(ws, noise_mode="const"), 1.2)
    enc = PerfectGuess(target, ws)
    grid = (Degradation(), Degradation(blur_sigma=1.2), Degradation(scale=0.5))
    cfg = InvertConfig(refine_steps=10, space="W+", initial_lr=0.01)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    out = invert_degraded(G, target, encoder=enc, perceptual=perc, cfg=cfg, grid=grid)
    assert [d.blur_sigma for d in out.degradations] == [1.2] * 3
    assert out.losses.shape == (3, 3) and torch.allclose(out.result.final_loss, out.losses.min(dim=1).values)
    assert torch.allclose(out.degraded, gaussian_blur(out.result.images, 1.2), atol=1e-6)
    alone = invert_degraded(G, target[1:2], encoder=enc, perceptual=perc, cfg=cfg, grid=grid)
    assert torch.allclose(alone.losses[0], out.losses[1], atol=1e-5)
    assert all(torch.equal(v, G.state_dict()[k]) for k, v in before.items())  # G never modified


def test_candidates_scored_on_the_guess_whatever_their_grouping(G, perc, monkeypatch):
    """No refinement step: every candidate's loss is what `invert` with 0 steps gives under it, whether the
    candidates share a perceptual pass (a small batch) or go one at a time (a large one)."""
    import gan_inversion.degradation as degradation

    with torch.no_grad():
        ws = G.mapping(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(9)))
        target = gaussian_blur(G.synthesis(ws, noise_mode="const"), 1.0)
    enc = PerfectGuess(target, ws)
    grid = (Degradation(), Degradation(blur_sigma=1.0), Degradation(scale=0.5))
    cfg = InvertConfig(refine_steps=0, space="W+")
    expect = torch.stack([invert(G, target, encoder=None, perceptual=perc, cfg=cfg, degradation=d,
                                 ws_init=enc(target))[0].final_loss for d in grid], dim=1)  # [4, 3]
    for per_pass_images in (64, 4, 1):  # all candidates in one pass; one candidate a pass; one image a pass
        monkeypatch.setattr(degradation, "SCORE_PASS", per_pass_images)
        out = invert_degraded(G, target, encoder=enc, perceptual=perc, cfg=cfg, grid=grid)
        assert torch.allclose(out.losses, expect, atol=1e-5), per_pass_images
        assert [d.blur_sigma for d in out.degradations] == [1.0] * 4
    alone = invert_degraded(G, target[2:3], encoder=enc, perceptual=perc, cfg=cfg, grid=grid)
    assert torch.allclose(alone.losses[0], expect[2], atol=1e-5)


def test_a_guess_is_scored_with_one_pass_of_the_input(G, D, perc, monkeypatch):
    """No refinement step: the input goes through the perceptual net once (its side of every candidate's loss and
    of the features' distance), the candidates in one pass, the chosen reconstruction in one; the features are
    those a fresh comparison gives."""
    from detector.features import FeatureConfig, extract_features

    with torch.no_grad():
        ws = G.mapping(torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(5)))
        target = gaussian_blur(G.synthesis(ws, noise_mode="const"), 1.0)
    passes, stage_features = [], perc.stage_features
    monkeypatch.setattr(perc, "stage_features", lambda x: passes.append(len(x)) or stage_features(x))
    cfg = FeatureConfig(refine_steps=0, space="W+", degradations=((0.0, 1.0), (1.0, 1.0), (0.0, 0.5)))
    fb = extract_features(G, D, PerfectGuess(target, ws), perc, target, cfg=cfg)
    assert passes == [4, 12, 4]  # the input; 3 candidates x 4 images; the chosen reconstructions
    monkeypatch.undo()
    fresh = perc.compare(fb.reconstructions, target)
    col = fb.names.index("perc_total")
    assert torch.allclose(fb.values[:, col].float(), fresh["total"], atol=1e-6)


def test_cheap_search_continues_each_image_under_its_own_degradation(G, perc):
    """search_steps=k: k steps per candidate, then the best per image continues; images in one batch may have
    chosen different degradations, and each one's result is the one it gets alone."""
    with torch.no_grad():
        ws = G.mapping(torch.randn(3, G.z_dim, generator=torch.Generator().manual_seed(11)))
        clean = G.synthesis(ws, noise_mode="const")
    target = torch.cat([gaussian_blur(clean[:1], 1.2), clean[1:2], down_up(clean[2:], 0.5)])
    enc = PerfectGuess(target, ws)
    grid = (Degradation(), Degradation(blur_sigma=1.2), Degradation(scale=0.5))
    cfg = InvertConfig(refine_steps=8, space="W+", initial_lr=0.01)
    out = invert_degraded(G, target, encoder=enc, perceptual=perc, cfg=cfg, grid=grid, search_steps=3)
    assert out.degradations == [grid[1], grid[0], grid[2]]
    assert out.result.loss_history.shape == (8, 3)  # 3 search steps + 5 more for the chosen candidate
    assert (out.result.final_loss <= out.losses.min(dim=1).values + 1e-6).all()  # continuing does not lose
    for i in range(3):
        alone = invert_degraded(G, target[i:i + 1], encoder=enc, perceptual=perc, cfg=cfg, grid=grid,
                                search_steps=3)
        assert alone.degradations == out.degradations[i:i + 1]
        assert torch.allclose(alone.result.ws, out.result.ws[i:i + 1], atol=1e-5)
        assert torch.allclose(alone.degraded, out.degraded[i:i + 1], atol=1e-5)
    with pytest.raises(ValueError, match="search_steps"):
        invert_degraded(G, target, encoder=enc, perceptual=perc, cfg=cfg, grid=grid, search_steps=8)


@pytest.fixture(scope="module")
def aware_detector(tiny_detector, tmp_path_factory):
    """The tiny detector refitted with degradation-aware features (same generator, encoder, perceptual net)."""
    from detector.features import FeatureConfig
    from detector.fitting.classifier import ClassifierConfig
    from detector.fitting.config import DetectorConfig, FitConfig
    from detector.fitting.fit import fit_detector
    from detector.runtime import Detector
    from gan_inversion.data import ImageDataset

    folder, det = tiny_detector
    g = torch.Generator().manual_seed(1)
    reals = ImageDataset(images=torch.randint(0, 256, (64, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")
    out = folder / "aware.json"
    grid = ((0.0, 1.0), (1.0, 1.0), (0.0, 0.5))
    fit_detector(out, G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual, reals=reals, bundle_file="g.pt",
                 encoder_file="e.pt", progress=False,
                     config=DetectorConfig(
                         features=FeatureConfig(refine_steps=2, degradations=grid, search_steps=1),
                         classifier=ClassifierConfig(cv_folds=3, target_fpr=0.05),
                         fit=FitConfig(n_real=48, n_fake=48, batch=24, launder_prob=0.5, real_model=False)))
    return Detector.load(out)


def test_degradation_aware_detector_reports_what_it_estimated(aware_detector, tiny_detector):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((torch.rand(16, 16, generator=torch.Generator().manual_seed(2)) * 255).byte().numpy()).save(
        buf, "PNG")
    r = aware_detector.score(buf.getvalue(), explain=True)
    assert r.degradation in ({"blur_sigma": 0.0, "scale": 1.0}, {"blur_sigma": 1.0, "scale": 1.0},
                             {"blur_sigma": 0.0, "scale": 0.5})
    assert {"deg_blur_sigma", "deg_scale", "deg_gain"} <= set(r.features) and r.features["deg_gain"] >= 0
    assert r.features["deg_blur_sigma"] == r.degradation["blur_sigma"]
    assert r.to_dict()["degradation"] == r.degradation and aware_detector.info["degradations"] == [
        [0.0, 1.0], [1.0, 1.0], [0.0, 0.5]]
    plain = tiny_detector[1].score(buf.getvalue())  # a detector fitted without: nothing changes for it
    assert plain.degradation is None and "degradation" not in plain.to_dict() and "deg_gain" not in plain.features


def test_degradation_reported_by_the_api(aware_detector, tmp_path):
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.settings import Settings

    g = torch.Generator().manual_seed(3)
    x = gaussian_blur(torch.rand(1, 1, 16, 16, generator=g) * 2 - 1, 1.0)
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(x)[0, 0].numpy()).save(buf, "PNG")
    with TestClient(create_app(Settings(torch_threads=1), loader=lambda _: aware_detector)) as c:
        r = c.post("/v1/detect?explain=true", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert set(r.json()["degradation"]) == {"blur_sigma", "scale"} and "reconstruction" in r.json()["evidence"]
