"""`resynth build`: from a generator bundle and photos (a folder, or Fashion-MNIST) to a detector ready to serve.

The stages run in order, each writing into the build folder:

1. `encoder`: the image -> W+ encoder for the bundle, trained on the photos' train split (encoder.pt; a killed run
   resumes from its last checkpoint);
2. `fit`: the detector (detector.json, its artifact CNN beside it), with its operating point when the data plan's
   operating photos exist;
3. `cascade`: the opt-in two-stage cascade on the plan's cascade photos (skipped for a detector without the
   real-photo model);
4. `evaluation`: the held-out evaluation on the photos' test split (evaluation.json, and the detector file's
   metrics): per laundering, the ranking's metrics and the shares answered fake / uncertain / real;
5. `report`: REPORT.md (the operating-point table, the model card's entries, the command to serve it).

`build.json` records what the build is made from (the bundle's and the photos' fingerprints, the configuration)
and, per stage, its output's SHA-256 and how long it took. Rerun with the same command, a build skips every stage
whose record matches its output file and whose output loads, and redoes the rest; a folder made from other inputs
is refused. `build_plan` says before anything runs how many photos each slice of the data plan gets, what is
missing, and about how long each stage takes on this device.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gan_inversion.checkpoints import Bundle
from gan_inversion.data import ImageDataset
from gan_inversion.encoder import EncoderTrainConfig, load_encoder, train_encoder
from gan_inversion.fileio import atomic_write_bytes, sha256_file
from gan_inversion.metrics import generate
from gan_inversion.perceptual import build_perceptual, parse_backend_id

from .. import laundering
from .. import spec as spec_file
from ..features import extract_features
from ..plan import DESCRIPTIONS
from ..runtime import Detector
from .cascade import CascadeConfig, fit_cascade
from .config import DetectorConfig
from .evaluate import EVAL_CONDITIONS, evaluate_detector
from .fit import fit_detector
from .images import data_plan

BUILD_FORMAT = "resynth-build"
STAGES = ("encoder", "fit", "cascade", "evaluation", "report")
OUTPUTS = {"encoder": "encoder.pt", "fit": "detector.json", "cascade": "detector.json", "evaluation": "detector.json",
           "report": "REPORT.md"}  # stage -> the file it writes in the build folder


class BuildError(ValueError):
    """The build cannot run as asked: too few photos for a slice, or a folder made from other inputs."""


@dataclass(frozen=True)
class BuildConfig:
    detector: DetectorConfig = field(default_factory=DetectorConfig)   # the fit (the embedded configuration)
    encoder: EncoderTrainConfig = field(default_factory=EncoderTrainConfig)  # the encoder's training
    perceptual: str = "mobilenet_v2@64"      # the encoder's perceptual backend (name@input size)
    cascade: CascadeConfig | None = field(default_factory=CascadeConfig)  # None: no cascade stage
    n_eval: int = 300                        # held-out photos and samples per evaluation condition

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self), default=list))


@dataclass
class Inputs:
    """What a build reads: the bundle (and its file) and the photos' train and test splits."""
    bundle: Bundle
    bundle_file: Path
    train: ImageDataset
    test: ImageDataset

    def record(self) -> dict:
        def photos(ds):
            return getattr(ds, "source", None) or {"name": ds.name, "photos": len(ds)}
        return {"bundle_sha256": sha256_file(self.bundle_file), "train": {**photos(self.train),
                "fingerprint": self.train.fingerprint()}, "test": {**photos(self.test),
                                                                   "fingerprint": self.test.fingerprint()}}



def changed_inputs(old: dict, new: dict) -> list[str]:
    """What differs between a build record's inputs and configuration and these (empty: the same build)."""
    names = {"bundle_sha256": "the bundle", "train": "the photos (train split)", "test": "the photos (test split)"}
    out = [names.get(k, k) for k in new["inputs"] if old.get("inputs", {}).get(k) != new["inputs"][k]]
    return out + (["the settings"] if old.get("config") != new["config"] else [])

