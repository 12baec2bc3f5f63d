"""The data plan: every slice of the train split and every random stream that fitting and evaluation use.

Photos are taken from one seeded permutation of the train split (the `fit` stream, seeded with the fit's seed;
the same generator then draws the fit's launderings). The fit's own photos are the permutation's first `n_fit`;
every other part that needs photos gets a slice past them:

- fixed slots, for the parts fitted by later commands (each refuses more photos than its slot holds):
  `cascade` (the cascade's band), `attribution` (an attribution detector), `latent_map`;
- from `reference_offset` on, chained in this order and sized by the fit: `reference` (the evidences' reference
  photos), `artifact` (the artifact CNN), `reconstruction` (the autoencoders of reconstruction fakes),
  `auxiliary` (the probe's photos beside the auxiliary generators' samples), `operating` (the photos the fake
  threshold and the uncertain band are set on: detector/fitting/operating.py).

A compact plan (`slot_sizes` given: a folder of a user's photos, where every photo counts) sizes the slots to what
the fit and the commands after it use, and chains everything without gaps; the embedded fit keeps its fixed
slots, so that changing one part's size never moves another part's photos. A compact plan chains the
`operating` slice first (a build cannot do without it; the others fall back to the fit's own photos).

Evaluation uses the test split only. Samples are drawn from streams of their own (`STREAMS`); a stream with
several generators adds `STREAM_STEPS[name] * k` for the k-th. `tests/test_plan.py` checks that the slices are
disjoint and the streams distinct. The plan a detector was fitted with is recorded in its file (`data_plan`).
"""

from __future__ import annotations

from dataclasses import dataclass

# Seeds of the random streams: sample seeds (z and noise) and laundering generators.
STREAMS = {
    "fit": 0,                          # + the fit's seed: the train split's permutation, then the fit's launderings
    "eval_fakes": 1_000_000_007,       # evaluation samples (never used by training: seed * 1_000_003 + step)
    "eval_fakes_psi": 1_000_000_008,   # evaluation samples at another truncation (benchmarks)
    "speed_fakes": 1_000_000_024,      # the speed benchmark's mixed batch
    "fit_fakes": 2_000_000_011,        # + the fit's seed: the fit's samples
    "baseline_fakes": 2_000_000_111,   # the baseline detectors' fitting samples (benchmarks)
    "probe_other_fakes": 2_000_000_211,  # the probe benchmark's samples of the suite's other generators
    "probe_aux_fakes": 7_000_000_001,  # the probe benchmark's auxiliary samples
    "reference_launder": 3_000_000_019,  # + seed: the laundered copies of the reference photos
    "probe_noise": 3_000_000_037,      # + seed: the noisy copies of the probe's fitting images
    "reference_chain": 77,             # + seed: the chained (edit, then JPEG) copies of the reference photos
    "latent_map_fakes": 4_000_000_007,  # the latent map's samples
    "artifact_fakes": 5_000_000_003,   # + seed: the artifact CNN's samples
    "aux_fakes": 6_000_000_011,        # + k: the k-th auxiliary generator's samples
    "aux_launder": 6_000_000_029,      # + seed: the launderings of the auxiliary fakes and their photos
    "cascade_fakes": 7_100_000_001,    # + seed: the cascade's held-out samples
    "cascade_launder": 7_000_000_101,  # + seed: their launderings and their photos'
    "cascade_split": 7_000_000_201,    # + seed: which of the cascade's photos are its reference
    "attribution_fakes": 8_000_000_009,  # + 7919 k + seed: the k-th registered generator's samples
    "attribution_launder": 9_000_000_011,  # + seed: the launderings of the attribution images
    "distill": 9_100_000_003,          # + seed: the distilled encoder's train-split photos (their permutation)
    "distill_fakes": 9_200_000_007,    # + seed: its samples (seed * 1_000_003 + chunk)
    "distill_launder": 9_300_000_011,  # + seed: the launderings of both (seed * 1_000_003 + chunk)
}
STREAM_STEPS = {"aux_fakes": 1, "attribution_fakes": 7919}
MAX_GENERATORS = 16  # streams with a step are distinct for this many generators
MAX_SEED = 16        # and every stream for fit seeds below this
# Streams that do not add the fit's seed (evaluation and benchmark samples, which every fit shares).
UNSEEDED = {"eval_fakes", "eval_fakes_psi", "speed_fakes", "baseline_fakes", "probe_other_fakes", "probe_aux_fakes",
            "latent_map_fakes", "aux_fakes"}

