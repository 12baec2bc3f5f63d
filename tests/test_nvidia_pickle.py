"""NVIDIA stylegan2-ada pickles read as data (gan_inversion/convert/): the tests write pickles with the real
format's structure (persistent-object records carrying module source, tensors, parameters, nested dicts) from
resynth's own networks, through stand-in `torch_utils.persistence` / `dnnlib.util` modules, and check that the
weights come back and that nothing in the file is ever run."""

from __future__ import annotations

import collections
import os
import pickle
import sys
import types
from pathlib import Path

import pytest
import torch

from gan_inversion.convert import NvidiaPickleRefused, PersistentRecord, read_nvidia_pickle


class _Record:
    """Pickles like a stylegan2-ada persistent object: _reconstruct_persistent_obj(meta)."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return (sys.modules["torch_utils.persistence"]._reconstruct_persistent_obj, (self.meta,))


def _as_record(module: torch.nn.Module, marker: str, init_kwargs: dict | None = None) -> _Record:
    state = {"training": False, "_init_args": (), "_init_kwargs": init_kwargs or {},
             "_parameters": collections.OrderedDict(module._parameters),
             "_buffers": collections.OrderedDict(module._buffers),
             "_modules": collections.OrderedDict((k, _as_record(m, marker)) for k, m in module._modules.items())}
    src = f"import pathlib\npathlib.Path({marker!r}).write_text('the pickle ran its code')\n"
    return _Record({"type": "class", "version": 4, "module_src": src, "class_name": type(module).__name__,
                    "state": state})


@pytest.fixture
def nvidia_modules(monkeypatch):
    """Stand-ins for the modules NVIDIA's pickles name, so that pickle can write references to them."""
    persistence = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # what NVIDIA's code would do: run meta["module_src"]
        exec(meta["module_src"], {})  # noqa: S102 (only while writing the test file, never when reading)
        raise AssertionError("not reached while writing")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    for name, mod in (("torch_utils", types.ModuleType("torch_utils")), ("torch_utils.persistence", persistence),
                      ("dnnlib", types.ModuleType("dnnlib")), ("dnnlib.util", util)):
        monkeypatch.setitem(sys.modules, name, mod)
    return util


def test_a_stylegan2_ada_pickle_is_read_as_data_and_never_run(nvidia_modules, tmp_path):
    from .conftest import make_D, make_G

    G, D = make_G(seed=3), make_D(seed=4)
    marker = tmp_path / "ran.txt"
    data = {"G": _as_record(G, str(marker)), "D": _as_record(D, str(marker), {"img_resolution": 16}),
            "G_ema": _as_record(G, str(marker), {"z_dim": G.z_dim, "w_dim": G.w_dim}),
            "augment_pipe": None, "training_set_kwargs": nvidia_modules.EasyDict(resolution=16, xflip=False)}
    path = tmp_path / "network-snapshot-000000.pkl"
    path.write_bytes(pickle.dumps(data, protocol=4))
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        sys.modules.pop(name)  # reading needs none of NVIDIA's code
    got = read_nvidia_pickle(path)
    assert not marker.exists()  # the embedded module source never ran
    g = got["G_ema"]
    assert isinstance(g, PersistentRecord) and g.class_name == "Generator" and g.init_kwargs["w_dim"] == G.w_dim
    want = {k: v for k, v in G.state_dict().items()}
    assert set(want) <= set(g.tensors())  # plus the non-persistent buffers (filters), pickled with __dict__
    assert all(torch.equal(g.tensors()[k], want[k]) for k in want)
    assert got["D"].init_kwargs == {"img_resolution": 16} and set(D.state_dict()) <= set(got["D"].tensors())
    assert got["training_set_kwargs"] == {"resolution": 16, "xflip": False}


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_anything_else_in_the_pickle_is_refused_by_name(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": _Evil(marker)}, protocol=4))
    with pytest.raises(NvidiaPickleRefused, match=r"asks for posix\.system|asks for os\.system"):
        read_nvidia_pickle(path)
    assert not marker.exists()
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"weights": [1, 2]}, protocol=4))
    with pytest.raises(Exception, match="no 'G_ema' network"):
        read_nvidia_pickle(plain)


