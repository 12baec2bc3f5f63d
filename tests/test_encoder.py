import pytest
import torch

from gan_inversion.checkpoints import BundleError
from gan_inversion.data import ImageDataset
from gan_inversion.encoder import (
    EncoderTrainConfig,
    InvertConfig,
    encoder_for,
    invert,
    load_encoder,
    train_encoder,
    weights_fingerprint,
)

from .conftest import TINY_G, make_G


@pytest.fixture(scope="module")
def G():
    return make_G(seed=0)


@pytest.fixture(scope="module")
def reals():
    g = torch.Generator().manual_seed(0)
    return ImageDataset(images=torch.randint(0, 256, (32, 1, 16, 16), generator=g, dtype=torch.uint8), name="toy")


CFG = EncoderTrainConfig(steps=30, batch_fake=4, batch_real=4, lr=2e-3, checkpoint_every=10)


def test_encoder_starts_at_w_avg_and_is_per_image(G):
    E = encoder_for(G).eval()
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    ws = E(x)
    assert ws.shape == (3, G.num_ws, G.w_dim)
    assert torch.allclose(ws, G.w_avg.expand_as(ws))
    torch.nn.init.normal_(E.out.weight, std=0.1)
    assert torch.allclose(E(x)[1:2], E(x[1:2]), atol=1e-6)
    with pytest.raises(ValueError, match="encoder expects"):
        E(torch.zeros(1, 3, 16, 16))


def test_training_learns_and_resumes(tmp_path, G, reals, perc):
    full = train_encoder(tmp_path / "full.pt", G, reals, perceptual=perc, cfg=CFG, progress=False)
    E, info = load_encoder(full, G=G)
    assert info["step"] == 30 and info["perceptual"] == perc.backend_id
    # Trained codes of generator samples are closer to their true latents than w_avg is.
    with torch.no_grad():
        ws = G.mapping(torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(9)))
        img = G.synthesis(ws)
        err_trained = (E(img) - ws).square().mean()
        err_avg = (G.w_avg - ws).square().mean()
    assert err_trained < err_avg
    part = tmp_path / "part.pt"
    train_encoder(part, G, reals, perceptual=perc, cfg=CFG, max_steps=10, progress=False)
    train_encoder(part, G, reals, perceptual=perc, cfg=CFG, progress=False)
    a, b = torch.load(full, weights_only=True), torch.load(part, weights_only=True)
    assert all(torch.allclose(a["state_dict"][k], b["state_dict"][k], atol=1e-6) for k in a["state_dict"])


def test_encoder_time_budget_saves_resumable_state(tmp_path, G, reals, perc):
    path = train_encoder(tmp_path / "e.pt", G, reals, perceptual=perc, cfg=CFG, max_seconds=0, progress=False)
    obj = torch.load(path, weights_only=True)
    assert obj["step"] == 1 and "opt" in obj  # unfinished: optimizer state kept for the resume
    train_encoder(path, G, reals, perceptual=perc, cfg=CFG, progress=False)
    assert torch.load(path, weights_only=True)["step"] == CFG.steps


def test_init_from_an_encoder_of_another_generator(tmp_path, G, reals, perc):
    old = train_encoder(tmp_path / "old.pt", G, reals, perceptual=perc, cfg=CFG, progress=False)
    G2 = make_G(seed=1)  # same shape, other weights (a later snapshot, say)
    cfg = EncoderTrainConfig(steps=1, batch_fake=4, batch_real=4, lr=0.0, checkpoint_every=10)
    new = train_encoder(tmp_path / "new.pt", G2, reals, perceptual=perc, cfg=cfg, init_from=old, progress=False)
    E_old, _ = load_encoder(old)
    E_new, info = load_encoder(new, G=G2)
    assert info["init_from"]["generator_fingerprint"] == weights_fingerprint(G)
    assert info["init_from"]["steps"] == CFG.steps
    # lr 0: the weights are the old encoder's, the offsets now start from G2's w_avg.
    assert torch.allclose(E_new.w_avg, G2.w_avg.float().half().float(), atol=1e-3)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(E_new(x) - E_new.w_avg, E_old(x) - E_old.w_avg, atol=2e-2)
    G3 = make_G(seed=0, w_dim=2 * TINY_G["w_dim"])
    with pytest.raises(BundleError, match="does not fit"):
        train_encoder(tmp_path / "x.pt", G3, reals, perceptual=perc, cfg=cfg, init_from=old, progress=False)


def test_encoder_refuses_other_generator(tmp_path, G, reals, perc):
    path = train_encoder(tmp_path / "e.pt", G, reals, perceptual=perc, cfg=CFG, max_steps=1, progress=False)
    other = make_G(seed=5)
    assert weights_fingerprint(other) != weights_fingerprint(G)
    with pytest.raises(BundleError, match="another generator"):
        load_encoder(path, G=other)
    with pytest.raises(BundleError, match="another generator"):
        train_encoder(path, other, reals, perceptual=perc, cfg=CFG, progress=False)


def test_hybrid_inversion_improves_on_encoder(G, perc):
    E = encoder_for(G).eval()
    with torch.no_grad():
        target = G(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(3)))
    cfg = InvertConfig(refine_steps=20, space="W+")
    res, ws0 = invert(G, target, encoder=E, perceptual=perc, cfg=cfg)
    assert torch.allclose(ws0, G.w_avg.expand_as(ws0))
    assert (res.final_loss < res.loss_history[0]).all()
    res0, _ = invert(G, target, encoder=E, perceptual=perc, cfg=InvertConfig(refine_steps=0))
    assert torch.allclose(res0.ws, ws0)
    err = lambda r: (r.images - target).square().mean(dim=[1, 2, 3])  # noqa: E731
    assert (err(res) < err(res0)).all()  # the refinement brings the reconstruction closer than the guess
