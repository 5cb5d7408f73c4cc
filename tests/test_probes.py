"""Measuring: the evaluator (precision, randomness, budget), directions, central differences, the step."""

import math

import numpy as np
import pytest

from gradwatch.errors import DropoutActiveError
from gradwatch.inputs import Workspace, build_slot
from gradwatch.probes import (
    DIRECTION_SCALE,
    Direction,
    GAUSSIAN_MAX_ENTRIES,
    Evaluator,
    Probe,
    choose_step,
    coordinate,
    measure,
    random_direction,
)
from gradwatch.tolerances import TOLERANCES


def ev_of(fn, limit=None):
    return Evaluator(fn, None, 0, limit)


# ------------------------------------------------------------------ the evaluator

def test_a_float64_loss_has_float64_precision():
    ev = ev_of(lambda p: 1.0 / 3.0)
    for _ in range(3):
        ev(None)
    assert ev.precision == np.finfo(np.float64).eps


def test_a_loss_returned_as_float32_has_float32_precision():
    ev = ev_of(lambda p: np.float32(1.0 / 3.0))
    ev(None)
    assert ev.precision == np.finfo(np.float32).eps


def test_a_loss_rounded_to_float32_then_cast_is_read_as_float32():
    values = iter([0.1, 0.2, 0.3])  # three distinct values, each rounded to float32
    ev = ev_of(lambda p: float(np.float32(next(values))))
    for _ in range(3):
        ev(None)
    assert ev.precision == np.finfo(np.float32).eps


def test_the_budget_is_asked_before_measuring():
    ev = ev_of(lambda p: 0.0, limit=3)
    assert ev.affords(3) and not ev.affords(4)
    ev(None)
    assert ev.affords(2) and not ev.affords(3)


def test_round_off_sized_differences_at_the_same_point_are_not_randomness():
    ev = ev_of(lambda p: 0.0)
    ev.same_point(1e-3, 1e-3 + 1e-15, "test")  # 1e-15 of jitter on a loss of 1e-3
    assert ev.jitter == pytest.approx(1e-15)


def test_dropout_sized_differences_at_the_same_point_are_refused():
    ev = ev_of(lambda p: 0.0)
    with pytest.raises(DropoutActiveError, match="keep_prob=1"):
        ev.same_point(0.7, 0.71, "test")


def test_the_base_loss_is_compared_with_the_first_one():
    values = iter([0.7, 0.7, 0.71])
    ev = ev_of(lambda p: next(values))
    ev.base(None, "start")
    ev.base(None, "again")
    with pytest.raises(DropoutActiveError, match="end"):
        ev.base(None, "end")


def test_a_constant_loss_is_not_read_as_low_precision():
    ev = ev_of(lambda p: 1.0)
    for _ in range(5):
        ev(None)
    assert ev.precision == np.finfo(np.float64).eps


def test_roundoff_grows_as_the_step_shrinks_and_with_the_loss():
    ev = ev_of(lambda p: 0.0)
    assert ev.roundoff(1e-6, 1.0) == pytest.approx(4 * ev.roundoff(4e-6, 1.0))
    assert ev.roundoff(1e-6, 10.0) == pytest.approx(10 * ev.roundoff(1e-6, 1.0))


# ------------------------------------------------------------------ directions

def slot_of(array, grad=None):
    return build_slot("w", "w", array, np.ones_like(array) if grad is None else grad)


@pytest.mark.parametrize("size", [20_000, GAUSSIAN_MAX_ENTRIES + 1000])
def test_directions_have_unit_mean_square_entries(size):
    s = slot_of(np.zeros(size))
    d = random_direction(s, 0, size, np.random.default_rng(0))
    v = d.values(0, size)
    assert np.mean(v * v) == pytest.approx(1.0, rel=0.05)
    assert np.all(v != 0)


def test_the_analytic_side_is_the_gradient_along_the_direction():
    rng = np.random.default_rng(1)
    g = rng.standard_normal(300)
    s = slot_of(np.zeros(300), g)
    d = random_direction(s, 10, 290, rng)
    assert d.analytic() == pytest.approx(float(g[10:290] @ d.values(10, 290)))


