"""The commands that fit or evaluate a detector file: fit (and attribution with --register), fit-cascade,
latent-map, fit-operating, calibrate, eval-detector. Their defaults come from the configuration dataclasses."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from gan_inversion.defaults import DEFAULT_BUNDLE, DEFAULT_CACHE, DEFAULT_DATA, DEFAULT_DETECTOR, DEFAULT_ENCODER
from gan_inversion.photos import add_real_arguments

from ..fitting.attribution import AttributionConfig
from ..fitting.calibrate import score_folder
from ..fitting.cascade import CascadeConfig
from ..fitting.config import DetectorConfig
from ..fitting.evaluate import EVAL_CONDITIONS, evaluate_detector
from ..fitting.operating import OperatingConfig
from .common import add_device, bundle_photos, default_of, device_of

EMBEDDED = DetectorConfig()


def cmd_fit(args) -> int:
    if args.register:
        return cmd_fit_attribution(args)
    from gan_inversion.checkpoints import load_bundle
    from gan_inversion.encoder import load_encoder
    from gan_inversion.perceptual import build_perceptual, parse_backend_id

    from ..fitting.fit import fit_detector

    device = device_of(args)
    bundle = load_bundle(args.bundle, device=device, require_D=True)
    out = Path(args.out)
    encoder, e_info = (None, None)
    if args.encoder != "none":
        encoder, e_info = load_encoder(args.encoder, G=bundle.G_ema, device=device)
    backend = args.perceptual or (e_info["perceptual"] if e_info else "mobilenet_v2@64")
    name, size = parse_backend_id(backend)
    perc = build_perceptual(name, input_size=size).to(device)
    reals = bundle_photos(args, bundle, "train")
    rel = lambda p: os.path.relpath(Path(p).resolve(), out.resolve().parent)  # noqa: E731
    spec = fit_detector(out, G=bundle.G_ema, D=bundle.D, encoder=encoder, perceptual=perc, reals=reals,
                        bundle_file=rel(args.bundle), encoder_file=rel(args.encoder) if encoder is not None else None,
                        config=config_from_args(args), cache_dir=args.cache, device=device)
    c = spec["classifier"]
    ev = spec.get("evidence")
    print(json.dumps({"detector": str(out), "model_id": spec["model_id"], "chosen": c["selection"],
                      "threshold": ev["threshold"] if ev else c["threshold"],
                      "calibration_split": c["calibration_split"], "sizes": c["sizes"],
                      "command": spec["config"]["command"]}, indent=2))
    return 0


def config_from_args(args) -> DetectorConfig:
    """The DetectorConfig the `fit` flags describe (every flag's default is the embedded configuration's)."""
    e = EMBEDDED
    features = dataclasses.replace(
        e.features, refine_steps=args.refine_steps, space=args.space,
        degradations=() if args.no_degradation_search else e.features.degradations,
        # without refinement steps there is nothing to split: every candidate is scored on the encoder's guess
        search_steps=None if args.search_steps < 0 or args.refine_steps == 0 else args.search_steps)
    real = bool(getattr(args, "real", None))  # the embedded auxiliary generator is Fashion-MNIST's: not for a folder
    aux = () if args.no_aux_generator else tuple(args.aux_generator or (() if real else e.fit.aux_generators))
    fit = dataclasses.replace(
        e.fit, n_real=args.n_real, n_fake=args.n_fake, launder_prob=args.launder_prob, batch=args.batch, seed=args.seed,
        real_model=not args.no_real_model, n_reference=args.n_reference, artifact_cnn=not args.no_artifact_cnn,
        n_artifact=args.n_artifact, reconstruction_fakes=args.reconstruction_fakes, aux_generators=aux,
        n_aux=args.n_aux, latent_map=args.latent_map, n_operating=args.n_operating,
        compact_plan=real,  # a folder's photos: no gaps in the data plan
        n_cascade=getattr(args, "n_cascade", e.fit.n_cascade))
    artifacts = dataclasses.replace(e.artifacts, max_epochs=args.artifact_epochs,
                                    min_epochs=min(e.artifacts.min_epochs, args.artifact_epochs))
    return dataclasses.replace(
        e, features=features, fit=fit, artifacts=artifacts,
        classifier=dataclasses.replace(e.classifier, calibration=args.calibration, target_fpr=args.target_fpr),
        real_model=dataclasses.replace(e.real_model, n_components=args.real_components, mixture=args.real_mixture))


def cmd_fit_attribution(args) -> int:
    from ..components.attribution import AttributionError, load_member
    from ..fitting.attribution import fit_attribution

    device = device_of(args)
    try:
        members = []
        for item in args.register:
            name, sep, files = item.partition("=")
            if not sep or not name or not files:
                raise SystemExit(f"--register {item!r}: expected NAME=BUNDLE or NAME=BUNDLE,ENCODER")
            bundle, _, enc = files.partition(",")
            members.append(load_member(name, bundle, enc or None, device=device))
        primary = args.primary or str(DEFAULT_DETECTOR)
        out = (Path(args.out) if args.out != str(DEFAULT_DETECTOR)
               else DEFAULT_DETECTOR.parent / "attribution_detector.json")
        if out.resolve() == Path(primary).resolve():
            raise SystemExit(f"--out {out} would overwrite the primary detector; choose another file")
        reals = bundle_photos(args, members[0].bundle, "train")
        spec = fit_attribution(out, primary_path=primary, primary_name=args.primary_name, members=members,
                               reals=reals, cfg=AttributionConfig(n_per_class=args.n_per_class, batch=args.batch),
                               device=device, cache_dir=args.cache)
    except AttributionError as exc:
        raise SystemExit(f"resynth fit --register: {exc}") from exc
    a = spec["attribution"]
    print(json.dumps({"detector": str(out), "model_id": spec["model_id"], "classes": a["classes"],
                      "threshold": a["threshold"], "calibration_split": a["calibration_split"]}, indent=2))
    return 0


def cmd_latent_map(args) -> int:
    from .. import plan
    from .. import spec as spec_file
    from ..fitting.images import data_plan, unused_reals
    from ..fitting.latent_map import compute_latent_map
    from ..runtime import Detector

    det = Detector.load(args.detector, device=device_of(args))
    if det.attribution is not None:
        raise SystemExit(f"{args.detector} is an attribution detector: add the map to its primary detector")
    fit_cfg = DetectorConfig.from_spec(det.spec).fit
    reals = bundle_photos(args, det.bundle, "train")
    photos = unused_reals(reals, fit_cfg, args.n, part="latent_map")
    m = compute_latent_map(G=det.G, D=det.D, encoder=det.encoder, perceptual=det.perceptual,
                           feature_cfg=det.feature_cfg, photos=photos, n=args.n, batch=args.batch, device=det.device)
    spec = spec_file.read_spec(args.detector)
    spec["latent_map"] = m  # a picture for people: the scores, the model id and the metrics do not change
    held = data_plan(fit_cfg).slice("latent_map", args.n)
    spec["data_plan"]["slices"]["latent_map"] = [held.start, held.stop]
    spec["data_plan"]["streams"]["latent_map_fakes"] = plan.seed("latent_map_fakes")
    spec_file.write_spec(args.detector, spec)
    print(json.dumps({"detector": args.detector, "held_out_auc": m["held_out_auc"], "n": m["n"]}))
    return 0


def cmd_eval_detector(args) -> int:
    from .. import spec as spec_file
    from ..fitting.evaluate import evaluate_detector
    from ..runtime import Detector

    det = Detector.load(args.detector, device=device_of(args))
    test = bundle_photos(args, det.bundle, "test")
    result = evaluate_detector(det, test, n=args.n, batch=args.batch, cache_dir=args.cache)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.store:
        spec = spec_file.read_spec(args.detector)
        spec["metrics"] = result
        spec_file.write_spec(args.detector, spec)
    return 0


def cmd_calibrate(args) -> int:
    import sys

    from .. import spec as spec_file
    from ..features import FeatureCache
    from ..fitting.calibrate import calibrate, calibrate_operating, load_folder, score_folder
    from ..roc import list_images
    from ..runtime import Detector

    folder = Path(args.real)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder of reference photos")
    det = Detector.load(args.detector, device=device_of(args))
    if det.attribution is not None:  # one threshold, on the photos as given
        p, skipped = score_folder(det, list_images(folder), batch=args.batch)
        spec = calibrate(args.detector, p, fpr=args.fpr, out_path=args.out, source=folder.name,
                         skipped=len(skipped))
    else:  # the operating point, the photos presented in every laundering condition
        photos, skipped = load_folder(det, list_images(folder))
        cache = FeatureCache(args.cache, det.feature_context()) if args.cache else None
        spec = calibrate_operating(det, args.detector, photos, fpr=args.fpr, uncertain_rate=args.uncertain_rate,
                                   out_path=args.out, source=folder.name, skipped=len(skipped), cache=cache)
    spec = spec_file.write_spec(args.out, spec)
    print(json.dumps({"detector": str(args.out), "model_id": spec["model_id"], **spec["calibration"],
                      **({"on_photos": spec["operating"]["on_photos"]} if "operating" in spec else {})}, indent=2))
    if skipped:
        print(f"{len(skipped)} files could not be decoded and were left out", file=sys.stderr)
    return 0


def cmd_fit_operating(args) -> int:
    from ..fitting.operating import OperatingConfig, add_operating_point
    from ..runtime import Detector

    out = args.out or args.detector
    if Path(out).resolve().parent != Path(args.detector).resolve().parent:
        raise ValueError("--out must sit beside the detector file (it names its bundle and encoder relatively)")
    det = Detector.load(args.detector, device=device_of(args))
    reals = bundle_photos(args, det.bundle, "train")
    cfg = OperatingConfig(target_fpr=args.target_fpr, uncertain_rate=args.uncertain_rate, batch=args.batch)
    spec = add_operating_point(args.detector, reals, cfg=cfg, n=args.n, out_path=out, cache_dir=args.cache or None,
                               device=device_of(args))
    op = spec["operating"]
    print(json.dumps({"detector": str(out), "model_id": spec["model_id"],
                      "thresholds": ({k: round(v, 4) for k, v in op["cells"]["thresholds"].items()} if op.get("cells")
                                     else {k: v["threshold"] for k, v in op["per_stratum"].items()}),
                      **({"own_cell": op["cells"]["own_cell"]} if op.get("cells") else {}),
                      "on_photos": op["on_photos"]}, indent=2))
    return 0


def cmd_fit_cascade(args) -> int:
    from .. import spec as spec_file
    from ..fitting.cascade import fit_cascade
    from ..runtime import Detector

    out = args.out or args.detector
    if Path(out).resolve().parent != Path(args.detector).resolve().parent:
        raise ValueError("--out must sit beside the detector file (it names its bundle and encoder relatively)")
    det = Detector.load(args.detector, device=device_of(args))
    reals = bundle_photos(args, det.bundle, "train")
    cfg = CascadeConfig(max_missed=args.max_missed, max_extra_fpr=args.max_extra_fpr, n_real=args.n_real,
                        n_fake=args.n_fake, decide_real=not args.fakes_only)
    spec = spec_file.write_spec(out, fit_cascade(det, reals, cfg=cfg, cache_dir=args.cache or None))
    c = spec["cascade"]
    print(json.dumps({"detector": str(out), "model_id": spec["model_id"], "band": c["band"],
                      "held_out": c["held_out"], "first_stage_cv": c["classifier"]["selection"]["cv"]}, indent=2))
    return 0


def add_fit_config_arguments(s) -> None:
    """The flags of a fit's configuration (config_from_args reads them; `fit` and `build` take them)."""
    e = EMBEDDED
    s.add_argument("--refine-steps", type=int, default=e.features.refine_steps,
                   help="projector steps after the encoder's guess (default %(default)s)")
    s.add_argument("--space", default=e.features.space, choices=("W", "W+"), help="refinement space")
    s.add_argument("--no-degradation-search", action="store_true",
                   help="invert the image as it is, without the search over blurs and down-up resizes")
    s.add_argument("--search-steps", type=int, default=e.features.search_steps,
                   help="steps per degradation candidate before the best continues (default %(default)s; -1: every "
                        "candidate refined fully)")
    s.add_argument("--no-real-model", action="store_true",
                   help="the generator-specific classifier alone: no photo model, linear probe or artifact CNN")
    s.add_argument("--no-artifact-cnn", action="store_true",
                   help="without the artifact CNN (its weights go beside the detector file as <name>.artifacts.pt)")
    s.add_argument("--n-artifact", type=int, default=e.fit.n_artifact,
                   help="the artifact CNN's training photos and samples, each (default %(default)s)")
    s.add_argument("--artifact-epochs", type=int, default=e.artifacts.max_epochs,
                   help="the artifact CNN's most epochs; it stops earlier when its validation AUC stops improving")
    s.add_argument("--reconstruction-fakes", action="store_true",
                   help="the artifact CNN's fakes also hold its photos' reconstructions by autoencoders with "
                        "generators' upsampling layers")
    s.add_argument("--aux-generator", action="append", metavar="FILE",
                   help="an auxiliary generator of another family (resynth train-aux) whose samples join the linear "
                        "probe's fakes (repeatable; default: the embedded one, trained on Fashion-MNIST, and none "
                        "with --real: train one on your folder with resynth train-aux --real DIR)")
    s.add_argument("--no-aux-generator", action="store_true", help="no auxiliary generator")
    s.add_argument("--n-aux", type=int, default=e.fit.n_aux, help="samples per auxiliary generator")
    s.add_argument("--n-operating", type=int, default=e.fit.n_operating,
                   help="held-out photos the operating point is set on, each in every laundering condition "
                        "(resynth fit-operating; 0: none, the evidence's threshold decides)")
    s.add_argument("--n-real", type=int, default=e.fit.n_real, help="the fit's photos (default %(default)s)")
    s.add_argument("--n-fake", type=int, default=e.fit.n_fake, help="the fit's samples (default %(default)s)")
    s.add_argument("--n-reference", type=int, default=e.fit.n_reference,
                   help="reference photos of the tail probabilities (0: half of the calibration photos)")
    s.add_argument("--latent-map", type=int, default=e.fit.latent_map,
                   help="photos and samples of the 2D latent map (0: no map)")
    s.add_argument("--launder-prob", type=float, default=e.fit.launder_prob,
                   help="share of the fit's images given one random laundering")
    s.add_argument("--seed", type=int, default=e.fit.seed, help="the fit's seed (the data plan's streams)")
    s.add_argument("--real-components", type=int, default=e.real_model.n_components,
                   help="the photo model's PCA dimensions")
    s.add_argument("--real-mixture", type=int, default=e.real_model.mixture,
                   help="the photo model's Gaussian mixture components")
    s.add_argument("--calibration", default=e.classifier.calibration, choices=("sigmoid", "isotonic"),
                   help="the classifier's probability calibration")
    s.add_argument("--target-fpr", type=float, default=e.classifier.target_fpr,
                   help="false-positive rate the threshold is set at (default %(default)s)")
    s.add_argument("--batch", type=int, default=e.fit.batch, help="images per inversion batch")


