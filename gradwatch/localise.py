"""Localisation: which entry of a wrong tensor carries its error, by bisection over its entries.

A random direction over a range of entries (unit mean-square entries) projects the error carried by
that range with its full size on average, so the half of a range that carries the error shows it.
A concentrated error is followed down to its entry; an error that both halves carry level after
level is *spread* (a scale error, a missing term, an off-by-one) and is reported as such, with one
entry that carries a share of it (the larger half followed, without re-measuring upsets). The entry a
bisection reaches is shown only when its own formula (2) reaches the threshold beyond its noise: one that
carries nothing means kinks misled the bisection, which is then tried once more. Every measurement asks the
evaluator's budget first: when it is spent, localisation stops and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from .inputs import Slot, Workspace
from .noise import Settled
from .probes import Evaluator, Probe, coordinate, random_direction
from .numerics import norm2
from .tolerances import TOLERANCES

#: Measure a probe at a step: once (``careful=False``), or settled by re-measuring when suspicious.
Runner = Callable[[Workspace, Probe, float, bool], Optional[Settled]]


@dataclass(frozen=True)
class Located:
    """Where a wrong tensor's error is: an entry (flat index, analytic, numeric); ``spread`` when no single
    entry carries it (the entry then carries a share of it)."""

    worst: Optional[Tuple[int, float, float]]
    spread: bool
    localised: bool


def _carried(run: Runner, ws: Workspace, slot: Slot, lo: int, hi: int, step: float, rng: np.random.Generator,
             careful: bool = False) -> Optional[float]:
    """The size of the error carried by entries ``[lo, hi)``: the gap of one probe over them. The
    direction moves the parameters by ``step`` in all (``step / √entries`` per entry): an error far
    above the threshold shows at any step, and a small one crosses few kinks."""
    probe = Probe.of([(random_direction(slot, lo, hi, rng), 1.0)])
    s = run(ws, probe, step / math.sqrt(hi - lo), careful)
    return None if s is None else s.gap


def localise(run: Runner, ev: Evaluator, ws: Workspace, slot: Slot, first: Sequence[Settled], step: float,
             rng: np.random.Generator, threshold: float = 0.0) -> Located:
    """Bisect ``slot``'s entries to the one carrying its error, or find the error spread. ``step`` is a
    coordinate's step: each range's direction moves the parameters by that much in all. A bisection
    that a kink misled (the entry it reached shows no error once measured with care) is tried once
    more with fresh directions, budget permitting. An entry carries an error when its own formula (2)
    reaches ``threshold`` beyond its noise."""
    if slot.size == 1:
        s = first[0]
        return Located((0, s.analytic, s.estimate), False, True)
    est = norm2([p.gap for p in first]) / math.sqrt(len(first))
    located = Located(None, False, False)
    for _ in range(2):
        if not ev.affords(2 * math.ceil(math.log2(slot.size)) + 2):
            break
        located, misled = _bisect(run, ws, slot, est, step, rng, threshold)
        if not misled:
            break
    return located


def _bisect(run: Runner, ws: Workspace, slot: Slot, est: float, step: float,
            rng: np.random.Generator, threshold: float) -> Tuple[Located, bool]:
    """One bisection: where it ended, and whether a kink misled it."""
    lo, hi, both, spread, carried = 0, slot.size, 0, False, est
    while hi - lo > 1:
        mid = (lo + hi) // 2
        est_a = _carried(run, ws, slot, lo, mid, step, rng)
        if est_a is None:
            return Located(None, spread, False), False
        if est > 0 and est_a >= math.sqrt(TOLERANCES.clear_share) * est:
            hi, est, both = mid, est_a, 0
            continue
        est_b = _carried(run, ws, slot, mid, hi, step, rng)
        if est_b is None:
            return Located(None, spread, False), False
        if not spread and est > 0 and max(est_a, est_b) < math.sqrt(0.5) * est:
            # neither half carries what its parent showed: a kink upset a probe; measure both carefully
            est_a = _carried(run, ws, slot, lo, mid, step, rng, careful=True)
            est_b = _carried(run, ws, slot, mid, hi, step, rng, careful=True)
            if est_a is None or est_b is None:
                return Located(None, spread, False), False
        total = math.hypot(est_a, est_b)
        both = both + 1 if total > 0 and min(est_a, est_b) >= math.sqrt(TOLERANCES.spread_share) * total else 0
        spread = spread or both >= TOLERANCES.spread_levels
        if est_a >= est_b:
            hi, est = mid, est_a
        else:
            lo, est = mid, est_b
    entry = run(ws, Probe.of([(coordinate(slot, lo), 1.0)]), step, True)
    if entry is None:
        return Located(None, spread, False), False
    if entry.unexplained <= threshold * (abs(entry.analytic) + abs(entry.estimate)) and entry.bound <= carried:
        # the entry shows no error once measured with care: a kink misled the bisection (also one that read
        # a concentrated error as spread); an entry that carries none is never shown as carrying a share
        return Located(None, spread, False), True
    return Located((lo, entry.analytic, entry.estimate), spread, True), False
