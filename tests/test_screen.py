"""Screens: all tensors at once, weighted to weigh the same, measured at two steps and extrapolated."""

import dataclasses
import math

import numpy as np
import pytest

import gradwatch.screen as screen
from gradwatch import check_gradients
from gradwatch.inputs import Workspace, build_slots
from gradwatch.measure import Context, step_for
from gradwatch.probes import Direction, Evaluator, Measurement, Probe
from gradwatch.screen import Screen, groups, screen_bounds, screen_group, screen_steps
from gradwatch.tolerances import TOLERANCES


def context(loss, params, grads, refs=None):
    slots = build_slots(params, grads)
    ev = Evaluator(loss, None, 0, None)
    j0 = ev.base(params, "start")
    refs = refs or {s.name: s.grad_norm() for s in slots}
    ctx = Context(ev, params, j0, None, {s.name: 1e-7 for s in slots}, refs, 1.0, np.random.default_rng(0))
    return ctx, slots


def quadratic(sizes, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(n) for k, n in sizes.items()}
    c = {k: rng.uniform(0.5, 2.0, n) for k, n in sizes.items()}

    def loss(p):
        return float(sum(0.5 * np.sum(c[k] * p[k] ** 2) for k in p))

    return params, {"d" + k: c[k] * v for k, v in params.items()}, loss


def test_a_screen_is_extrapolated_from_two_steps():
    sc = Screen({}, 1.0, Measurement(1.0, 2.0, 0.0, 0.0), Measurement(0.5, 1.5, 0.0, 0.0))
    assert sc.numeric == pytest.approx((4 * 1.5 - 2.0) / 3)


def test_a_screens_bound_is_its_gap_plus_three_round_offs_at_its_larger_step():
    params, grads, loss = quadratic({"a": 5})
    ctx, _ = context(loss, params, grads)
    for coarse_step, gap in ((1.0, 0.0), (0.5, 0.0), (1.0, 0.25)):
        c, f = Measurement(coarse_step, 2.0, 10.0, 9.0), Measurement(coarse_step / 2, 1.5, 10.0, 9.5)
        sc = Screen({}, (4 * 1.5 - 2.0) / 3 + gap, c, f)
        (b,) = screen_bounds(ctx, [sc])
        assert b == pytest.approx(gap + 3 * ctx.ev.roundoff(coarse_step, max(10.0, abs(ctx.j0))), rel=1e-9, abs=0)


def test_screen_steps_weigh_every_tensor_the_same_within_the_weight_range():
    params, grads, loss = quadratic({"a": 50, "b": 50, "c": 50})
    refs = {"a": 1.0, "b": 2.0, "c": 1000.0}
    ctx, slots = context(loss, params, grads, refs)
    own = {s.name: step_for(ctx, s, s.size, refs[s.name]) for s in slots}
    steps = screen_steps(ctx, slots)
    weight = math.exp(sum(math.log(own[k] * refs[k]) for k in refs) / 3)
    r = TOLERANCES.screen_weight_range
    for k in refs:
        assert steps[k] == pytest.approx(min(max(weight / refs[k], own[k] / r), own[k] * r), rel=1e-12, abs=0)
    assert steps["c"] == pytest.approx(own["c"] / r, rel=1e-12, abs=0)  # a huge gradient: clipped at a quarter of its own step


def test_the_second_measurement_of_a_screen_moves_half_as_far():
    params, grads, loss = quadratic({"a": 300})
    origin = params["a"].copy()
    moves = []

    def recording(p):
        moves.append(np.sqrt(np.mean((p["a"] - origin) ** 2)))
        return loss(p)

    ctx, slots = context(recording, params, grads)
    start = len(moves)
    screens = screen_group(ctx, slots)
    assert len(screens) >= TOLERANCES.screens_first
    coarse, fine = moves[start], moves[start + 2]
    assert fine == pytest.approx(coarse / 2, rel=1e-9, abs=0)


def test_tensors_that_do_not_fit_the_working_memory_start_a_new_group(monkeypatch):
    monkeypatch.setattr(screen, "TOLERANCES", dataclasses.replace(TOLERANCES, screen_memory_floor=0))
    params, grads, _ = quadratic({"a": 100, "b": 70, "c": 60})
    slots = build_slots(params, grads)
    # room: twice the largest tensor's 800 bytes = 1,600; each needs 9 bytes per entry: 900 + 630 fit, + 540 not
    assert [[s.name for s in g] for g in groups(slots)] == [["a", "b"], ["c"]]


def test_small_models_are_screened_in_one_group():
    params, grads, _ = quadratic({"a": 100, "b": 70, "c": 60})
    assert len(groups(build_slots(params, grads))) == 1


