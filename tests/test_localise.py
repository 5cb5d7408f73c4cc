"""Localisation: bisection to the entry that carries a tensor's error, or the finding that it is spread.

The runner here is a stand-in for measuring: a probe over entries [lo, hi) shows the size of the
planted error those entries carry (‖e[lo:hi]‖), so the bisection's decisions can be followed exactly.
"""

import math

import numpy as np
import pytest

from gradwatch.inputs import Workspace, build_slot
from gradwatch.localise import localise
from gradwatch.noise import Settled
from gradwatch.probes import Evaluator


def setup(error, limit=None):
    e = np.asarray(error, dtype=float)
    w = np.zeros(e.size)
    slot = build_slot("w", "w", w, np.arange(e.size) + 10.0)
    ev = Evaluator(lambda p: 0.0, None, 0, limit)
    return e, slot, ev, Workspace({"w": w}, [slot])


class Runner:
    """Shows |weight| × ‖e[lo:hi]‖ for a probe over [lo, hi) (its analytic side is the probe's own);
    ``upset`` careless measurements show nothing."""

    def __init__(self, e, upset=False, fail_after=None):
        self.e, self.upset, self.fail_after = e, upset, fail_after
        self.calls = []  # (lo, hi, step, careful)

    def __call__(self, ws, probe, step, careful):
        (d, weight), = probe.parts
        self.calls.append((d.lo, d.hi, step, careful))
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            return None
        size = abs(weight) * float(np.linalg.norm(self.e[d.lo:d.hi]))
        if self.upset and not careful:
            size = 0.0
        return Settled(probe.analytic, probe.analytic - size, size, size, size, True)


def first_of(e):
    return [Settled(1.0, 1.0, float(np.linalg.norm(e)), 0.0, 0.0, True)]


