"""The 2D latent map: an image's refined W code drawn among the codes of reference photos and of samples.

Its horizontal axis is the direction that best separates photos' codes from samples' (a shrinkage linear
discriminant), its vertical axis the main direction of variation beside it. It is a picture for people, not an
input of any score. detector/fitting/latent_map.py fits it.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

LATENT_MAP_FORMAT = "resynth-latent-map"
SIZE = 256   # PNG side, pixels
MARGIN = 18


def ws_code(ws: torch.Tensor) -> np.ndarray:
    """[N, num_ws, w_dim] -> [N, w_dim]: one code per image (the mean over layers; in W space all rows agree)."""
    return ws.detach().double().mean(dim=1).cpu().numpy()


class LatentMap:
    """Serving side of `fit_latent_map`: project codes, draw the picture."""

    def __init__(self, spec: dict):
        if spec.get("format") != LATENT_MAP_FORMAT:
            raise ValueError(f"not a {LATENT_MAP_FORMAT} spec")
        self.spec = spec
        self.mean = np.asarray(spec["mean"], np.float64)
        self.components = np.asarray(spec["components"], np.float64)  # [2, w_dim]
        self.photos = np.asarray(spec["photos"], np.float64).reshape(-1, 2)
        self.samples = np.asarray(spec["samples"], np.float64).reshape(-1, 2)

    def project(self, w: np.ndarray) -> np.ndarray:
        """[N, w_dim] -> [N, 2]."""
        w = np.asarray(w, np.float64)
        if w.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"codes of dimension {w.shape[-1]}, the map expects {self.mean.shape[0]}")
        return (w - self.mean) @ self.components.T

    def png(self, point: np.ndarray) -> bytes:
        """The two reference clouds (photos blue, samples orange) and the image's code (a red cross), as PNG."""
        point = np.asarray(point, np.float64).reshape(2)
        pts = np.concatenate([self.photos, self.samples, point[None]])
        lo, hi = np.percentile(pts[:-1], 0.5, axis=0), np.percentile(pts[:-1], 99.5, axis=0)
        lo, hi = np.minimum(lo, point), np.maximum(hi, point)
        span = np.maximum(hi - lo, 1e-9)
        inner = SIZE - 2 * MARGIN

        def px(p):
            q = (np.asarray(p) - lo) / span
            return np.stack([MARGIN + q[..., 0] * inner, SIZE - MARGIN - q[..., 1] * inner], -1).round().astype(int)

        img = np.full((SIZE, SIZE, 3), 255, np.uint8)
        for cloud, colour in ((self.photos, (200, 120, 40)), (self.samples, (30, 140, 250))):  # BGR
            for x, y in px(cloud):
                cv2.circle(img, (int(x), int(y)), 2, colour, -1, lineType=cv2.LINE_AA)
        x, y = px(point)
        cv2.drawMarker(img, (int(x), int(y)), (20, 20, 220), cv2.MARKER_CROSS, 18, 3)
        cv2.circle(img, (int(x), int(y)), 10, (20, 20, 220), 2, lineType=cv2.LINE_AA)
        font = cv2.FONT_HERSHEY_SIMPLEX
        cv2.putText(img, "photos", (6, 12), font, 0.4, (200, 120, 40), 1, cv2.LINE_AA)
        cv2.putText(img, "samples", (62, 12), font, 0.4, (30, 140, 250), 1, cv2.LINE_AA)
        cv2.putText(img, "this image", (130, 12), font, 0.4, (20, 20, 220), 1, cv2.LINE_AA)
        cv2.putText(img, "photos <-> samples (refined w)", (6, SIZE - 5), font, 0.35, (90, 90, 90), 1, cv2.LINE_AA)
        cv2.arrowedLine(img, (MARGIN, SIZE - 14), (SIZE - MARGIN, SIZE - 14), (150, 150, 150), 1, tipLength=0.02)
        ok, buf = cv2.imencode(".png", img)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        return buf.tobytes()
