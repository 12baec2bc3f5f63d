"""The configuration a detector is fitted with: one dataclass over every part's settings.

`DetectorConfig()` is the embedded detector's configuration: `resynth fit` takes its defaults from it, so the
command with no flags fits what ships. A detector file records its configuration (`config`) and the command that
reproduces it (`config.command`); `DetectorConfig.from_spec` is the one place that reads it back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from gan_inversion.defaults import EMBEDDED_AUXILIARY
from gan_inversion.degradation import DEFAULT_GRID

from ..features import FeatureConfig
from .artifacts import ArtifactConfig
from .classifier import ClassifierConfig
from .evidence import RealModelConfig
from .reconstructions import ReconstructionConfig

# The embedded detector's inversion: degradation-aware over the default grid, each candidate scored on the
# encoder's guess and only the best refined.
EMBEDDED_FEATURES = FeatureConfig(degradations=tuple((d.blur_sigma, d.scale) for d in DEFAULT_GRID), search_steps=0)


@dataclass(frozen=True)
class FitConfig:
    """The fit's images and parts; the sizes place the slices of the data plan (detector/plan.py)."""

    n_real: int = 2000          # the fit's photos (the 'fit' slice) and ...
    n_fake: int = 2000          # ... its samples; the classifier fits on a part, calibrates on the rest
    launder_prob: float = 0.5   # share of the fit's images given one random laundering (the same for both classes)
    batch: int = 50             # images per inversion batch
    seed: int = 0               # the fit's seed: the train split's permutation and every seeded stream
    real_model: bool = True     # also fit the photo model and the linear probe, and combine the evidences
    n_reference: int = 1000     # reference photos of the tail probabilities ('reference' slice; 0, or too few
                                # photos: half of the classifier's calibration photos)
    reference_offset: int = 5000  # where the chained slices start past the fit's photos (after the fixed slots)
    reference_copies: bool = True  # each reference photo also with a laundered copy (the wider reference ranges)
    reference_chained: bool = True  # and with a chained copy (blur, resize or noise, then JPEG)
    probe_noise_copies: bool = True  # the linear probe also sees a noisy copy of each of its fitting images
    latent_map: int = 300       # photos and samples whose refined codes make the 2D latent map (0: no map)
    artifact_cnn: bool = True   # also train the artifact CNN as an evidence
    n_artifact: int = 2000      # its photos ('artifact' slice) and as many fresh samples; 0, or too few photos:
                                # the classifier's fit part
    reconstruction_fakes: bool = False  # its fakes also hold its photos' reconstructions by a bank of autoencoders
                                        # with generators' upsampling layers (detector/fitting/reconstructions.py)
    n_reconstruction_train: int = 8000  # the autoencoders' photos ('reconstruction' slice; too few: the artifact
                                        # CNN's own photos)
    aux_generators: tuple[str, ...] = ()  # auxiliary generator files (gan_inversion/auxiliary.py): their samples
                                          # join the linear probe's fakes, as many 'auxiliary' photos its photos
    n_aux: int = 2000           # samples per auxiliary generator (too few photos: the fit part's, repeated)
    n_operating: int = 1000     # photos the operating point is set on ('operating' slice), each presented in every
                                # laundering condition (detector/fitting/operating.py): a presentation cell's
                                # threshold at 1% then rests on about 10 photos above it
    compact_plan: bool = False  # a compact data plan (a folder's photos): slots sized to use, no gaps between slices
    n_cascade: int = 600        # with a compact plan: the cascade slot's photos (resynth fit-cascade --n-real)


@dataclass(frozen=True)
class DetectorConfig:
    features: FeatureConfig = EMBEDDED_FEATURES                      # the inversion the features come from
    classifier: ClassifierConfig = ClassifierConfig()                # the generator-specific classifier
    fit: FitConfig = FitConfig(n_real=1500, n_fake=1500,            # the images and parts of the fit
                               aux_generators=(EMBEDDED_AUXILIARY,))
    artifacts: ArtifactConfig = ArtifactConfig()                     # the artifact CNN's training
    real_model: RealModelConfig = RealModelConfig()                  # the photo model
    reconstruction: ReconstructionConfig = ReconstructionConfig()    # the reconstruction fakes' autoencoders

    def to_dict(self) -> dict:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        def build(klass, values):
            names = {f.name for f in dataclasses.fields(klass)}
            unknown = set(values) - names - {"version"}
            if unknown:
                raise ValueError(f"unknown {klass.__name__} settings in the detector file: {sorted(unknown)}")
            values = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
                      for k, v in values.items() if k in names}
            return klass(**values)

        return cls(features=build(FeatureConfig, d["features"]), classifier=build(ClassifierConfig, d["classifier"]),
                   fit=build(FitConfig, d["fit"]), artifacts=build(ArtifactConfig, d["artifacts"]),
                   real_model=build(RealModelConfig, d["real_model"]),
                   reconstruction=build(ReconstructionConfig, d["reconstruction"]))

    @classmethod
    def from_spec(cls, spec: dict) -> DetectorConfig:
        """The configuration a single detector file was fitted with."""
        return cls.from_dict(spec["config"])

    def command(self) -> str:
        """The `resynth fit` command line that fits this configuration (flags only where it differs from the
        embedded one; settings without a flag are named in a comment)."""
        base, flags, other = DetectorConfig(), [], []
        for part, options in FLAGS.items():
            mine, theirs = dataclasses.asdict(getattr(self, part)), dataclasses.asdict(getattr(base, part))
            for name, value in mine.items():
                if value == theirs[name]:
                    continue
                flag = options.get(name)
                text = flag(value) if flag is not None else None
                if text is None:  # no flag sets this value
                    other.append(f"{part}.{name}={value!r}")
                else:
                    flags.append(text)
        cmd = " ".join(["resynth fit", *flags])
        return cmd + (f"  # and in DetectorConfig: {', '.join(other)}" if other else "")


def _flag(name: str):
    return lambda v: f"--{name} {v}"


# part -> setting -> the flag that sets a value, or None where no flag can (detector/cli/fit.py defines the flags)
FLAGS = {
    "features": {"refine_steps": _flag("refine-steps"), "space": _flag("space"),
                 "degradations": lambda v: None if v else "--no-degradation-search",
                 "search_steps": lambda v: f"--search-steps {-1 if v is None else v}"},
    "classifier": {"calibration": _flag("calibration"), "target_fpr": _flag("target-fpr")},
    "fit": {"n_real": _flag("n-real"), "n_fake": _flag("n-fake"), "launder_prob": _flag("launder-prob"),
            "batch": _flag("batch"), "seed": _flag("seed"), "real_model": lambda v: "--no-real-model",
            "n_reference": _flag("n-reference"), "artifact_cnn": lambda v: "--no-artifact-cnn",
            "n_artifact": _flag("n-artifact"), "reconstruction_fakes": lambda v: "--reconstruction-fakes",
            "aux_generators": lambda v: " ".join(f"--aux-generator {f}" for f in v) or "--no-aux-generator",
            "n_aux": _flag("n-aux"), "latent_map": _flag("latent-map"), "n_operating": _flag("n-operating"),
            "compact_plan": lambda v: "--real DIR" if v else None,  # the folder's name is in the data plan
            "n_cascade": lambda v: None},
    "artifacts": {"max_epochs": _flag("artifact-epochs")},
    "real_model": {"n_components": _flag("real-components"), "mixture": _flag("real-mixture")},
    "reconstruction": {},
}
