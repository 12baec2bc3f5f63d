"""NVIDIA stylegan2-ada pickles read as data (gan_inversion/legacy.py): the tests write pickles with the real
format's structure (persistent-object records carrying module source, tensors, parameters, nested dicts) from
resynth's own networks, through stand-in `torch_utils.persistence` / `dnnlib.util` modules, and check that the
weights come back and that nothing in the file is ever run."""

from __future__ import annotations

import collections
import os
import pickle
import sys
import types

import pytest
import torch

from gan_inversion.legacy import NvidiaPickleRefused, PersistentRecord, read_nvidia_pickle


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
