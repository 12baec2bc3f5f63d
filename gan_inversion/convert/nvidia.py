"""NVIDIA stylegan2-ada-pytorch network pickles (`network-snapshot-*.pkl`, and the TF-era models re-saved in
that format), read as data and mapped onto resynth's networks.

A normal unpickle of these files runs the Python source stored inside them. `read_nvidia_pickle` never does:
its unpickler knows only tensor rebuilding, plain containers and the files' persistent-object records (kept as
`PersistentRecord`: class name, constructor arguments and state, the source only hashed), and refuses any other
global by name. `convert_nvidia` maps the records onto our networks. Supported: unconditional StyleGAN2 with a
'skip' generator and a 'resnet' discriminator (config-e/-f, paper256/512/1024, auto, cifar without labels).
Refused with a message: StyleGAN3 (alias-free) generators, conditional models, other architectures.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoints import BundleError, bundle_dict
from ..data import FIT_FRAMING
from ..fileio import sha256_file
from ..networks import Discriminator, Generator, make_filter
from .common import infer_channel_layout, strict_load

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
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
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


# --------------------------------------------------------------------------- NVIDIA pickles, mapped
# stylegan2-ada-pytorch's networks.py names its parameters almost as resynth does (both follow the paper's
# layer structure): mapping.fcI -> mapping.layers.I, synthesis.b4.const -> synthesis.const,
# synthesis.bR.{conv0,conv1,torgb} -> synthesis.blocks.bR.*, and the discriminator's bR blocks and b4 epilogue
# -> blocks.bR / conv, fc, out. Weight conventions (equalized lr, weight layout, no flip of the upsampling
# kernels, [1,3,3,1] filters) are the same, so no tensor is changed, only renamed and checked.


def _sub(rec: PersistentRecord, dotted: str) -> PersistentRecord | None:
    for part in dotted.split("."):
        rec = (rec.state.get("_modules") or {}).get(part) if isinstance(rec, PersistentRecord) else None
    return rec


def _setting(rec: PersistentRecord | None, state_key: str, kwarg: str, default):
    """A record's setting: its stored attribute, else its constructor argument, else `default`."""
    if rec is None:
        return default
    v = rec.state.get(state_key)
    if v is None:
        v = rec.init_kwargs.get(kwarg)
    return default if v is None else v


def _check_filters(t: dict, what: str) -> None:
    want = make_filter()
    for k, v in t.items():
        if k.endswith("resample_filter") and (v.shape != want.shape or not torch.allclose(v.float(), want)):
            raise BundleError(f"{what}: {k} is not the [1,3,3,1] filter resynth's networks use")


def _refuse_stylegan3(rec: PersistentRecord, what: str) -> None:
    syn = _sub(rec, "synthesis")
    names = set((syn.state.get("_modules") or {}) if syn is not None else {})
    if "input" in names or any(re.fullmatch(r"L\d+_\d+_\d+", n) for n in names):
        raise BundleError(f"{what}: a StyleGAN3 (alias-free) generator; resynth supports StyleGAN2 generators only")


def _nvidia_G(rec: PersistentRecord, what: str) -> tuple[dict, dict, torch.Tensor | None]:
    """(Generator kwargs, our state dict, w_avg) for a stylegan2-ada Generator record."""
    if rec.class_name != "Generator":
        raise BundleError(f"{what}: expected a Generator, found {rec.class_name!r}")
    t = rec.tensors()
    _refuse_stylegan3(rec, what)
    if rec.init_kwargs.get("c_dim") or "mapping.embed.weight" in t:
        raise BundleError(f"{what}: a conditional (class-label) generator; resynth supports unconditional ones")
    fcs = sorted(int(m.group(1)) for k in t if (m := re.fullmatch(r"mapping\.fc(\d+)\.weight", k)))
    if not fcs or "synthesis.b4.const" not in t or fcs != list(range(len(fcs))):
        raise BundleError(f"{what}: not stylegan2-ada's Generator layout (mapping.fcN, synthesis.b4.const)")
    res = sorted(int(m.group(1)) for k in t if (m := re.fullmatch(r"synthesis\.b(\d+)\.conv1\.weight", k)))
    if res != [2 ** i for i in range(2, 2 + len(res))]:
        raise BundleError(f"{what}: synthesis blocks {res} are not 4, 8, ..., resolution")
    missing_rgb = [r for r in res if f"synthesis.b{r}.torgb.weight" not in t]
    if missing_rgb or any(k.startswith(f"synthesis.b{r}.skip.") for r in res for k in t):
        raise BundleError(f"{what}: only the 'skip' generator architecture (StyleGAN2 config-e/-f) is supported")
    _check_filters(t, what)
    lr_mul = float(_setting(_sub(rec, "mapping.fc0"), "bias_gain", "lr_multiplier", 0.01))
    channels = {r: t[f"synthesis.b{r}.conv1.weight"].shape[0] for r in res}
    channel_base, channel_max = infer_channel_layout(channels, what)
    w_dim = t["mapping.fc0.weight"].shape[0]
    kwargs = dict(z_dim=t["mapping.fc0.weight"].shape[1], w_dim=w_dim, img_resolution=res[-1],
                  img_channels=t[f"synthesis.b{res[-1]}.torgb.weight"].shape[0], mapping_layers=len(fcs),
                  mapping_lr_mul=lr_mul, channel_base=channel_base, channel_max=channel_max)
    out = {"synthesis.const": t["synthesis.b4.const"]}
    for i in fcs:
        out[f"mapping.layers.{i}.weight"] = t[f"mapping.fc{i}.weight"]
        out[f"mapping.layers.{i}.bias"] = t[f"mapping.fc{i}.bias"]
    for k, v in t.items():
        m = re.fullmatch(r"synthesis\.(b\d+)\.((conv0|conv1|torgb)\..+)", k)
        if m and not k.endswith("resample_filter"):
            out[f"synthesis.blocks.{m.group(1)}.{m.group(2)}"] = v
    w_avg = t.get("mapping.w_avg")
    return kwargs, out, w_avg


