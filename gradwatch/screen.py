"""Screens: one random direction over a group of tensors at once, each tensor weighted to weigh the same,
measured at two steps and extrapolated, so that one measurement clears every tensor of a correct model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import AbstractSet, Dict, List, Optional, Sequence, Set

from .inputs import Slot, Workspace
from .measure import Context, step_for
from .noise import direction_upper
from .probes import Measurement, Probe, measure, measure_steps, random_direction
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
    size = max(sc.coarse.loss_size, sc.fine.loss_size, abs(ctx.j0))
    return 3 * float(ctx.ev.roundoff(sc.coarse.step, size))


def screen_bound(ctx: Context, sc: Screen) -> float:
    """A screen's gap plus its round-off."""
    return abs(sc.analytic - sc.numeric) + _extrapolated_roundoff(ctx, sc)


def within_reach(ctx: Context, group: Sequence[Slot], steps: Dict[str, float], bound: float,
                 skip: AbstractSet[str] = frozenset()) -> bool:
    """Whether ``screens_max`` screens, each bounded by ``bound``, would clear every screenable tensor of
    ``group`` not in ``skip``."""
    k_max = TOLERANCES.screens_max
    return all(direction_upper([bound / steps[s.name]] * k_max, ctx.references[s.name]) < ctx.thresholds[s.name]
               for s in group if s.name not in skip and not ctx.floored(s.name))


def _kinked(ctx: Context, group: Sequence[Slot], sc: Screen) -> bool:
    """A screen whose gap keeps a tensor from being cleared, and whose two steps disagree by more than
    round-off: a kink (ReLU) crossed within the larger step, or truncation the extrapolation left."""
    ev = ctx.ev
    disagree = abs(sc.coarse.numeric - sc.fine.numeric) > ev.roundoff_of(sc.coarse, ctx.j0) + ev.roundoff_of(sc.fine, ctx.j0)
    return disagree and not within_reach(ctx, group, sc.steps, abs(sc.analytic - sc.numeric))


def measure_screen(ctx: Context, ws: Workspace, group: Sequence[Slot], probe: Probe,
                   steps: Dict[str, float]) -> Optional[Screen]:
    """A screen along ``probe`` at steps 1 and ½ (of its weights); halved again, the same direction kept,
    while a kink within the larger step spoils the extrapolation and the last two extrapolations disagree
    (agreeing, to round-off and a share of the gap, they measure a real gap); ``None`` past the budget."""
    pair = measure_steps(ctx.ev, ws, probe, (1.0, 0.5))
    if len(pair) < 2:
        return None
    sc = Screen(steps, probe.analytic, pair[0], pair[1])
    for _ in range(TOLERANCES.refine_levels):
        if not _kinked(ctx, group, sc):
            break
        finer = measure(ctx.ev, ws, probe, sc.fine.step / 2)
        if finer is None:
            break
        nxt = Screen(steps, probe.analytic, sc.fine, finer)
        noise = _extrapolated_roundoff(ctx, sc) + _extrapolated_roundoff(ctx, nxt)
        settled = abs(nxt.numeric - sc.numeric) <= noise + TOLERANCES.agreement_share * abs(nxt.analytic - nxt.numeric)
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


def screen_group(ctx: Context, group: Sequence[Slot]) -> List[Screen]:
    """Joint screens over ``group`` until every tensor is cleared, or more screens cannot clear them."""
    steps = screen_steps(ctx, group)
    screenable = [s for s in group if not ctx.floored(s.name)]
    screens: List[Screen] = []
    with Workspace(ctx.params, group) as ws:
        for _ in range(TOLERANCES.screens_max):
            probe = Probe.of([(random_direction(s, 0, s.size, ctx.rng), steps[s.name]) for s in group])
            sc = measure_screen(ctx, ws, group, probe, steps)
            if sc is None:
                break
            screens.append(sc)
            del probe  # its direction (a byte per entry) goes before the next one is drawn
            if len(screens) >= TOLERANCES.screens_first and len(cleared(ctx, group, screens)) == len(screenable):
                break
            if len(screens) >= TOLERANCES.screens_first and not more_screens_help(ctx, group, screens):
                break
    return screens


def more_screens_help(ctx: Context, group: Sequence[Slot], screens: Sequence[Screen]) -> bool:
    """Whether the uncleared tensors are within reach of the tightest bound ``screens_max`` screens give."""
    k = len(screens)
    if k >= TOLERANCES.screens_max:
        return False
    typical = math.sqrt(math.fsum((sc.analytic - sc.numeric) ** 2 for sc in screens) / k)
    return within_reach(ctx, group, screens[0].steps, typical, cleared(ctx, group, screens))


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