# Fixed slots past the fit's photos: (offset, capacity).
SLOTS = {"cascade": (0, 1000), "attribution": (1000, 2000), "latent_map": (3000, 2000)}
REFERENCE_OFFSET = 5000
CHAINED = ("reference", "artifact", "reconstruction", "auxiliary", "operating")
# a compact plan puts the slice a build cannot do without first: the others fall back to the fit's photos
COMPACT_CHAINED = ("operating", "reference", "artifact", "reconstruction", "auxiliary")
# what each slice holds, for messages
DESCRIPTIONS = {"fit": "the fit's photos", "cascade": "the cascade's held-out photos",
                "attribution": "the attribution's photos", "latent_map": "the latent map's photos",
                "reference": "the reference photos", "artifact": "the artifact CNN's photos",
                "reconstruction": "the autoencoders' photos", "auxiliary": "the auxiliary fakes' photos",
                "operating": "the operating point's photos"}


class PlanError(ValueError):
    """A part asks for more photos than its slice of the train split holds."""


def seed(name: str, fit_seed: int = 0, k: int = 0) -> int:
    """The seed of stream `name` for a fit with seed `fit_seed` (added unless the stream is UNSEEDED), for its k-th
    generator (streams with a step)."""
    if not 0 <= fit_seed < MAX_SEED or not 0 <= k < MAX_GENERATORS:
        raise PlanError(f"stream '{name}': fit seeds 0-{MAX_SEED - 1} and at most {MAX_GENERATORS} generators keep "
                        f"the streams distinct (got seed {fit_seed}, generator {k})")
    return STREAMS[name] + STREAM_STEPS.get(name, 0) * k + (0 if name in UNSEEDED else fit_seed)


@dataclass(frozen=True)
class Slice:
    name: str
    start: int  # positions in the seeded permutation of the train split
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def take(self, n: int) -> Slice:
        """The slice's first n positions; more than it holds is refused."""
        if n > len(self):
            raise PlanError(f"{DESCRIPTIONS[self.name]} ('{self.name}' slice) hold at most {len(self)} photos; "
                            f"{n} were asked for")
        return Slice(self.name, self.start, self.start + n)


@dataclass(frozen=True)
class DataPlan:
    """Where each part's photos lie in the permutation, for a fit of `n_fit` photos and its chained sizes."""

    n_fit: int
    n_reference: int = 0
    n_artifact: int = 0
    n_reconstruction: int = 0
    n_auxiliary: int = 0
    n_operating: int = 0
    reference_offset: int = REFERENCE_OFFSET
    slot_sizes: tuple[int, int, int] | None = None  # compact: the cascade's, attribution's and latent map's
                                                     # capacities, chained from the fit's photos on

    def slots(self) -> dict[str, tuple[int, int]]:
        """name -> (offset past the fit's photos, capacity) of the fixed slots."""
        if self.slot_sizes is None:
            return SLOTS
        out, off = {}, 0
        for name, cap in zip(SLOTS, self.slot_sizes, strict=True):
            out[name] = (off, cap)
            off += cap
        return out

    def slices(self) -> dict[str, Slice]:
        out = {"fit": Slice("fit", 0, self.n_fit)}
        slots = self.slots()
        for name, (off, cap) in slots.items():
            out[name] = Slice(name, self.n_fit + off, self.n_fit + off + cap)
        start = self.n_fit + (self.reference_offset if self.slot_sizes is None
                              else sum(cap for _, cap in slots.values()))
        for name in CHAINED if self.slot_sizes is None else COMPACT_CHAINED:
            n = getattr(self, f"n_{name}")
            out[name] = Slice(name, start, start + n)
            start += n
        return out

    def slice(self, name: str, n: int | None = None) -> Slice:
        s = self.slices()[name]
        return s if n is None else s.take(n)

    def fits(self, name: str, n: int, available: int) -> bool:
        """Whether a train split of `available` photos holds the first n positions of slice `name`."""
        return self.slice(name, n).stop <= available

    def record(self, used: dict[str, int], *, split: str, fingerprint: str, fit_seed: int,
               streams: list[str]) -> dict:
        """What a detector file records: the slices used (name -> [start, stop]) and the streams' seeds. Slices
        used together must not overlap."""
        taken = sorted((self.slice(k, n).start, self.slice(k, n).stop, k) for k, n in used.items() if n)
        for (_, stop, a), (start, _, b) in zip(taken, taken[1:], strict=False):
            if start < stop:
                raise PlanError(f"the '{a}' and '{b}' slices overlap (reference_offset {self.reference_offset} is "
                                "too small for the fixed slots)")
        return {"split": split, "split_fingerprint": fingerprint, "permutation_seed": seed("fit", fit_seed),
                "slices": {k: [self.slice(k, n).start, self.slice(k, n).stop] for k, n in used.items()},
                "streams": {k: seed(k, fit_seed) for k in streams}}
