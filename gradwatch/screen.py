"""Screens: one random direction over a group of tensors at once, each tensor weighted to weigh the same,
measured at two steps and extrapolated, so that one measurement clears every tensor of a correct model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import AbstractSet, Dict, List, Optional, Sequence, Set

import numpy as np

from .inputs import Slot, Workspace
from .measure import Context, step_for
from .noise import direction_upper
from .probes import Direction, Measurement, Probe, measure, measure_steps, random_direction
from .numerics import norm2
from .tolerances import TOLERANCES

@dataclass(frozen=True)
class Screen:
    """One joint probe over a group of tensors, each tensor moved by its own per-entry step, measured at
    two steps (1 and ½ of the weights) and extrapolated (Richardson): truncation, which grows with the
    number of tensors moved at once, drops out, so one screen resolves every tensor."""

    steps: Dict[str, float]
    analytic: float
    coarse: Measurement
    fine: Measurement

    @property
    def numeric(self) -> float:
        return (4 * self.fine.numeric - self.coarse.numeric) / 3


def _extrapolated_roundoff(ctx: Context, sc: Screen) -> float:
    """The extrapolation's round-off, (4·r(h/2) + r(h)) / 3 = 3·r(h), at the larger of its losses."""
    return _roundoff_at(ctx, sc.coarse.step, max(sc.coarse.loss_size, sc.fine.loss_size))


def _roundoff_at(ctx: Context, step: float, loss_size: float) -> float:
    """The round-off of a screen extrapolated from ``step`` and half of it, about losses of ``loss_size``."""
    return 3 * float(ctx.ev.roundoff(step, max(loss_size, abs(ctx.j0))))


def screen_bound(ctx: Context, sc: Screen) -> float:
    """A screen's gap plus its round-off."""
    return abs(sc.analytic - sc.numeric) + _extrapolated_roundoff(ctx, sc)


def within_reach(ctx: Context, group: Sequence[Slot], steps: Dict[str, float], bounds: Sequence[float],
                 skip: AbstractSet[str] = frozenset()) -> bool:
    """Whether screens bounded by ``bounds`` would clear every screenable tensor of ``group`` not in ``skip``."""
    return all(direction_upper([b / steps[s.name] for b in bounds], ctx.references[s.name]) < ctx.thresholds[s.name]
               for s in group if s.name not in skip and not ctx.floored(s.name))


def _kinked(ctx: Context, group: Sequence[Slot], sc: Screen) -> bool:
    """A screen whose gap keeps a tensor from being cleared, and whose two steps disagree by more than
    round-off: a kink (ReLU) crossed within the larger step, or truncation the extrapolation left."""
    ev = ctx.ev
    disagree = abs(sc.coarse.numeric - sc.fine.numeric) > ev.roundoff_of(sc.coarse, ctx.j0) + ev.roundoff_of(sc.fine, ctx.j0)
    return disagree and not within_reach(ctx, group, sc.steps, [abs(sc.analytic - sc.numeric)] * TOLERANCES.screens_max)


def _converging(ctx: Context, coarse: Measurement, fine: Measurement, finer: Measurement) -> bool:
    """Whether three steps, each half the last, close in on one value as truncation does (the second
    change at most half the first, beyond round-off). A kink close to the point moves the estimates as
    much or more at each halving, while the two extrapolations may agree by chance."""
    ev = ctx.ev
    noise = ev.roundoff_of(fine, ctx.j0) + ev.roundoff_of(finer, ctx.j0)
    return abs(finer.numeric - fine.numeric) <= abs(fine.numeric - coarse.numeric) / 2 + noise


def measure_screen(ctx: Context, ws: Workspace, group: Sequence[Slot], probe: Probe,
                   steps: Dict[str, float], start: float = 1.0) -> Optional[Screen]:
    """A screen along ``probe`` at steps ``start`` and half that (of its weights); halved again, the same
    direction kept, while a kink within the larger step spoils the extrapolation and the estimates
    have not settled (two extrapolations agreeing, to round-off and a share of the gap, at steps that
    close in as truncation does: a real gap), down to ``2^-refine_levels`` of the weights; ``None``
    past the budget."""
    pair = measure_steps(ctx.ev, ws, probe, (start, start / 2))
    if len(pair) < 2:
        return None
    sc = Screen(steps, probe.analytic, pair[0], pair[1])
    finest = 2.0 ** -(TOLERANCES.refine_levels + 1)
    while sc.fine.step / 2 >= finest and _kinked(ctx, group, sc):
        finer = measure(ctx.ev, ws, probe, sc.fine.step / 2)
        if finer is None:
            break
        nxt = Screen(steps, probe.analytic, sc.fine, finer)
        noise = _extrapolated_roundoff(ctx, sc) + _extrapolated_roundoff(ctx, nxt)
        agree = abs(nxt.numeric - sc.numeric) <= noise + TOLERANCES.agreement_share * abs(nxt.analytic - nxt.numeric)
        settled = agree and _converging(ctx, sc.coarse, sc.fine, finer)
        sc = nxt
        if settled:
            break
    return sc