def kinked_quadratic(n, cross, seed=0):
    """0.5·‖θ‖² plus a hinge along a known direction ``d`` whose kink lies at ``cross`` × a unit step
    along ``d`` from the point; returns what a screen along ``d`` needs."""
    rng = np.random.default_rng(seed)
    theta0 = rng.standard_normal(n)
    d = rng.standard_normal(n)
    dd = float(d @ d)

    def loss(p):
        return float(0.5 * p["w"] @ p["w"] + 5.0 * max(0.0, (p["w"] - theta0) @ d - cross * 1e-4 * dd))

    return {"w": theta0.copy()}, d, loss


def screen_along(d, params, grads, loss):
    ctx, slots = context(loss, params, grads)
    probe = Probe.of([(Direction(slots[0], 0, slots[0].size, d), 1e-4)])
    with Workspace(ctx.params, slots) as ws:
        sc = screen.measure_screen(ctx, ws, slots, probe, {"w": 1e-4})
    assert sc is not None
    return ctx, sc


def test_a_screen_that_crosses_a_kink_is_measured_at_smaller_steps_along_the_same_direction():
    params, d, loss = kinked_quadratic(40, cross=0.75)  # crossed at step 1, not at ½
    ctx, sc = screen_along(d, params, {"dw": params["w"].copy()}, loss)
    assert (sc.coarse.step, sc.fine.step) == (0.5, 0.25)
    assert screen.screen_bound(ctx, sc) < 2 * screen._extrapolated_roundoff(ctx, sc)


def test_a_refined_screen_still_shows_a_wrong_gradient():
    params, d, loss = kinked_quadratic(40, cross=0.75)
    ctx, sc = screen_along(d, params, {"dw": 1.01 * params["w"]}, loss)
    assert abs(sc.analytic - sc.numeric) > 1e-3 * abs(sc.analytic)
    assert sc.fine.step >= 0.125  # a real gap: two extrapolations agree, and the refinement stops


def test_a_smooth_screen_is_not_refined():
    params, d, loss = kinked_quadratic(40, cross=1e6)  # the kink far away
    calls = []
    ctx, sc = screen_along(d, params, {"dw": params["w"].copy()}, lambda p: calls.append(1) or loss(p))
    assert (sc.coarse.step, sc.fine.step) == (1.0, 0.5)
    assert len(calls) == 1 + 4  # the base, and two steps × two signs


def sine(n, seed=0):
    """A smooth loss with a large third derivative: central differences carry truncation, which the
    extrapolation removes."""
    rng = np.random.default_rng(seed)
    theta0, d = rng.standard_normal(n), rng.standard_normal(n)
    return {"w": theta0}, d, lambda p: float(np.sum(np.sin(30.0 * p["w"])))


def test_a_real_gap_with_truncation_is_measured_once_more_and_kept():
    params, d, loss = sine(40)
    right = 30.0 * np.cos(30.0 * params["w"])
    ctx, sc = screen_along(d, params, {"dw": 1.01 * right}, loss)
    assert (sc.coarse.step, sc.fine.step) == (0.5, 0.25)  # two extrapolations agree: the gap is real
    assert abs(sc.analytic - sc.numeric) > 1e-3 * abs(sc.analytic)
    ctx, sc = screen_along(d, params, {"dw": right}, loss)
    assert (sc.coarse.step, sc.fine.step) == (1.0, 0.5)  # the steps disagree, but the gap is no obstacle


def test_a_tensor_with_a_zero_gradient_screens_at_its_largest_allowed_step():
    params, grads, loss = quadratic({"a": 50, "b": 50})
    refs = {"a": 1.0, "b": 0.0}
    ctx, slots = context(loss, params, grads, refs)
    own = step_for(ctx, slots[1], slots[1].size, 0.0)
    assert screen_steps(ctx, slots)["b"] == pytest.approx(own * TOLERANCES.screen_weight_range, rel=1e-12, abs=0)


def test_no_more_screens_help_once_there_are_screens_max_of_them():
    params, grads, loss = quadratic({"a": 50})
    ctx, slots = context(loss, params, grads, {"a": 1e9})  # a huge reference: anything clears it
    sc = Screen({"a": 1.0}, 1.0, Measurement(1.0, 1.0, 0.0, 0.0), Measurement(0.5, 1.0, 0.0, 0.0))
    assert screen.more_screens_help(ctx, slots, [sc] * (TOLERANCES.screens_max - 1))
    assert not screen.more_screens_help(ctx, slots, [sc] * TOLERANCES.screens_max)


def test_a_tensor_that_exactly_fills_the_working_memory_joins_the_group(monkeypatch):
    monkeypatch.setattr(screen, "TOLERANCES", dataclasses.replace(TOLERANCES, screen_memory_floor=0))
    params, grads, _ = quadratic({"a": 90, "b": 70})
    # room: twice the 720 bytes of a = 1,440 = 9 bytes per entry × (90 + 70)
    assert [[s.name for s in g] for g in groups(build_slots(params, grads))] == [["a", "b"]]


