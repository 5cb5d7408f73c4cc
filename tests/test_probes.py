"""Measuring: the evaluator (precision, randomness, budget), directions, central differences, the step."""

import math

import numpy as np
import pytest

from gradwatch.errors import DropoutActiveError
from gradwatch.inputs import Workspace, build_slot
from gradwatch.probes import (
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
