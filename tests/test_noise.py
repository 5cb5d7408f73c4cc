"""The noise model and the verdict: bounds, settling, and the one function that decides."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradwatch.noise import (
    ProbeSet,
    Settled,
    chi2_lower_quantile,
    direction_upper,
    judge,
    relative_upper,
    settle,
)
from gradwatch.probes import Evaluator, Measurement
from gradwatch.tolerances import TOLERANCES


def evaluator(jitter=0.0):
    ev = Evaluator(lambda p: 0.0, None, 0, None)
    ev.jitter = jitter
    return ev


def probes(analytic, numeric, noise=0.0, unexplained=None, settled=True):
    a = np.asarray(analytic, dtype=float)
    n = np.asarray(numeric, dtype=float)
    gap = np.abs(a - n)
    u = np.zeros_like(a) if unexplained is None else np.asarray(unexplained, dtype=float)
    return ProbeSet(a, n, gap, gap + noise, u, settled)


# ------------------------------------------------------------------ chi-square and the bounds

@pytest.mark.parametrize("alpha", [1e-2, 1e-4, 1e-6])
def test_the_chi2_quantile_for_two_degrees_is_below_the_exact_one(alpha):
    exact = -2 * math.log(1 - alpha)  # P(chi2_2 < x) = 1 - exp(-x/2)
    assert chi2_lower_quantile(2, alpha) <= exact
    assert chi2_lower_quantile(2, alpha) > 0.9 * exact


@pytest.mark.parametrize("k", [2, 4, 6, 8])
def test_the_chi2_quantile_is_conservative_by_simulation(k):
    rng = np.random.default_rng(k)
    draws = np.sum(rng.standard_normal((400_000, k)) ** 2, axis=1)
    q = chi2_lower_quantile(k, 1e-3)
    assert np.mean(draws < q) <= 1e-3


def test_the_chi2_quantile_grows_with_the_degrees_of_freedom():
    qs = [chi2_lower_quantile(k, 1e-4) for k in (2, 4, 6, 8)]
    assert qs == sorted(qs) and qs[0] < qs[-1] / 100


def test_relative_upper_is_zero_for_no_error_and_infinite_past_twice_the_reference():
    assert relative_upper(0.0, 1.0) == 0.0
    assert relative_upper(1.0, 1.0) == pytest.approx(1.0)
    assert relative_upper(2.0, 1.0) == math.inf
    assert relative_upper(1e-3, 1.0) == pytest.approx(1e-3 / (2 - 1e-3))


def test_direction_bounds_shrink_with_more_probes_of_the_same_size():
    two = direction_upper([1e-9] * 2, 1.0)
    eight = direction_upper([1e-9] * 8, 1.0)
    assert eight < two / 10


def test_direction_bound_with_no_probe_proves_nothing():
    assert direction_upper([], 1.0) == math.inf


@settings(max_examples=60, deadline=None, derandomize=True)
@given(k=st.sampled_from([2, 4, 8]), m=st.integers(1, 40), seed=st.integers(0, 10_000))
def test_property_direction_bound_covers_the_error_of_gaussian_projections(k, m, seed):
    # whatever the error's layout, the bound from its projections on k normal directions covers it
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(m) * rng.choice([1.0, 0.0], size=m, p=[0.3, 0.7])
    e[rng.integers(m)] = 1.0
    g_norm = 10.0
    projections = [abs(float(rng.standard_normal(m) @ e)) for _ in range(k)]
    true = np.linalg.norm(e) / (2 * g_norm + np.linalg.norm(e))
    assert direction_upper(projections, g_norm) >= true or min(projections) < 1e-3 * np.linalg.norm(e)


# ------------------------------------------------------------------ settling one probe

def m(step, numeric, j_plus=1.0, j_minus=1.0):
    return Measurement(step, numeric, j_plus, j_minus)


def test_a_clean_first_measurement_settles_alone():
    s = settle(2.0, [m(1e-6, 2.0 + 1e-12)], evaluator(), 1.0, 1e-7, 2.0)
    assert s.settled and s.unexplained == 0.0 and s.bound >= s.gap


def test_a_suspicious_first_measurement_alone_is_not_settled():
    s = settle(2.0, [m(1e-6, 2.1)], evaluator(), 1.0, 1e-7, 2.0)
    assert not s.settled and s.unexplained == 0.0 and s.bound >= 0.1


def test_a_gap_that_stays_put_across_steps_is_unexplained():
    s = settle(2.0, [m(1e-6, 2.1), m(2.5e-7, 2.1)], evaluator(), 1.0, 1e-7, 2.0)
    assert s.settled and s.unexplained == pytest.approx(0.1, rel=1e-3)


def test_a_gap_that_a_smaller_step_removes_is_not_unexplained():
    s = settle(2.0, [m(1e-6, 2.1), m(2.5e-7, 2.0), m(6.25e-8, 2.0)], evaluator(), 1.0, 1e-7, 2.0)
    assert s.settled and s.unexplained == 0.0 and s.cause == "step"
    assert s.numeric == 2.1  # formula (2) is reported at the step chosen


def test_a_moving_estimate_is_unsettled_and_its_bound_holds_the_movement():
    trail = [m(1e-6, 2.4), m(2.5e-7, 2.2), m(6.25e-8, 2.1)]
    s = settle(2.0, trail, evaluator(), 1.0, 1e-7, 2.0)
    assert not s.settled and s.bound >= 0.1 + 0.1


def corner(step):
    # J = |x| at x = 0 along the probe: slope 1 on the right, -1 on the left, central difference 0
    return m(step, 0.0, j_plus=step, j_minus=step)


def test_a_coordinate_on_a_kink_is_accepted_when_its_gradient_is_a_one_sided_slope():
    s = settle(1.0, [corner(1e-3), corner(2.5e-4)], evaluator(), 0.0, 1e-7, 1.0, coordinate=True)
    assert s.settled and s.cause == "kink" and s.unexplained == 0.0


def test_a_direction_through_a_kink_proves_nothing_either_way():
    # over many entries a kink at the point may hide an error elsewhere: neither right nor wrong
    s = settle(1.0, [corner(1e-3), corner(2.5e-4)], evaluator(), 0.0, 1e-7, 1.0, coordinate=False)
    assert not s.settled and s.cause == "corner" and s.unexplained == 0.0


def test_a_kink_does_not_excuse_a_gradient_outside_the_one_sided_slopes():
    s = settle(3.0, [corner(1e-3), corner(2.5e-4)], evaluator(), 0.0, 1e-7, 1.0, coordinate=True)
    assert s.cause != "kink" and not s.settled


def test_a_smooth_gap_that_stays_put_is_not_a_kink():
    s = settle(3.0, [m(1e-3, 1.0, 1.001, 0.999), m(2.5e-4, 1.0, 1.00025, 0.99975)], evaluator(), 1.0, 1e-7, 1.0,
               coordinate=True)
    assert s.settled and s.cause == "" and s.unexplained == pytest.approx(2.0, rel=1e-6)


def test_jitter_widens_every_bound():
    quiet = settle(2.0, [m(1e-6, 2.0)], evaluator(), 1.0, 1e-7, 2.0)
    noisy = settle(2.0, [m(1e-6, 2.0)], evaluator(jitter=1e-12), 1.0, 1e-7, 2.0)
    assert noisy.bound - quiet.bound == pytest.approx(1e-12 / 1e-6)


# ------------------------------------------------------------------ the verdict

def test_agreement_well_below_the_threshold_is_right():
    j = judge(probes([1.0, 2.0], [1.0 + 1e-12, 2.0 - 1e-12]), 1e-7, 2.0, statistical=False)
    assert j.verdict == "right" and j.upper < 1e-7


def test_an_unexplained_gap_at_the_threshold_is_wrong():
    j = judge(probes([1.0, 2.0], [1.0, 2.0 + 1e-6], unexplained=[0.0, 1e-6]), 1e-7, 2.0, statistical=False)
    assert j.verdict == "wrong" and j.lower >= 1e-7


def test_noise_never_turns_a_gap_into_right():
    # the gap is within noise, but so large a noise could hide a threshold-sized error
    j = judge(probes([1.0, 2.0], [1.0, 2.0 + 1e-6], noise=1e-6), 1e-7, 2.0, statistical=False)
    assert j.verdict == "inconclusive"


def test_an_unsettled_probe_blocks_right():
    j = judge(probes([1.0], [1.0], settled=False), 1e-7, 1.0, statistical=False)
    assert j.verdict == "inconclusive"


def test_random_directions_need_a_margin_that_coordinates_do_not():
    p = probes([1.0, 1.0], [1.0 + 2e-9, 1.0 - 2e-9])
    assert judge(p, 1e-7, 1.0, statistical=False).verdict == "right"
    assert judge(p, 1e-7, 1.0, statistical=True).verdict == "inconclusive"


def test_a_non_finite_gradient_is_wrong():
    j = judge(probes([1.0], [1.0]), 1e-7, 1.0, statistical=False, grad_finite=False)
    assert j.verdict == "wrong"


def test_no_probe_means_nothing_to_check():
    j = judge(probes([], []), 1e-7, 1.0, statistical=True)
    assert j.verdict == "right" and j.difference == 0.0


def test_settled_probes_make_a_probe_set():
    s = [Settled(1.0, 1.1, 0.1, 0.2, 0.05, True), Settled(2.0, 2.0, 0.0, 0.01, 0.0, False)]
    p = ProbeSet.of(s)
    assert p.bound.tolist() == [0.2, 0.01] and not p.settled
    assert p.noise.tolist() == pytest.approx([0.1, 0.01])


def test_the_false_pass_rate_is_small():
    assert 0 < TOLERANCES.false_pass_rate <= 1e-4
