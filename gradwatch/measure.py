"""Measuring for one check: the check's context, one probe (measured, re-measured when suspicious, settled),
coordinates (the documents' loop) and random directions per tensor.

Pure: nothing here prints or reads files; randomness comes from the context's generator.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from .inputs import Params, Slot, Workspace
from .noise import (
    FAR,
    ProbeSet,
    Settled,
    agree,
    gap_is_small,
    judge,
    numeric_is_zero,
    one_sided,
    reference_norm,
    settle,
    settles_alone,
    truncation_bound,
    truncation_suspicious,
    truncation_terms,
)
from .probes import Evaluator, Measurement, Probe, choose_step, coordinate, loss_at, measure, random_direction
from .numerics import norm2
from .tolerances import TOLERANCES

@dataclass(frozen=True)
class Context:
    ev: Evaluator
    params: Params
    j0: float
    epsilon: Optional[float]
    thresholds: Dict[str, float]
    references: Dict[str, float]  # each tensor's ‖g‖, floored for near-zero gradients
    model_rms: float  # the model's RMS gradient entry
    rng: np.random.Generator
    norms: Optional[Dict[str, float]] = None  # each tensor's own ‖g‖ (the references may be floored)

    def floored(self, name: str) -> bool:
        """Whether a tensor's reference is the zero-gradient floor rather than its own size."""
        return self.norms is not None and self.references[name] > self.norms[name]


@dataclass(frozen=True)
class Outcome:
    """What was measured in one tensor."""

    probes: ProbeSet
    statistical: bool
    method: str
    checked: int
    reference: float
    step: float
    indices: Optional[np.ndarray] = None  # the coordinates, for coordinate checks
    dropped: int = 0  # direction probes that no step settled (redrawn)
    kinks: int = 0  # probes explained by a kink at the point
    narrowed: bool = False  # kinks within the first step made the probes shrink it
    truncated: bool = False  # coordinates: truncation, more than round-off, widens the bounds


# --------------------------------------------------------------------------------------------
# One probe


def step_for(ctx: Context, slot: Slot, entries: int, reference: float) -> float:
    """:func:`gradwatch.probes.choose_step` with what this check knows of the loss's noise."""
    ev = ctx.ev
    return choose_step(slot, entries, ctx.epsilon, ev.precision, ev.roundoff(1.0, abs(ctx.j0)), reference,
                       ctx.thresholds[slot.name])


def base_loss(ctx: Context, ws: Workspace) -> float:
    """The loss at the unperturbed point as ``loss_fn`` sees it through this workspace (the float64
    working copies of substituted tensors give another value than the user's arrays)."""
    if ws.mapping is ctx.params:
        return ctx.j0
    if ws.base_loss is None:
        ws.base_loss = ctx.ev(ws.mapping)
    return ws.base_loss


def affordable_base_loss(ctx: Context, ws: Workspace) -> Optional[float]:
    """:func:`base_loss`, or ``None`` when measuring it would pass the budget."""
    known = ws.mapping is ctx.params or ws.base_loss is not None
    return base_loss(ctx, ws) if known or ctx.ev.affords(1) else None


def clean_first(ctx: Context, ws: Workspace, probe: Probe, first: Measurement, threshold: float, reference: float,
                far: Optional[float] = None) -> Optional[Settled]:
    """A first measurement that needs no re-measuring, settled; ``None`` when it is suspicious, or when the
    budget cannot bound its truncation.

    Along a random direction: when its gap is small (with its round-off, a small share of a
    threshold-sized gap). Its truncation is a cubic in the direction and the error's projection is
    linear, so no truncation mimics an error along every direction: one large enough to hide an error
    leaves a residual that makes the gap large, and the probe is re-measured at smaller steps.

    Along one coordinate the truncation can mimic an error exactly (for ``exp(k·θ)`` it is (kh)²/6 of
    the gradient: a scale error of that size vanishes), so it is bounded: from the loss at +3h (``far``,
    measured here unless given), or at −3h when that side looks worse (a kink between h and 3h inflates
    one side's estimate, not the central difference's truncation). Such a probe needs no re-measuring
    when its gap is small or within its round-off (smaller steps would only add more) and the part of
    its truncation's estimate above round-off is small; its bound holds the truncation's."""
    ev, a = ctx.ev, probe.analytic
    roundoff = ev.roundoff_of(first, ctx.j0)
    if not probe.coordinate:
        small = gap_is_small(a, first, roundoff, threshold, reference)
        return settle(a, [first], ev, ctx.j0, threshold, reference, False, 0.0) if small else None
    if not settles_alone(a, first, roundoff, threshold, reference):
        return None
    j_base = affordable_base_loss(ctx, ws)
    if j_base is None:
        return None
    for plus in (True, False):
        if not plus or far is None:
            far = loss_at(ev, ws, probe, (FAR if plus else -FAR) * first.step, optional=True)
        if far is None:
            return None
        near, opposite = (first.j_plus, first.j_minus) if plus else (first.j_minus, first.j_plus)
        estimate, noise = truncation_terms(first.step, near, opposite, far, j_base, ev)
        if not truncation_suspicious(estimate, noise, a, first.numeric, threshold, reference):
            return settle(a, [first], ev, ctx.j0, threshold, reference, True, float(truncation_bound(estimate, noise)))
    return None