# ---- a stylegan2-ada pickle with the real names, built from a rosinality-format state -------------------------
# The two public formats describe the same networks; the rename below is the documented correspondence, and the
# converted networks are compared with the independent rosinality reference forward (tests/rosinality_ref.py).

def _ada_state(g: dict, d: dict, latent_avg: torch.Tensor) -> tuple[dict, dict]:
    from gan_inversion.networks import make_filter

    G = {"mapping.w_avg": latent_avg}
    i = 1
    while f"style.{i}.weight" in g:
        G[f"mapping.fc{i - 1}.weight"], G[f"mapping.fc{i - 1}.bias"] = g[f"style.{i}.weight"], g[f"style.{i}.bias"]
        i += 1
    G["synthesis.b4.const"] = g["input.input"][0]

    def styled(src, dst, noise):
        G[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        G[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]
        G[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        G[f"{dst}.noise_strength"] = g[f"{src}.noise.weight"].reshape([])
        G[f"{dst}.bias"] = g[f"{src}.activate.bias"]
        G[f"{dst}.noise_const"] = g[f"noises.noise_{noise}"][0, 0]
        G[f"{dst}.resample_filter"] = make_filter()

    def torgb(src, dst):
        G[f"{dst}.affine.weight"] = g[f"{src}.conv.modulation.weight"]
        G[f"{dst}.affine.bias"] = g[f"{src}.conv.modulation.bias"]
        G[f"{dst}.weight"] = g[f"{src}.conv.weight"][0]
        G[f"{dst}.bias"] = g[f"{src}.bias"].reshape(-1)

    styled("conv1", "synthesis.b4.conv1", 0)
    torgb("to_rgb1", "synthesis.b4.torgb")
    k = 0
    while f"to_rgbs.{k}.conv.weight" in g:
        r = 2 ** (k + 3)
        styled(f"convs.{2 * k}", f"synthesis.b{r}.conv0", 2 * k + 1)
        styled(f"convs.{2 * k + 1}", f"synthesis.b{r}.conv1", 2 * k + 2)
        torgb(f"to_rgbs.{k}", f"synthesis.b{r}.torgb")
        G[f"synthesis.b{r}.resample_filter"] = make_filter()
        k += 1
    top = 2 ** (k + 2)
    D = {f"b{top}.fromrgb.weight": d["convs.0.0.weight"], f"b{top}.fromrgb.bias": d["convs.0.1.bias"]}
    j = 1
    while f"convs.{j}.conv1.0.weight" in d:
        b = f"b{top >> (j - 1)}"
        D.update({f"{b}.conv0.weight": d[f"convs.{j}.conv1.0.weight"], f"{b}.conv0.bias": d[f"convs.{j}.conv1.1.bias"],
                  f"{b}.conv1.weight": d[f"convs.{j}.conv2.1.weight"], f"{b}.conv1.bias": d[f"convs.{j}.conv2.2.bias"],
                  f"{b}.skip.weight": d[f"convs.{j}.skip.1.weight"], f"{b}.conv1.resample_filter": make_filter(),
                  f"{b}.skip.resample_filter": make_filter()})
        j += 1
    D.update({"b4.conv.weight": d["final_conv.0.weight"], "b4.conv.bias": d["final_conv.1.bias"],
              "b4.fc.weight": d["final_linear.0.weight"], "b4.fc.bias": d["final_linear.0.bias"],
              "b4.out.weight": d["final_linear.1.weight"], "b4.out.bias": d["final_linear.1.bias"]})
    return G, D


_BUFFERS = ("noise_const", "resample_filter", "w_avg")


def _class_of(path: str) -> str:
    name = path.rsplit(".", 1)[-1]
    if name.startswith("fc") or name in ("affine", "out"):
        return "FullyConnectedLayer"
    if name in ("conv0", "conv1") and path.startswith("synthesis"):
        return "SynthesisLayer"
    if name == "torgb":
        return "ToRGBLayer"
    return {"mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "mbstd": "MinibatchStdLayer",
            "b4": "DiscriminatorEpilogue"}.get(name, "SynthesisBlock" if path.startswith("synthesis") else
                                                 ("DiscriminatorBlock" if name.startswith("b") else "Conv2dLayer"))


def _tree(flat: dict, class_name: str, marker: str, *, path: str = "", init_kwargs: dict | None = None,
          attrs: dict | None = None) -> _Record:
    """Nested persistent-object records (one per module, as stylegan2-ada pickles them) from a flat state dict."""
    own, children = {}, collections.OrderedDict()
    for k, v in flat.items():
        head, _, rest = k.partition(".")
        if rest:
            children.setdefault(head, {})[rest] = v
        else:
            own[k] = v
    state = {"training": False, "_init_args": (), "_init_kwargs": dict(init_kwargs or {}),
             "_parameters": collections.OrderedDict((k, torch.nn.Parameter(v.clone(), requires_grad=False))
                                                    for k, v in own.items() if k not in _BUFFERS),
             "_buffers": collections.OrderedDict((k, v.clone()) for k, v in own.items() if k in _BUFFERS),
             "_modules": collections.OrderedDict(), **(attrs or {}).get(path, {})}
    for name, sub in children.items():
        p = f"{path}.{name}" if path else name
        kw = {"conv_clamp": 256} if _class_of(p) == "SynthesisLayer" else {}
        state["_modules"][name] = _tree(sub, _class_of(p), marker, path=p, init_kwargs=kw, attrs=attrs)
    if path == "b4":
        state["_modules"]["mbstd"] = _tree({}, "MinibatchStdLayer", marker, path="b4.mbstd", attrs=attrs)
    src = f"import pathlib\npathlib.Path({marker!r}).write_text('the pickle ran its code')\n"
    return _Record({"type": "class", "version": 4, "module_src": src, "class_name": class_name, "state": state})


def _write_ada_pickle(path, G: dict, D: dict | None, marker: str, easy_dict) -> None:
    attrs = {"mapping.fc0": {"bias_gain": 0.01, "weight_gain": 0.01}, "b4.mbstd": {"group_size": 4,
                                                                                     "num_channels": 1}}
    g_kw = {"z_dim": G["mapping.fc0.weight"].shape[1], "c_dim": 0, "w_dim": G["mapping.fc0.weight"].shape[0]}
    data = {"G": _tree(G, "Generator", marker, init_kwargs=g_kw, attrs=attrs),
            "G_ema": _tree(G, "Generator", marker, init_kwargs=g_kw, attrs=attrs),
            "D": None if D is None else _tree(D, "Discriminator", marker, init_kwargs={"c_dim": 0}, attrs=attrs),
            "augment_pipe": None, "training_set_kwargs": easy_dict(path="~/datasets/toy.zip", xflip=True)}
    path.write_bytes(pickle.dumps(data, protocol=4))


@pytest.fixture(params=[dict(size=16, base=128, cmax=16), dict(size=32, base=128, cmax=8)])
def ada_pickle(nvidia_modules, tmp_path, request):
    from .rosinality_ref import make_rosinality_state

    p = request.param
    g, d = make_rosinality_state(p["size"], style_dim=12, n_mlp=3, base=p["base"], cmax=p["cmax"], seed=5)
    latent_avg = torch.randn(12, generator=torch.Generator().manual_seed(6))
    G, D = _ada_state(g, d, latent_avg)
    path = tmp_path / "network-snapshot-000100.pkl"
    marker = tmp_path / "ran.txt"
    _write_ada_pickle(path, G, D, str(marker), nvidia_modules.EasyDict)
    for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"):
        sys.modules.pop(name)
    return path, g, d, latent_avg, p, marker


def test_a_stylegan2_ada_pickle_converts_and_reproduces_the_original(ada_pickle, tmp_path):
    from gan_inversion.checkpoints import atomic_save, load_bundle
    from gan_inversion.convert import convert, convert_any

    from .rosinality_ref import reference_discriminator, reference_generator, reference_mapping

    path, g, d, latent_avg, p, marker = ada_pickle
    b = convert(path)
    assert not marker.exists()
    G = b.G_ema
    assert (G.img_resolution, G.img_channels, G.w_dim, len(G.mapping.layers)) == (p["size"], 3, 12, 3)
    assert torch.equal(G.w_avg, latent_avg) and b.G is not None and b.D is not None
    z = torch.randn(3, 12, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(G.mapping(z)[:, 0], reference_mapping(g, z), atol=1e-5)
    ws = torch.randn(3, G.num_ws, 12, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(G.synthesis(ws, noise_mode="const"), reference_generator(g, ws), atol=1e-4, rtol=1e-4)
    img = torch.randn(4, 3, p["size"], p["size"], generator=torch.Generator().manual_seed(2))
    assert torch.allclose(b.D(img), reference_discriminator(d, img).squeeze(1), atol=1e-4, rtol=1e-4)
    # Saved as a resynth bundle, it loads with weights_only=True and keeps its provenance.
    atomic_save(convert_any(path), tmp_path / "conv.pt")
    b2 = load_bundle(tmp_path / "conv.pt", require_D=True)
    assert b2.meta["source"] == "NVlabs/stylegan2-ada-pytorch" and b2.meta["conv_clamp_ignored"] == 256
    assert b2.data["xflip"] is True
    assert torch.allclose(b2.G_ema.synthesis(ws), reference_generator(g, ws), atol=1e-4, rtol=1e-4)


def test_resynth_convert_reads_a_pickle(ada_pickle, tmp_path, capsys):
    from detector.cli import main
    from gan_inversion.checkpoints import load_bundle

    path, g, *_ = ada_pickle
    assert main(["convert", str(path), str(tmp_path / "out.pt")]) == 0
    assert "NVlabs/stylegan2-ada-pytorch" in capsys.readouterr().out
    assert load_bundle(tmp_path / "out.pt").G_ema.img_resolution == ada_pickle[4]["size"]


def _variant(nvidia_modules, tmp_path, edit) -> Path:
    from .rosinality_ref import make_rosinality_state

    g, d = make_rosinality_state(16, style_dim=8, n_mlp=2, base=64, cmax=8)
    G, D = _ada_state(g, d, torch.zeros(8))
    edit(G, D)
    path = tmp_path / "variant.pkl"
    _write_ada_pickle(path, G, D, str(tmp_path / "ran.txt"), nvidia_modules.EasyDict)
    return path


def test_stylegan3_conditional_and_other_architectures_are_refused(nvidia_modules, tmp_path):
    from gan_inversion.checkpoints import BundleError
    from gan_inversion.convert import convert

    def sg3(G, D):  # alias-free generators: a Fourier-feature input and layers named L<i>_<size>_<channels>
        for k in [k for k in G if k.startswith("synthesis.")]:
            del G[k]
        G["synthesis.input.freqs"] = torch.randn(8, 2)
        G["synthesis.L0_36_8.weight"] = torch.randn(8, 8, 3, 3)
        G["synthesis.L1_36_8.weight"] = torch.randn(8, 8, 3, 3)

    def conditional(G, D):
        G["mapping.embed.weight"] = torch.randn(8, 10)

    def orig_arch(G, D):  # 'orig' G: ToRGB only at the last block
        del G["synthesis.b8.torgb.weight"]

    def skip_D(G, D):  # 'skip' D: fromRGB at every block
        D["b8.fromrgb.weight"] = torch.randn(8, 3, 1, 1)

    cases = [(sg3, "StyleGAN3"), (conditional, "conditional"), (orig_arch, "'skip' generator architecture"),
             (skip_D, "'resnet' discriminator")]
    for edit, message in cases:
        with pytest.raises(BundleError, match=message):
            convert(_variant(nvidia_modules, tmp_path, edit))
    assert not (tmp_path / "ran.txt").exists()