def _nvidia_D(rec: PersistentRecord, what: str) -> tuple[dict, dict]:
    if rec.class_name != "Discriminator":
        raise BundleError(f"{what}: expected a Discriminator, found {rec.class_name!r}")
    t = rec.tensors()
    if rec.init_kwargs.get("c_dim") or any(k.startswith("mapping.") for k in t):
        raise BundleError(f"{what}: a conditional discriminator; resynth supports unconditional ones")
    res = sorted((int(m.group(1)) for k in t if (m := re.fullmatch(r"b(\d+)\.conv1\.weight", k))), reverse=True)
    top = res[0] if res else None
    if not res or f"b{top}.fromrgb.weight" not in t or "b4.out.weight" not in t:
        raise BundleError(f"{what}: not stylegan2-ada's Discriminator layout (bR.fromrgb, b4.out)")
    if any(f"b{r}.skip.weight" not in t for r in res) or any(f"b{r}.fromrgb.weight" in t for r in res[1:]):
        raise BundleError(f"{what}: only the 'resnet' discriminator architecture (StyleGAN2 config-e/-f) is supported")
    _check_filters(t, what)
    channels = {top: t[f"b{top}.fromrgb.weight"].shape[0]}
    channels.update({r // 2: t[f"b{r}.conv1.weight"].shape[0] for r in res})
    channel_base, channel_max = infer_channel_layout(channels, what)
    epi, mbstd = _sub(rec, "b4"), _sub(rec, "b4.mbstd")
    group = _setting(mbstd, "group_size", "group_size", _setting(epi, "mbstd_group_size", "mbstd_group_size", 4))
    num_ch = _setting(mbstd, "num_channels", "num_channels",
                      _setting(epi, "mbstd_num_channels", "mbstd_num_channels", 1))
    kwargs = dict(img_resolution=top, img_channels=t[f"b{top}.fromrgb.weight"].shape[1], channel_base=channel_base,
                  channel_max=channel_max, mbstd_group_size=int(group), mbstd_num_channels=int(num_ch))
    out = {"fromrgb.weight": t[f"b{top}.fromrgb.weight"], "fromrgb.bias": t[f"b{top}.fromrgb.bias"]}
    for r in res:
        for k in ("conv0.weight", "conv0.bias", "conv1.weight", "conv1.bias", "skip.weight"):
            out[f"blocks.b{r}.{k}"] = t[f"b{r}.{k}"]
    for k in ("conv", "fc", "out"):
        out[f"{k}.weight"], out[f"{k}.bias"] = t[f"b4.{k}.weight"], t[f"b4.{k}.bias"]
    return kwargs, out


def convert_nvidia(path: str | Path) -> dict:
    """Read a stylegan2-ada-pytorch network pickle as data and return a resynth bundle dict.

    G_ema becomes the generator (G too, if present); D is converted when it is an unconditional 'resnet'
    discriminator. Nothing in the file is executed (see read_nvidia_pickle)."""
    path = Path(path)
    obj = read_nvidia_pickle(path)
    rec = obj.get("G_ema") if isinstance(obj.get("G_ema"), PersistentRecord) else obj.get("G")
    try:
        G_kwargs, G_sd, w_avg = _nvidia_G(rec, f"{path} G_ema")
        G_ema = strict_load(Generator(**G_kwargs), G_sd, f"{path} G_ema")
        G = None
        if isinstance(obj.get("G"), PersistentRecord) and obj.get("G") is not rec:
            G = strict_load(Generator(**G_kwargs), _nvidia_G(obj["G"], f"{path} G")[1], f"{path} G")
        D = None
        if isinstance(obj.get("D"), PersistentRecord):
            D_kwargs, D_sd = _nvidia_D(obj["D"], f"{path} D")
            D = strict_load(Discriminator(**D_kwargs), D_sd, f"{path} D")
    except KeyError as exc:
        raise BundleError(f"{path}: stylegan2-ada pickle lacks the tensor {exc}") from exc
    if w_avg is None:
        raise BundleError(f"{path}: G_ema has no mapping.w_avg")
    for net in (G_ema, G):
        if net is not None:
            net.mapping.w_avg.copy_(w_avg.reshape(-1).float())
    tsk = obj.get("training_set_kwargs") or {}
    clamp = _setting(_sub(rec, f"synthesis.b{G_ema.img_resolution}.conv1"), "conv_clamp", "conv_clamp", None)
    data = {"name": str(tsk.get("path") or "unknown (converted)"), "fingerprint": None,
            "resolution": G_ema.img_resolution, "channels": G_ema.img_channels, "framing": dict(FIT_FRAMING),
            "xflip": bool(tsk.get("xflip", False))}
    meta = {"source": "NVlabs/stylegan2-ada-pytorch", "source_file": path.name, "source_sha256": sha256_file(path),
            "w_avg_source": "mapping.w_avg", "code_sha256": rec.source_sha256,
            "conv_clamp_ignored": clamp, "augment_pipe": obj.get("augment_pipe") is not None}
    return bundle_dict(G_ema=G_ema, G=G, D=D, data=data, meta=meta, progress={"kimg": 0.0, "step": 0})
