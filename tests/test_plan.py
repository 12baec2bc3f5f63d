"""The data plan: the train split's slices are disjoint, the random streams distinct, and a slice refuses more
photos than it holds."""

import itertools

import pytest

from detector import plan
from detector.fitting.config import DetectorConfig
from detector.fitting.images import data_plan


def _overlap(a: plan.Slice, b: plan.Slice) -> bool:
    return a.start < b.stop and b.start < a.stop


@pytest.mark.parametrize("n_aux", [0, 1, 3])
def test_the_embedded_plan_has_disjoint_slices(n_aux):
    cfg = DetectorConfig().fit
    p = data_plan(cfg) if n_aux == 1 else plan.DataPlan(
        n_fit=cfg.n_real, n_reference=cfg.n_reference, n_artifact=cfg.n_artifact,
        n_reconstruction=cfg.n_reconstruction_train, n_auxiliary=cfg.n_aux * n_aux)
    slices = p.slices()
    assert set(slices) == {"fit", *plan.SLOTS, *plan.CHAINED}
    for a, b in itertools.combinations(slices.values(), 2):
        assert not _overlap(a, b), (a, b)
    # every slice of the embedded fit lies inside the Fashion-MNIST train split
    assert max(s.stop for s in slices.values()) <= 60_000


def test_plan_slices_are_disjoint_for_other_sizes():
    for n_fit, n_ref, n_art, n_rec, n_aux in [(10, 5, 0, 7, 3), (3000, 2000, 4000, 0, 6000), (1, 1, 1, 1, 1)]:
        slices = plan.DataPlan(n_fit=n_fit, n_reference=n_ref, n_artifact=n_art, n_reconstruction=n_rec,
                               n_auxiliary=n_aux).slices()
        for a, b in itertools.combinations(slices.values(), 2):
            assert not _overlap(a, b), (a, b)



def test_a_compact_plan_has_no_gaps_and_puts_the_operating_photos_first():
    """A folder's plan: every slice the fit uses, back to back, the operating photos right after the slots; a
    part the fit does not use takes no photos."""
    import dataclasses

    fit = dataclasses.replace(DetectorConfig().fit, compact_plan=True)
    slices = data_plan(fit).slices()
    used = sorted((s for s in slices.values() if len(s)), key=lambda s: s.start)
    assert [s.name for s in used] == ["fit", "cascade", "latent_map", "operating", "reference", "artifact",
                                      "auxiliary"]
    assert all(a.stop == b.start for a, b in zip(used, used[1:], strict=False))
    assert used[0].start == 0 and slices["operating"].stop == 1500 + 600 + 300 + 1000
    assert len(slices["reconstruction"]) == len(slices["attribution"]) == 0
    bare = dataclasses.replace(fit, real_model=False, latent_map=0)
    assert max(s.stop for s in data_plan(bare).slices().values()) == 1500 + 600  # the fit's and the cascade's
    with pytest.raises(plan.PlanError, match="'cascade' slice"):
        data_plan(fit).slice("cascade", 601)

def test_a_slot_refuses_more_photos_than_it_holds():
    p = plan.DataPlan(n_fit=100)
    offset, capacity = plan.SLOTS["cascade"]
    assert p.slice("cascade", capacity) == plan.Slice("cascade", 100 + offset, 100 + offset + capacity)
    with pytest.raises(plan.PlanError, match="'cascade' slice"):
        p.slice("cascade", capacity + 1)


def test_a_record_refuses_overlapping_slices():
    p = plan.DataPlan(n_fit=100, n_reference=50, reference_offset=0)  # the reference slice runs into the cascade's
    p.record({"fit": 100, "reference": 50}, split="s", fingerprint="f", fit_seed=0, streams=["fit"])  # not used: ok
    with pytest.raises(plan.PlanError, match="overlap"):
        p.record({"fit": 100, "reference": 50, "cascade": 600}, split="s", fingerprint="f", fit_seed=0, streams=[])


def test_the_random_streams_are_distinct():
    seeds = {}
    for name in plan.STREAMS:
        for fit_seed in range(0 if name in plan.UNSEEDED else plan.MAX_SEED):
            for k in range(plan.MAX_GENERATORS if name in plan.STREAM_STEPS else 1):
                s = plan.seed(name, fit_seed, k=k)
                assert s not in seeds or seeds[s] == name, f"{name} and {seeds[s]} share seed {s}"
                seeds[s] = name
        if name in plan.UNSEEDED:
            for k in range(plan.MAX_GENERATORS if name in plan.STREAM_STEPS else 1):
                s = plan.seed(name, k=k)
                assert s not in seeds or seeds[s] == name, f"{name} and {seeds[s]} share seed {s}"
                seeds[s] = name


def test_the_embedded_detector_records_its_plan():
    from detector import spec as spec_file
    from gan_inversion.defaults import DEFAULT_DETECTOR

    spec = spec_file.read_spec(DEFAULT_DETECTOR)
    record = spec["data_plan"]
    slices = [plan.Slice(k, *v) for k, v in record["slices"].items()]
    for a, b in itertools.combinations(slices, 2):
        assert not _overlap(a, b), (a, b)
    expected = data_plan(DetectorConfig.from_spec(spec).fit).slices()
    for s in slices:
        assert expected[s.name].start == s.start and s.stop <= expected[s.name].stop
    assert all(record["streams"][k] == plan.seed(k) for k in record["streams"])