def test_a_coordinate_is_one_entry():
    s = slot_of(np.zeros(5), np.arange(5.0))
    d = coordinate(s, 3)
    assert d.analytic() == 3.0 and d.values(3, 4).tolist() == [1.0]


# ------------------------------------------------------------------ central differences

def test_a_measurement_is_the_central_difference_and_restores_bitwise():
    w = np.random.default_rng(2).standard_normal(40)
    before = w.tobytes()
    s = slot_of(w, np.cos(w))
    ev = ev_of(lambda p: float(np.sum(np.sin(p["w"]))))
    probe = Probe.of([(random_direction(s, 0, 40, np.random.default_rng(3)), 1.0)])
    with Workspace({"w": w}, [s]) as ws:
        got = measure(ev, ws, probe, 1e-5)
    assert got is not None and got.numeric == pytest.approx(probe.analytic, rel=1e-8)
    assert w.tobytes() == before and ev.count == 2


def test_a_float32_tensor_is_stepped_in_float64():
    w = np.ones(3, dtype=np.float32)
    s = slot_of(w)
    seen = []
    ev = ev_of(lambda p: seen.append(p["w"].copy()) or 0.0)
    with Workspace({"w": w}, [s]) as ws:
        measure(ev, ws, Probe.of([(coordinate(s, 1), 1.0)]), 1e-9)  # far below float32's ulp at 1
    assert seen[0].dtype == np.float64 and seen[0][1] == 1.0 + 1e-9 and seen[1][1] == 1.0 - 1e-9
    assert w.dtype == np.float32 and np.all(w == 1)


def test_a_non_contiguous_float64_tensor_is_perturbed_in_place_and_restored():
    base = np.random.default_rng(4).standard_normal((6, 6))
    w = base[:, ::2]
    before = w.copy()
    s = slot_of(w)
    seen = []
    ev = ev_of(lambda p: seen.append(w.copy()) or 0.0)  # reads the user's array, not the mapping
    with Workspace({"w": w}, [s]) as ws:
        measure(ev, ws, Probe.of([(coordinate(s, 4), 1.0)]), 0.5)
    assert seen[0].reshape(-1)[4] == before.reshape(-1)[4] + 0.5
    assert np.array_equal(w, before)


def test_no_measurement_past_the_budget():
    w = np.zeros(3)
    s = slot_of(w)
    ev = ev_of(lambda p: 0.0, limit=1)
    with Workspace({"w": w}, [s]) as ws:
        assert measure(ev, ws, Probe.of([(coordinate(s, 0), 1.0)]), 1e-3) is None
    assert ev.count == 0


def test_the_tensor_is_restored_when_the_loss_raises():
    w = np.random.default_rng(5).standard_normal(10)
    before = w.tobytes()
    s = slot_of(w)

    def boom(p):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        with Workspace({"w": w}, [s]) as ws:
            measure(ev_of(boom), ws, Probe.of([(random_direction(s, 0, 10, np.random.default_rng(0)), 1.0)]), 1e-3)
    assert w.tobytes() == before


# ------------------------------------------------------------------ the step

def test_a_given_epsilon_is_used_as_given_for_a_coordinate():
    s = slot_of(np.full(4, 100.0))
    assert choose_step(s, 1, 1e-7, 2.2e-16, 1e-15, 1.0, 1e-7) == 1e-7


def test_the_default_step_balances_truncation_and_roundoff_in_units_of_the_tensor():
    eps = float(np.finfo(np.float64).eps)
    assert choose_step(slot_of(np.full(4, 0.5)), 1, None, eps, 0.0, 1.0, 1e-7) == pytest.approx(np.cbrt(eps))
    assert choose_step(slot_of(np.full(4, 10.0)), 1, None, eps, 0.0, 1.0, 1e-7) == pytest.approx(10 * np.cbrt(eps))


def test_a_wide_direction_takes_a_smaller_step_per_entry():
    s = slot_of(np.zeros(10_000))
    assert choose_step(s, 10_000, None, 2.2e-16, 0.0, 1.0, 1e-7) == pytest.approx(
        choose_step(s, 1, None, 2.2e-16, 0.0, 1.0, 1e-7) / 10)


