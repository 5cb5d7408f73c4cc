"""The noise model and the verdict: bounds, settling, and the one function that decides."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradwatch.noise import (
    FAR,
    truncation_bound,
    truncation_terms,
    ProbeSet,
    Settled,
    chi2_lower_quantile,
    direction_upper,
    judge,
    one_sided,
    reference_norm,
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


def test_a_clean_first_measurement_settles_alone_with_its_truncation_in_its_bound():
    alone = settle(2.0, [m(1e-6, 2.0 + 1e-12)], evaluator(), 1.0, 1e-7, 2.0, truncation=0.0)
    wide = settle(2.0, [m(1e-6, 2.0 + 1e-12)], evaluator(), 1.0, 1e-7, 2.0, truncation=3e-9)
    assert alone.settled and alone.unexplained == 0.0 and alone.bound >= alone.gap
    assert wide.settled and wide.bound - alone.bound == pytest.approx(3e-9)


@pytest.mark.parametrize("truncation", [None, math.nan, math.inf])
def test_a_first_measurement_whose_truncation_is_unknown_proves_nothing(truncation):
    s = settle(2.0, [m(1e-6, 2.0 + 1e-12)], evaluator(), 1.0, 1e-7, 2.0, truncation=truncation)
    assert not s.settled and s.unexplained == 0.0 and math.isfinite(s.bound)


def test_the_truncation_estimate_is_exact_for_a_cubic_and_bounds_it_with_its_round_off():
    h, j0 = 1e-3, 5.0
    cubic = lambda x: j0 + 0.3 * x - 2.0 * x ** 2 + 7.0 * x ** 3  # noqa: E731
    ev = evaluator()
    estimate, noise = truncation_terms(h, cubic(h), cubic(-h), cubic(FAR * h), j0, ev)
    truth = h * h / 6 * 42.0  # (J(h) − J(−h)) / 2h − J'(0) for this cubic
    assert estimate == pytest.approx(truth, rel=1e-6)
    assert noise == pytest.approx(0.75 * ev.roundoff(h, abs(cubic(FAR * h))))
    assert truncation_bound(estimate, noise) == pytest.approx(2 * truth + noise)
    assert (cubic(h) - cubic(-h)) / (2 * h) - 0.3 == pytest.approx(truth, rel=1e-6)


def test_the_truncation_estimate_is_nan_when_the_far_loss_is_not_finite():
    estimate, _ = truncation_terms(1e-3, 1.0, 1.0, math.inf, 1.0, evaluator())
    assert math.isnan(estimate) or math.isinf(estimate)


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
    quiet = settle(2.0, [m(1e-6, 2.0)], evaluator(), 1.0, 1e-7, 2.0, truncation=0.0)
    noisy = settle(2.0, [m(1e-6, 2.0)], evaluator(jitter=1e-12), 1.0, 1e-7, 2.0, truncation=0.0)
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


# ------------------------------------------------------------------ boundaries of the noise model
# (mutation-guided: each expectation is the documented formula, evaluated just inside and just outside)

EPS = float(np.finfo(np.float64).eps)


def roundoff(step, loss_size, jitter=0.0):
    """One difference of losses: 4 × loss precision × |J| (+ jitter), over the step."""
    return (4 * EPS * loss_size + jitter) / step


@pytest.mark.parametrize("a,n,ref", [(1.0, 1.0, 0.1), (0.0, 0.0, 1.0), (1.0, 0.999, 0.1), (-1.0, -1.0, 0.1)])
def test_a_first_measurement_is_clean_up_to_a_tenth_of_a_threshold_sized_gap(a, n, ref):
    from gradwatch.noise import gap_is_small

    t = 1e-2
    limit = 0.1 * t * max(abs(a) + abs(n), 2 * ref) - abs(a - n)  # room left for round-off
    assert limit > 0
    assert gap_is_small(a, m(1e-6, n), 0.99 * limit, t, ref)
    assert not gap_is_small(a, m(1e-6, n), 1.01 * limit, t, ref)


def test_a_gap_exactly_at_the_suspicious_share_needs_no_re_measuring():
    from gradwatch.noise import gap_is_small

    t = 1e-3
    assert gap_is_small(1.0, m(1e-6, 1.0), 0.1 * t * 2, t, 0.5)


@pytest.mark.parametrize("a,n2,ref", [(1.0, 1.0, 0.1), (0.0, 0.0, 1.0), (-2.0, -2.0, 0.1)])
def test_two_estimates_agree_within_their_round_off_and_a_quarter_of_the_threshold(a, n2, ref):
    from gradwatch.noise import agree

    t, h1, h2, size = 1e-3, 1e-4, 2.5e-5, 3.0
    slack = roundoff(h1, size) + roundoff(h2, size) + 0.25 * t * max(abs(a) + abs(n2), 2 * ref)
    second = m(h2, n2, size, -size)
    assert agree(m(h1, n2 + 0.99 * slack, size, -size), second, evaluator(), a, t, ref)
    assert not agree(m(h1, n2 + 1.01 * slack, size, -size), second, evaluator(), a, t, ref)
    assert agree(m(h1, n2 - 0.99 * slack, size, -size), second, evaluator(), a, t, ref)


def test_a_single_measurement_is_bounded_by_its_gap_plus_its_round_off():
    j0 = 5.0  # larger than either perturbed loss: the round-off is about the larger
    s = settle(2.0, [m(1e-6, 2.01, 1.0, 1.0)], evaluator(jitter=1e-13), j0, 1e-7, 2.0)
    assert s.gap == pytest.approx(0.01)
    assert s.bound == pytest.approx(0.01 + roundoff(1e-6, j0, 1e-13), rel=1e-12)
    assert s.last == 2.01


def test_agreeing_estimates_carry_their_round_off_and_twice_richardsons_truncation():
    # the last two estimates agree (threshold 0.1 leaves room for a move of 0.03)
    trail = [m(1e-6, 2.13), m(2.5e-7, 2.1)]
    s = settle(2.0, trail, evaluator(), 1.0, 0.1, 2.0)
    noise = roundoff(2.5e-7, 1.0) + 2 * 0.03 / (4.0 ** 2 - 1)
    assert s.settled and s.cause == ""  # two estimates: nothing moved before the last pair
    assert s.bound == pytest.approx(0.1 + noise, rel=1e-9)
    assert s.unexplained == pytest.approx(0.1 - noise, rel=1e-9)
    assert s.numeric == 2.13 and s.last == 2.1


def test_an_unsettled_probe_is_bounded_by_gap_round_off_and_the_last_move():
    trail = [m(1e-6, 2.4), m(2.5e-7, 2.2), m(6.25e-8, 2.1)]
    s = settle(2.0, trail, evaluator(), 1.0, 1e-7, 2.0)
    assert s.bound == pytest.approx(0.1 + roundoff(6.25e-8, 1.0) + 0.1, rel=1e-9)
    assert s.unexplained == 0.0


def kink_trail(slopes_first=(1.0, -1.0), slopes_last=(1.0, -1.0), steps=(1e-3, 2.5e-4)):
    """A loss with one-sided slopes (forward, backward) at J(θ) = 0, measured at two steps."""
    out = []
    for (f, b), h in zip((slopes_first, slopes_last), steps):
        out.append(Measurement(h, (f + b) / 2, f * h, -b * h))
    return out


def test_a_kink_bound_is_twice_the_round_off_and_explains_the_gap():
    s = settle(1.0, kink_trail(), evaluator(), 0.0, 1e-7, 1.0, coordinate=True)
    assert s.cause == "kink" and s.bound == pytest.approx(2 * roundoff(2.5e-4, 2.5e-4), rel=1e-12, abs=0)


@pytest.mark.parametrize("side", [1.0, -1.0])
def test_a_kink_excuses_a_gradient_up_to_its_slack_beyond_the_extrapolated_slopes(side):
    # the backward slope moves from -1 to -0.9 between the steps (1e-3, 2.5e-4): extrapolated to a step of 0,
    # -0.9 + 0.1/3; the forward slope stays at 1. The uneven move (0.1) is not curvature: a third of it is slack
    trail = kink_trail(slopes_first=(1.0, -1.0), slopes_last=(1.0, -0.9))
    upper, lower, slack = 1.0, -0.9 + 0.1 / 3, 0.1 / 3
    edge = upper if side > 0 else lower
    inside = settle(edge + side * 0.9 * slack, trail, evaluator(), 0.0, 1e-7, 1.0, coordinate=True)
    outside = settle(edge + side * 1.1 * slack, trail, evaluator(), 0.0, 1e-7, 1.0, coordinate=True)
    assert inside.cause == "kink" and outside.cause != "kink"


def test_curvature_beside_a_kink_is_extrapolated_away_not_excused():
    # slopes 1 + h·A/2 forward and -1 - h·A/2 backward (curvature A = 100): at a step of 0 they are 1 and -1
    A = 100.0
    trail = [Measurement(h, 0.0, (1 + h * A / 2) * h, -(-1 - h * A / 2) * h) for h in (1e-3, 2.5e-4)]
    assert settle(1.0, trail, evaluator(), 0.0, 1e-7, 1.0, coordinate=True).cause == "kink"
    assert settle(1.0 + 1e-5, trail, evaluator(), 0.0, 1e-7, 1.0, coordinate=True).cause != "kink"


def test_a_small_jump_under_large_curvature_is_still_a_kink_at_the_point():
    # a jump of 1e-3 between slopes that curvature (A = 1e3) moves by far more between the steps
    A, c = 1e3, 1e-3
    trail = [Measurement(h, c / 2, (c + h * A / 2) * h, (h * A / 2) * h) for h in (1e-3, 2.5e-4)]
    assert settle(0.0, trail, evaluator(), 0.0, 1e-7, 1.0, coordinate=False).cause == "corner"


def test_a_piecewise_linear_kink_excuses_no_more_than_round_off_beyond_its_slopes():
    # slopes 1 and -1 at both steps: exact, so 1.03 (3% of the jump past the upper slope) is not excused
    assert settle(1.03, kink_trail(), evaluator(), 0.0, 1e-7, 1.0, coordinate=True).cause != "kink"
    assert settle(1.0, kink_trail(), evaluator(), 0.0, 1e-7, 1.0, coordinate=True).cause == "kink"


def test_a_kink_whose_jump_changes_by_more_than_a_quarter_is_not_at_the_point():
    steady = settle(1.0, kink_trail(slopes_last=(1.0, -0.7)), evaluator(), 0.0, 1e-7, 1.0, coordinate=True)  # jump 2 → 1.7
    moving = settle(1.0, kink_trail(slopes_last=(1.0, -0.5)), evaluator(), 0.0, 1e-7, 1.0, coordinate=True)  # jump 2 → 1.5
    assert steady.cause == "kink" and steady.settled
    assert moving.cause != "kink" and not moving.settled


@pytest.mark.parametrize("ratio,kink", [(6.0, False), (10.0, True)])
def test_a_kink_must_stand_eight_round_offs_out_of_the_noise(ratio, kink):
    # one-sided slopes ±0.5 (a jump of 1) on a loss so large that one difference's round-off is 1/ratio
    h1, h2 = 1e-3, 2.5e-4
    j0 = (1.0 / ratio) * h2 / (4 * EPS)
    trail = [Measurement(h, 0.0, j0 + 0.5 * h, j0 + 0.5 * h) for h in (h1, h2)]
    s = settle(0.5, trail, evaluator(), j0, 1e-7, 1.0, coordinate=True)
    assert (s.cause == "kink") is kink


def test_a_non_finite_estimate_proves_nothing_either_way():
    # the loss is not finite within the step (a domain's edge, an overflow): not evidence of a wrong gradient
    s = settle(2.0, [m(1e-6, math.inf)], evaluator(), 1.0, 1e-7, 2.0)
    assert s.bound == math.inf and s.unexplained == 0.0 and not s.settled


def test_a_non_finite_gradient_against_a_finite_estimate_shows_an_unbounded_error():
    s = settle(math.inf, [m(1e-6, 2.0)], evaluator(), 1.0, 1e-7, 2.0)
    assert s.bound == math.inf and s.unexplained == math.inf and s.settled


def test_a_non_finite_loss_bounds_nothing_and_shows_nothing():
    s = settle(2.0, [m(1e-6, 2.0, math.inf, math.inf)], evaluator(), 1.0, 1e-7, 2.0)
    assert s.bound == math.inf and s.unexplained == 0.0


@pytest.mark.parametrize("k", [1, 2, 3, 5, 8])
def test_the_chi2_quantile_is_where_the_tail_bound_reaches_alpha(k):
    # P(χ²_k < x) ≤ (x/2)^(k/2) / Γ(k/2 + 1): the quantile is where that bound equals alpha
    q = chi2_lower_quantile(k, 1e-4)
    assert (q / 2) ** (k / 2) / math.gamma(k / 2 + 1) == pytest.approx(1e-4, rel=1e-9)


def test_the_direction_bound_is_the_norm_of_the_bounds_over_the_chi2_quantile():
    bounds = [1e-9, 3e-9, 2e-9]
    norm = math.sqrt(sum(b * b for b in bounds) / chi2_lower_quantile(3, 1e-4))
    assert direction_upper(bounds, 1.0) == pytest.approx(relative_upper(norm, 1.0), rel=1e-12)


def test_the_verdict_bounds_are_the_documented_formulas():
    p = probes([1.0, 2.0], [1.1, 2.0], noise=0.05, unexplained=[0.05, 0.0])
    norm = float(np.linalg.norm(p.bound))
    coordinates = judge(p, 1e-7, 3.0, statistical=False)
    directions = judge(p, 1e-7, 3.0, statistical=True)
    assert coordinates.upper == pytest.approx(norm / (2 * 3.0 - norm), rel=1e-12)
    assert directions.upper == pytest.approx(direction_upper(p.bound.tolist(), 3.0), rel=1e-12)
    lower = 0.05 / (math.sqrt(5) + math.sqrt(1.1 ** 2 + 4) + math.sqrt(2) * 0.05)
    assert coordinates.lower == pytest.approx(lower, rel=1e-12)
    assert coordinates.difference == pytest.approx(0.1 / (math.sqrt(5) + math.sqrt(1.1 ** 2 + 4)), rel=1e-12)


def test_a_lower_bound_exactly_at_the_threshold_is_wrong():
    p = probes([1.0, 2.0], [1.0, 2.1], unexplained=[0.0, 0.1])
    lower = 0.1 / (math.sqrt(5) + math.sqrt(1 + 2.1 ** 2))
    j = judge(p, lower, 3.0, statistical=False)
    assert j.lower == lower and j.verdict == "wrong"


def test_an_upper_bound_exactly_at_the_threshold_is_not_right():
    p = probes([1.0, 2.0], [1.0, 2.0 + 1e-9])
    upper = judge(p, 1.0, 2.0, statistical=False).upper
    assert judge(p, upper, 2.0, statistical=False).verdict == "inconclusive"
    assert judge(p, upper * 1.0001, 2.0, statistical=False).verdict == "right"


def test_a_gap_with_no_size_on_either_side_shows_an_infinite_lower_bound():
    # analytic and numeric both zero, no noise, but an unexplained gap: nothing to divide by
    p = ProbeSet(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), np.array([1e-3]), True)
    assert judge(p, 1e-7, 1.0, statistical=False).lower == math.inf
    q = ProbeSet(np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1), True)
    j = judge(q, 1e-7, 1.0, statistical=False)
    assert j.lower == 0.0 and j.difference == 0.0 and j.verdict == "right"


def test_a_non_finite_gradient_has_no_difference_and_no_bound():
    j = judge(probes([1.0], [1.0]), 1e-7, 1.0, statistical=False, grad_finite=False)
    assert math.isnan(j.difference) and j.upper == math.inf and j.lower == math.inf


def test_a_non_finite_estimate_is_inconclusive_with_a_nan_difference():
    j = judge(probes([1.0, 2.0], [1.0, math.nan]), 1e-7, 1.0, statistical=False)
    assert j.verdict == "inconclusive" and math.isnan(j.difference)


def test_the_finite_estimates_beside_a_non_finite_one_can_still_show_an_error():
    j = judge(probes([1.0, 2.0, 3.0], [1.5, math.nan, 3.0], unexplained=[0.5, 0.0, 0.0]), 1e-7, 1.0, statistical=False)
    assert j.verdict == "wrong" and math.isnan(j.difference) and j.lower > 0.05


def test_a_gradient_that_is_not_finite_is_wrong_whatever_the_estimates():
    j = judge(probes([1.0, 2.0], [1.0, math.nan]), 1e-7, 1.0, statistical=False, grad_finite=False)
    assert j.verdict == "wrong"


def test_a_non_finite_estimate_is_blamed_on_the_loss_not_on_a_kink():
    from gradwatch.noise import why_unsure
    reason = why_unsure(probes([1.0, 2.0], [1.0, math.inf]), evaluator(), None, 1.0, 1.0, 1e-7, False)
    assert "not finite" in reason and "kink" not in reason


def test_a_probe_set_reports_the_last_estimates():
    s = [Settled(1.0, 1.5, 0.1, 0.2, 0.0, True, last=1.1), Settled(2.0, 2.5, 0.0, 0.1, 0.0, True, last=2.0)]
    assert ProbeSet.of(s).numeric.tolist() == [1.1, 2.0]
    assert ProbeSet.of(s).settled and ProbeSet.of(s).gap.tolist() == [0.1, 0.0]


# ------------------------------------------------------------------ why a tensor is inconclusive

def unsure(noise, *, settled=True, precision=None, jitter=0.0, epsilon=None, j0=1.0, threshold=1e-7,
           statistical=False, narrowed=False):
    ev = evaluator(jitter)
    if precision is not None:
        ev.loss_dtype = np.dtype(precision)
    from gradwatch.noise import why_unsure

    return why_unsure(probes([1.0], [1.0], noise=noise, settled=settled), ev, epsilon, j0, 1.0, threshold, statistical,
                      narrowed)


def test_noise_from_a_float32_loss_says_return_float64():
    assert "return the loss in float64" in unsure(1e-3, precision=np.float32)


def test_noise_from_jitter_says_make_the_loss_deterministic():
    assert "varies by" in unsure(1e-3, jitter=1e-10, j0=1.0)


def test_jitter_at_the_round_off_of_the_loss_is_not_blamed():
    assert "varies by" not in unsure(1e-3, jitter=4 * EPS * 1.0, j0=1.0)


def test_noise_with_a_given_epsilon_says_leave_epsilon_none():
    assert "epsilon=1e-09" in unsure(1e-3, epsilon=1e-9)


def test_an_unsettled_probe_says_kink():
    assert "a kink" in unsure(0.0, settled=False)


def _unsure_at_step(step_roundoff, narrowed=False, statistical=True):
    from gradwatch.noise import why_unsure

    ev = Evaluator(lambda p: 0.0, None, 0, None)
    return why_unsure(probes([1.0], [1.0], noise=0.0, settled=False), ev, None, 1.0, 1.0, 1e-7, statistical, narrowed,
                      step_roundoff)


def test_directions_unsettled_because_round_off_alone_swamps_them_blame_round_off_not_a_kink():
    share = TOLERANCES.useful_noise_share * 1e-7
    assert "round-off" in _unsure_at_step(share * 1.01) and "a kink" not in _unsure_at_step(share * 1.01)
    assert "a kink" in _unsure_at_step(share)  # at the share itself a probe is still useful
    assert "a kink" in _unsure_at_step(share * 10, statistical=False)  # coordinates are never replaced
    assert "a kink" in _unsure_at_step(share * 10, narrowed=True)  # kinks made the step shrink: theirs the blame


def test_noise_otherwise_says_the_loss_round_off_swamps_the_gradient():
    assert "subtract the loss's constant part" in unsure(1e-3)


def test_noise_at_a_step_kinks_made_shrink_blames_the_kinks_and_gives_the_bound_reached():
    reason = unsure(1e-6, narrowed=True)
    assert "kinks" in reason and "smaller batch" in reason and "subtract" not in reason
    assert f"{relative_upper(1e-6, 1.0):.1e}" in reason


def test_a_narrowed_step_without_noise_is_not_blamed():
    assert "within the noise" in unsure(1e-12, narrowed=True)


def test_quiet_settled_probes_say_the_gap_is_within_the_noise():
    assert "within the noise" in unsure(1e-12, threshold=1e-7)


def test_noise_counts_from_half_the_threshold():
    # relative_upper of the noise exactly at half the threshold is noisy; just below it is not
    noise = 1e-6
    half = relative_upper(noise, 1.0)
    assert "subtract" in unsure(noise, threshold=2 * half)
    assert "within the noise" in unsure(noise, threshold=2 * half * 1.0001)
    statistical_half = direction_upper([noise], 1.0)
    assert "subtract" in unsure(noise, threshold=2 * statistical_half, statistical=True)
    assert "within the noise" in unsure(noise, threshold=2 * statistical_half * 1.0001, statistical=True)


# ------------------------------------------------------------------ the one-sided escape and the reference


def one_sided_case(delta):
    """Losses on either side of J(0) = 0 at steps h/4, h, 2h: linear with slope 1 on the right (J(h/4)
    off by ``delta``), a kink on the left whose one-sided estimates disagree."""
    h = 1e-3
    first = Measurement(h, 0.0, 1e-3, 0.0)
    quarter = Measurement(h / 4, 0.0, 2.5e-4 + delta, 1e-6)
    double = Measurement(2 * h, 0.0, 2e-3, 0.0)
    return first, quarter, double


def test_the_clean_side_of_a_kink_gives_its_one_sided_estimate():
    first, quarter, double = one_sided_case(0.0)
    s = one_sided(1.0, first, quarter, double, evaluator(), 0.0, 1e-30, 1.0)
    assert s is not None and s.cause == "one-sided" and s.last == pytest.approx(1.0, abs=0) and s.gap == 0.0
    assert s.bound == pytest.approx(2 * roundoff(1e-3, 2e-3), rel=1e-9)  # no truncation seen: its round-off


def test_the_one_sided_bound_covers_the_truncation_of_its_estimate_on_a_cubic():
    # right of the point J = x + c·x³ (a kink on the left): F through 0, h, 2h is off J'(0) by c·2h²,
    # while F − G is only 7/8 of that; the bound must still cover F's own truncation
    h, c = 1e-3, 50.0
    right = lambda x: x + c * x ** 3  # noqa: E731
    first = Measurement(h, 0.0, right(h), 0.0)
    quarter = Measurement(h / 4, 0.0, right(h / 4), 1e-6)
    double = Measurement(2 * h, 0.0, right(2 * h), 0.0)
    s = one_sided(1.0, first, quarter, double, evaluator(), 0.0, 1e-3, 1.0)  # F, G agree within its share
    assert s is not None and s.gap == pytest.approx(2 * c * h * h, rel=1e-6)
    assert s.unexplained == 0.0 and s.bound >= 2 * s.gap


def test_two_one_sided_estimates_agree_within_both_round_offs():
    # G (through 0, h/4, h) is off F (through 0, h, 2h) by 16·delta / 3h; F's round-off bound is 2r and
    # G's (32/12)·r·h/(2·h/4) = 5.33r, with r one central difference's bound at h
    r = roundoff(1e-3, 2e-3)
    inside = (2 * r + (32 / 12) * r * 2) * 0.95 * 3e-3 / 16
    outside = (2 * r + (32 / 12) * r * 2) * 1.05 * 3e-3 / 16
    assert one_sided(1.0, *one_sided_case(inside), evaluator(), 0.0, 1e-30, 1.0) is not None
    assert one_sided(1.0, *one_sided_case(outside), evaluator(), 0.0, 1e-30, 1.0) is None
    # and within a share of the threshold besides: a threshold-sized gap of a reference of 1
    share = TOLERANCES.agreement_share * 1e-12 * 2
    assert one_sided(1.0, *one_sided_case(outside + share * 0.9 * 3e-3 / 16), evaluator(), 0.0, 1e-12, 1.0) is not None


def test_a_gradient_at_round_off_level_is_judged_against_the_floor():
    eps = float(np.finfo(np.float64).eps)
    # 100 entries of 2e-13 each: below 1e3 eps of a model RMS entry of 2, so zero up to round-off
    floor = TOLERANCES.zero_gradient_floor * 2.0 * 10
    assert reference_norm(2e-12, 100, 2.0, eps) == pytest.approx(floor)
    # 1e-9 per entry is small, not zero: its own size
    assert reference_norm(1e-8, 100, 1.0, eps) == 1e-8
    assert reference_norm(0.0, 0, 1.0, eps) == 0.0


# ------------------------------------------------------------------ wrong needs a margin too

@pytest.mark.parametrize("k", [1, 2, 5, 8])
def test_the_chi_square_upper_quantile_is_exceeded_with_the_probability_asked(k):
    from gradwatch.noise import chi2_upper_quantile

    rng = np.random.default_rng(k)
    q = chi2_upper_quantile(k, 0.05)
    share = float(np.mean(np.sum(rng.standard_normal((200_000, k)) ** 2, axis=1) > q))
    assert share == pytest.approx(0.05, abs=0.003)
    assert chi2_upper_quantile(2, 1e-2) == pytest.approx(-2 * math.log(1e-2), rel=1e-9)


def test_a_direction_lower_bound_discounts_what_a_few_projections_can_overstate():
    from gradwatch.noise import chi2_upper_quantile, direction_lower

    q = chi2_upper_quantile(2, TOLERANCES.false_alarm_rate)
    norm = math.sqrt((3.0 ** 2 + 4.0 ** 2) / q)
    assert direction_lower([3.0, 4.0], 10.0) == pytest.approx(norm / (20.0 + norm))
    assert direction_lower([0.0, 0.0], 10.0) == 0.0 and direction_lower([], 10.0) == 0.0


def test_projections_that_overstate_an_error_below_the_threshold_do_not_make_it_wrong():
    # two probes whose projections of g are 1 and whose unexplained gaps say 1.5e-7: raw, formula (2) reads
    # ~1e-7 and more; with the tail margin over two projections the error is not shown to reach the threshold
    p = probes([1.0, 1.0], [1.0 + 1.5e-7, 1.0 + 1.5e-7], unexplained=[1.5e-7, 1.5e-7])
    assert judge(p, 1e-7, 1.0, statistical=True).verdict != "wrong"
    big = probes([1.0, 1.0], [1.0 + 1e-5, 1.0 + 1e-5], unexplained=[1e-5, 1e-5])
    assert judge(big, 1e-7, 1.0, statistical=True).verdict == "wrong"


def test_curvature_with_round_off_in_the_extrapolation_is_not_a_kink():
    # slopes moved oppositely by curvature, the extrapolated jump 16 round-offs (a loss summed from terms
    # larger than itself rounds off more than its bound): below 64 round-offs and half the last jump
    ev = evaluator()
    j0, A = 1.0, 1e3
    noise = ev.roundoff(2.5e-4, j0)
    off = 6 * noise  # round-off at the last step, opposite on the two sides: an extrapolated jump of 16 round-offs

    def m_at(h, off):
        return Measurement(h, 0.0, j0 + (1.0 + h * A / 2 + off) * h, j0 - (1.0 - h * A / 2 - off) * h)

    trail = [m_at(1e-3, 0.0), m_at(2.5e-4, off)]
    from gradwatch.noise import _corner_at_point

    assert _corner_at_point(trail, ev, j0) is None


def test_a_step_the_loss_no_longer_resolves_settles_nothing():
    # the loss moved at the first step, and not at all at the next two: estimates of 0 are no measurement
    h = 1e-5
    trail = [Measurement(h, 2.0, 1.0 + 2 * h, 1.0 - 2 * h), Measurement(h / 4, 0.0, 1.0, 1.0)]
    s = settle(2.5, trail, evaluator(), 1.0, 1e-7, 2.0, coordinate=True)
    assert not s.settled and s.unexplained == 0.0 and s.bound >= s.gap + 2.0  # the gap, and all the step moved
    # unless the step before was itself 0 within its round-off: the derivative is that small, and a gap shows
    tiny = [Measurement(h, 1e-12, 1.0 + 1e-17, 1.0 - 1e-17), Measurement(h / 4, 0.0, 1.0, 1.0)]
    s = settle(1e-3, tiny, evaluator(), 1.0, 1e-7, 2.0, coordinate=True)
    assert s.settled and s.unexplained > 0
    # a loss flat from the first step (a parameter it does not use) is measured as such: 0, an error shown
    flat = [Measurement(h, 0.0, 1.0, 1.0), Measurement(h / 4, 0.0, 1.0, 1.0)]
    s = settle(2.5, flat, evaluator(), 1.0, 1e-7, 2.0, coordinate=True)
    assert s.settled and s.unexplained > 0
