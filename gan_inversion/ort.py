"""Forward-only networks on ONNX Runtime's CPU provider, torch kept as the reference.

Scoring without gradients runs the same few networks over and over: the encoder, the generator's synthesis from a
guess, the perceptual net's stages, the discriminator's features. ONNX Runtime runs them 2-7x faster than torch at
batch 1 on this CPU and 1.2-2x at batch 16 (`python -m benchmarks.onnx_runtime`), with outputs within ~1e-5.

Each wrapper here is a drop-in for its network: same call, same outputs as torch tensors. It runs the exported graph
only for the call it was exported for (no gradient needed, on the CPU, the call's fixed options) and hands every
other call to the torch module it wraps, so a projector's refinement steps (which need gradients) still run on
torch while the guess, the targets' features and the final comparison run on ONNX Runtime. The wrapped modules
are shared, never modified.

Graphs are exported once per set of weights (torch.onnx's dynamo exporter, the batch dimension dynamic) and kept
in `OrtConfig.cache_dir` under a key of the weights, the input shape and the library versions; without a cache
directory each load exports into a temporary directory.
"""

from __future__ import annotations

import copy
import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .encoder import weights_fingerprint
from .networks import Discriminator, Generator
from .perceptual import PerceptualDistance

EXPORT_VERSION = 1  # bump when what is exported changes: old cached graphs are then ignored
DEFAULT_CACHE = Path.home() / ".cache" / "resynth" / "onnx"  # the CLI's and the service's default cache_dir


class OrtUnavailable(RuntimeError):
    """ONNX Runtime (or the exporter's onnx/onnxscript) is not installed."""


@dataclass(frozen=True)
class OrtConfig:
    threads: int | None = None       # intra-op threads of each session (None: torch.get_num_threads() at load)
    max_batch: int = 256             # largest batch one graph call takes; larger inputs are run in chunks
    cache_dir: str | None = None     # where exported graphs are kept between loads (None: a temporary directory)


def available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def _require():
    try:
        import onnxruntime as ort
        import onnxscript  # noqa: F401 - the dynamo exporter's dependency
    except ImportError as exc:
        raise OrtUnavailable(f"the ONNX Runtime path needs onnxruntime, onnx and onnxscript ({exc}); run "
                             "`make setup`, or score with the torch runtime") from exc
    return ort


