"""The pictures that explain a score: input, reconstruction and heatmaps as upscaled PNGs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from gan_inversion.data import to_uint8

from .result import ScoreResult

EVIDENCE_SCALE = 4  # evidence PNGs are upscaled (nearest) so 32px images can be looked at


def png_bytes(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _upscale(arr: np.ndarray) -> np.ndarray:
    return cv2.resize(arr, None, fx=EVIDENCE_SCALE, fy=EVIDENCE_SCALE, interpolation=cv2.INTER_NEAREST)


def image_png(x: torch.Tensor) -> bytes:
    """float [C, H, W] in [-1, 1] -> upscaled PNG."""
    arr = to_uint8(x.cpu()).permute(1, 2, 0).numpy()
    arr = arr[..., 0] if arr.shape[2] == 1 else arr[..., ::-1]  # cv2 wants BGR
    return png_bytes(_upscale(np.ascontiguousarray(arr)))


def heatmap_png(m: torch.Tensor, vmax: float | None = None) -> bytes:
    """map [1, H, W] (>= 0) -> upscaled colour heatmap PNG (inferno), scaled to vmax (default: its max)."""
    a = m[0].detach().cpu().numpy().astype(np.float64)
    top = vmax if vmax is not None else max(float(a.max()), 1e-12)
    u8 = np.clip(a / top * 255.0, 0, 255).astype(np.uint8)
    return png_bytes(_upscale(cv2.applyColorMap(u8, cv2.COLORMAP_INFERNO)))


def evidence_to_files(result: ScoreResult, folder: str | Path, stem: str) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, data in result.evidence.items():
        p = folder / f"{stem}_{name}.png"
        p.write_bytes(data)
        out.append(p)
    return out
