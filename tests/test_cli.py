import numpy as np
import pytest
import torch
from PIL import Image

from detector.cli import main
from gan_inversion.checkpoints import load_bundle, save_bundle

from .conftest import make_D, make_G
from .rosinality_ref import make_rosinality_state


@pytest.fixture
def tiny_bundle(tmp_path):
    path = tmp_path / "tiny.pt"
    save_bundle(path, G_ema=make_G(), D=make_D())
    return path


def test_sample_grid_and_folder(tiny_bundle, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert main(["sample", "--bundle", str(tiny_bundle), "--n", "9", "--out", str(grid), "--device", "cpu"]) == 0
    img = np.asarray(Image.open(grid))
    assert img.shape == (3 * 16 + 4 * 2, 3 * 16 + 4 * 2)  # 3x3 grid of 16px with 2px gutters
    assert "grid of 9 samples" in capsys.readouterr().out
    out = tmp_path / "singles"
    assert main(["sample", "--bundle", str(tiny_bundle), "--n", "3", "--out", str(out), "--seed", "7",
                 "--psi", "0.5", "--device", "cpu"]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 3 and Image.open(files[0]).size == (16, 16)
    # Same seed, same images; other seed, other images.
    again = tmp_path / "again"
    main(["sample", "--bundle", str(tiny_bundle), "--n", "3", "--out", str(again), "--seed", "7", "--psi", "0.5",
          "--device", "cpu"])
    assert np.array_equal(np.asarray(Image.open(files[0])), np.asarray(Image.open(sorted(again.glob("*.png"))[0])))


def test_missing_bundle_is_a_clear_error(tmp_path, capsys):
    assert main(["sample", "--bundle", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_convert_and_export(tmp_path, capsys):
    g, d = make_rosinality_state(16, style_dim=8, n_mlp=2, base=64, cmax=8)
    torch.save({"g_ema": g, "d": d}, tmp_path / "ros.pt")
    assert main(["convert", str(tmp_path / "ros.pt"), str(tmp_path / "conv.pt")]) == 0
    assert "16x16x3" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "conv.pt"), str(tmp_path / "half.pt"), "--half"]) == 0
    b = load_bundle(tmp_path / "half.pt")
    assert b.D is not None and b.meta["source"] == "rosinality/stylegan2-pytorch"
    assert main(["convert", str(tmp_path / "half.pt"), str(tmp_path / "again.pt")]) == 2  # not rosinality
    assert "no 'g_ema'" in capsys.readouterr().err


def test_train_resume_from_a_copied_checkpoint(tmp_path, monkeypatch):
    """`--resume-from` seeds an empty run folder from a checkpoint kept elsewhere (e.g. committed)."""
    from gan_inversion.data import ImageDataset
    from gan_inversion.presets import PRESETS

    images = torch.randint(0, 256, (16, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    monkeypatch.setattr("gan_inversion.data.load_fashion_mnist",
                        lambda *a, **k: ImageDataset(images=images, name="toy"))
    monkeypatch.setitem(PRESETS, "tiny", {"G": dict(z_dim=8, w_dim=8, img_resolution=16, img_channels=1,
                                                        mapping_layers=2, channel_base=64, channel_max=8),
                                              "D": dict(img_resolution=16, img_channels=1, channel_base=64,
                                                        channel_max=8)})
    args = ["train", "--preset", "tiny", "--batch", "4", "--kimg", "0.016", "--device", "cpu"]
    assert main([*args, "--run", str(tmp_path / "a"), "--max-steps", "2"]) == 0
    assert main([*args, "--run", str(tmp_path / "b"), "--resume-from", str(tmp_path / "a" / "checkpoint.pt")]) == 0
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert b["train_state"]["step"] == 4


def test_train_aux_writes_a_loadable_generator_and_its_samples(tmp_path, monkeypatch, capsys):
    from gan_inversion.auxiliary import load_aux, sample_aux
    from gan_inversion.data import ImageDataset

    images = torch.randint(0, 256, (64, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    monkeypatch.setattr("gan_inversion.data.load_fashion_mnist",
                        lambda *a, **k: ImageDataset(images=images, name="toy"))
    out = tmp_path / "aux" / "u.pt"
    assert main(["train-aux", "--out", str(out), "--epochs", "1", "--width", "8"]) == 0
    assert "upsample-conv auxiliary generator (1 steps" in capsys.readouterr().out  # 64 photos: one batch
    assert sample_aux(load_aux(out), 3, seed=0).shape == (3, 1, 16, 16)
    assert Image.open(out.with_name("u_samples.png")).size[0] > 16


def test_every_command_and_option_has_a_help_text():
    import argparse

    from api.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    missing = []
    for name, p in sub.choices.items():
        if not helps.get(name):
            missing.append(name)
        for action in p._actions:
            if not isinstance(action, argparse._HelpAction) and not action.help:
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing
    convert = sub.choices["convert"].format_help()
    assert "rosinality" in convert and "NVIDIA" in convert and "Refused" in convert


def test_fit_defaults_are_the_embedded_configuration():
    from api.cli import build_parser
    from detector.cli.fit import config_from_args
    from detector.fitting.config import DetectorConfig

    args = build_parser().parse_args(["fit"])
    cfg = config_from_args(args)
    assert cfg == DetectorConfig()
    assert cfg.command() == "resynth fit"
    changed = config_from_args(build_parser().parse_args(["fit", "--n-real", "100", "--no-artifact-cnn"]))
    assert changed.command() == "resynth fit --n-real 100 --no-artifact-cnn"
    folder = config_from_args(build_parser().parse_args(["fit", "--real", "my_photos"]))
    assert folder.fit.compact_plan and folder.fit.aux_generators == ()  # Fashion-MNIST's auxiliary is not for it
    assert folder.command() == "resynth fit --no-aux-generator --real DIR"
    # no refinement steps: the degradation candidates are scored on the encoder's guess, nothing is split
    guess_only = config_from_args(build_parser().parse_args(["fit", "--refine-steps", "0"]))
    assert guess_only.features.refine_steps == 0 and guess_only.features.search_steps is None
    assert config_from_args(build_parser().parse_args(["fit", "--refine-steps", "0", "--search-steps", "0"])) \
        == guess_only


def _photo_folder(root, n: int, size: tuple[int, int], mode: str, seed: int = 0):
    """n random photos of `size` (w, h) in `mode` ('L' or 'RGB') as PNGs under root, two folders deep."""
    rng = np.random.default_rng(seed)
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / ("sub" if i % 2 else ".")
                                                                                  / f"p{i:03d}.png")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("channels", [1, 3])
def test_a_detector_from_a_folder_of_photos(tmp_path, channels, capsys):
    """--real DIR on the commands that build and evaluate a detector: an encoder and a detector from a folder
    (colour and grayscale, photos of another size than the model's), the split recorded with the folder's
    fingerprint, and the held-out split or a second folder to evaluate on."""
    import json

    from .conftest import TINY_FRAMING

    bundle = tmp_path / "g.pt"
    save_bundle(bundle, G_ema=make_G(img_channels=channels), D=make_D(img_channels=channels),
                data={"name": "toy", "framing": TINY_FRAMING})
    photos = _photo_folder(tmp_path / "photos", 160, (20, 24), "L" if channels == 1 else "RGB")
    enc = tmp_path / "e.pt"
    assert main(["train-encoder", "--bundle", str(bundle), "--out", str(enc), "--real", str(photos), "--steps", "2",
                 "--batch", "4", "--perceptual", "mobilenet_v2-random", "--perceptual-size", "32",
                 "--device", "cpu"]) == 0
    det = tmp_path / "det.json"
    assert main(["fit", "--bundle", str(bundle), "--encoder", str(enc), "--out", str(det), "--real", str(photos),
                 "--n-real", "48", "--n-fake", "48", "--batch", "24", "--refine-steps", "1", "--no-artifact-cnn",
                 "--no-aux-generator", "--no-real-model", "--latent-map", "0", "--cache", "",
                 "--device", "cpu"]) == 0
    spec = json.loads(det.read_text())
    plan_ = spec["data_plan"]
    assert plan_["split"] == "photos-train" and plan_["photos"]["folder"] == "photos"
    assert plan_["photos"]["files"] == 160 and 0 < plan_["photos"]["photos"] < 160  # the held-out share is not read
    capsys.readouterr()
    assert main(["eval-detector", "--detector", str(det), "--real", str(photos), "--n", "8", "--cache", "",
                 "--device", "cpu"]) == 0
    held = json.loads(capsys.readouterr().out)
    assert held["real_data"] == "photos-test"
    other = _photo_folder(tmp_path / "other", 12, (16, 16), "L" if channels == 1 else "RGB", seed=1)
    assert main(["eval-detector", "--detector", str(det), "--test-real", str(other), "--n", "8", "--cache", "",
                 "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["real_data"] == "photos-all"


@pytest.mark.slow
def test_eval_gan_on_a_folder_of_photos(tmp_path, capsys):
    """eval-gan --real: the FID of samples against a folder's held-out photos in a pretrained backbone's pooled
    features, beside the folder's own train-vs-test floor (smooth photos: the floor is far below the samples')."""
    import json

    from .conftest import TINY_FRAMING

    bundle = tmp_path / "g.pt"
    save_bundle(bundle, G_ema=make_G(), D=make_D(), data={"name": "toy", "framing": TINY_FRAMING})
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 1, 12)
    for i in range(120):  # smooth gradients at random angles and levels
        a, lo = rng.uniform(0, np.pi), rng.uniform(0, 120)
        img = lo + 120 * (np.cos(a) * ramp[None, :] + np.sin(a) * ramp[:, None]) / 1.5
        Image.fromarray(img.clip(0, 255).astype(np.uint8), "L").save(folder / f"g{i:03d}.png")
    assert main(["eval-gan", "--bundle", str(bundle), "--real", str(folder), "--test-fraction", "0.4", "--n", "40",
                 "--perceptual", "mobilenet_v2@32", "--device", "cpu"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 40 and out["photos"]["folder"] == "photos" and out["photos"]["split"] == "test"
    assert out["features"].startswith("mobilenet_v2@32")  # the offline pretrained backbone
    assert 0 <= out["fid_train_vs_test"] < out["fid_samples_vs_test"]
    few = tmp_path / "few"
    few.mkdir()
    for i in range(12):
        Image.fromarray(np.full((12, 12), 20 * i, np.uint8), "L").save(few / f"f{i}.png")
    with pytest.raises(SystemExit, match="held-out photos; the FID needs at least 10 of each"):
        main(["eval-gan", "--bundle", str(bundle), "--real", str(few), "--test-fraction", "0.5",
              "--perceptual", "mobilenet_v2@32", "--device", "cpu"])
