import json

import pytest
import torch

from gan_inversion.checkpoints import BundleError, load_bundle
from gan_inversion.data import ImageDataset
from gan_inversion.training import EpochSampler, TrainConfig, train

from .conftest import TINY_D, TINY_G


@pytest.fixture
def toy_data():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 16, 16), generator=g, dtype=torch.uint8)
    return ImageDataset(images=images, name="toy")


CFG = TrainConfig(batch_size=4, total_kimg=0.024, r1_interval=2, pl_weight=1.0, pl_interval=2,
                  checkpoint_kimg=0.008, tick_kimg=0.004, seed=3)  # 6 steps, checkpoint every 2


def _states(path):
    obj = torch.load(path, weights_only=True)
    return obj


def _assert_same(a, b):
    for key in ("G", "G_ema", "D"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert torch.equal(a["w_avg"], b["w_avg"])
    for opt in ("opt_G", "opt_D"):
        sa, sb = a["train_state"][opt]["state"], b["train_state"][opt]["state"]
        for i in sa:
            for k in sa[i]:
                assert torch.equal(sa[i][k], sb[i][k]), (opt, i, k)
    assert a["train_state"]["step"] == b["train_state"]["step"]
    assert torch.equal(a["train_state"]["pl_mean"], b["train_state"]["pl_mean"])


@pytest.mark.parametrize("stop, step", [(dict(max_steps=3), 3), (dict(max_seconds=0), 1)])
def test_resume_equals_uninterrupted(tmp_path, toy_data, stop, step):
    # A call stopped by a step count, or by a wall-clock budget (0 s is spent by the first step, off the
    # checkpoint schedule), saves a checkpoint; the resumed run ends where an uninterrupted one does.
    full = train(tmp_path / "full", toy_data, G_kwargs=TINY_G, D_kwargs=TINY_D, cfg=CFG, progress=False)
    part = tmp_path / "part"
    train(part, toy_data, G_kwargs=TINY_G, D_kwargs=TINY_D, cfg=CFG, progress=False, **stop)
    assert _states(part / "checkpoint.pt")["train_state"]["step"] == step
    train(part, toy_data, G_kwargs=TINY_G, D_kwargs=TINY_D, cfg=CFG, progress=False)
    _assert_same(_states(full), _states(part / "checkpoint.pt"))


def test_training_outputs(tmp_path, toy_data):
    ckpt = train(tmp_path, toy_data, G_kwargs=TINY_G, D_kwargs=TINY_D, cfg=CFG, progress=False)
    b = load_bundle(ckpt, require_D=True)
    assert b.progress == {"kimg": 0.024, "step": 6}
    assert b.data["fingerprint"] == toy_data.fingerprint()
    assert b.w_avg.abs().sum() > 0  # tracked during training
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all("loss_G" in r and "loss_D" in r and r["img_per_s"] > 0 for r in rows)
    assert any("r1_penalty" in r for r in rows) and any("pl_penalty" in r for r in rows)
    grids = sorted(p.name for p in (tmp_path / "samples").glob("*.png"))
    assert grids  # a sample grid at each checkpoint
    # Training changed the weights away from the initialisation.
    torch.manual_seed(CFG.seed)
    from gan_inversion.networks import Generator

    init = Generator(**TINY_G)
    assert not torch.equal(init.synthesis.const, b.G.synthesis.const)


def test_determinism_across_runs(tmp_path, toy_data):
    a = train(tmp_path / "a", toy_data, G_kwargs=TINY_G, D_kwargs=TINY_D, cfg=CFG, max_steps=2, progress=False)
    b = train(tmp_path / "b", toy_data, G_kwargs=TINY_G, D_kwargs=TINY_D, cfg=CFG, max_steps=2, progress=False)
    sa, sb = _states(a), _states(b)
    assert all(torch.equal(sa["G_ema"][k], sb["G_ema"][k]) for k in sa["G_ema"])


def test_resume_refuses_other_config_or_data(tmp_path, toy_data):
    train(tmp_path, toy_data, G_kwargs=TINY_G, D_kwargs=TINY_D, cfg=CFG, max_steps=1, progress=False)
    other = TrainConfig(**{**CFG.__dict__, "r1_gamma": 1.0})
    with pytest.raises(BundleError, match="different config"):
        train(tmp_path, toy_data, G_kwargs=TINY_G, D_kwargs=TINY_D, cfg=other, progress=False)
    other_data = ImageDataset(images=toy_data.images.flip(0), name="toy")
    with pytest.raises(BundleError, match="other data"):
        train(tmp_path, other_data, G_kwargs=TINY_G, D_kwargs=TINY_D, cfg=CFG, progress=False)


def test_dataset_shape_mismatch(tmp_path, toy_data):
    with pytest.raises(ValueError, match="dataset is"):
        train(tmp_path, toy_data, G_kwargs={**TINY_G, "img_channels": 3}, D_kwargs=TINY_D, cfg=CFG)


def test_epoch_sampler_covers_each_epoch():
    s = EpochSampler(10, 4, seed=0)
    first = torch.cat([s.indices(i) for i in range(5)])  # 20 draws = 2 epochs
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))
    assert torch.equal(EpochSampler(10, 4, seed=0).indices(3), s.indices(3))  # random access, no state
