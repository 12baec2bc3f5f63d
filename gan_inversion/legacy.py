"""Conversion of third-party StyleGAN2 checkpoints into resynth bundles.

Supported: rosinality/stylegan2-pytorch `.pt` files, i.e. a dict with `g_ema` (its Generator's state
dict), optionally `d` (Discriminator), `g` and `latent_avg` (as written by its `train.py` or by its
`convert_weight.py` from NVIDIA's pickles, e.g. the FFHQ config-f model). Both networks use the same
equalized-learning-rate conventions as ours, so conversion is a renaming plus shape squeezes; the
architecture (resolution, channels, mapping depth) is read off the tensor shapes.

NVIDIA stylegan2-ada-pytorch `.pkl` files are read as data, without running any code they carry
(`read_nvidia_pickle`, below); mapping their weights onto resynth's networks is not done yet, so
`resynth convert` does not accept them yet.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import Bundle, BundleError, bundle_dict, bundle_from_dict
from .data import FIT_FRAMING
from .fileio import sha256_file
from .networks import Discriminator, Generator, channels_at


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


def _infer_channel_layout(channels: dict[int, int], what: str) -> tuple[int, int]:
    """Find (channel_base, channel_max) with min(base // res, max) == channels[res] for every res."""
    channel_max = max(channels.values())
    below = [res * c for res, c in channels.items() if c < channel_max]
    channel_base = min(below) if below else channel_max * max(channels)
    if any(channels_at(res, channel_base, channel_max) != c for res, c in channels.items()):
        raise BundleError(f"{what}: channel layout {channels} is not of the form min(base / res, max)")
    return channel_base, channel_max


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
    channel_base, channel_max = _infer_channel_layout(channels, "g_ema")
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
    channel_base, channel_max = _infer_channel_layout(channels, "d")
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


def _strict(net: torch.nn.Module, sd: dict, what: str) -> torch.nn.Module:
    try:
        net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{what}: converted weights do not fit: {exc}") from exc
    return net.eval().requires_grad_(False)


def convert_rosinality(path: str | Path, *, w_avg_samples: int = 10_000, seed: int = 0) -> dict:
    """Read a rosinality/stylegan2-pytorch checkpoint and return a resynth bundle dict."""
    path = Path(path)
    obj = _load_foreign(path)
    if "g_ema" not in obj:
        raise BundleError(f"{path}: not a rosinality/stylegan2-pytorch checkpoint (no 'g_ema'; keys {sorted(obj)[:8]})")
    try:
        G_kwargs, G_sd = _rosinality_G(obj["g_ema"])
        G_ema = _strict(Generator(**G_kwargs), G_sd, f"{path} g_ema")
        G = _strict(Generator(**G_kwargs), _rosinality_G(obj["g"])[1], f"{path} g") if "g" in obj else None
        D = None
        if "d" in obj:
            D_kwargs, D_sd = _rosinality_D(obj["d"])
            D = _strict(Discriminator(**D_kwargs), D_sd, f"{path} d")
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


def convert(path: str | Path, **kwargs) -> Bundle:
    """Convert any supported third-party checkpoint into a loaded Bundle."""
    return bundle_from_dict(convert_rosinality(path, **kwargs), path=path)


# --------------------------------------------------------------------------- NVIDIA pickles, read as data
# stylegan2-ada-pytorch network pickles (`network-snapshot-*.pkl`) hold their networks as "persistent"
# objects: each one is rebuilt by torch_utils.persistence._reconstruct_persistent_obj from a record that
# carries the Python source of its module, which a normal unpickle executes. Here nothing from the file is
# executed: an unpickler that knows only tensor rebuilding and plain containers turns every persistent
# object into a `PersistentRecord` (its class name, constructor arguments and state), and refuses any other
# global, naming it. Mapping the records onto resynth's networks comes on top of this reader.

@dataclass
class PersistentRecord:
    """A persistent object of an NVIDIA pickle, kept as data (its module source is never run)."""

    class_name: str
    init_kwargs: dict
    state: dict          # the object's __dict__ (for an nn.Module: _parameters, _buffers, _modules, ...)
    source_sha256: str   # of the module source it carried, to tell code versions apart

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers of this record and its sub-records, keyed like a state dict."""
        out = {}
        for group in ("_parameters", "_buffers"):
            for k, v in (self.state.get(group) or {}).items():
                if isinstance(v, torch.Tensor):
                    out[prefix + k] = v.detach()
        for k, sub in (self.state.get("_modules") or {}).items():
            if isinstance(sub, PersistentRecord):
                out.update(sub.tensors(prefix + k + "."))
        return out


class NvidiaPickleRefused(BundleError):
    """The pickle asks for something that reading it as data does not allow."""


def _reconstruct_record(meta: dict) -> PersistentRecord:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        kind = meta.get("type") if isinstance(meta, dict) else type(meta).__name__
        raise NvidiaPickleRefused(f"persistent object of unsupported type {kind!r}")
    state = meta.get("state") or {}
    src = meta.get("module_src") or ""
    return PersistentRecord(class_name=str(meta.get("class_name")), init_kwargs=dict(state.get("_init_kwargs") or {}),
                            state=state, source_sha256=hashlib.sha256(src.encode()).hexdigest())


def _storage_from_bytes(b: bytes):
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


class _DataUnpickler(pickle.Unpickler):
    ALLOWED = {
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_record,
        ("dnnlib.util", "EasyDict"): dict,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise NvidiaPickleRefused(
                f"the pickle asks for {module}.{name}, which reading it as data does not allow (only tensors, "
                "plain containers and stylegan2-ada persistent objects are read; nothing in the file is run)"
            ) from None


def read_nvidia_pickle(path: str | Path) -> dict:
    """The top-level dict of a stylegan2-ada-pytorch pickle ('G', 'D', 'G_ema', 'augment_pipe',
    'training_set_kwargs', ...), every network as a PersistentRecord; NvidiaPickleRefused for anything else."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    with open(path, "rb") as f:
        try:
            obj = _DataUnpickler(f).load()
        except NvidiaPickleRefused as exc:
            raise NvidiaPickleRefused(f"{path}: {exc}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError) as exc:
            raise BundleError(f"{path}: not a readable stylegan2-ada pickle: {exc}") from exc
    if not isinstance(obj, dict) or not any(isinstance(obj.get(k), PersistentRecord) for k in ("G_ema", "G")):
        raise BundleError(f"{path}: not a stylegan2-ada network pickle (no 'G_ema' network in it)")
    return obj