def refine(ctx: Context, ws: Workspace, probe: Probe, first: Measurement, threshold: float, reference: float,
           far: Optional[float] = None) -> Settled:
    """Settle a probe: at once when its first measurement is clean (:func:`clean_first`); otherwise
    re-measured once at the same step (randomness), then at smaller steps until two estimates agree."""
    ev, a = ctx.ev, probe.analytic
    clean = clean_first(ctx, ws, probe, first, threshold, reference, far)
    if clean is not None:
        return clean
    if ev.repeats < TOLERANCES.repeats:
        again = measure(ev, ws, probe, first.step)
        if again is not None:
            ev.repeats += 1
            ev.same_point(first.j_plus, again.j_plus, "a perturbed point measured twice")
            ev.same_point(first.j_minus, again.j_minus, "a perturbed point measured twice")
    trail = [first]
    step = first.step
    for _ in range(TOLERANCES.refine_levels):
        step /= TOLERANCES.refine_ratio
        nxt = measure(ev, ws, probe, step)
        if nxt is None:
            break
        trail.append(nxt)
        if nxt.flat or agree(trail[-2], nxt, ev, a, threshold, reference):
            break  # agreed; or flat, and smaller steps would resolve even less
    j_base = base_loss(ctx, ws) if len(trail) > 1 and ev.affords(1) else ctx.j0
    settled = settle(a, trail, ev, j_base, threshold, reference, probe.coordinate)
    if len(trail) > 1 and 0.0 < settled.unexplained < math.inf:
        settled = confirmed(ctx, ws, probe, trail, settled, j_base, threshold, reference)
    if len(trail) > 1 and (not settled.settled or settled.cause == "step") and settled.cause != "corner" and ev.affords(2):
        # a kink within the first step: try the side of the point that does not cross it. Not for a kink at the
        # point itself ("corner"): each side's one-sided estimates measure that side's slope, not the gradient
        double = measure(ev, ws, probe, 2 * first.step)
        escape = None if double is None else one_sided(a, first, trail[1], double, ev, j_base, threshold, reference)
        if escape is not None and not settled.settled:
            return escape
        if escape is not None and settled.unexplained == 0.0 and escape.bound - escape.gap < settled.bound - settled.gap:
            return escape  # the trail settled without showing an error: the escape only narrows its bound
    return settled


def confirmed(ctx: Context, ws: Workspace, probe: Probe, trail: Sequence[Measurement], settled: Settled, j_base: float,
              threshold: float, reference: float) -> Settled:
    """A gap two steps agree on, measured at one step smaller still: an error stays put at the third; two
    estimates that agreed by chance (a step far beyond the loss's features: sin(376·θ) at a float32 loss's
    step of 0.08) do not. Unconfirmed (moved, or past the budget), it shows no error."""
    ev = ctx.ev
    nxt = measure(ev, ws, probe, trail[-1].step / TOLERANCES.refine_ratio)
    if nxt is None:
        return dataclasses.replace(settled, unexplained=0.0)
    if not agree(trail[-1], nxt, ev, probe.analytic, threshold, reference):
        return dataclasses.replace(settled, unexplained=0.0, settled=False)
    finer = settle(probe.analytic, [*trail, nxt], ev, j_base, threshold, reference, probe.coordinate)
    return dataclasses.replace(settled, unexplained=min(settled.unexplained, finer.unexplained))


def runner(ctx: Context, threshold: float, reference: float) -> Callable[[Workspace, Probe, float, bool], Optional[Settled]]:
    def run(ws: Workspace, probe: Probe, step: float, careful: bool) -> Optional[Settled]:
        first = measure(ctx.ev, ws, probe, step)
        if first is None:
            return None
        if not careful:
            return settle(probe.analytic, [first], ctx.ev, ctx.j0, threshold, reference, probe.coordinate)
        return refine(ctx, ws, probe, first, threshold, reference)

    return run


