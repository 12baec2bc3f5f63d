"""rosinality/stylegan2-pytorch checkpoints: a dict with `g_ema` (its Generator's state dict), optionally `d`
(Discriminator), `g` and `latent_avg`, as its `train.py` and its `convert_weight.py` write them.

Both networks use the same equalized-learning-rate conventions as ours, so conversion is a renaming plus shape
squeezes; the architecture (resolution, channels, mapping depth) is read off the tensor shapes.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

from ..checkpoints import BundleError, bundle_dict
from ..data import FIT_FRAMING
from ..fileio import sha256_file
from ..networks import Discriminator, Generator
from .common import infer_channel_layout, strict_load


def _load_foreign(path: Path) -> dict:
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    try:
        # rosinality's train.py stores its argparse.Namespace next to the weights: allow just that class.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BundleError(f"{path}: cannot be read as a PyTorch checkpoint with weights_only=True: {exc}") from exc
    if not isinstance(obj, dict):
        raise BundleError(f"{path}: expected a dict, found {type(obj).__name__}")
    return obj


def _rosinality_G(sd: dict) -> tuple[dict, dict]:
    """Returns (Generator kwargs, our state dict) for a rosinality Generator state dict."""
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    if n_mlp == 0 or "input.input" not in sd or "to_rgb1.conv.weight" not in sd:
        raise BundleError("g_ema does not have rosinality's Generator layout (style.N, input.input, to_rgb1)")
    w_dim = sd["style.1.weight"].shape[0]
    n_up = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    resolution = 2 ** (2 + n_up)
    img_channels = sd["to_rgb1.conv.weight"].shape[1]
    channels = {4: sd["input.input"].shape[1]}
    for k in range(n_up):
        channels[2 ** (k + 3)] = sd[f"convs.{2 * k}.conv.weight"].shape[1]
    channel_base, channel_max = infer_channel_layout(channels, "g_ema")
    kwargs = dict(z_dim=w_dim, w_dim=w_dim, img_resolution=resolution, img_channels=img_channels,
                  mapping_layers=n_mlp, mapping_lr_mul=0.01, channel_base=channel_base, channel_max=channel_max)

    out = {"synthesis.const": sd["input.input"][0]}
    for i in range(n_mlp):
        out[f"mapping.layers.{i}.weight"] = sd[f"style.{i + 1}.weight"]
        out[f"mapping.layers.{i}.bias"] = sd[f"style.{i + 1}.bias"]

    def styled(src: str, dst: str, noise_idx: int):
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.noise_strength"] = sd[f"{src}.noise.weight"].reshape([])
        out[f"{dst}.bias"] = sd[f"{src}.activate.bias"].reshape(-1)
        noise = sd.get(f"noises.noise_{noise_idx}")
        res = int(dst.split(".")[2][1:])
        out[f"{dst}.noise_const"] = noise[0, 0] if noise is not None else torch.randn(res, res)

    def torgb(src: str, dst: str):
        out[f"{dst}.weight"] = sd[f"{src}.conv.weight"][0]
        out[f"{dst}.affine.weight"] = sd[f"{src}.conv.modulation.weight"]
        out[f"{dst}.affine.bias"] = sd[f"{src}.conv.modulation.bias"]
        out[f"{dst}.bias"] = sd[f"{src}.bias"].reshape(-1)

    styled("conv1", "synthesis.blocks.b4.conv1", 0)
    torgb("to_rgb1", "synthesis.blocks.b4.torgb")
    for k in range(n_up):
        res = 2 ** (k + 3)
        styled(f"convs.{2 * k}", f"synthesis.blocks.b{res}.conv0", 2 * k + 1)
        styled(f"convs.{2 * k + 1}", f"synthesis.blocks.b{res}.conv1", 2 * k + 2)
        torgb(f"to_rgbs.{k}", f"synthesis.blocks.b{res}.torgb")
    return kwargs, out


def _rosinality_D(sd: dict) -> tuple[dict, dict]:
    if "convs.0.0.weight" not in sd or "final_linear.1.weight" not in sd:
        raise BundleError("d does not have rosinality's Discriminator layout (convs.0.0, final_linear)")
    n_blocks = len([k for k in sd if re.fullmatch(r"convs\.\d+\.conv1\.0\.weight", k)])
    resolution = 2 ** (2 + n_blocks)
    img_channels = sd["convs.0.0.weight"].shape[1]
    channels = {resolution: sd["convs.0.0.weight"].shape[0]}
    for k in range(1, n_blocks + 1):
        channels[resolution >> k] = sd[f"convs.{k}.conv2.1.weight"].shape[0]
    channel_base, channel_max = infer_channel_layout(channels, "d")
    kwargs = dict(img_resolution=resolution, img_channels=img_channels, channel_base=channel_base,
                  channel_max=channel_max, mbstd_group_size=4, mbstd_num_channels=1)
    out = {"fromrgb.weight": sd["convs.0.0.weight"], "fromrgb.bias": sd["convs.0.1.bias"]}
    for k in range(1, n_blocks + 1):
        b = f"blocks.b{resolution >> (k - 1)}"
        out[f"{b}.conv0.weight"] = sd[f"convs.{k}.conv1.0.weight"]
        out[f"{b}.conv0.bias"] = sd[f"convs.{k}.conv1.1.bias"]
        out[f"{b}.conv1.weight"] = sd[f"convs.{k}.conv2.1.weight"]
        out[f"{b}.conv1.bias"] = sd[f"convs.{k}.conv2.2.bias"]
        out[f"{b}.skip.weight"] = sd[f"convs.{k}.skip.1.weight"]
    out.update({"conv.weight": sd["final_conv.0.weight"], "conv.bias": sd["final_conv.1.bias"],
                "fc.weight": sd["final_linear.0.weight"], "fc.bias": sd["final_linear.0.bias"],
                "out.weight": sd["final_linear.1.weight"], "out.bias": sd["final_linear.1.bias"]})
    return kwargs, out


def convert_rosinality(path: str | Path, *, w_avg_samples: int = 10_000, seed: int = 0) -> dict:
    """Read a rosinality/stylegan2-pytorch checkpoint and return a resynth bundle dict."""
    path = Path(path)
    obj = _load_foreign(path)
    if "g_ema" not in obj:
        raise BundleError(f"{path}: not a rosinality/stylegan2-pytorch checkpoint (no 'g_ema'; keys {sorted(obj)[:8]})")
    try:
        G_kwargs, G_sd = _rosinality_G(obj["g_ema"])
        G_ema = strict_load(Generator(**G_kwargs), G_sd, f"{path} g_ema")
        G = strict_load(Generator(**G_kwargs), _rosinality_G(obj["g"])[1], f"{path} g") if "g" in obj else None
        D = None
        if "d" in obj:
            D_kwargs, D_sd = _rosinality_D(obj["d"])
            D = strict_load(Discriminator(**D_kwargs), D_sd, f"{path} d")
    except KeyError as exc:
        raise BundleError(f"{path}: rosinality checkpoint lacks the tensor {exc}") from exc
    if obj.get("latent_avg") is not None:
        w_avg, w_src = obj["latent_avg"].reshape(-1).float(), "latent_avg"
    else:
        with torch.no_grad():
            z = torch.randn(w_avg_samples, G_ema.z_dim, generator=torch.Generator().manual_seed(seed))
            w_avg, w_src = G_ema.mapping(z)[:, 0].mean(0), f"mean of {w_avg_samples} mapped z (seed {seed})"
    for net in (G_ema, G):
        if net is not None:
            net.mapping.w_avg.copy_(w_avg)
    data = {"name": "unknown (converted)", "fingerprint": None, "resolution": G_ema.img_resolution,
            "channels": G_ema.img_channels, "framing": dict(FIT_FRAMING)}
    meta = {"source": "rosinality/stylegan2-pytorch", "source_file": path.name, "source_sha256": sha256_file(path),
            "w_avg_source": w_src}
    return bundle_dict(G_ema=G_ema, G=G, D=D, data=data, meta=meta,
                       progress={"kimg": 0.0, "step": int(obj.get("step", 0) or 0)})