def test_the_step_grows_when_noise_would_swamp_the_threshold_but_at_most_sixteen_fold():
    s = slot_of(np.zeros(4))
    quiet = choose_step(s, 1, None, 2.2e-16, 1e-16, 1.0, 1e-7)
    noisy = choose_step(s, 1, None, 2.2e-16, 1e-12, 1.0, 1e-7)
    hopeless = choose_step(s, 1, None, 2.2e-16, 1.0, 1.0, 1e-7)
    assert quiet < noisy <= hopeless == pytest.approx(quiet * TOLERANCES.max_step_growth)
    assert math.isfinite(hopeless)


# ------------------------------------------------------------------ boundaries (mutation-guided)

EPS = float(np.finfo(np.float64).eps)


def test_a_narrower_loss_dtype_wins_and_a_wider_one_does_not_undo_it():
    values = iter([np.float32(0.5), np.float16(0.5), np.float32(0.25)])
    ev = ev_of(lambda p: next(values))
    ev(None)
    assert ev.precision == np.finfo(np.float32).eps
    ev(None)
    ev(None)
    assert ev.precision == np.finfo(np.float16).eps


def test_a_loss_rounded_to_float16_then_cast_is_read_as_float16():
    values = iter([0.5, 0.25, 0.125])
    ev = ev_of(lambda p: float(next(values)))
    for _ in range(3):
        ev(None)
    assert ev.precision == np.finfo(np.float16).eps


def test_two_distinct_float32_values_are_not_yet_evidence_of_float32():
    values = iter([float(np.float32(0.1)), float(np.float32(0.2)), float(np.float32(0.2))])
    ev = ev_of(lambda p: next(values))
    for _ in range(3):
        ev(None)
    assert ev.precision == EPS


def test_a_non_finite_loss_does_not_spoil_the_precision_reading():
    values = iter([math.inf, 0.1, 0.2, 0.3])
    ev = ev_of(lambda p: float(np.float32(next(values))))
    for _ in range(4):
        ev(None)
    assert ev.precision == np.finfo(np.float32).eps
    nan_first = iter([math.nan, 0.1, 0.2, 0.3])
    ev = ev_of(lambda p: float(np.float32(next(nan_first))))
    for _ in range(4):
        ev(None)
    assert ev.precision == np.finfo(np.float32).eps


def test_progress_reports_done_and_the_planned_total_growing_past_the_plan():
    calls = []
    ev = Evaluator(lambda p: 1.0, lambda done, planned: calls.append((done, planned)), 2, None)
    for _ in range(3):
        ev(None)
    assert calls == [(1, 2), (2, 2), (3, 3)] and ev.count == 3


@pytest.mark.parametrize("first,precision", [(1.0, None), (-1.0, None), (0.5, np.float32)])
def test_same_point_tolerance_is_the_larger_of_1e3_eps64_and_4_loss_precisions_plus_1e_13(first, precision):
    ev = ev_of(lambda p: 0.0)
    if precision is not None:
        ev.loss_dtype = np.dtype(precision)
    relative = max(1e3 * EPS, 4 * ev.precision)
    tol = relative * abs(first) + 1e-13
    ev.same_point(first, first + 0.9 * tol * np.sign(first), "test")
    assert ev.jitter == pytest.approx(0.9 * tol, rel=1e-3, abs=0)
    with pytest.raises(DropoutActiveError):
        ev.same_point(first, first + 1.1 * tol * np.sign(first), "test")
    with pytest.raises(DropoutActiveError):
        ev.same_point(first + 1.1 * tol * np.sign(first), first, "test")


def test_jitter_keeps_the_largest_difference_seen():
    ev = ev_of(lambda p: 0.0)
    ev.same_point(1.0, 1.0 + 2e-13, "a")
    ev.same_point(1.0, 1.0 + 1e-13, "b")
    assert ev.jitter == pytest.approx(2e-13, rel=1e-3, abs=0)


def test_a_non_finite_base_loss_is_not_compared():
    values = iter([1.0, math.inf])
    ev = ev_of(lambda p: next(values))
    ev.base(None, "start")
    assert ev.base(None, "again") == math.inf and ev.base_losses == [1.0, math.inf]