# --------------------------------------------------------------------------------------------
# Coordinates: the documents' loop


def sweep(ctx: Context, ws: Workspace, slot: Slot, indices: np.ndarray, offsets: Sequence[float],
          optional_from: int) -> List[np.ndarray]:
    """The losses at each coordinate in ``indices`` moved by each of ``offsets`` in turn (one array per
    offset); those from ``optional_from`` on through :meth:`gradwatch.probes.Evaluator.optional`."""
    ev, mapping = ctx.ev, ws.mapping
    flat = ws.flat(slot)
    if flat is None:
        return sweep_generic(ctx, ws, slot, indices, offsets, optional_from)
    out = [np.empty(indices.size) for _ in offsets]
    calls = [ev.optional if j >= optional_from else ev for j in range(len(offsets))]
    full = indices.size == slot.size  # then indices is arange(size): iterate a range, not a list
    for k, i in enumerate(range(slot.size) if full else indices.tolist()):
        saved = flat[i]
        try:
            for losses, offset, call in zip(out, offsets, calls):
                flat = ws.writable_flat(slot, flat)
                flat[i] = saved + offset
                losses[k] = call(mapping)
        finally:
            flat = ws.writable_flat(slot, flat)
            flat[i] = saved
    return out


def sweep_generic(ctx: Context, ws: Workspace, slot: Slot, indices: np.ndarray, offsets: Sequence[float],
                  optional_from: int) -> List[np.ndarray]:
    out = [np.empty(indices.size) for _ in offsets]
    for k, i in enumerate(indices.tolist()):
        probe = Probe.of([(coordinate(slot, i), 1.0)])
        for j, (losses, offset) in enumerate(zip(out, offsets)):
            value = loss_at(ctx.ev, ws, probe, offset, optional=j >= optional_from)
            assert value is not None  # coordinate sweeps are planned within the budget
            losses[k] = value
    return out


def coordinate_truncation(ctx: Context, ws: Workspace, slot: Slot, indices: np.ndarray, step: float,
                          analytic: np.ndarray, numeric: np.ndarray, losses: Sequence[np.ndarray],
                          threshold: float, reference: float) -> np.ndarray:
    """Each coordinate's truncation bound (:func:`gradwatch.noise.truncation_terms`), from the losses at
    ``(+h, −h, +3h)``; where the +3h side's estimate is suspicious (a kink between h and 3h, a large third
    derivative, a loss that is not finite there), also from the loss at −3h, as far as the budget goes:
    the smaller of the two sides' bounds (a kink inflates its side's estimate only)."""
    ev = ctx.ev
    plus, minus, far = losses
    j_base = base_loss(ctx, ws)
    estimate, noise = truncation_terms(step, plus, minus, far, j_base, ev)
    bound: np.ndarray = truncation_bound(estimate, noise)
    todo = np.flatnonzero(truncation_suspicious(estimate, noise, analytic, numeric, threshold, reference))
    if todo.size and ev.repeats < TOLERANCES.repeats and ev.affords(1):
        # a far loss that looks wrong measured twice: randomness there would pass for a large truncation
        worst = int(todo[np.argmax(np.nan_to_num(estimate[todo] - noise[todo], nan=-np.inf))])
        (again,) = sweep(ctx, ws, slot, indices[worst : worst + 1], (FAR * step,), 0)
        ev.repeats += 1
        ev.same_point(float(far[worst]), float(again[0]), "a perturbed point measured twice")
    if ev.limit is not None:
        todo = todo[: max(0, ev.limit - ev.count)]
    if todo.size:
        (beyond,) = sweep(ctx, ws, slot, indices[todo], (-FAR * step,), 0)
        bound[todo] = np.fmin(bound[todo], truncation_bound(*truncation_terms(step, minus[todo], plus[todo], beyond,
                                                                            j_base, ev)))
    return bound


