"""Shared helpers for the benchmarks: seeded evaluation images and RESULTS.md section updates."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from detector import plan
from gan_inversion.data import load_fashion_mnist, to_float
from gan_inversion.encoder import InvertConfig, invert
from gan_inversion.metrics import generate
from gan_inversion.projector import ProjectConfig, project

EVAL_FAKE_SEED = plan.seed("eval_fakes")

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def run_inversion(G, x: torch.Tensor, *, encoder, perceptual, steps: int, space: str, hybrid: bool,
                  initial_lr: float = InvertConfig.initial_lr, w_std: float | None = None):
    """One setting of the speed/accuracy frontier: hybrid inversion (the encoder's guess, then `steps` short
    refinement steps; the detector's own API) or optimisation only (`steps` projector steps from w_avg, with
    NVIDIA's latent-noise and learning-rate schedule). Returns the ProjectionResult."""
    if hybrid:
        return invert(G, x, encoder=encoder, perceptual=perceptual,
                      cfg=InvertConfig(refine_steps=steps, space=space, initial_lr=initial_lr))[0]
    return project(G, x, perceptual=perceptual, cfg=ProjectConfig(num_steps=steps, space=space), w_std=w_std)


def eval_images(data_root, G, n_real: int, n_fake: int, *, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """First n_real test-split photos and n_fake fresh G samples, float [-1, 1]."""
    test = load_fashion_mnist(data_root, split="test", canvas=G.img_resolution)
    reals = to_float(test.images[:n_real])
    fakes = generate(G, n_fake, seed=EVAL_FAKE_SEED, device=device)
    return reals, fakes


def write_section(name: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace (or append) the section between <!-- name:begin --> and <!-- name:end --> markers."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