def add_fit(sub) -> None:
    s = sub.add_parser("fit", help="fit a detector (features, classifier, evidences, threshold) for a bundle; with "
                                   "no flags, the embedded detector's configuration")
    s.add_argument("--bundle", default=str(DEFAULT_BUNDLE), help="the generator bundle (resynth train/convert)")
    s.add_argument("--encoder", default=str(DEFAULT_ENCODER), help="encoder file, or 'none' (start from w_avg)")
    s.add_argument("--out", default=str(DEFAULT_DETECTOR), help="the detector file to write (.json)")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="the Fashion-MNIST folder (resynth prepare-data)")
    add_real_arguments(s)
    s.add_argument("--perceptual", default=None, help="perceptual backend as name@size (default: the encoder's)")
    add_fit_config_arguments(s)
    s.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache folder")
    a = AttributionConfig()
    s.add_argument("--register", action="append", default=[], metavar="NAME=BUNDLE[,ENCODER]",
                   help="fit an attribution detector instead: register this generator beside the primary "
                        "detector's (repeatable); --out defaults to models/attribution_detector.json")
    s.add_argument("--primary", default=None, help="with --register: the primary detector (default: the embedded)")
    s.add_argument("--primary-name", default="fmnist32", help="with --register: the primary generator's name")
    s.add_argument("--n-per-class", type=int, default=a.n_per_class,
                   help="with --register: photos and samples of each generator to fit the attribution on")
    add_device(s)
    s.set_defaults(func=cmd_fit)


