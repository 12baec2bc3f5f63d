import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.baselines import CNNBaseline, SpectrumBaseline, feature_baselines, radial_spectrum
from benchmarks.generators import VAE, DCGANGenerator


def _sharp_and_smooth(n=40, seed=0, size=32):
    """n noise images and the same images smoothed (down x4, up again), [n, 1, size, size] each."""
    g = torch.Generator().manual_seed(seed)
    sharp = torch.rand(n, 1, size, size, generator=g) * 2 - 1
    smooth = F.interpolate(F.interpolate(sharp, scale_factor=0.25, mode="bilinear"), size=size, mode="bilinear")
    return sharp, smooth


def test_radial_spectrum_sees_missing_high_frequencies():
    sharp, smooth = _sharp_and_smooth()
    a, b = radial_spectrum(sharp), radial_spectrum(smooth)
    assert a.shape == (40, 17)
    assert (a[:, -4:].mean() - b[:, -4:].mean()) > 2  # log power: smooth images lack the high band


def test_spectrum_and_cnn_baselines_learn_a_separable_task():
    sharp, smooth = _sharp_and_smooth(seed=1)
    ts, tm = _sharp_and_smooth(seed=2)
    spec = SpectrumBaseline().fit(sharp, smooth)
    s = spec.score(torch.cat([ts, tm]))
    assert s[40:].min() > s[:40].max()  # held-out images perfectly ranked
    assert spec.C in np.logspace(-4, 2, 7)  # chosen by CV
    cnn = CNNBaseline(max_epochs=6, min_epochs=2, patience=2, batch=16, augment_prob=0.0).fit(sharp, smooth,
                                                                                           progress=False)
    c = cnn.score(torch.cat([ts, tm]))
    assert c.shape == (80,) and c[40:].mean() > c[:40].mean()
    # The best epoch's weights are kept, and training stops once `patience` epochs bring no better val AUC
    # (never before min_epochs).
    aucs = [h[2] for h in cnn.history]
    assert cnn.val_auc == max(aucs) and cnn.history[cnn.best_epoch - 1][2] == cnn.val_auc
    assert len(aucs) == 6 or (len(aucs) - cnn.best_epoch == 2)


def test_linear_probe_learns_a_separable_task(perc):
    from benchmarks.baselines import LinearProbeBaseline

    sharp, smooth = _sharp_and_smooth(seed=1)
    ts, tm = _sharp_and_smooth(seed=2)
    probe = LinearProbeBaseline(backbone=perc).fit(sharp, smooth)  # random-weight backbone in the tests
    s = probe.score(torch.cat([ts, tm]))
    assert s.shape == (80,) and s[40:].min() > s[:40].max()


def test_feature_baselines_pick_columns():
    X = np.arange(12, dtype=float).reshape(3, 4)
    out = feature_baselines(X, ["a", "pix_mse", "b", "perc_total"])
    assert list(out["pixel_mse"]) == [-1, -5, -9] and list(out["perceptual"]) == [-3, -7, -11]


def test_benchmark_generator_shapes():
    assert DCGANGenerator()(torch.randn(2, 64)).shape == (2, 1, 32, 32)
    vae = VAE()
    rec, mu, logvar = vae(torch.rand(2, 1, 32, 32) * 2 - 1)
    assert rec.shape == (2, 1, 32, 32) and mu.shape == (2, 32) and vae.decode(mu).shape == (2, 1, 32, 32)