class OrtGraph:
    """One forward function exported to ONNX and run by an InferenceSession: tensors in, a list of tensors out.

    fn: a module whose forward takes one tensor [N, ...] and returns a tensor or a tuple of tensors, each [N, ...].
    example: an input of the shape calls will have (the batch dimension aside).
    """

    def __init__(self, fn: nn.Module, example: torch.Tensor, *, name: str, cfg: OrtConfig = OrtConfig()):
        ort = _require()
        self.name, self.max_batch = name, cfg.max_batch
        self.item_shape = tuple(example.shape[1:])
        key = hashlib.sha256(f"{EXPORT_VERSION}|{name}|{type(fn).__name__}|{self.item_shape}|{example.dtype}|"
                             f"{torch.__version__}|{ort.__version__}|{weights_fingerprint(fn)}".encode()).hexdigest()[:24]
        self._tmp = None
        folder = None
        if cfg.cache_dir is not None:
            try:
                folder = Path(cfg.cache_dir)
                folder.mkdir(parents=True, exist_ok=True)
                if not os.access(folder, os.W_OK):
                    raise PermissionError(f"{folder} is not writable")
            except OSError as exc:
                warnings.warn(f"ONNX cache {cfg.cache_dir} unusable ({exc}); exporting into a temporary directory",
                              RuntimeWarning, stacklevel=2)
                folder = None
        if folder is None:  # kept as long as this graph (the session reads the file once, at creation)
            self._tmp = tempfile.TemporaryDirectory(prefix="resynth-onnx-")
            folder = Path(self._tmp.name)
        path = folder / f"{name}-{key}.onnx"
        if not path.is_file():
            _export(fn, example, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = cfg.threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        # torch runs between the graphs on the same cores: idle session threads must not spin on them
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        if tuple(x.shape[1:]) != self.item_shape:
            raise ValueError(f"{self.name}: expected inputs [N, {', '.join(map(str, self.item_shape))}], "
                             f"got {list(x.shape)}")
        x = x.detach().float().contiguous()
        parts = [self.session.run(None, {self.input_name: x[i:i + self.max_batch].numpy()})
                 for i in range(0, max(len(x), 1), self.max_batch)]
        return [torch.from_numpy(parts[0][k]) if len(parts) == 1 else
                torch.cat([torch.from_numpy(p[k]) for p in parts]) for k in range(len(parts[0]))]


def _export(fn: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Export fn at a dynamic batch size (the example's first two rows: a batch of 1 would be specialised)."""
    x = example[:2] if len(example) >= 2 else example.repeat(2, *([1] * (example.ndim - 1)))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(fn.eval(), (x,), dynamo=True, input_names=["x"],
                                 dynamic_shapes=({0: torch.export.Dim("n", min=1, max=4096)},), verbose=False)
        prog.save(str(tmp), external_data=False)
    os.replace(tmp, path)  # atomic: a concurrent load sees the whole graph or none


def _torch_needed(x: torch.Tensor) -> bool:
    """A call the graph cannot answer: gradients wanted, or not on the CPU."""
    return (torch.is_grad_enabled() and x.requires_grad) or x.device.type != "cpu"


class _Delegating(nn.Module):
    """A wrapper whose attributes not its own are the wrapped module's (`inner`)."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)


class OrtForward(_Delegating):
    """A module with one tensor input and tensor output (an encoder, an artifact CNN), on ONNX Runtime for calls
    without keyword options and without gradients."""

    def __init__(self, inner: nn.Module, example: torch.Tensor, *, name: str, cfg: OrtConfig = OrtConfig()):
        super().__init__()
        self.inner = inner          # the torch module: the reference, and the path for every other call
        self.graph = OrtGraph(inner, example, name=name, cfg=cfg)
        self.train(inner.training)

    def forward(self, x: torch.Tensor, **kwargs):
        if kwargs or _torch_needed(x):
            return self.inner(x, **kwargs)
        return self.graph(x)[0]


class _ConstSynthesis(nn.Module):
    def __init__(self, synthesis):
        super().__init__()
        self.synthesis = synthesis

    def forward(self, ws):
        return self.synthesis(ws, noise_mode="const")


class OrtSynthesis(_Delegating):
    """G.synthesis on ONNX Runtime for noise_mode='const' without explicit noise and without gradients."""

    def __init__(self, inner: nn.Module, *, cfg: OrtConfig = OrtConfig()):
        super().__init__()
        self.inner = inner          # the torch SynthesisNetwork
        example = torch.zeros(2, inner.num_ws, inner.w_dim)  # [N, num_ws, w_dim]
        self.graph = OrtGraph(_ConstSynthesis(inner), example, name="synthesis", cfg=cfg)

    def forward(self, ws: torch.Tensor, *, noise_mode: str = "const", noise=None, generator=None):
        if noise_mode != "const" or noise is not None or _torch_needed(ws):
            return self.inner(ws, noise_mode=noise_mode, noise=noise, generator=generator)
        return self.graph(ws)[0]  # [N, C, H, W]


class _DFeatures(nn.Module):
    def __init__(self, D: Discriminator):
        super().__init__()
        self.D = D

    def forward(self, img):
        logits, feats = self.D(img, mbstd_group=1, return_features=True)
        return (logits, *feats.values())


class OrtDiscriminator(_Delegating):
    """D on ONNX Runtime in per-image mode (mbstd_group=1), with or without its features, without gradients."""

    def __init__(self, inner: Discriminator, *, cfg: OrtConfig = OrtConfig()):
        super().__init__()
        self.inner = inner          # the torch Discriminator
        example = torch.zeros(2, inner.img_channels, inner.img_resolution, inner.img_resolution)
        with torch.no_grad():
            self.feature_names = list(inner(example, mbstd_group=1, return_features=True)[1])
        self.graph = OrtGraph(_DFeatures(inner), example, name="discriminator", cfg=cfg)

    def forward(self, img: torch.Tensor, *, mbstd_group: int | None = None, return_features: bool = False):
        if mbstd_group != 1 or _torch_needed(img):
            return self.inner(img, mbstd_group=mbstd_group, return_features=return_features)
        logits, *feats = self.graph(img)
        return (logits, dict(zip(self.feature_names, feats, strict=True))) if return_features else logits


class _Stages(nn.Module):
    def __init__(self, perceptual: PerceptualDistance):
        super().__init__()
        self.p = perceptual

    def forward(self, x):
        return tuple(self.p.stage_features(x))


class OrtPerceptual(PerceptualDistance):
    """A perceptual distance whose stage features run on ONNX Runtime when no gradient is needed; the distance,
    its stage weights and every call that needs gradients are the wrapped network's."""

    def __init__(self, inner: PerceptualDistance, *, cfg: OrtConfig = OrtConfig()):
        super().__init__(inner.backend, inner.input_size)
        self.inner = inner          # the torch perceptual network
        self.num_stages = inner.num_stages
        example = torch.zeros(2, 3, inner.input_size, inner.input_size)
        self.graph = OrtGraph(_Stages(inner), example, name=f"perceptual-{inner.backend}", cfg=cfg)
        self.eval().requires_grad_(False)

    def stage_features(self, x):
        if _torch_needed(x):
            return self.inner.stage_features(x)
        return self.graph(x)

    def stage_weights(self, diffs):
        return self.inner.stage_weights(diffs)


def ort_generator(G: Generator, *, cfg: OrtConfig = OrtConfig()) -> Generator:
    """A generator sharing G's weights whose synthesis is an OrtSynthesis (G itself is not modified)."""
    out = copy.copy(G)
    out._modules = dict(G._modules)  # its own module table, so that replacing synthesis leaves G's alone
    out.synthesis = OrtSynthesis(G.synthesis, cfg=cfg)
    return out