def test_roundoff_is_four_loss_precisions_of_the_loss_plus_jitter_and_resolution_over_the_step():
    ev = ev_of(lambda p: 0.0)
    ev.jitter = 3e-12
    assert ev.roundoff(1e-5, 7.0) == pytest.approx((4 * EPS * 7.0 + 3e-12) / 1e-5, rel=1e-12, abs=0)
    ev.resolution = 1e-11
    assert ev.roundoff(1e-5, 7.0) == pytest.approx((4 * EPS * 7.0 + 3e-12 + 1e-11) / 1e-5, rel=1e-12, abs=0)


def test_a_loss_returned_as_an_integer_has_a_resolution_of_one():
    ev = ev_of(lambda p: np.int64(3))
    ev(None)
    assert ev.resolution == 1.0


def test_a_direction_over_part_of_a_tensor_fills_its_own_entries():
    rng = np.random.default_rng(5)
    codes = np.frombuffer(rng.bytes(50), dtype=np.int8) | 1
    d = Direction(slot_of(np.zeros(100)), 30, 80, codes)
    out = np.empty(10)
    d.fill(out, 40, 50, 0.5)  # entries 40…49 are codes 10…19
    expected = codes[10:20].astype(np.float64) * 0.5 * DIRECTION_SCALE
    assert np.allclose(out, expected, rtol=1e-15, atol=0)
    assert np.allclose(d.values(40, 50), expected / 0.5, rtol=1e-15, atol=0)
    normal = rng.standard_normal(50)
    Direction(slot_of(np.zeros(100)), 30, 80, normal).fill(out, 40, 50, 0.5)
    assert np.array_equal(out, 0.5 * normal[10:20])


def test_odd_byte_directions_have_exactly_unit_mean_square_over_all_codes():
    codes = np.arange(-128, 128, dtype=np.int8) | 1  # every byte, its lowest bit set: each odd code twice
    d = Direction(slot_of(np.zeros(256)), 0, 256, codes)
    v = d.values(0, 256)
    assert v[0] == pytest.approx(-127 * DIRECTION_SCALE) and v[-1] == pytest.approx(127 * DIRECTION_SCALE)
    assert np.all(np.round(np.abs(v / DIRECTION_SCALE)) % 2 == 1)
    assert float(np.mean(v * v)) == pytest.approx(1.0, rel=1e-12)


def test_byte_directions_draw_every_odd_code_and_nothing_else():
    size = GAUSSIAN_MAX_ENTRIES * 4
    d = random_direction(slot_of(np.zeros(size)), 0, size, np.random.default_rng(0))
    assert d.codes is not None and d.codes.dtype == np.int8
    counts = np.bincount(d.codes.astype(np.int64) + 128, minlength=256)
    assert np.all(counts[1::2] > 0) and np.all(counts[0::2] == 0)  # -127, -125, … 127 and only those
    assert abs(float(np.mean(d.codes))) < 0.5  # centred (sd of the mean here ~0.14)
    fill = np.empty(size)
    d.fill(fill, 0, size, 1.0)
    assert float(np.mean(fill * fill)) == pytest.approx(1.0, rel=0.01)


@pytest.mark.parametrize("size,gaussian", [(GAUSSIAN_MAX_ENTRIES, True), (GAUSSIAN_MAX_ENTRIES + 1, False)])
def test_directions_are_normal_up_to_65536_entries_and_bytes_beyond(size, gaussian):
    assert GAUSSIAN_MAX_ENTRIES == 65536
    d = random_direction(slot_of(np.zeros(size + 10)), 10, size + 10, np.random.default_rng(0))
    assert d.codes is not None and d.codes.size == size and (d.codes.dtype == np.float64) is gaussian


def test_a_direction_over_one_entry_is_that_coordinate():
    s = slot_of(np.zeros(4), np.arange(4.0))
    d = random_direction(s, 2, 3, np.random.default_rng(0))
    assert d.codes is None and d.analytic() == 2.0 and d.size == 1


def test_a_direction_over_many_chunks_projects_the_whole_gradient():
    from gradwatch.inputs import CHUNK

    n, lo = 2 * CHUNK + 7, 5
    g = np.random.default_rng(6).standard_normal(n)
    s = slot_of(np.zeros(n), g)
    d = random_direction(s, lo, n, np.random.default_rng(7))
    v = d.values(lo, n)
    assert v.size == n - lo and np.array_equal(d.values(lo + CHUNK, n), v[CHUNK:])
    assert d.analytic() == pytest.approx(math.fsum(g[lo:] * v), rel=1e-12)


