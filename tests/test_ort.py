"""The ONNX Runtime path (gan_inversion/ort.py, Detector.load(runtime=...)) against torch, the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.runtime import Detector, DetectorError
from detector.runtime.pipeline import uses_onnx
from gan_inversion import ort
from gan_inversion.encoder import Encoder

from .conftest import make_D, make_G


@pytest.fixture
def cfg(tmp_path):
    return ort.OrtConfig(cache_dir=str(tmp_path / "onnx"), max_batch=3)  # 3: inputs of 4+ run in chunks


def _images(n, seed=0, size=16):
    return torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_networks_match_torch_and_fall_back_where_the_graph_cannot_answer(cfg, perc):
    G, D = make_G(seed=1), make_D(seed=1)
    torch.manual_seed(0)
    E = Encoder(img_resolution=16, img_channels=1, num_ws=G.num_ws, w_dim=G.w_dim, channel_base=64, channel_max=8,
                hidden=16).eval()
    torch.nn.init.normal_(E.out.weight, std=0.1)  # it starts at w_avg for every image otherwise
    x = _images(5)  # 5 > max_batch: chunked
    G_o, D_o = ort.ort_generator(G, cfg=cfg), ort.OrtDiscriminator(D, cfg=cfg)
    E_o, P_o = ort.OrtForward(E, x, name="encoder", cfg=cfg), ort.OrtPerceptual(perc, cfg=cfg)
    with torch.no_grad():
        ws = E(x)  # [N, num_ws, w_dim]
        for n in (1, 5):
            assert torch.allclose(E_o(x[:n]), ws[:n], atol=1e-5)
            assert torch.allclose(G_o.synthesis(ws[:n]), G.synthesis(ws[:n]), atol=1e-5)
            logit, feats = D(x[:n], mbstd_group=1, return_features=True)
            logit_o, feats_o = D_o(x[:n], mbstd_group=1, return_features=True)
            assert torch.allclose(logit_o, logit, atol=1e-4) and list(feats_o) == list(feats)
            assert all(torch.allclose(feats_o[k], feats[k], atol=1e-4) for k in feats)
            assert torch.allclose(D_o(x[:n], mbstd_group=1), logit, atol=1e-4)
        px = perc._prepare(x.repeat(1, 3, 1, 1))
        for a, b in zip(P_o.stage_features(px), perc.stage_features(px), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
        assert torch.allclose(P_o(x, x.flip(0)), perc(x, x.flip(0)), atol=1e-5)
        # options the graph was not exported for go to torch: random noise, D's batch statistics
        assert not torch.equal(G_o.synthesis(ws, noise_mode="random"), G_o.synthesis(ws, noise_mode="random"))
        assert torch.equal(D_o(x[:4]), D(x[:4]))
    # a call that needs gradients runs on torch and gets them (the projector's refinement steps)
    w = ws.clone().requires_grad_(True)
    img = G_o.synthesis(w)
    loss = P_o(img, x)
    loss.sum().backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    # the wrappers share the weights and leave the torch modules as they were
    assert G.synthesis is not G_o.synthesis and G_o.mapping is G.mapping
    assert type(G.synthesis).__name__ == "SynthesisNetwork"
    with pytest.raises(ValueError, match="expected inputs"):
        E_o(_images(2, size=8))


def test_graphs_are_cached_by_their_weights(cfg):
    G = make_G(seed=2)
    first = ort.ort_generator(G, cfg=cfg).synthesis.graph.path
    stamp = first.stat().st_mtime_ns
    assert ort.ort_generator(G, cfg=cfg).synthesis.graph.path == first and first.stat().st_mtime_ns == stamp
    other = ort.ort_generator(make_G(seed=3), cfg=cfg).synthesis.graph.path
    assert other != first and other.is_file()


def test_an_unusable_cache_folder_falls_back_to_a_temporary_one(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="unusable"):
        g = ort.OrtForward(make_D(seed=4), _images(2), name="d", cfg=ort.OrtConfig(cache_dir=str(blocker / "x")))
    assert g.graph.path.is_file() and blocker.read_text() == "not a folder"


def test_detector_on_onnx_runtime_gives_torchs_answers(tiny_detector, cfg):
    folder, det = tiny_detector
    fast = Detector.load(folder / "det.json", refine_steps=0, runtime="torch")
    onnx = Detector.load(folder / "det.json", refine_steps=0, runtime="auto", onnx=cfg)
    assert isinstance(onnx.G.synthesis, ort.OrtSynthesis) and isinstance(onnx.perceptual, ort.OrtPerceptual)
    assert not isinstance(fast.G.synthesis, ort.OrtSynthesis)
    assert (fast.info["runtime"], onnx.info["runtime"]) == ("torch", "onnx")
    x = _images(6, seed=5)
    a, b = fast.score_tensors(x), onnx.score_tensors(x)
    assert np.allclose([r.p_fake for r in a], [r.p_fake for r in b], atol=1e-4)
    assert [r.verdict for r in a] == [r.verdict for r in b]
    fa = np.array([list(r.features.values()) for r in a])
    fb = np.array([list(r.features.values()) for r in b])
    assert np.allclose(fa, fb, rtol=1e-3, atol=1e-4)
    # a refining detector keeps its steps on torch (with 'onnx' asked for explicitly) and still scores
    refined = Detector.load(folder / "det.json", runtime="onnx", onnx=cfg)
    r = refined.score_tensors(x[:2])
    assert len(r) == 2 and all(0 <= q.p_fake <= 1 for q in r)


def test_auto_picks_onnx_only_without_refinement_on_the_cpu(tiny_detector):
    folder, det = tiny_detector
    spec = det.spec
    assert spec["features"]["refine_steps"] > 0
    assert not uses_onnx("auto", spec) and uses_onnx("auto", spec, refine_steps=0)
    assert not uses_onnx("auto", spec, refine_steps=0, device="cuda")
    assert uses_onnx("onnx", spec) and not uses_onnx("torch", spec, refine_steps=0)
    with pytest.raises(DetectorError, match="runtime must be one of"):
        uses_onnx("openvino", spec)


def test_missing_onnxruntime_is_a_clear_error(tiny_detector, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_ort(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ort)
    folder, _ = tiny_detector
    assert not uses_onnx("auto", {"kind": "single", "features": {"refine_steps": 0}})
    with pytest.raises(DetectorError, match="onnxruntime"):
        Detector.load(folder / "det.json", runtime="onnx")