# ------------------------------------------------------------------ the plan
def slice_needs(cfg: BuildConfig) -> list[tuple[str, int, bool]]:
    """(slice, photos, required) of every data-plan slice the build reads. A required slice that the train split
    cannot hold refuses the build; the others fall back to the fit's own photos (no longer held out)."""
    f = cfg.detector.fit
    rows = [("fit", f.n_real, True)]
    if f.real_model:
        rows.append(("reference", f.n_reference, False))
        if f.artifact_cnn:
            rows.append(("artifact", f.n_artifact, False))
        if f.aux_generators:
            rows.append(("auxiliary", f.n_aux * len(f.aux_generators), False))
        if f.n_operating:
            rows.append(("operating", f.n_operating, True))
        if cfg.cascade is not None:
            rows.append(("cascade", cfg.cascade.n_real, True))
    if f.latent_map:
        rows.append(("latent_map", f.latent_map, False))
    return [r for r in rows if r[1] > 0]


def measure_device(bundle: Bundle, cfg: BuildConfig, *, device="cpu", n: int = 8) -> dict:
    """Seconds per image of one inversion as the features do it, and per encoder training step, measured here."""
    G = bundle.G_ema.to(device)
    name, size = parse_backend_id(cfg.perceptual)
    perc = build_perceptual(name, input_size=size).to(device)
    x = generate(G, n, seed=0, device=device)
    t0 = time.perf_counter()
    extract_features(G, bundle.D.to(device) if bundle.D is not None else None, None, perc, x,
                     cfg=cfg.detector.features)
    inv = (time.perf_counter() - t0) / n
    batch = cfg.encoder.batch_fake + cfg.encoder.batch_real
    t0 = time.perf_counter()
    with torch.enable_grad():   # an encoder step costs about a generator forward and backward with the loss
        y = generate(G, batch, seed=1, device=device)
        z = torch.randn(batch, G.z_dim, device=device, requires_grad=True)
        loss = perc(G(z), y).mean()
        loss.backward()
    return {"inversion_s": inv, "encoder_step_s": time.perf_counter() - t0, "device": str(device)}


def estimate_seconds(cfg: BuildConfig, rates: dict, n_train: int) -> dict[str, float]:
    """About how long each stage takes, from the measured rates (inversions dominate all but the encoder)."""
    f, inv = cfg.detector.fit, rates["inversion_s"]
    copies = 3 if f.real_model else 1   # the reference photos and their laundered and chained copies
    fit = (min(f.n_real, n_train) + f.n_fake + copies * f.n_reference + 2 * f.latent_map) * inv
    fit += f.n_operating * len(laundering.CONDITIONS) * inv
    cascade = 0.0 if cfg.cascade is None else (cfg.cascade.n_real + cfg.cascade.n_fake) * 1.2 * inv
    evaluation = 2 * cfg.n_eval * len(EVAL_CONDITIONS) * inv
    return {"encoder": cfg.encoder.steps * rates["encoder_step_s"], "fit": fit, "cascade": cascade,
            "evaluation": evaluation, "report": 0.0}


def build_plan(cfg: BuildConfig, n_train: int, n_test: int, rates: dict | None = None) -> dict:
    """How many photos each slice gets and whether the build can run; with rates, the time per stage."""
    plan = data_plan(cfg.detector.fit)
    rows, missing = [], []
    for name, n, required in slice_needs(cfg):
        s = plan.slice(name, min(n, len(plan.slice(name)) if name != "fit" else n))
        ok = s.stop <= n_train
        status = "ok" if ok else ("missing" if required else "short: the fit's own photos stand in")
        rows.append({"slice": name, "what": DESCRIPTIONS[name], "photos": n, "positions": [s.start, s.stop],
                     "status": status})
        if not ok and required:
            missing.append(f"the '{name}' slice ({DESCRIPTIONS[name]}) needs {n} photos at positions "
                           f"{s.start}-{s.stop} of the train split, which holds {n_train}")
    if n_test < 20:
        missing.append(f"the held-out test split holds {n_test} photos: at least 20 are needed to evaluate")
    out = {"train_photos": n_train, "test_photos": n_test, "slices": rows, "missing": missing,
           "train_photos_needed": max(r["positions"][1] for r in rows if r["status"] != "short: the fit's own "
                                      "photos stand in") if rows else 0}
    if rates is not None:
        out["rates"] = rates
        out["seconds"] = estimate_seconds(cfg, rates, n_train)
    return out