def test_a_probe_weighs_each_part():
    s = slot_of(np.zeros(3), np.array([1.0, 2.0, 3.0]))
    p = Probe.of([(coordinate(s, 1), 3.0), (coordinate(s, 2), -0.5)])
    assert p.analytic == 3.0 * 2.0 - 0.5 * 3.0 and p.parts[0][0].lo == 1


def test_a_measurement_moves_by_weight_times_step_each_way():
    w = np.array([3.0, 1.0])
    s = slot_of(w)
    seen = []
    ev = ev_of(lambda p: seen.append(p["w"].copy()) or float(p["w"][0] ** 2))
    with Workspace({"w": w}, [s]) as ws:
        got = measure(ev, ws, Probe.of([(coordinate(s, 0), 2.0)]), 0.25)
    assert [x[0] for x in seen] == [3.5, 2.5]
    assert got is not None and got.j_plus == 12.25 and got.j_minus == 6.25
    assert got.numeric == (12.25 - 6.25) / 0.5 and got.loss_size == 12.25 and got.step == 0.25


def test_a_measurement_fits_a_budget_of_exactly_two():
    w = np.zeros(3)
    s = slot_of(w)
    ev = ev_of(lambda p: 0.0, limit=2)
    with Workspace({"w": w}, [s]) as ws:
        assert measure(ev, ws, Probe.of([(coordinate(s, 0), 1.0)]), 1e-3) is not None


def test_a_given_epsilon_shrinks_by_the_fourth_root_of_the_entries():
    s = slot_of(np.zeros(16))
    assert choose_step(s, 16, 1e-3, EPS, 1.0, 1.0, 1e-7) == pytest.approx(1e-3 / 2)


def test_the_grown_step_puts_round_off_at_a_twentieth_of_a_threshold_sized_gap():
    s = slot_of(np.zeros(4))
    plain = float(np.cbrt(EPS))
    noise = 4 * plain * 1e-7 * 1.0 / 20  # needs 4× the plain step
    assert choose_step(s, 1, None, EPS, 2 * noise, 2.0, 1e-7) == pytest.approx(20 * 2 * noise / (1e-7 * 2.0), rel=1e-12)
    assert choose_step(s, 1, None, EPS, 1.0, 1.0, 1e-7) == pytest.approx(16 * plain, rel=1e-12)


def test_a_zero_reference_keeps_the_plain_step():
    s = slot_of(np.zeros(4))
    assert choose_step(s, 1, None, EPS, 1e-10, 0.0, 1e-7) == pytest.approx(float(np.cbrt(EPS)))


def test_a_difference_of_exactly_the_tolerance_is_noise():
    ev = ev_of(lambda p: 0.0)
    relative = max(1e3 * EPS, 4 * EPS)

    def tol(x):
        return relative * abs(x) + 1e-13

    x = 1e-13  # the representable loss x whose difference from 0 equals its own tolerance exactly
    while x < tol(x):
        x = float(np.nextafter(x, 1.0))
    assert x == tol(x)
    ev.same_point(0.0, x, "test")
    assert ev.jitter == x


def test_a_loss_that_is_nan_twice_at_the_same_point_is_not_randomness():
    ev = Evaluator(lambda p: 0.0, None, 0, None)
    ev.same_point(math.nan, math.nan, "twice")
    ev.same_point(math.inf, math.inf, "twice")
    with pytest.raises(DropoutActiveError):
        ev.same_point(1.0, math.nan, "twice")


def test_an_optional_loss_that_raises_is_nan_and_counted():
    calls = []

    def loss(p):
        calls.append(1)
        raise ValueError("outside the domain")

    seen = []
    ev = Evaluator(loss, lambda done, planned: seen.append(done), 5, None)
    assert math.isnan(ev.optional({}))
    assert ev.count == 1 == len(calls) and seen == [1]
    with pytest.raises(ValueError):
        ev({})


# ---- the loss's grid: large terms that cancel, or rounding


