"""Audit reports (CSV, JSON, self-contained HTML), rebuilt from the database without rescoring, as bytes."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from gan_inversion.fileio import atomic_write_bytes

from .config import LATENT_PNG, AuditConfig
from .db import AuditRow, FileRow, ResultRow, audit_progress


def audit_rows(engine: Engine, audit_id: str) -> tuple[AuditRow, list[dict]]:
    """The audit and one dict per file (joined with its result), without rescoring anything."""
    with Session(engine) as s:
        audit = s.get(AuditRow, audit_id)
        if audit is None:
            raise KeyError(f"no audit {audit_id!r} in this database")
        s.expunge(audit)
        mode = AuditConfig(**json.loads(audit.options)).mode
        rows = []
        for f in s.scalars(select(FileRow).where(FileRow.audit_id == audit_id).order_by(FileRow.path)):
            r = s.get(ResultRow, (f.content_hash, audit.model_id, mode)) if f.state == "scored" else None
            d = {"path": f.path, "kind": f.kind, "size": f.size, "content_hash": f.content_hash, "state": f.state,
                 "reason": f.reason, "deduplicated": bool(f.deduplicated), "p_fake": None, "verdict": None}
            if r is not None:
                summary = json.loads(r.summary)
                latent = summary.pop(LATENT_PNG, None)
                d.update(p_fake=r.p_fake, verdict=r.verdict, summary=summary, _thumb=r.thumbnail, _heat=r.heatmap,
                         _latent=base64.b64decode(latent) if latent else None,
                         reasons="; ".join(summary.get("reasons", [])), doubts="; ".join(summary.get("doubts", [])),
                         attributed_to=summary.get("attributed_to"))
                if r.kind == "video":
                    d.update(frames=summary["frames"], max_p=summary["max"], mean_p=summary["mean"],
                             share_over_threshold=summary["share_over_threshold"],
                             worst_frame_s=summary["worst_frame_s"])
            rows.append(d)
    return audit, rows


CSV_FIELDS = ["path", "kind", "size", "content_hash", "state", "reason", "deduplicated", "p_fake", "verdict",
              "reasons", "doubts", "attributed_to", "frames", "max_p", "mean_p", "share_over_threshold",
              "worst_frame_s"]


REPORT_FORMATS = {"csv": "text/csv", "json": "application/json", "html": "text/html"}


def render_report(engine: Engine, audit_id: str, fmt: str, *, folder: str | None = None) -> bytes:
    """The report of an audit as bytes: 'csv', 'json' or 'html', rebuilt from the database (KeyError: no audit).
    `folder`: how the report names the audited folder (the service: relative to its audit root, so that no
    server path reaches a client); None: its path, as the audit recorded it (the operator's CLI)."""
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"report format {fmt!r}: use one of {', '.join(REPORT_FORMATS)}")
    audit, rows = audit_rows(engine, audit_id)
    if fmt == "csv":
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue().encode()
    if fmt == "json":
        clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
        progress = audit_progress(engine, audit_id)
        if folder is not None:
            progress = {"folder": folder, **{k: v for k, v in progress.items() if k != "root"}}
        return json.dumps({"audit": progress, "files": clean}, indent=1).encode()
    return html_report(audit, rows, audit_progress(engine, audit_id), folder=folder).encode()


def write_report(engine: Engine, audit_id: str, out: str | Path) -> Path:
    """CSV, JSON or HTML (by the file suffix), rebuilt from the database."""
    out = Path(out)
    fmt = {".htm": "html"}.get(out.suffix.lower(), out.suffix.lower().lstrip("."))
    if fmt not in REPORT_FORMATS:
        raise ValueError(f"report format {out.suffix!r}: use .csv, .json or .html")
    return atomic_write_bytes(out, render_report(engine, audit_id, fmt))