def test_a_kink_close_to_the_point_is_not_taken_for_a_real_gap():
    # the kink at 0.07 of a unit step: the estimates creep at steps 1, ½, ¼ (their extrapolations agree
    # to a quarter of the gap, as a real gap's would) but do not close in as truncation does
    params, d, loss = kinked_quadratic(40, cross=0.07)
    ctx, sc = screen_along(d, params, {"dw": params["w"].copy()}, loss)
    assert (sc.coarse.step, sc.fine.step) == (1 / 16, 1 / 32)
    assert screen.screen_bound(ctx, sc) < 2 * screen._extrapolated_roundoff(ctx, sc)


def test_estimates_that_close_in_as_truncation_does_are_converging():
    params, grads, loss = quadratic({"a": 5})
    ctx, _ = context(loss, params, grads)

    def m(step, numeric):
        return Measurement(step, numeric, 1.0, 1.0)

    assert screen._converging(ctx, m(1.0, 1.0), m(0.5, 1.25), m(0.25, 1.3125))  # changes ¼ then 1/16
    assert not screen._converging(ctx, m(1.0, 1.0), m(0.5, 1.25), m(0.25, 1.5))  # the same change again: a kink
    assert not screen._converging(ctx, m(1.0, 1.0), m(0.5, 1.25), m(0.25, 1.375 + 1e-9))  # just over half


def kinks_everywhere(n, offset, seed=0):
    """A quadratic plus ``|θᵢ − θ0ᵢ − δᵢ|`` in every entry, each kink ``offset`` from the point: every
    direction crosses one at any step beyond ``offset``."""
    rng = np.random.default_rng(seed)
    theta0 = rng.standard_normal(n)
    delta = offset * rng.choice([-1.0, 1.0], n)

    def loss(p):
        return float(0.5 * p["w"] @ p["w"] + 0.01 * np.sum(np.abs(p["w"] - theta0 - delta)))

    return {"w": theta0.copy()}, {"dw": theta0 - 0.01 * np.sign(delta)}, loss


def test_later_screens_start_at_the_step_the_first_one_settled_at(monkeypatch):
    params, grads, loss = kinks_everywhere(30, 0.0)
    ctx, slots = context(loss, params, grads)
    step = screen.screen_steps(ctx, slots)["w"]
    params, grads, loss = kinks_everywhere(30, 0.3 * step)  # crossed at steps 1 and ½, not at ¼
    ctx, slots = context(loss, params, grads)
    starts = []
    original = screen.measure_screen

    def recording(ctx, ws, group, probe, steps, start=1.0):
        starts.append(start)
        return original(ctx, ws, group, probe, steps, start)

    monkeypatch.setattr(screen, "measure_screen", recording)
    screens = screen_group(ctx, slots)
    assert len(screens) >= 2
    assert starts[0] == 1.0
    assert screens[0].coarse.step < 1.0
    assert starts[1] == screens[0].coarse.step


def test_more_screens_do_not_help_where_round_off_at_the_next_step_keeps_a_tensor_uncleared():
    params, grads, loss = quadratic({"a": 50})
    ctx, slots = context(loss, params, grads, {"a": 1.0})
    r = ctx.ev.roundoff(1.0, abs(ctx.j0))  # screens bound ‖e‖ by ~3r/start / step × 100 (two) or × 12 (four)
    sc = Screen({"a": 1e9 * r}, 1.0, Measurement(1.0, 1.0, ctx.j0, ctx.j0),
                Measurement(0.5, 1.0, ctx.j0, ctx.j0))
    assert not screen.cleared(ctx, slots, [sc, sc])
    assert screen.more_screens_help(ctx, slots, [sc, sc], start=1.0)
    assert not screen.more_screens_help(ctx, slots, [sc, sc], start=1 / 1000)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_entry_tensors_whose_errors_would_cancel_under_a_fixed_sign_are_not_cleared(seed):
    # both scalar gradients have the wrong sign; with +1 for each in every screen their errors cancelled
    rng = np.random.default_rng(0)
    W, a, c = rng.standard_normal(200), np.array(0.7), np.array(-0.4)
    loss = lambda q: float(np.sum(np.tanh(q["W"])) + q["a"] ** 2 + q["c"] ** 2)  # noqa: E731
    grads = {"dW": 1 - np.tanh(W) ** 2, "da": -2 * a, "dc": -2 * c}
    result = check_gradients(loss, {"W": W, "a": a, "c": c}, grads, seed=seed)
    assert not result.passed and set(result.failed) <= {"a", "c"}