@pytest.mark.parametrize("entry", [0, 5, 37, 63])
def test_a_concentrated_error_is_followed_to_its_entry(entry):
    e, slot, ev, ws = setup(np.eye(64)[entry] * 3.0)
    run = Runner(e)
    got = localise(run, ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert got.localised and not got.spread and got.worst is not None and got.worst[0] == entry
    assert got.worst[1:] == (entry + 10.0, entry + 10.0 - 3.0)  # the entry's gradient, and its estimate
    assert run.calls[-1] == (entry, entry + 1, 1e-6, True)


@pytest.mark.parametrize("size", [0.5, 3.0])
def test_a_half_that_carries_the_whole_error_is_followed_without_measuring_the_other(size):
    e, slot, ev, ws = setup(np.eye(64)[0] * size)
    run = Runner(e)
    localise(run, ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    ranges = [(lo, hi) for lo, hi, _, _ in run.calls[:-1]]
    assert ranges == [(0, 32), (0, 16), (0, 8), (0, 4), (0, 2), (0, 1)]


def test_a_range_moves_the_parameters_by_the_step_in_all():
    e, slot, ev, ws = setup(np.eye(64)[63])  # the upper halves: ranges that do not start at 0
    run = Runner(e)
    localise(run, ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    for lo, hi, step, careful in run.calls[:-1]:
        assert step == pytest.approx(1e-6 / math.sqrt(hi - lo)) and not careful


def test_an_error_both_halves_carry_for_two_levels_is_spread():
    e, slot, ev, ws = setup(np.ones(16))
    got = localise(Runner(e), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert got.spread and got.localised and got.worst is not None


def test_an_error_shared_for_one_level_only_is_not_spread():
    # level 1: halves carry 4 and 1 (a fifth each way is the spread share); level 2: one entry carries all
    e = np.zeros(4)
    e[0], e[2] = 2.0, 1.0
    e, slot, ev, ws = setup(e)
    got = localise(Runner(e), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert not got.spread and got.worst is not None and got.worst[0] == 0


@pytest.mark.parametrize("share,spread", [(0.21, True), (0.19, False)])
def test_spread_needs_the_smaller_half_to_carry_a_fifth_at_two_levels(share, spread):
    # halves carrying (1 - share) and share of the squared error at each of two levels
    big, small = math.sqrt(1 - share), math.sqrt(share)
    e = np.array([big * big, big * small, small * big, small * small])
    e, slot, ev, ws = setup(e)
    got = localise(Runner(e), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert got.spread is spread and got.worst is not None and got.worst[0] == 0


def test_the_larger_half_is_followed():
    e = np.array([0.0, 0.0, 1.0, 1.5])
    e, slot, ev, ws = setup(np.concatenate([[0.9, 0.0], e[2:]]))
    got = localise(Runner(e), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert got.worst is not None and got.worst[0] == 3


def test_halves_that_both_show_nothing_are_measured_again_carefully():
    e, slot, ev, ws = setup(np.eye(16)[11] * 2.0)
    run = Runner(e, upset=True)
    got = localise(run, ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert got.worst is not None and got.worst[0] == 11
    # at every level: both halves carelessly (nothing shows), then both carefully
    assert [careful for _, _, _, careful in run.calls[:-1]] == [False, False, True, True] * 4


@pytest.mark.parametrize("scale", [0.01, 100.0])
def test_halves_that_carry_their_parents_error_are_not_measured_again(scale):
    # the larger half carries more than half of the squared error at every level
    e, slot, ev, ws = setup(np.arange(1.0, 17.0) * scale)
    run = Runner(e)
    localise(run, ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert not any(careful for _, _, _, careful in run.calls[:-1])


def test_a_single_entry_tensor_is_its_own_worst_entry_without_measuring():
    e, slot, ev, ws = setup([5.0])
    run = Runner(e)
    got = localise(run, ev, ws, slot, [Settled(2.0, 7.0, 5.0, 5.0, 5.0, True)], 1e-6, np.random.default_rng(0))
    assert got.worst == (0, 2.0, 7.0) and got.localised and not got.spread and run.calls == []


@pytest.mark.parametrize("size,needed", [(16, 10), (17, 12), (2, 4)])
def test_bisection_starts_only_when_the_budget_affords_every_level(size, needed):
    # 2 evaluations per half per level, log2(size) levels rounded up, and the entry at the end
    e = np.eye(size)[size - 1]
    _, slot, ev, ws = setup(e, limit=needed)
    assert localise(Runner(e), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0)).localised
    _, slot, ev, ws = setup(e, limit=needed - 1)
    got = localise(Runner(e), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert not got.localised and got.worst is None and not got.spread


@pytest.mark.parametrize("fail_after", [0, 1, 3, 6])
def test_a_spent_budget_mid_way_stops_without_an_entry(fail_after):
    e, slot, ev, ws = setup(np.eye(16)[13])
    got = localise(Runner(e, fail_after=fail_after), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert not got.localised and got.worst is None


def test_a_spent_budget_during_the_careful_re_measure_stops_without_an_entry():
    e, slot, ev, ws = setup(np.eye(16)[13])
    got = localise(Runner(e, upset=True, fail_after=3), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert not got.localised and got.worst is None


def test_a_spread_error_keeps_its_spread_finding_when_the_budget_runs_out():
    e, slot, ev, ws = setup(np.ones(16))
    got = localise(Runner(e, fail_after=6), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert got.spread and not got.localised


@pytest.mark.parametrize("share,alone", [(0.92, True), (0.85, False)])
def test_a_half_is_followed_alone_when_it_carries_nine_tenths_of_the_squared_error(share, alone):
    e = np.zeros(8)
    e[0], e[7] = math.sqrt(share), math.sqrt(1 - share)
    e, slot, ev, ws = setup(e)
    run = Runner(e)
    localise(run, ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert (run.calls[1][:2] == (0, 2)) is alone  # the other half [4, 8) was not measured


def test_an_error_no_half_shows_is_not_called_spread():
    # the first probes showed an error, but no range carries any: upset measurements, not a spread error;
    # and the entry the bisection ends at shows no error, so none is named
    e, slot, ev, ws = setup(np.zeros(16))
    got = localise(Runner(e), ev, ws, slot, [Settled(1.0, 1.0, 1.0, 1.0, 1.0, True)], 1e-6, np.random.default_rng(0))
    assert not got.spread and not got.localised and got.worst is None


def test_first_probes_that_showed_nothing_still_lead_to_the_entry():
    e, slot, ev, ws = setup(np.eye(16)[9])
    got = localise(Runner(e), ev, ws, slot, [Settled(1.0, 1.0, 0.0, 0.0, 0.0, True)], 1e-6, np.random.default_rng(0))
    assert got.worst is not None and got.worst[0] == 9


class MisledOnce(Runner):
    """Like Runner, but the first bisection is drawn to entry 3, which shows no error once measured with
    care (a decoy, as a kink makes one); after that, the truth."""

    def __init__(self, e, decoys=1):
        super().__init__(e)
        self.decoys = decoys
        self.finals = 0

    def __call__(self, ws, probe, step, careful):
        (d, _), = probe.parts
        final = careful and d.hi - d.lo == 1
        if self.finals < self.decoys:
            self.calls.append((d.lo, d.hi, step, careful))
            if final:
                self.finals += 1
                return Settled(probe.analytic, probe.analytic, 0.0, 1e-9, 0.0, True)
            size = 3.0 if d.lo <= 3 < d.hi else 0.0
            return Settled(probe.analytic, probe.analytic - size, size, size, size, True)
        return super().__call__(ws, probe, step, careful)


def test_a_bisection_a_kink_misled_is_tried_once_more():
    e, slot, ev, ws = setup(np.eye(64)[40] * 3.0)
    run = MisledOnce(e)
    got = localise(run, ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert got.localised and got.worst is not None and got.worst[0] == 40
    assert run.finals == 1 and run.calls[-1] == (40, 41, 1e-6, True)


def test_an_entry_that_shows_no_error_is_not_reported_as_the_worst():
    e, slot, ev, ws = setup(np.eye(64)[40] * 3.0)
    run = MisledOnce(e, decoys=2)
    got = localise(run, ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert not got.localised and got.worst is None and run.finals == 2


class Misread(Runner):
    """Ranges of several entries look as if every entry carried the same share (kinks misleading the
    probes); single entries show what they really carry."""

    def __call__(self, ws, probe, step, careful):
        (d, weight), = probe.parts
        if d.hi - d.lo == 1:
            return super().__call__(ws, probe, step, careful)
        self.calls.append((d.lo, d.hi, step, careful))
        size = abs(weight) * math.sqrt(d.hi - d.lo) * float(np.linalg.norm(self.e)) / math.sqrt(self.e.size)
        return Settled(probe.analytic, probe.analytic - size, size, size, size, True)


def test_an_error_misread_as_spread_never_shows_an_entry_that_carries_none():
    e, slot, ev, ws = setup(np.eye(16)[11] * 2.0)
    run = Misread(e)
    got = localise(run, ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0))
    assert got.worst is None and not got.localised
    assert sum(hi - lo == 16 for lo, hi, _, _ in run.calls) == 0 and run.calls[0][:2] == (0, 8)
    assert [c[:2] for c in run.calls].count((0, 8)) == 2  # tried twice, each ending at a clean entry


@pytest.mark.parametrize("threshold,shown", [(1e-3, False), (1e-8, True)])
def test_an_entry_shows_an_error_only_when_its_own_difference_reaches_the_threshold(threshold, shown):
    # a spread error of 1e-5 per entry on gradients of 10..25: formula (2) of one entry ~ 3e-7 to 5e-7
    e, slot, ev, ws = setup(np.full(16, 1e-5))
    got = localise(Runner(e), ev, ws, slot, first_of(e), 1e-6, np.random.default_rng(0), threshold)
    assert got.spread and (got.worst is not None) is shown and got.localised is shown


def test_an_entry_is_weighed_against_the_threshold_times_its_own_size():
    # gradients of 0.01: formula (2) of an entry carrying 1e-5 is ~5e-4, above a threshold of 1e-4
    e = np.full(16, 1e-5)
    w = np.zeros(16)
    slot = build_slot("w", "w", w, np.full(16, 0.01))
    ev = Evaluator(lambda p: 0.0, None, 0, None)
    got = localise(Runner(e), ev, Workspace({"w": w}, [slot]), slot, first_of(e), 1e-6, np.random.default_rng(0), 1e-4)
    assert got.worst is not None and got.localised
