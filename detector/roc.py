"""ROC evaluation of the detector on a user's own folders of real and fake images (`resynth roc`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gan_inversion.data import IMAGE_SUFFIXES

from .imageio import ImageDecodeError
from .metrics import metrics_with_ci, plot_roc

TABLE_KEYS = ("auc", "ap", "eer", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr", "accuracy", "real_accuracy",
              "fake_accuracy", "ece")


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def resolve_folders(real: str | None, fake: str | None, combined: str | None) -> tuple[Path, Path]:
    if combined:
        root = Path(combined)
        real_dir, fake_dir = root / "0_real", root / "1_fake"
    else:
        if not (real and fake):
            raise ValueError("give --real DIR and --fake DIR, or one folder holding 0_real/ and 1_fake/")
        real_dir, fake_dir = Path(real), Path(fake)
    for d in (real_dir, fake_dir):
        if not d.is_dir():
            raise NotADirectoryError(f"{d} is not a folder")
    return real_dir, fake_dir


def score_folder(detector, folder: Path, *, batch: int = 32, desc: str = ""
                 ) -> tuple[np.ndarray, list[str], list[dict]]:
    """p_fake and verdict of every decodable image under folder; undecodable ones are listed with their reason."""
    scores, verdicts, skipped = [], [], []
    paths = list_images(folder)
    for i in tqdm(range(0, len(paths), batch), desc=desc, unit="batch"):
        preps, srcs = [], []
        for p in paths[i:i + batch]:
            try:
                preps.append(detector.prepare(p))
                srcs.append(str(p))
            except ImageDecodeError as exc:
                skipped.append({"path": str(p), "reason": exc.reason})
        if preps:
            res = detector.score_tensors(torch.stack([pr.tensor for pr in preps]), preps=preps, sources=srcs)
            scores += [r.p_fake for r in res]
            verdicts += [r.verdict for r in res]
    return np.asarray(scores, dtype=np.float64), verdicts, skipped


VERDICTS = ("fake", "uncertain", "real")


def operating_point(verdicts_real: list[str], verdicts_fake: list[str], m: dict, target_fpr: float) -> dict:
    """What a user is told at the threshold: the share of each folder answered fake / uncertain / real, the
    false-positive rate delivered on the photos against the target, and the TPR at 1% FPR of the ranking."""
    def shares(v):
        return {k: float(np.mean([x == k for x in v])) if v else 0.0 for k in VERDICTS}

    return {"real": shares(verdicts_real), "fake": shares(verdicts_fake), "target_fpr": target_fpr,
            "delivered_fpr": shares(verdicts_real)["fake"], "tpr_at_1pct_fpr": m["tpr_at_1pct_fpr"],
            "tpr_at_1pct_fpr_ci": m["tpr_at_1pct_fpr_ci"]}


def operating_table(op: dict, real_dir: Path, fake_dir: Path) -> str:
    rows = ["| folder | answered fake | uncertain | real |", "|---|---|---|---|"]
    for key, folder in (("real", real_dir), ("fake", fake_dir)):
        sh = op[key]
        rows.append(f"| {key}: {folder} | {sh['fake']:.1%} | {sh['uncertain']:.1%} | {sh['real']:.1%} |")
    lo, hi = op["tpr_at_1pct_fpr_ci"]
    return ("\n".join(rows) + f"\n\nFalse positives delivered on the real folder: {op['delivered_fpr']:.1%} "
            f"(target {op['target_fpr']:.1%}). TPR at 1% FPR (the ranking, at its own cut): "
            f"{op['tpr_at_1pct_fpr']:.1%} [{lo:.1%}, {hi:.1%}].\n")


def roc_on_folders(detector, real_dir: Path, fake_dir: Path, out_dir: str | Path, *, batch: int = 32) -> dict:
    """Score both folders, write metrics.json, table.md (the verdicts at the threshold first, then the ROC
    metrics) and roc.png into out_dir; returns what metrics.json holds."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    s_real, v_real, skip_r = score_folder(detector, real_dir, batch=batch, desc="real")
    s_fake, v_fake, skip_f = score_folder(detector, fake_dir, batch=batch, desc="fake")
    if len(s_real) == 0 or len(s_fake) == 0:
        raise ValueError(f"need images in both folders (real: {len(s_real)}, fake: {len(s_fake)})")
    y = np.concatenate([np.zeros(len(s_real)), np.ones(len(s_fake))]).astype(int)
    s = np.concatenate([s_real, s_fake])
    m = metrics_with_ci(y, s, detector.threshold, probabilities=True)
    op = operating_point(v_real, v_fake, m, float(detector.info["target_fpr"]))
    result = {"model_id": detector.model_id, "real": str(real_dir), "fake": str(fake_dir),
              "threshold": detector.threshold, "operating_point": op, "metrics": m, "skipped": skip_r + skip_f}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    rows = ["| metric | value | 95% CI |", "|---|---|---|"]
    rows += [f"| {k} | {m[k]:.4f} | [{m[k + '_ci'][0]:.4f}, {m[k + '_ci'][1]:.4f}] |" for k in TABLE_KEYS]
    table = (f"resynth {detector.model_id}: {m['n_real']} real ({real_dir}), {m['n_fake']} fake ({fake_dir}), "
             f"threshold {detector.threshold:.4f}\n\n" + operating_table(op, real_dir, fake_dir) + "\n"
             + "\n".join(rows) + "\n")
    (out / "table.md").write_text(table)
    plot_roc({"resynth": (y, s)}, out / "roc.png", title=f"ROC: {real_dir.name} vs {fake_dir.name}")
    return result