def coordinate_stage(ctx: Context, slot: Slot, indices: np.ndarray, method: str) -> Outcome:
    """Measure each coordinate in ``indices``; while the verdict is unclear, re-measure the coordinate
    with the largest bound (at most ``recheck_cap`` of them)."""
    threshold = ctx.thresholds[slot.name]
    ev = ctx.ev
    analytic = slot.grad[indices].astype(np.float64)
    reference = reference_norm(norm2(analytic), int(indices.size), ctx.model_rms, slot.grad_precision)
    rms = reference / math.sqrt(max(1, indices.size))
    step = step_for(ctx, slot, 1, rms)
    kinks = 0
    with Workspace(ctx.params, [slot]) as ws:
        plus, minus, far = sweep(ctx, ws, slot, indices, (step, -step, FAR * step), 2)
        numeric = (plus - minus) / (2 * step)
        gap = np.abs(analytic - numeric)
        truncation = coordinate_truncation(ctx, ws, slot, indices, step, analytic, numeric, (plus, minus, far),
                                           threshold, reference)
        settled = np.isfinite(truncation)
        roundoff = ev.roundoff(step, np.maximum(np.maximum(np.abs(plus), np.abs(minus)), abs(ctx.j0)))
        bound = gap + roundoff + truncation
        unexplained = np.zeros(indices.size)
        order = np.argsort(-np.nan_to_num(bound, nan=np.inf), kind="stable")[: TOLERANCES.recheck_cap]
        for k in order.tolist():
            probes = ProbeSet(analytic, numeric, gap, bound, unexplained, bool(np.all(settled)))
            if judge(probes, threshold, reference, False, slot.grad_finite).verdict != "inconclusive":
                break
            if not ev.affords(4):
                break
            probe = Probe(((coordinate(slot, int(indices[k])), 1.0),), float(analytic[k]))
            first = Measurement(step, float(numeric[k]), float(plus[k]), float(minus[k]))
            s = refine(ctx, ws, probe, first, threshold, reference, float(far[k]))
            gap[k], bound[k], unexplained[k], settled[k] = s.gap, s.bound, s.unexplained, s.settled
            truncation[k] = roundoff[k] = 0.0  # measured again: its bound is the refined one
            kinks += s.cause == "kink"
    probes = ProbeSet(analytic, numeric, gap, bound, unexplained, bool(np.all(settled)))
    if not numeric_is_zero(probes):
        reference = norm2(analytic)  # the floor is for a gradient that is zero: this one is not
    with np.errstate(invalid="ignore"):
        truncated = bool(norm2(np.nan_to_num(truncation, nan=np.inf)) > norm2(roundoff))
    return Outcome(probes, False, method, int(indices.size), reference, step, indices, 0, kinks, truncated=truncated)


# --------------------------------------------------------------------------------------------
# Random directions: screens over every tensor, then probes per tensor


def useful(s: Settled, threshold: float, reference: float) -> bool:
    """A settled probe helps the verdict: it shows an error, or its noise is small enough to clear one.
    A probe that sat on a kink down to a step where round-off swamps it is replaced instead."""
    return s.settled and (s.unexplained > 0 or s.bound - s.gap <= TOLERANCES.useful_noise_share * threshold * 2 * reference)


def direction_stage(ctx: Context, slot: Slot) -> Outcome:
    """Probe one tensor along random directions, two at a time, until the verdict is clear."""
    threshold, reference = ctx.thresholds[slot.name], ctx.references[slot.name]
    ev = ctx.ev
    step = first_step = step_for(ctx, slot, slot.size, reference)
    kept: List[Settled] = []
    dropped: List[Settled] = []
    with Workspace(ctx.params, [slot]) as ws:
        while len(kept) < TOLERANCES.probes_max and len(dropped) < TOLERANCES.probes_max:
            probe = Probe.of([(random_direction(slot, 0, slot.size, ctx.rng), 1.0)])
            first = measure(ev, ws, probe, step)
            if first is None:
                break
            s = refine(ctx, ws, probe, first, threshold, reference)
            del probe  # its direction goes before the next one is drawn
            ok = useful(s, threshold, reference)
            (kept if ok else dropped).append(s)
            if s.cause == "step" or not s.settled:
                # a kink within the step: fresh directions at a smaller step, while round-off allows
                smaller = step / TOLERANCES.refine_ratio
                if ev.roundoff(smaller, abs(ctx.j0)) <= TOLERANCES.suspicious_share * threshold * 2 * reference:
                    step = smaller
            if len(kept) >= TOLERANCES.probes_first and (len(kept) + len(dropped)) % 2 == 0:
                if judge(ProbeSet.of(kept), threshold, reference, True).verdict != "inconclusive":
                    break
    if len(kept) >= TOLERANCES.probes_first:
        probes = ProbeSet.of(kept)
    else:  # too few useful probes: the verdict is inconclusive, and the reason is in every probe measured
        probes = dataclasses.replace(ProbeSet.of(kept + dropped), settled=False)
    kinks = sum(s.cause == "kink" for s in kept)
    if ctx.floored(slot.name) and not numeric_is_zero(probes):
        reference = slot.grad_norm()  # the floor is for a gradient that is zero: this one is not
    return Outcome(probes, True, "directions", slot.size, reference, step, None, len(dropped), kinks, step < first_step)