@pytest.mark.parametrize("value,grain", [(1.0, 1.0), (3.0, 1.0), (0.75, 0.25), (-6.0, 2.0), (2.0**-60, 2.0**-60),
                                         (1.0 + 2.0**-52, 2.0**-52), (3 * 2.0**1000, 2.0**1000)])
def test_the_dyadic_grain_is_the_largest_power_of_two_dividing_the_value(value, grain):
    from gradwatch.probes import dyadic_grain

    assert dyadic_grain(value) == grain


def _grid_of(values):
    from gradwatch.probes import Grid

    grid = Grid()
    for v in values:
        grid.add(v)
    return grid


def test_values_of_a_loss_that_cancels_large_terms_show_its_grid():
    rng = np.random.default_rng(0)
    s0 = float(np.sum(rng.standard_normal(12) ** 2))
    c = 1e8 + s0
    values = [(1e8 + s0 + d) - c for d in rng.standard_normal(6) * 1e-5]
    ulp = float(np.spacing(1e8))
    assert _grid_of(values).resolution(EPS) == 2 * TOLERANCES.roundoff * ulp
    # one value is evidence enough (~2^39 x its ulp), and its grain a multiple of the grid
    assert _grid_of(values[:1]).resolution(EPS) >= 2 * TOLERANCES.roundoff * ulp


def test_a_grid_needs_evidence_in_proportion_to_how_coarse_it_is():
    # values 1 + k 2^-47 (k odd) sit on a grid 32x coarser than their ulp: 5 bits of evidence each
    values = [1.0 + k * 2.0**-47 for k in (1, 3, 5, 7)]
    assert _grid_of(values[:3]).resolution(EPS) == 0.0  # 15 bits: chance could do it
    assert _grid_of(values).resolution(EPS) == 2 * TOLERANCES.roundoff * 2.0**-47  # 20 bits


def test_values_on_a_decimal_grid_show_none():
    # integer data stepped by a decimal epsilon lands on exact decimals: no evidence of a rounded loss
    values = [2.0 * (4.0 + k * 1e-7) for k in (-3, -1, 1, 3, 5)]
    assert _grid_of(values).resolution(EPS) == 0.0


@pytest.mark.parametrize("dtype,precision", [(np.float64, EPS), (np.float32, float(np.finfo(np.float32).eps))])
def test_values_computed_to_their_precision_show_no_grid(dtype, precision):
    rng = np.random.default_rng(1)
    flagged = 0
    for _ in range(2000):
        values = (2.3 + rng.standard_normal(4) * 1e-5).astype(dtype).astype(float)
        flagged += _grid_of(values.tolist()).resolution(precision) > 0
    assert flagged == 0


def test_an_evaluator_reads_the_grid_of_what_the_loss_returns():
    rng = np.random.default_rng(0)
    c = 1e8 + 5.0
    values = iter([(1e8 + 5.0 + d) - c for d in rng.standard_normal(8) * 1e-5])
    ev = ev_of(lambda p: next(values))
    for _ in range(8):
        ev(None)
    assert ev.resolution == 2 * TOLERANCES.roundoff * float(np.spacing(1e8)) and not ev.whole


def test_a_grid_at_exactly_the_margin_with_exactly_the_evidence_is_read():
    # 1 and values below it on multiples of 2^-48: 16x the ulp of 1 (the largest), four values: 16 bits
    values = [1.0] + [1.0 - k * 2.0**-48 for k in (1, 3, 5)]
    assert _grid_of(values).resolution(EPS) == 2 * TOLERANCES.roundoff * 2.0**-48
    assert _grid_of(values[:3]).resolution(EPS) == 0.0


def test_a_grid_of_no_values_or_of_zeros_says_nothing():
    assert _grid_of([]).resolution(EPS) == 0.0 and _grid_of([0.0, 0.0, math.inf]).resolution(EPS) == 0.0


def test_the_loss_at_the_point_is_no_evidence_of_a_grid():
    values = iter([7.0, 7.0, 7.0 + 1e-9 * math.pi])  # an integer at the point, then a perturbed value
    ev = ev_of(lambda p: next(values))
    ev.base(None, "start")
    ev.base(None, "again")
    assert ev.resolution == 0.0
    ev(None)
    assert ev.resolution == 0.0