def _histogram_svg(ps: list[float], bins: int = 20) -> str:
    counts, _ = np.histogram(ps, bins=bins, range=(0, 1))
    top = max(int(counts.max()) if len(ps) else 1, 1)
    W, H, bw = 400, 120, 400 / bins
    bars = "".join(f'<rect x="{i * bw:.1f}" y="{H - c / top * H:.1f}" width="{bw - 1:.1f}" height="{c / top * H:.1f}" '
                   f'fill="#557"><title>{i / bins:.2f}-{(i + 1) / bins:.2f}: {c}</title></rect>'
                   for i, c in enumerate(counts))
    return (f'<svg width="{W}" height="{H + 16}" role="img" aria-label="histogram of p_fake">{bars}'
            f'<text x="0" y="{H + 14}" font-size="11">0</text><text x="{W - 10}" y="{H + 14}" font-size="11">1</text>'
            "</svg>")


def html_report(audit: AuditRow, rows: list[dict], progress: dict, *, folder: str | None = None) -> str:
    esc = html.escape
    scored = [r for r in rows if r["state"] == "scored"]
    skipped = [r for r in rows if r["state"] == "skipped"]
    flagged = sorted((r for r in scored if r["verdict"] == "fake"), key=lambda r: -r["p_fake"])
    uncertain = sorted((r for r in scored if r["verdict"] == "uncertain"), key=lambda r: -r["p_fake"])
    shown = audit.root if folder is None else folder

    def img(b: bytes | None, side: int = 96) -> str:
        return (f'<img src="data:image/png;base64,{base64.b64encode(b).decode()}" width="{side}" height="{side}">'
                if b else "")

    flagged_rows = "".join(
        f"<tr><td>{esc(r['path'])}</td><td>{r['kind']}</td><td>{r['p_fake']:.4f}</td>"
        f"<td>{img(r.get('_thumb'))}</td><td>{img(r.get('_heat'))}</td>"
        f"<td>{img(r.get('_latent'), 128)}</td><td>{esc(r.get('attributed_to') or '')}</td>"
        f"<td>{esc(json.dumps({k: v for k, v in r.get('summary', {}).items() if k != 'warnings'}))}</td></tr>"
        for r in flagged)
    uncertain_rows = "".join(
        f"<tr><td>{esc(r['path'])}</td><td>{r['kind']}</td><td>{r['p_fake']:.4f}</td><td>{img(r.get('_thumb'))}</td>"
        f"<td>{esc(inconclusive(r.get('summary') or {}))}</td></tr>"
        for r in uncertain)
    skipped_rows = "".join(f"<tr><td>{esc(r['path'])}</td><td>{esc(r['reason'] or '')}</td></tr>" for r in skipped)
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>resynth audit {esc(audit.id)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{image-rendering:pixelated}}</style></head><body>
<h1>resynth audit</h1>
<p>Folder <code>{esc(shown)}</code> · model <code>{esc(audit.model_id)}</code> · status {esc(progress['status'])}
 · updated {esc(progress['updated'])}</p>
<h2>Totals</h2>
<table><tr><th>files</th><th>scored</th><th>flagged fake</th><th>uncertain</th><th>skipped</th>
<th>deduplicated</th></tr>
<tr><td>{len(rows)}</td><td>{len(scored)}</td><td>{len(flagged)}</td><td>{len(uncertain)}</td><td>{len(skipped)}</td>
<td>{sum(r['deduplicated'] for r in rows)}</td></tr></table>
<h2>Scores</h2>{_histogram_svg([r['p_fake'] for r in scored])}
<h2>Flagged items ({len(flagged)}), most suspicious first</h2>
<table><tr><th>file</th><th>kind</th><th>p_fake</th><th>input</th><th>perceptual residual</th>
<th>latent code (2D)</th><th>attributed to</th><th>details</th></tr>
{flagged_rows}</table>
<h2>Uncertain items ({len(uncertain)}), for review</h2>
<p>The evidence was not enough for either answer; each row says what was inconclusive.</p>
<table><tr><th>file</th><th>kind</th><th>p_fake</th><th>input</th><th>what was inconclusive</th></tr>
{uncertain_rows}</table>
<h2>Skipped files ({len(skipped)})</h2><table><tr><th>file</th><th>reason</th></tr>{skipped_rows}</table>
</body></html>"""


def inconclusive(summary: dict) -> str:
    """What made an item 'uncertain': the checks against photos it failed, and its warnings."""
    return "; ".join([*(summary.get("doubts") or []), *(summary.get("warnings") or [])]) or "inconclusive"