def add_others(sub) -> None:
    s = sub.add_parser("latent-map", help="add the 2D latent map (refined codes of photos and samples) to a "
                                          "detector file; scores and model id do not change")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector file to add it to")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="the Fashion-MNIST folder")
    add_real_arguments(s)
    s.add_argument("--n", type=int, default=EMBEDDED.fit.latent_map, help="photos (the plan's slice) and samples")
    s.add_argument("--batch", type=int, default=EMBEDDED.fit.batch, help="images per inversion batch")
    add_device(s)
    s.set_defaults(func=cmd_latent_map)

    s = sub.add_parser("eval-detector", help="held-out evaluation: test-split photos against fresh samples, "
                                             f"laundered too ({', '.join(EVAL_CONDITIONS)})")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector file")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="the Fashion-MNIST folder")
    add_real_arguments(s, evaluates=True)
    s.add_argument("--n", type=int, default=default_of(evaluate_detector, "n"), help="photos and samples per condition")
    s.add_argument("--batch", type=int, default=EMBEDDED.fit.batch, help="images per inversion batch")
    s.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache folder")
    s.add_argument("--json", help="also write the result here")
    s.add_argument("--store", action="store_true", help="store the result as the detector file's metrics")
    add_device(s)
    s.set_defaults(func=cmd_eval_detector)

    s = sub.add_parser("calibrate", help="set the threshold from your own real photos: a new detector file")
    s.add_argument("--real", required=True, help="folder of real reference photos (searched recursively)")
    s.add_argument("--fpr", type=float, default=EMBEDDED.classifier.target_fpr,
                   help="false-positive rate allowed on them (default %(default)s, the fit's target)")
    s.add_argument("--out", required=True, help="the new detector file (.json)")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector to calibrate")
    s.add_argument("--uncertain-rate", type=float, default=OperatingConfig.uncertain_rate,
                   help="share of your photos to be answered 'uncertain' (the band's rate; default %(default)s)")
    s.add_argument("--batch", type=int, default=default_of(score_folder, "batch"), help="images scored together")
    s.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache folder ('' for none)")
    add_device(s)
    s.set_defaults(func=cmd_calibrate)

    o = OperatingConfig()
    s = sub.add_parser("fit-operating", help="set a detector's operating point on the data plan's held-out photos: "
                                             "the fake threshold per presentation cell and the uncertain band")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector file")
    s.add_argument("--out", default=None, help="the new detector file, beside the old one (default: replace it)")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="the Fashion-MNIST folder")
    add_real_arguments(s)
    s.add_argument("--n", type=int, default=None,
                   help="photos of the plan's 'operating' slice, each presented in every laundering condition "
                        f"(default: the fit's, {EMBEDDED.fit.n_operating} for the embedded configuration)")
    s.add_argument("--target-fpr", type=float, default=o.target_fpr,
                   help="share of those photos answered 'fake', per presentation cell (default %(default)s)")
    s.add_argument("--uncertain-rate", type=float, default=o.uncertain_rate,
                   help="share of those photos answered 'uncertain' (default %(default)s)")
    s.add_argument("--batch", type=int, default=o.batch, help="images per inversion batch")
    s.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache folder ('' for none)")
    add_device(s)
    s.set_defaults(func=cmd_fit_operating)

    c = CascadeConfig()
    s = sub.add_parser("fit-cascade", help="add a two-stage cascade to a detector: the encoder's guess decides "
                                           "clear cases, the rest are refined")
    s.add_argument("--detector", default=str(DEFAULT_DETECTOR), help="the detector file")
    s.add_argument("--out", default=None, help="the new detector file, beside the old one (default: replace it)")
    s.add_argument("--data", default=str(DEFAULT_DATA), help="the Fashion-MNIST folder")
    add_real_arguments(s)
    s.add_argument("--n-real", type=int, default=c.n_real, help="held-out photos for the band (the plan's slice)")
    s.add_argument("--n-fake", type=int, default=c.n_fake, help="held-out fresh samples for the band")
    s.add_argument("--max-missed", type=float, default=c.max_missed,
                   help="share of the fakes the full detector flags that stage 1 may clear (default %(default)s)")
    s.add_argument("--max-extra-fpr", type=float, default=c.max_extra_fpr,
                   help="share of the held-out photos stage 1 may flag (default %(default)s)")
    s.add_argument("--fakes-only", action="store_true",
                   help="stage 1 only flags confident fakes; every other image is refined (keeps the ranking)")
    s.add_argument("--cache", default=str(DEFAULT_CACHE), help="feature cache folder ('' for none)")
    add_device(s)
    s.set_defaults(func=cmd_fit_cascade)


def add_commands(sub) -> None:
    add_fit(sub)
    add_others(sub)