def screen_bounds(ctx: Context, screens: Sequence[Screen]) -> List[float]:
    """Each screen's gap plus its round-off (the extrapolation triples a central difference's)."""
    return [screen_bound(ctx, sc) for sc in screens]


def screen_steps(ctx: Context, group: Sequence[Slot]) -> Dict[str, float]:
    """Per-entry steps that make every tensor weigh the same in a screen (within a factor of
    ``screen_weight_range`` of its own step); its own step when epsilon was given."""
    own = {s.name: step_for(ctx, s, s.size, ctx.references[s.name]) for s in group}
    if ctx.epsilon is not None:
        return own
    r = TOLERANCES.screen_weight_range
    sized = [own[s.name] * ctx.references[s.name] for s in group if ctx.references[s.name] > 0]
    if not sized:  # every gradient exactly zero: nothing to weigh
        return dict(own)
    weight = math.exp(math.fsum(math.log(x) for x in sized) / len(sized))

    def step(s: Slot) -> float:
        ref = ctx.references[s.name]
        wanted = weight / ref if ref > 0 else own[s.name] * r
        return min(max(wanted, own[s.name] / r), own[s.name] * r)

    return {s.name: step(s) for s in group}


def cleared(ctx: Context, group: Sequence[Slot], screens: Sequence[Screen]) -> Set[str]:
    """The tensors of ``group`` whose relative difference the screens bound below the threshold."""
    if len(screens) < TOLERANCES.screens_first:
        return set()
    bounds = screen_bounds(ctx, screens)
    out = set()
    for s in group:
        if ctx.floored(s.name):  # a zero-gradient floor needs the tensor's own numbers: probes, not a screen
            continue
        step = screens[0].steps[s.name]
        if direction_upper([b / step for b in bounds], ctx.references[s.name]) < ctx.thresholds[s.name]:
            out.add(s.name)
    return out


def _part(slot: Slot, rng: np.random.Generator) -> Direction:
    """A tensor's part of a screen's direction: random in every entry. A lone entry gets a normal coefficient,
    not the coordinate's fixed +1: with +1 in every screen, two one-entry tensors' errors of opposite signs
    would cancel in all of them."""
    if slot.size == 1:
        return Direction(slot, 0, 1, rng.standard_normal(1))
    return random_direction(slot, 0, slot.size, rng)


def screen_group(ctx: Context, group: Sequence[Slot]) -> List[Screen]:
    """Joint screens over ``group`` until every tensor is cleared, or more screens cannot clear them."""
    steps = screen_steps(ctx, group)
    screenable = [s for s in group if not ctx.floored(s.name)]
    screens: List[Screen] = []
    start = 1.0  # a kink within the first screens' steps is as close along the next directions: start there
    with Workspace(ctx.params, group) as ws:
        for _ in range(TOLERANCES.screens_max):
            probe = Probe.of([(_part(s, ctx.rng), steps[s.name]) for s in group])
            sc = measure_screen(ctx, ws, group, probe, steps, start)
            if sc is None:
                break
            screens.append(sc)
            start = min(start, sc.coarse.step)
            del probe  # its direction (a byte per entry) goes before the next one is drawn
            if len(screens) >= TOLERANCES.screens_first and len(cleared(ctx, group, screens)) == len(screenable):
                break
            if len(screens) >= TOLERANCES.screens_first and not more_screens_help(ctx, group, screens, start):
                break
    return screens


def more_screens_help(ctx: Context, group: Sequence[Slot], screens: Sequence[Screen], start: float = 1.0) -> bool:
    """Whether ``screens_max`` screens would clear the uncleared tensors: those measured, and the rest
    each bounded by the gap seen so far (RMS) plus the round-off of a screen at ``start``."""
    k = len(screens)
    if k >= TOLERANCES.screens_max:
        return False
    typical = norm2([sc.analytic - sc.numeric for sc in screens]) / math.sqrt(k)
    size = max(max(sc.coarse.loss_size, sc.fine.loss_size) for sc in screens)
    bounds = screen_bounds(ctx, screens) + [typical + _roundoff_at(ctx, start, size)] * (TOLERANCES.screens_max - k)
    return within_reach(ctx, group, screens[0].steps, bounds, cleared(ctx, group, screens))


def groups(slots: Sequence[Slot]) -> List[List[Slot]]:
    """Slots screened together, so that the working memory of a screen (a saved or float64 copy and a
    byte of direction per entry) stays within twice the largest tensor (or what that tensor alone
    needs, or 8 MiB: small models are screened in one go)."""
    need = {s.name: 9 * s.size for s in slots}
    limit = max([2 * s.array.nbytes for s in slots] + list(need.values()) + [TOLERANCES.screen_memory_floor])
    groups: List[List[Slot]] = []
    used = 0
    for s in slots:
        if groups and used + need[s.name] <= limit:
            groups[-1].append(s)
            used += need[s.name]
        else:
            groups.append([s])
            used = need[s.name]
    return groups
