"""Measuring: the loss evaluator (counting, budget, the loss's precision and randomness), random
directions, the one place the step is chosen, and central differences along a probe.

A *probe* compares an analytic number (the user's gradient along a direction) with a numeric one
(a central difference of the loss along the same direction). Its direction is generated once, as
random bytes, and reused for the analytic side and both perturbations.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Set, Tuple

import numpy as np

from .errors import DropoutActiveError
from .inputs import Slot, Workspace, as_loss, chunks
from .tolerances import TOLERANCES, precision_of

Progress = Callable[[int, int], None]

#: Directions over up to this many entries are standard normal: the projection of any error on them
#: is normal whatever its layout, with no atom at zero (a ±1 direction cancels a constant offset).
GAUSSIAN_MAX_ENTRIES = 1 << 16
#: Over more entries, a direction is one random byte per entry with its lowest bit set: the odd
#: integers -127 … 127 (uniform, never zero) times this, so that each entry has unit mean square. Cheap
#: to draw and to keep, written straight into a float64 range, and over so many entries its projections
#: are normal to within a hair.
DIRECTION_SCALE = 1.0 / math.sqrt(127 * 129 / 3)
_EPS64 = float(np.finfo(np.float64).eps)
#: Set on an exception that ``loss_fn`` itself raised (as against one the check ran into).
RAISED_BY_LOSS_FN = "_gradwatch_raised_by_loss_fn"
_F32_MAX = float(np.finfo(np.float32).max)
_F16_MAX = float(np.finfo(np.float16).max)


# --------------------------------------------------------------------------------------------
# The evaluator


def dyadic_grain(value: float) -> float:
    """The largest power of two that divides ``value`` exactly (a nonzero finite float)."""
    mantissa, exponent = math.frexp(value)
    whole = int(mantissa * (1 << 53))
    return math.ldexp(1.0, exponent - 53 + (whole & -whole).bit_length() - 1)


class Grid:
    """The coarsest power-of-two grid the loss's values sit on, when it is far coarser than their
    precision: a loss that cancels large terms (``(1e8 + s) − c`` lands on multiples of 1e8's ulp) is only
    that precise, however small its values. The first ``grid_values`` distinct values are weighed: a value
    computed to its precision sits on a grid 16× coarser than its ulp by a chance of 1/16, so four such make
    evidence, and a single one can (``(1e12 + f) − 1e12`` sits on a grid 2^39 × coarser than its ulp). (Grids
    of powers of ten, ``round(J, 3)``, are not read: integer data and a decimal ``epsilon`` put exact values
    on them too.)"""

    def __init__(self) -> None:
        self.seen: Set[float] = set()  # the first distinct values, up to grid_values
        self.grain = math.inf  # the largest power of two dividing every value

    def add(self, value: float) -> None:
        """Take a loss value (zeros and non-finite values say nothing of a grid)."""
        if value == 0.0 or not math.isfinite(value):
            return
        self.grain = min(self.grain, dyadic_grain(value))
        if len(self.seen) < TOLERANCES.grid_values:
            self.seen.add(value)

    def resolution(self, precision: float) -> float:
        """The grid's spacing when the values show it: a value computed to ``precision`` sits on a grid r×
        coarser than ``precision`` × its size by a chance of about 1/r, so the kept values must together put
        the odds at 2^-``grid_evidence_bits``. Then twice ``TOLERANCES.roundoff`` units of the grid bound one
        loss's rounding (the grid is the ulp where it was rounded), as ``roundoff`` × precision × |J| does
        otherwise; else 0."""
        bits = sum(math.log2(max(1.0, self.grain / (precision * abs(v)))) for v in self.seen)
        return 2 * TOLERANCES.roundoff * self.grain if bits >= TOLERANCES.grid_evidence_bits else 0.0


class Evaluator:
    """Calls ``loss_fn``: counts, stops at the budget, reads the loss's precision, watches for randomness."""

    def __init__(self, loss_fn: Callable[[Any], Any], progress: Optional[Progress], planned: int, limit: Optional[int]):
        self.loss_fn = loss_fn
        self.progress = progress
        self.planned = planned
        self.limit = limit
        self.count = 0
        self.jitter = 0.0
        self.loss_dtype: Optional[np.dtype] = None
        self._f32 = True  # every value so far exactly representable in float32
        self._f16 = True
        self._distinct: Set[float] = set()  # up to three distinct values: the representability test needs them
        self.base_losses: List[float] = []
        self.resolution = 0.0  # an absolute floor on the loss's noise: 1 for an integer loss, or its grid's spacing
        self.whole = False  # the loss came back as an integer
        self.computes_in = 0.0  # the precision the loss computes in, when shown narrower than what it returns
        self.grid: Optional[Grid] = Grid()  # None: not read (dyadic steps put exact values on a grid)
        self._at_point = False  # evaluating the loss at the unperturbed point
        self.repeats = 0  # probes measured twice at the same step

    def affords(self, n: int) -> bool:
        return self.limit is None or self.count + n <= self.limit

    def __call__(self, mapping: Any) -> float:
        try:
            returned = self.loss_fn(mapping)
        except BaseException as exc:
            with contextlib.suppress(AttributeError, TypeError):  # tell the user's own error from the check's
                setattr(exc, RAISED_BY_LOSS_FN, True)
            raise
        value, dtype = as_loss(returned)
        self.count += 1
        if dtype is not None and dtype.kind != "f":
            self.whole = True
            self.resolution = 1.0
        elif dtype is not None and (self.loss_dtype is None or dtype.itemsize < self.loss_dtype.itemsize):
            self.loss_dtype = dtype
        if self._f32 and math.isfinite(value):
            self._f32 = abs(value) <= _F32_MAX and float(np.float32(value)) == value
            self._f16 = self._f16 and self._f32 and abs(value) <= _F16_MAX and float(np.float16(value)) == value
            if len(self._distinct) < 3:
                self._distinct.add(value)
        if self.grid is not None and not self._at_point:  # the loss at the point (an integer, say) proves nothing
            self.grid.add(value)
            if not self.whole:  # against the precision declared, not one read from the values (a grid's fit float32)
                declared = precision_of(self.loss_dtype) if self.loss_dtype is not None else _EPS64
                self.resolution = self.grid.resolution(max(declared, self.computes_in))
        if self.progress is not None:
            self.progress(self.count, max(self.planned, self.count))
        return value

    def optional(self, mapping: Any) -> float:
        """A loss the check can do without (the far point of a truncation bound, a few steps out): one that
        ``loss_fn`` cannot compute there (it raises: a domain limit between h and 3h) is ``nan``, as a loss
        that is not finite there is, and the bound it was for stays unknown. Counted all the same."""
        try:
            return self(mapping)
        except Exception:  # the user's code, at a point gradwatch chose to visit: not the user's failure
            self.count += 1
            if self.progress is not None:
                self.progress(self.count, max(self.planned, self.count))
            return math.nan

    @property
    def precision(self) -> float:
        """The loss's relative precision: float64's, unless it comes back in (or rounded to) a narrower float,
        or computes in one (``computes_in``)."""
        return max(self._returned_precision, self.computes_in)

    @property
    def _returned_precision(self) -> float:
        if self.loss_dtype is not None:
            return precision_of(self.loss_dtype)
        if len(self._distinct) >= 3 and self._f16:
            return precision_of(np.dtype(np.float16))
        if len(self._distinct) >= 3 and self._f32:
            return precision_of(np.dtype(np.float32))
        return _EPS64

    def same_point(self, first: float, second: float, where: str) -> None:
        """Two losses at the same parameters: round-off-sized differences are noise, larger ones randomness."""
        if first == second or (math.isnan(first) and math.isnan(second)):
            return  # the same value, or nan twice: a deterministic loss (a domain's edge is not randomness)
        relative = max(TOLERANCES.randomness_rel * _EPS64, TOLERANCES.roundoff * self.precision)
        tol = relative * max(abs(first), abs(second)) + TOLERANCES.randomness_abs
        difference = abs(first - second)
        if not difference <= tol:
            raise DropoutActiveError(
                f"loss_fn returned {first!r} and then {second!r} for the same parameters ({where}): randomness "
                "(dropout?) is active in the loss, and a gradient check cannot work through it. Switch dropout "
                "off for the check (keep_prob=1, or pass a loss_fn without dropout) and compute grads without it."
            )
        self.jitter = max(self.jitter, difference)

    def base(self, mapping: Any, where: str) -> float:
        """The loss at the unperturbed parameters, compared with every earlier one."""
        self._at_point = True
        try:
            value = self(mapping)
        finally:
            self._at_point = False
        if self.base_losses and math.isfinite(value):
            self.same_point(self.base_losses[0], value, where)
        self.base_losses.append(value)
        return value

    def roundoff(self, step: float, loss_size: Any) -> Any:
        """Bound on the round-off (and jitter) of a central difference at this step, in derivative units
        (``loss_size`` a float or an array of them)."""
        return (TOLERANCES.roundoff * self.precision * loss_size + self.jitter + self.resolution) / step

    def roundoff_of(self, m: "Measurement", j0: float) -> float:
        """:meth:`roundoff` of one measurement, about the larger of its losses and the loss at the point."""
        return float(self.roundoff(m.step, max(m.loss_size, abs(j0))))


# --------------------------------------------------------------------------------------------
# Directions and probes


@dataclass(frozen=True)
class Direction:
    """A direction over entries ``[lo, hi)`` of one tensor: standard normal entries (float64), random odd
    int8 codes (large ranges), or a coordinate (``codes is None``)."""

    slot: Slot
    lo: int
    hi: int
    codes: Optional[np.ndarray] = None

    @property
    def size(self) -> int:
        return self.hi - self.lo

    def values(self, c0: int, c1: int) -> np.ndarray:
        """The direction's entries ``[c0, c1)`` (absolute indices) as float64."""
        if self.codes is None:
            return np.ones(c1 - c0)
        v = self.codes[c0 - self.lo : c1 - self.lo].astype(np.float64)
        if self.codes.dtype == np.int8:
            v *= DIRECTION_SCALE
        return v

    def fill(self, out: np.ndarray, c0: int, c1: int, scale: float) -> None:
        """Write ``scale`` × the direction's entries ``[c0, c1)`` into ``out`` (float64), allocating nothing."""
        if self.codes is None:
            out[...] = scale
        elif self.codes.dtype != np.int8:
            np.multiply(self.codes[c0 - self.lo : c1 - self.lo], scale, out=out)
        else:  # widen, then scale: two plain passes are faster than one multiply that casts as it goes
            np.copyto(out, self.codes[c0 - self.lo : c1 - self.lo])
            out *= DIRECTION_SCALE * scale

    def analytic(self) -> float:
        """The user's gradient along this direction (int8 codes: DS·g·c, without widening the codes more
        than a chunk at a time)."""
        if self.codes is None:
            return float(self.slot.grad[self.lo])
        parts = chunks(self.lo, self.hi)
        if self.codes.dtype != np.int8:
            return math.fsum(float(np.dot(self.slot.grad_chunk(c0, c1), self.codes[c0 - self.lo : c1 - self.lo]))
                             for c0, c1 in parts)
        return DIRECTION_SCALE * math.fsum(
            float(np.dot(self.slot.grad_chunk(c0, c1), self.codes[c0 - self.lo : c1 - self.lo].astype(np.float64)))
            for c0, c1 in parts)


def random_direction(slot: Slot, lo: int, hi: int, rng: np.random.Generator) -> Direction:
    if hi - lo == 1:
        return Direction(slot, lo, hi)
    if hi - lo <= GAUSSIAN_MAX_ENTRIES:
        return Direction(slot, lo, hi, rng.standard_normal(hi - lo))
    # the generator's raw 64-bit words, read as bytes: no intermediate copy (``rng.bytes`` makes one)
    words = rng.bit_generator.random_raw(-(-(hi - lo) // 8))
    codes = np.asarray(words).view(np.int8)[: hi - lo]
    codes |= 1  # odd: never zero, symmetric about it
    return Direction(slot, lo, hi, codes)


def coordinate(slot: Slot, index: int) -> Direction:
    return Direction(slot, index, index + 1)


@dataclass(frozen=True)
class Probe:
    """One compared quantity: directions in one or more tensors, each moved by ``weight × step``."""

    parts: Tuple[Tuple[Direction, float], ...]
    analytic: float

    @classmethod
    def of(cls, parts: Sequence[Tuple[Direction, float]]) -> "Probe":
        return cls(tuple(parts), math.fsum(w * d.analytic() for d, w in parts))

    @property
    def coordinate(self) -> bool:
        """Whether the probe moves one entry only."""
        return len(self.parts) == 1 and self.parts[0][0].codes is None


@dataclass(frozen=True)
class Measurement:
    """A central difference along a probe at one step: the estimate and the two losses."""

    step: float
    numeric: float
    j_plus: float
    j_minus: float

    @property
    def loss_size(self) -> float:
        return max(abs(self.j_plus), abs(self.j_minus))

    @property
    def flat(self) -> bool:
        """The two losses are the same number: the loss did not resolve this step at all."""
        return self.j_plus == self.j_minus


def _displace(ws: Workspace, probe: Probe, step: float) -> None:
    """Set every part of the probe to base + step × weight × direction, in float64: one pass over each
    contiguous range (no temporaries), chunk by chunk through a buffer otherwise."""
    for d, w in probe.parts:
        out = ws.target(d.slot, d.lo, d.hi)
        if out is not None:
            d.fill(out, d.lo, d.hi, step * w)
            out += ws.base_view(d.slot, d.lo, d.hi)
            continue
        for c0, c1 in chunks(d.lo, d.hi):  # a non-contiguous array: through a buffer
            vals = d.values(c0, c1)
            vals *= step * w
            vals += ws.base(d.slot, c0, c1)
            ws.write(d.slot, c0, c1, vals)


def measure_steps(ev: Evaluator, ws: Workspace, probe: Probe, steps: Sequence[float]) -> List[Measurement]:
    """``(J(θ + h·d) − J(θ − h·d)) / 2h`` at each step ``h`` in turn, restoring every tensor bitwise once at
    the end (each displacement is written from the saved base, not from the last one); stops at the budget."""
    out: List[Measurement] = []
    try:
        for step in steps:
            if not ev.affords(2):
                break
            _displace(ws, probe, step)
            j_plus = ev(ws.mapping)
            _displace(ws, probe, -step)
            j_minus = ev(ws.mapping)
            out.append(Measurement(step, (j_plus - j_minus) / (2 * step), j_plus, j_minus))
    finally:
        ws.restore()
    return out


def loss_at(ev: Evaluator, ws: Workspace, probe: Probe, step: float, optional: bool = False) -> Optional[float]:
    """The loss at ``θ + step·d`` alone (every tensor restored bitwise), through :meth:`Evaluator.optional`
    when ``optional``; ``None`` past the budget."""
    if not ev.affords(1):
        return None
    try:
        _displace(ws, probe, step)
        return ev.optional(ws.mapping) if optional else ev(ws.mapping)
    finally:
        ws.restore()


def measure(ev: Evaluator, ws: Workspace, probe: Probe, step: float) -> Optional[Measurement]:
    """One central difference along ``probe`` at ``step``, every tensor restored bitwise; ``None`` past the budget."""
    done = measure_steps(ev, ws, probe, [step])
    return done[0] if done else None


# --------------------------------------------------------------------------------------------
# The step


def choose_step(slot: Slot, entries: int, epsilon: Optional[float], precision: float, loss_noise: float,
                reference: float, threshold: float) -> float:
    """The per-entry step of a probe over ``entries`` entries of ``slot``: the one place a step is chosen.

    With ``epsilon`` given it is used as given (divided by entries^¼ along a direction over many
    entries, as every direction probe is). Otherwise: ∛(loss precision) × max(1, RMS of the tensor),
    which balances truncation (∝ step²) against round-off (∝ 1/step), divided by entries^¼ so that
    a wide direction moves fewer units across a kink; grown (at most ``max_step_growth``×) when the
    loss's noise (``loss_noise``: round-off and jitter of one difference of losses) would otherwise
    swamp a threshold-sized gap of a gradient of size ``reference``.
    """
    shrink = float(entries) ** -0.25
    if epsilon is not None:
        return float(epsilon * shrink)
    step: float = float(np.cbrt(precision)) * slot.scale * shrink
    if reference > 0 and loss_noise > 0:
        needed: float = TOLERANCES.resolution * loss_noise / (threshold * reference)
        step = float(min(max(step, needed), step * TOLERANCES.max_step_growth))
    return step