def format_plan(plan: dict) -> str:
    lines = [f"photos: {plan['train_photos']} in the train split, {plan['test_photos']} held out for evaluation",
             "", f"{'slice':<12} {'photos':>7} {'positions':>13}  status"]
    for r in plan["slices"]:
        lines.append(f"{r['slice']:<12} {r['photos']:>7} {r['positions'][0]:>6}-{r['positions'][1]:<6}  "
                     f"{r['status']}  ({r['what']})")
    if "seconds" in plan:
        rates = plan["rates"]
        lines += ["", f"on {rates['device']}: {1000 * rates['inversion_s']:.0f} ms an inversion, "
                      f"{1000 * rates['encoder_step_s']:.0f} ms an encoder step; about:"]
        lines += [f"  {stage:<11} {s / 60:7.1f} min" for stage, s in plan["seconds"].items() if s]
    lines += [""] + ([f"refused: {m}" for m in plan["missing"]] or ["the build can run"])
    return "\n".join(lines)


# ------------------------------------------------------------------ the stages
class Build:
    """One build folder: its record, and the stages run or skipped in order."""

    def __init__(self, out: Path, inputs: Inputs, cfg: BuildConfig, *, device="cpu", progress: bool = True):
        self.out, self.inputs, self.cfg, self.device, self.progress = Path(out), inputs, cfg, device, progress
        self.out.mkdir(parents=True, exist_ok=True)
        self.record_path = self.out / "build.json"
        made_from = {"inputs": inputs.record(), "config": cfg.to_dict()}
        if self.record_path.exists():
            old = json.loads(self.record_path.read_text())
            changed = changed_inputs(old, made_from)
            if changed:
                raise BuildError(f"{self.out} holds a build made from other inputs or settings (build.json; "
                                 f"changed: {', '.join(changed)}): choose another --out, or remove it to start "
                                 "again")
            self.record = old
        else:
            self.record = {"format": BUILD_FORMAT, "version": 1, **made_from, "stages": {}}
        self.encoder_path, self.detector_path = self.out / "encoder.pt", self.out / "detector.json"

    def _save(self) -> None:
        atomic_write_bytes(self.record_path, json.dumps(self.record, indent=1).encode())

    def output(self, stage: str) -> Path:
        return self.out / OUTPUTS[stage]

    def _done(self, stage: str) -> bool:
        """Whether `stage` is recorded done, its output file is as the build last wrote it (its SHA-256), and the
        output still loads."""
        done = self.record["stages"]
        path = self.output(stage)
        writers = [k for k in STAGES if OUTPUTS[k] == OUTPUTS[stage] and k in done]
        if stage not in done or not path.exists() or done[writers[-1]]["sha256"] != sha256_file(path):
            return False
        try:
            self.check(stage)
        except Exception:  # noqa: BLE001 — an output that no longer loads is simply redone
            return False
        return True

    def check(self, stage: str) -> None:
        """The stage's output loads and is what the next stage needs (raises otherwise)."""
        if stage == "encoder":
            _, info = load_encoder(self.encoder_path, G=self.inputs.bundle.G_ema)
            if info.get("step", 0) < self.cfg.encoder.steps:
                raise BuildError(f"{self.encoder_path} stopped at step {info.get('step')} of {self.cfg.encoder.steps}")
        elif stage in ("fit", "cascade", "evaluation"):
            det = Detector.load(self.detector_path)
            if stage == "cascade" and self.cfg.cascade is not None and det.evidence is not None \
                    and "cascade" not in det.spec:
                raise BuildError("the detector file has no cascade")
            if stage == "evaluation" and not det.spec.get("metrics"):
                raise BuildError("the detector file has no held-out metrics")

    def run(self, stages: tuple[str, ...] = STAGES, log=print) -> dict:
        for stage in stages:
            if stage != "report" and self._done(stage):
                log(f"[{stage}] done before: skipped")
                continue
            for later in STAGES[STAGES.index(stage):]:  # what this stage redoes, the later ones must too
                self.record["stages"].pop(later, None)
            log(f"[{stage}] running")
            t0 = time.perf_counter()
            note = getattr(self, f"_{stage}")()
            self.check(stage)
            self.record["stages"][stage] = {"sha256": sha256_file(self.output(stage)),
                                            "seconds": round(time.perf_counter() - t0, 1),
                                            "ended": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                            **({"note": note} if note else {})}
            self._save()
            log(f"[{stage}] done in {self.record['stages'][stage]['seconds']:.0f} s" + (f": {note}" if note else ""))
        return self.record

    def _encoder(self):
        name, size = parse_backend_id(self.cfg.perceptual)
        perc = build_perceptual(name, input_size=size).to(self.device)
        train_encoder(self.encoder_path, self.inputs.bundle.G_ema, self.inputs.train, perceptual=perc,
                      cfg=self.cfg.encoder, device=self.device, progress=self.progress,
                      log_path=self.encoder_path.with_suffix(".jsonl"))

    def _fit(self):
        b = self.inputs.bundle
        encoder, info = load_encoder(self.encoder_path, G=b.G_ema, device=self.device)
        name, size = parse_backend_id(info["perceptual"])
        perc = build_perceptual(name, input_size=size).to(self.device)
        rel = lambda p: os.path.relpath(Path(p).resolve(), self.out.resolve())  # noqa: E731
        fit_detector(self.detector_path, G=b.G_ema, D=b.D, encoder=encoder, perceptual=perc, reals=self.inputs.train,
                     bundle_file=rel(self.inputs.bundle_file), encoder_file=rel(self.encoder_path),
                     config=self.cfg.detector, cache_dir=self.out / "cache", device=self.device,
                     progress=self.progress)

    def _cascade(self):
        det = Detector.load(self.detector_path, device=self.device)
        if self.cfg.cascade is None or det.evidence is None:
            return "no cascade (not asked for, or a detector without the real-photo model)"
        spec_file.write_spec(self.detector_path, fit_cascade(det, self.inputs.train, cfg=self.cfg.cascade,
                                                             cache_dir=self.out / "cache", progress=self.progress))
        return None

    def _evaluation(self):
        det = Detector.load(self.detector_path, device=self.device)
        result = evaluate_detector(det, self.inputs.test, n=self.cfg.n_eval, cache_dir=self.out / "cache",
                                   progress=self.progress)
        (self.out / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n")
        spec = spec_file.read_spec(self.detector_path)
        spec["metrics"] = result
        spec_file.write_spec(self.detector_path, spec)

    def _report(self):
        det = Detector.load(self.detector_path)
        ev = json.loads((self.out / "evaluation.json").read_text())
        (self.out / "REPORT.md").write_text(report(det, ev, self.record, self.out))


def report(det: Detector, evaluation: dict, record: dict, out: Path) -> str:
    """The build's report: what it was made from, the operating-point table, the model card's entries."""
    ins = record["inputs"]
    lines = [f"# Build report: `{det.model_id}`", "",
             f"Photos: {ins['train'].get('photos', '?')} in the train split, {ins['test'].get('photos', '?')} held out "
             f"({ins['train'].get('folder', ins['train'].get('name'))}); bundle SHA-256 {ins['bundle_sha256'][:16]}….",
             "", "| stage | seconds | note |", "|---|---|---|"]
    lines += [f"| {k} | {v['seconds']:.0f} | {v.get('note', '')} |" for k, v in record["stages"].items()]
    lines += ["", f"What users are told on {evaluation['n_per_class']} held-out photos and as many fresh samples "
                  "per laundering (each as a user's file):", "",
              "| condition | photos fake / uncertain / real | samples fake / uncertain / real | TPR@1%FPR | AUC |",
              "|---|---|---|---|---|"]
    for name, m in evaluation["conditions"].items():
        a = m["answered"]
        lines.append(f"| {name} | {a['photos']['fake']:.1%} / {a['photos']['uncertain']:.1%} / "
                     f"{a['photos']['real']:.1%} | {a['fakes']['fake']:.1%} / {a['fakes']['uncertain']:.1%} / "
                     f"{a['fakes']['real']:.1%} | {m['tpr_at_1pct_fpr']:.1%} | {m['auc']:.3f} |")
    info = det.info
    lines += ["", "Model card entries:", "", f"- model id: `{det.model_id}`; resolution {info['resolution']}, "
              f"{info['channels']} channel(s); perceptual backend `{info['perceptual']}`; K = {info['refine_steps']}",
              f"- threshold (headline): {det.threshold:.4f}; data plan: {json.dumps(det.spec['data_plan']['slices'])}",
              "- it detects this generator's images; generators it was not built for are not what it was fitted "
              "on (see docs/evidence.md)", "", "Serve it:", "", "```sh",
              f"RESYNTH_DETECTOR={out / 'detector.json'} resynth serve", "```", ""]
    return "\n".join(lines)

