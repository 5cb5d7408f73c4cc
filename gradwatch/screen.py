"""Screens: one random direction over a group of tensors at once, each tensor weighted to weigh the same,
measured at two steps and extrapolated, so that one measurement clears every tensor of a correct model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Sequence, Set

from .inputs import Slot, Workspace
from .measure import Context, step_for
from .noise import direction_upper
from .probes import Measurement, Probe, measure, random_direction
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


def screen_bounds(ctx: Context, screens: Sequence[Screen]) -> List[float]:
    """Each screen's gap plus its round-off (the extrapolation triples a central difference's)."""
    size = abs(ctx.j0)
    return [abs(sc.analytic - sc.numeric)
            + 3 * ctx.ev.roundoff(1.0, max(sc.coarse.loss_size, sc.fine.loss_size, size)) for sc in screens]


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


def screen_group(ctx: Context, group: Sequence[Slot]) -> List[Screen]:
    """Joint screens over ``group`` until every tensor is cleared, or more screens cannot clear them."""
    steps = screen_steps(ctx, group)
    screenable = [s for s in group if not ctx.floored(s.name)]
    screens: List[Screen] = []
    with Workspace(ctx.params, group) as ws:
        for _ in range(TOLERANCES.screens_max):
            probe = Probe.of([(random_direction(s, 0, s.size, ctx.rng), steps[s.name]) for s in group])
            coarse = measure(ctx.ev, ws, probe, 1.0)
            fine = None if coarse is None else measure(ctx.ev, ws, probe, 0.5)
            if coarse is None or fine is None:
                break
            screens.append(Screen(steps, probe.analytic, coarse, fine))
            del probe  # its direction (a byte per entry) goes before the next one is drawn
            if len(screens) >= TOLERANCES.screens_first and len(cleared(ctx, group, screens)) == len(screenable):
                break
            if len(screens) >= TOLERANCES.screens_first and not more_screens_help(ctx, group, screens):
                break
    return screens


def more_screens_help(ctx: Context, group: Sequence[Slot], screens: Sequence[Screen]) -> bool:
    """Whether the uncleared tensors are within reach of the tightest bound ``screens_max`` screens give."""
    k, k_max = len(screens), TOLERANCES.screens_max
    if k >= k_max:
        return False
    bounds = [abs(sc.analytic - sc.numeric) for sc in screens]
    done = cleared(ctx, group, screens)
    typical = math.sqrt(math.fsum(b * b for b in bounds) / k)
    for s in group:
        if s.name in done or ctx.floored(s.name):
            continue
        step = screens[0].steps[s.name]
        best = direction_upper([typical / step] * k_max, ctx.references[s.name])
        if best >= ctx.thresholds[s.name]:
            return False
    return True


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
