"""The latent seen in two dimensions: an image's refined W code on a fixed 2D map, among the codes of reference
photos and of generator samples.

The map is fitted on the refined W codes of photos and of the generator's samples when a detector is fitted
(`resynth fit`, or `resynth latent-map` for an existing detector file); the projection and a few hundred points
of each reference cloud are stored in the detector file as plain numbers. Its horizontal axis is the direction
that best separates the photos' codes from the samples' (a shrinkage linear discriminant), its vertical axis the
main direction of variation beside it (the first principal component of the codes with the first axis removed).
A plain two-component PCA shows what the garments are, not where they come from: on the embedded model its axes
separate photos from samples with AUC 0.53 and 0.51, the discriminant axis with 0.75 on held-out codes (measured
once with 200 + 200 codes; the file records its own held-out AUC). Scoring projects the image's own code (the
inversion its features came from) and draws it over both clouds. It is a picture for people, not an input of the
classifier: the clouds overlap, and an image's place among them is not a verdict.
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


def _axes(X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(mean, [2, D] unit axes: discriminant, then the first principal component orthogonal to it, its share of
    the variance) of codes X with labels y (0 photo, 1 sample)."""
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    mean = X.mean(0)
    u = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto").fit(X, y).coef_[0]
    u /= np.linalg.norm(u) + 1e-12
    R = (X - mean) - np.outer((X - mean) @ u, u)  # the codes with the discriminant direction removed
    _, s, vt = np.linalg.svd(R, full_matrices=False)
    v = vt[0] * np.sign(vt[0][np.abs(vt[0]).argmax()])  # a fixed sign
    total = float(((X - mean) ** 2).sum())
    return mean, np.stack([u, v]), float(s[0] ** 2 / max(total, 1e-12))


def fit_latent_map(w_photos: np.ndarray, w_samples: np.ndarray, *, max_points: int = 300, seed: int = 0,
                   source: str = "") -> dict:
    """The 2D map of codes [N, w_dim]: photos' and samples' codes, the separating axis and the main one beside it,
    with up to `max_points` of each cloud projected and the separating axis's AUC on held-out halves."""
    from sklearn.metrics import roc_auc_score

    w_photos, w_samples = np.asarray(w_photos, np.float64), np.asarray(w_samples, np.float64)
    if len(w_photos) < 3 or len(w_samples) < 3:
        raise ValueError("the latent map needs at least 3 photos and 3 samples")
    X = np.concatenate([w_photos, w_samples])
    y = np.r_[np.zeros(len(w_photos)), np.ones(len(w_samples))]
    rng = np.random.default_rng(seed)
    half = rng.permutation(len(X)) % 2 == 0  # two folds: the held-out AUC of the separating axis
    aucs = []
    for a, b in ((half, ~half), (~half, half)):
        if len(set(y[a])) == 2 and len(set(y[b])) == 2:
            m, ax, _ = _axes(X[a], y[a])
            aucs.append(roc_auc_score(y[b], (X[b] - m) @ ax[0]))
    mean, comps, share = _axes(X, y)
    pick = lambda W: W[np.sort(rng.permutation(len(W))[:max_points])]  # noqa: E731
    proj = lambda W: ((W - mean) @ comps.T).round(4).tolist()  # noqa: E731
    return {"format": LATENT_MAP_FORMAT, "axes": ["photos -> samples (discriminant)", "main variation beside it"],
            "mean": mean.tolist(), "components": comps.tolist(),
            "held_out_auc": round(float(np.mean(aucs)), 4) if aucs else None,
            "vertical_variance_share": round(share, 4),
            "photos": proj(pick(w_photos)), "samples": proj(pick(w_samples)),
            "n": {"photos": len(w_photos), "samples": len(w_samples)}, "source": source}


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
