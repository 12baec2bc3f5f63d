"""Detection metrics shared by `resynth eval-detector`, `resynth roc` and the benchmark suite.

Labels: 1 = fake, 0 = real; scores: higher = more likely fake (p_fake, or any detector's score).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def eer(y: np.ndarray, s: np.ndarray) -> float:
    fpr, tpr, _ = roc_curve(y, s)
    fnr = 1 - tpr
    i = int(np.nanargmin(np.abs(fnr - fpr)))
    return float((fpr[i] + fnr[i]) / 2)


def tpr_at_fpr(y: np.ndarray, s: np.ndarray, fpr_target: float) -> float:
    """TPR at the largest threshold whose FPR does not exceed the target (no interpolation upward)."""
    fpr, tpr, _ = roc_curve(y, s)
    ok = fpr <= fpr_target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(ece)


def point_metrics(y: np.ndarray, s: np.ndarray, threshold: float | None = None, *,
                  probabilities: bool = False) -> dict:
    """AUC, AP, EER, TPR at 1%/5% FPR; with a threshold, accuracies there; with probabilities, the ECE."""
    y, s = np.asarray(y).astype(int), np.asarray(s, dtype=np.float64)
    out = {"auc": float(roc_auc_score(y, s)), "ap": float(average_precision_score(y, s)), "eer": eer(y, s),
           "tpr_at_1pct_fpr": tpr_at_fpr(y, s, 0.01), "tpr_at_5pct_fpr": tpr_at_fpr(y, s, 0.05)}
    if threshold is not None:
        pred = (s > threshold).astype(int)
        out.update(accuracy=float((pred == y).mean()), real_accuracy=float((pred[y == 0] == 0).mean()),
                   fake_accuracy=float((pred[y == 1] == 1).mean()))
    if probabilities:
        out["ece"] = expected_calibration_error(y, s)
    return out


def metrics_with_ci(y: np.ndarray, s: np.ndarray, threshold: float | None = None, *, probabilities: bool = False,
                    n_boot: int = 200, seed: int = 0) -> dict:
    """Point metrics plus a stratified bootstrap 95% interval for each: {name: value, name_ci: [lo, hi]}."""
    y, s = np.asarray(y).astype(int), np.asarray(s, dtype=np.float64)
    point = point_metrics(y, s, threshold, probabilities=probabilities)
    rng = np.random.default_rng(seed)
    idx0, idx1 = np.nonzero(y == 0)[0], np.nonzero(y == 1)[0]
    boots = {k: [] for k in point}
    for _ in range(n_boot):
        i = np.concatenate([rng.choice(idx0, len(idx0)), rng.choice(idx1, len(idx1))])
        for k, v in point_metrics(y[i], s[i], threshold, probabilities=probabilities).items():
            boots[k].append(v)
    out = {"n_real": int(len(idx0)), "n_fake": int(len(idx1))}
    for k, v in point.items():
        out[k] = v
        out[f"{k}_ci"] = [float(np.percentile(boots[k], 2.5)), float(np.percentile(boots[k], 97.5))]
    return out


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, *, title: str = "ROC") -> Path:
    """curves: {label: (y, scores)} -> one PNG with a ROC curve per label (log-scaled FPR inset is left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    for label, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], color="#aaa", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_frontier(rows: list[dict], path: str | Path, *, title: str = "speed / accuracy") -> Path:
    """rows: [{'setting', 'ms_per_image', 'auc_perceptual'}] -> PNG of AUC against ms/image (log x)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for family, marker in (("encoder", "s"), ("hybrid", "o"), ("optimisation", "^")):
        pts = [r for r in rows if r["setting"].startswith(family)]
        if pts:
            ax.plot([r["ms_per_image"] for r in pts], [r["auc_perceptual"] for r in pts], marker=marker,
                    label=family)
            for r in pts:
                ax.annotate(r["setting"].split()[-1], (r["ms_per_image"], r["auc_perceptual"]), fontsize=7,
                            textcoords="offset points", xytext=(4, -10))
    ax.set_xscale("log")
    ax.set(xlabel="ms per image (log)", ylabel="AUC", title=title)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
