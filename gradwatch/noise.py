"""The noise model and the verdict: what a measurement can tell, and the one function that decides.

Each probe ends as a :class:`Settled`: the analytic and numeric numbers, an upper bound on the
error the probe could hide (its gap plus every noise it may carry), and the part of its gap that no
noise explains. A tensor is then

* **right** when an upper bound on its relative difference is below the threshold: for random
  directions, a bound that holds except with probability ``false_pass_rate`` whatever the layout
  of the error (chi-square lower tail of the projections); for coordinates, the plain bound;
* **wrong** when the part of its gaps that noise cannot explain reaches the threshold: for random
  directions, scaled by the chi-square upper tail, so that a few projections overstating an error
  below the threshold make it wrong with probability at most ``false_alarm_rate``;
* **inconclusive** otherwise, with the reason and what to do.

Noise never makes a tensor right: it only widens the bound.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .numerics import norm2, relative_difference
from .probes import Evaluator, Measurement
from .tolerances import TOLERANCES

_EPS64 = float(np.finfo(np.float64).eps)


@dataclass(frozen=True)
class Settled:
    """What one probe tells after (possibly) re-measuring at smaller steps."""

    analytic: float
    numeric: float  # the first estimate (formula (2) is reported at the step chosen)
    gap: float  # |analytic − the last estimate|
    bound: float  # gap + noise: the largest error the probe could hide
    unexplained: float  # |gap| − noise, at least 0: the error it shows for certain
    settled: bool  # two estimates agreed, or the first was clean, or a kink at the point explains it
    cause: str = ""  # "kink" (accepted), "corner" (a kink at the point: unsettled), "step", "one-sided"
    last: float = math.nan  # the last estimate (the one the bounds are about)

    @property
    def estimate(self) -> float:
        """The estimate the bounds are about (the last one; the first when only one is known)."""
        return self.numeric if math.isnan(self.last) else self.last


def suspicious_level(analytic: Any, numeric: Any, threshold: float, reference: float) -> Any:
    """The share of a threshold-sized gap of the tensor above which a probe's gap is suspicious
    (``reference``: the size of its gradient as this probe sees it); floats, or arrays of them."""
    return TOLERANCES.suspicious_share * threshold * np.maximum(np.abs(analytic) + np.abs(numeric), 2 * reference)


def gap_is_small(analytic: float, m: Measurement, roundoff: float, threshold: float, reference: float) -> bool:
    """Whether a first measurement needs no re-measuring: its gap plus round-off is below
    :func:`suspicious_level`."""
    return bool(abs(analytic - m.numeric) + roundoff <= suspicious_level(analytic, m.numeric, threshold, reference))


def settles_alone(analytic: float, m: Measurement, roundoff: float, threshold: float, reference: float) -> bool:
    """Whether a single measurement whose truncation is bounded needs no other step: its gap is small
    (:func:`gap_is_small`), or within its round-off (smaller steps would only add more)."""
    return gap_is_small(analytic, m, roundoff, threshold, reference) or abs(analytic - m.numeric) <= roundoff


def agree(a: Measurement, b: Measurement, ev: Evaluator, analytic: float, threshold: float, reference: float) -> bool:
    """Two estimates at successive steps agree: within their round-off and a share of the threshold."""
    slack = ev.roundoff(a.step, a.loss_size) + ev.roundoff(b.step, b.loss_size)
    share = TOLERANCES.agreement_share * threshold * max(abs(analytic) + abs(b.numeric), 2 * reference)
    return bool(abs(a.numeric - b.numeric) <= slack + share)


def _corner_at_point(trail: Sequence[Measurement], ev: Evaluator, j0: float) -> Optional[Tuple[float, float, float]]:
    """A kink exactly at the point: ``(lower slope, upper slope, slack)`` there, or ``None``.

    A one-sided slope at step h is the side's derivative plus h/2 × the curvature (and h²/6 × the third
    derivative); each side's slope at the last two steps, extrapolated linearly to h = 0, gives its
    derivative. A kink at the point leaves the two derivatives apart (by more than 8 round-offs) and
    moves the two slopes by opposite amounts (curvature; within a quarter of the jump): a kink beside the
    point moves one side only, by an amount that grows as the step shrinks towards it. The slack is the
    extrapolated slopes' round-off and what the third derivative leaves of the two sides' moves."""
    if len(trail) < 2:
        return None
    first, last = trail[-2], trail[-1]
    noise = ev.roundoff_of(last, j0)

    def slopes(m: Measurement) -> Tuple[float, float]:
        return (m.j_plus - j0) / m.step, (j0 - m.j_minus) / m.step

    f1, b1 = slopes(first)
    f2, b2 = slopes(last)
    r = last.step / (first.step - last.step)
    forward, backward = f2 + (f2 - f1) * r, b2 + (b2 - b1) * r
    jump = abs(forward - backward)
    uneven = abs((f2 - f1) + (b2 - b1))  # curvature moves the sides oppositely: what is left is not curvature
    # the jump stands out of the round-off, and either dominates the slopes' difference at the last step or,
    # where curvature dominates it, stands out of 64 round-offs (a loss built of terms larger than itself
    # rounds off more than its bound on |J| says, and the extrapolation carries that)
    clear = jump > 8 * noise and (jump >= 0.5 * abs(f2 - b2) or jump > 64 * noise)
    if not (clear and uneven <= 0.25 * jump + 4 * noise):
        return None
    return min(forward, backward), max(forward, backward), 2 * (1 + 2 * r) * noise + uneven * r


def _kink_explains(analytic: float, trail: Sequence[Measurement], ev: Evaluator, j0: float, coordinate: bool) -> str:
    """``"kink"`` when a single entry sits on a kink at the point and its gradient is one of the one-sided
    slopes (a valid one-sided derivative: accepted); ``"corner"`` when a kink sits at the point otherwise
    (a direction over many entries: the kink may hide an error elsewhere, so nothing is proved either
    way); ``""`` when there is no kink at the point."""
    corner = _corner_at_point(trail, ev, j0)
    if corner is None:
        return ""
    lower, upper, slack = corner
    one_sided_slope = min(abs(analytic - lower), abs(analytic - upper)) <= slack
    return "kink" if coordinate and one_sided_slope else "corner"


#: Where the extra loss of :func:`truncation_terms` is taken, in steps.
FAR = 3.0
# the divided difference of the losses at −h, 0, h and FAR·h, in units of 1/h³: its weights
_W_MINUS = -1 / (2 * (1 + FAR))
_W_ZERO = 1 / FAR
_W_PLUS = -1 / (2 * (FAR - 1))
_W_FAR = 1 / (FAR * (FAR * FAR - 1))
_W_SUM = abs(_W_MINUS) + abs(_W_ZERO) + abs(_W_PLUS) + abs(_W_FAR)


def truncation_terms(step: float, j_plus: Any, j_minus: Any, far: Any, j0: float, ev: Evaluator) -> Tuple[Any, Any]:
    """The truncation of the central difference ``(j_plus − j_minus) / 2h`` at ``step`` h, from one more
    loss, ``far``, at ``FAR × h`` (floats, or arrays of them: one per coordinate): ``(estimate, its
    round-off)``; ``nan`` when a loss is not finite.

    The cubic through the losses at −h, 0, h and 3h has third derivative 6·D, D their divided
    difference; h² × |D| estimates h²/6 × the loss's third derivative along the probe, the central
    difference's leading truncation term. Its round-off: the losses' weights sum to 3/4, three quarters
    of a central difference's. Without it a single step cannot tell agreement from a truncation that
    cancels an error (``exp(k·θ)`` truncates by (kh)²/6 of the gradient itself). The far point is 3h
    rather than 2h for half the round-off; a kink within 3h on one side is avoided by the other's."""
    with np.errstate(invalid="ignore", over="ignore"):
        estimate = np.abs(_W_FAR * far + _W_PLUS * j_plus + _W_ZERO * j0 + _W_MINUS * j_minus) / step
        size = np.maximum(np.maximum(np.abs(j_plus), np.abs(j_minus)), np.maximum(np.abs(far), abs(j0)))
        return estimate, _W_SUM * ev.roundoff(step, size)


def truncation_suspicious(estimate: Any, noise: Any, analytic: Any, numeric: Any, threshold: float,
                          reference: float) -> Any:
    """Whether a truncation's estimate (:func:`truncation_terms`), beyond its round-off, is large enough to
    call for another side or step: twice the excess above :func:`suspicious_level`; ``nan`` counts as
    suspicious. Floats, or arrays of them."""
    with np.errstate(invalid="ignore"):
        return ~(2 * np.maximum(estimate - noise, 0.0) <= suspicious_level(analytic, numeric, threshold, reference))


def truncation_bound(estimate: Any, noise: Any) -> Any:
    """An upper bound on a truncation from :func:`truncation_terms`: twice the estimate (for the terms
    after the leading one, as Richardson's estimate is doubled in :func:`settle`) plus its round-off.
    A leading term ``τ`` measured as low as ``τ − noise`` is still covered: ``2(τ − noise) + noise ≥ τ``
    whenever ``τ ≥ noise``, and ``noise > τ`` otherwise."""
    return 2 * estimate + noise


def settle(analytic: float, trail: Sequence[Measurement], ev: Evaluator, j0: float, threshold: float,
           reference: float, coordinate: bool = False, truncation: Optional[float] = None) -> Settled:
    """Turn a probe's measurements (first step first) into bounds. ``j0`` is the loss at the unperturbed
    point as ``loss_fn`` sees this probe's tensors (for one-sided slopes); ``coordinate`` for a probe
    along one entry. A single measurement needs ``truncation`` to settle (:func:`truncation_bound`, or 0
    where the caller has shown that no truncation can mimic an error): without it, its truncation is
    unknown and it proves nothing; with it, it settles when its gap and round-off are small, or its gap
    within its round-off (the caller judged the truncation's estimate), its bound widened by it."""
    first, last = trail[0], trail[-1]
    roundoff = ev.roundoff_of(last, j0)
    gap = abs(analytic - last.numeric)
    if not (math.isfinite(gap) and math.isfinite(roundoff)):
        if not (math.isfinite(last.numeric) and math.isfinite(roundoff)):
            # the loss is not finite within the step (a domain's edge, an overflow): no evidence either way
            return Settled(analytic, first.numeric, gap, math.inf, 0.0, False, "", last.numeric)
        return Settled(analytic, first.numeric, gap, math.inf, math.inf, True, "", last.numeric)
    if len(trail) == 1:
        known = truncation if truncation is not None and math.isfinite(truncation) else None
        clean = known is not None and settles_alone(analytic, last, roundoff, threshold, reference)
        return Settled(analytic, first.numeric, gap, gap + roundoff + (known or 0.0), 0.0, clean, "", last.numeric)
    previous = trail[-2]
    moved = abs(last.numeric - previous.numeric)
    if last.flat and not first.flat and abs(previous.numeric) > ev.roundoff_of(previous, j0):
        # the step shrank below what the loss resolves (it rounds, or cancels large terms): an estimate of 0
        # there is no measurement, and two of them agreeing prove nothing (unless the step before was itself
        # 0 within its round-off: then the two agree, and the derivative is that small)
        return Settled(analytic, first.numeric, gap, gap + roundoff + moved, 0.0, False, "", last.numeric)
    agreed = agree(previous, last, ev, analytic, threshold, reference)
    # what the last estimate may still carry of truncation: Richardson's estimate, doubled
    noise = roundoff + 2 * moved / (TOLERANCES.refine_ratio ** 2 - 1) if agreed else roundoff + moved
    kink = _kink_explains(analytic, trail, ev, j0, coordinate) if gap > noise or not agreed else ""
    if kink == "kink":
        return Settled(analytic, first.numeric, gap, 2 * roundoff, 0.0, True, "kink", last.numeric)
    if kink == "corner" or not agreed:
        return Settled(analytic, first.numeric, gap, gap + noise, 0.0, False, kink, last.numeric)
    moved_before = len(trail) > 2 and abs(first.numeric - last.numeric) > noise
    return Settled(analytic, first.numeric, gap, gap + noise, max(gap - noise, 0.0), True,
                   "step" if moved_before else "", last.numeric)


def one_sided(analytic: float, first: Measurement, quarter: Measurement, double: Measurement, ev: Evaluator,
              j0: float, threshold: float, reference: float) -> Optional[Settled]:
    """A kink crossed on one side of the point only: the other side's one-sided estimates never cross it.

    On each side, two second-order one-sided estimates: ``F`` through the points 0, h, 2h and ``G``
    through 0, h/4, h (``first``, ``quarter`` and ``double`` hold the losses at ±h, ±h/4 and ±2h). A side
    is clean when they agree within their round-off and a share of the threshold; ``None`` unless
    exactly one side is. The bound is the gap, the round-off and ``F``'s truncation (8/7 of their
    difference, doubled). It settles agreement but never shows an error: a bend narrower than the
    smallest step (``softplus(1e9·θ)`` at a step of 1e-6) passes for a kink beside the point, and the
    slope beyond it for the derivative, whatever the gradient; so does a kink at the point behind
    another within the step. Power does not need it (the benchmarks of power are unchanged without it)."""
    h, s = first.step, quarter.step
    size = max(first.loss_size, quarter.loss_size, double.loss_size, abs(j0))
    r = ev.roundoff(h, size)  # a central difference's bound at h; one loss is off by at most r·h/2
    noise_f, noise_g = 2 * r, (32 / 12) * r * h / (2 * s)
    share = TOLERANCES.agreement_share * threshold * 2 * reference
    found = []
    for sign, jh, js, j2h in ((1, first.j_plus, quarter.j_plus, double.j_plus),
                              (-1, first.j_minus, quarter.j_minus, double.j_minus)):
        f = sign * (-3 * j0 + 4 * jh - j2h) / (2 * h)
        g = sign * (16 * js - jh - 15 * j0) / (12 * s)
        if abs(f - g) <= noise_f + noise_g + share:
            found.append((f, abs(f - g)))
    if len(found) != 1 or not math.isfinite(found[0][0]):
        return None
    estimate, moved = found[0]
    gap = abs(analytic - estimate)
    # F's truncation is h²/3 × the third derivative, G's h²/24: F − G is 7/8 of F's; doubled, as in settle
    noise = noise_f + 2 * (8 / 7) * moved
    return Settled(analytic, first.numeric, gap, gap + noise, 0.0, True, "one-sided", estimate)


# --------------------------------------------------------------------------------------------
# The verdict


def reference_norm(norm: float, entries: int, model_rms: float, grad_precision: float) -> float:
    """The size a tensor's errors are measured against: its gradient's norm, except for a gradient that
    is zero up to round-off (per entry below ``zero_roundoff`` × its precision × the model's RMS
    gradient entry). An exactly-zero true gradient computes as round-off, formula (2) is then near 1
    whatever is measured, so such a tensor is measured against ``zero_gradient_floor`` × the model's
    RMS entry instead. Any gradient above round-off keeps its own size: small is not zero."""
    if entries == 0:
        return norm
    if norm / math.sqrt(entries) <= TOLERANCES.zero_roundoff * grad_precision * model_rms:
        return max(norm, TOLERANCES.zero_gradient_floor * model_rms * math.sqrt(entries))
    return norm


def numeric_is_zero(probes: "ProbeSet") -> bool:
    """Whether the measured derivatives are zero within the noise they carry: what lets a gradient that
    is zero up to round-off be judged against the floor of :func:`reference_norm`."""
    return bool(norm2(probes.numeric) <= norm2(probes.bound - probes.gap))


def chi2_lower_quantile(k: int, alpha: float) -> float:
    """A lower bound on the ``alpha`` quantile of chi-square with ``k`` degrees of freedom
    (from P(χ²_k < x) ≤ (x/2)^(k/2) / Γ(k/2 + 1)), so that bounds built on it are conservative."""
    return 2.0 * float((alpha * math.gamma(k / 2 + 1)) ** (2.0 / k))


@functools.lru_cache(maxsize=64)
def chi2_upper_quantile(k: int, alpha: float) -> float:
    """The ``1 − alpha`` quantile of chi-square with ``k`` degrees of freedom: exceeded with probability
    ``alpha`` (bisection on the survival function, from the series of the lower incomplete gamma)."""

    def survival(x: float) -> float:
        a, z = k / 2, x / 2
        term = total = 1.0
        n = 0
        while term > 1e-17 * total and n < 10_000:
            n += 1
            term *= z / (a + n)
            total += term
        return 1.0 - math.exp(-z + a * math.log(z) - math.lgamma(a + 1)) * total if z > 0 else 1.0

    lo, hi = 0.0, float(k)
    while survival(hi) > alpha:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if survival(mid) > alpha else (lo, mid)
    return hi


@dataclass(frozen=True)
class Judgement:
    verdict: str  # "right", "wrong" or "inconclusive"
    difference: float  # formula (2) over what was checked
    upper: float  # an upper bound on the tensor's relative difference
    lower: float  # the relative difference that no noise explains
    reason: str = ""  # for inconclusive: why, and what to do


def relative_upper(bound_norm: float, reference: float) -> float:
    """``‖e‖ / (‖g‖ + ‖γ‖)`` at most, for ‖e‖ ≤ ``bound_norm`` and ‖g‖ = ``reference`` (‖γ‖ ≥ ‖g‖ − ‖e‖)."""
    if bound_norm == 0.0:
        return 0.0
    room = 2 * reference - bound_norm
    return bound_norm / room if room > 0 else math.inf


def direction_upper(bounds: Sequence[float], reference: float) -> float:
    """Upper bound on a tensor's relative difference from ``k`` random-direction probes (unit mean-square
    entries), failing with probability at most ``false_pass_rate`` whatever the layout of the error."""
    k = len(bounds)
    if k == 0:
        return math.inf
    return relative_upper(norm2(bounds) / math.sqrt(chi2_lower_quantile(k, TOLERANCES.false_pass_rate)), reference)


@dataclass(frozen=True)
class ProbeSet:
    """A tensor's settled probes as arrays (coordinates can be millions of them)."""

    analytic: np.ndarray
    numeric: np.ndarray  # first estimates
    gap: np.ndarray  # |analytic − last estimate|
    bound: np.ndarray
    unexplained: np.ndarray
    settled: bool  # every probe settled

    @classmethod
    def of(cls, probes: Sequence[Settled]) -> "ProbeSet":
        """The probes as arrays; formula (2) over their last estimates (the ones their bounds are about)."""

        def col(attr: str) -> np.ndarray:
            return np.array([getattr(p, attr) for p in probes], dtype=np.float64)

        return cls(col("analytic"), col("last"), col("gap"), col("bound"), col("unexplained"),
                   all(p.settled for p in probes))

    def subset(self, mask: np.ndarray) -> "ProbeSet":
        """The probes where ``mask`` holds."""
        return ProbeSet(self.analytic[mask], self.numeric[mask], self.gap[mask], self.bound[mask],
                        self.unexplained[mask], self.settled)

    @property
    def noise(self) -> np.ndarray:
        """What each bound adds to its gap: the noise each probe may carry."""
        noise: np.ndarray = self.bound - self.gap
        return noise


def judge(probes: ProbeSet, threshold: float, reference: float, statistical: bool, grad_finite: bool = True) -> Judgement:
    """The verdict of one tensor from its settled probes. ``reference`` is the size of the tensor's gradient
    as the probes see it (‖g‖ for unit directions; the checked entries' norm for coordinates), floored
    for near-zero gradients; ``statistical`` for random directions."""
    a, n = probes.analytic, probes.numeric
    if grad_finite and not bool(np.all(np.isfinite(n))):
        # the loss was not finite within a step somewhere: those probes show nothing; the others may show an error
        finite = np.isfinite(n)
        rest = judge(probes.subset(finite), threshold, reference, statistical) if finite.any() else None
        wrong = rest is not None and rest.verdict == "wrong"
        return Judgement("wrong" if wrong else "inconclusive", math.nan, math.inf, rest.lower if rest else 0.0)
    difference = _formula2(a, n)
    if not grad_finite or not math.isfinite(difference):
        return Judgement("wrong", difference if grad_finite else math.nan, math.inf, math.inf)
    if a.size == 0:
        return Judgement("right", 0.0, 0.0, 0.0)
    bound_norm = norm2(probes.bound)
    if statistical:
        upper = direction_upper(probes.bound.tolist(), reference)
    else:
        upper = relative_upper(bound_norm, reference)
    lower = direction_lower(probes.unexplained.tolist(), reference) if statistical else _coordinate_lower(probes)
    if lower >= threshold:
        return Judgement("wrong", difference, upper, lower)
    if upper < threshold and probes.settled:
        return Judgement("right", difference, upper, lower)
    return Judgement("inconclusive", difference, upper, lower)


def _coordinate_lower(probes: ProbeSet) -> float:
    """Formula (2) at least, from the coordinates' unexplained gaps (‖γ‖ at most ‖n‖ plus the noise)."""
    unexplained = norm2(probes.unexplained)
    denominator = norm2(probes.analytic) + norm2(probes.numeric) + norm2(probes.noise)
    return unexplained / denominator if denominator > 0 else (math.inf if unexplained > 0 else 0.0)


def direction_lower(unexplained: Sequence[float], reference: float) -> float:
    """Formula (2) at least, from ``k`` random-direction probes' unexplained gaps: the error's norm is at least
    their RMS scaled by the chi-square upper tail (a few projections can overstate it), except with
    probability ``false_alarm_rate``; then ``‖e‖ / (2‖g‖ + ‖e‖)``, ``‖g‖ = reference``."""
    k = len(unexplained)
    size = norm2(unexplained)
    if k == 0 or size == 0.0:
        return 0.0
    norm = size / math.sqrt(chi2_upper_quantile(k, TOLERANCES.false_alarm_rate))
    return norm / (2 * reference + norm) if math.isfinite(norm) else math.inf


def _formula2(a: np.ndarray, n: np.ndarray) -> float:
    return relative_difference(a, n) if a.size else 0.0


def why_unsure(probes: ProbeSet, ev: Evaluator, epsilon: Optional[float], j0: float,
               reference: float, threshold: float, statistical: bool, narrowed: bool = False,
               step_roundoff: float = 0.0, truncated_at: float = 0.0) -> str:
    """The reason a tensor is inconclusive, and what to do about it, from what limited the bound
    (``narrowed``: kinks within the first step made the probes shrink it; ``step_roundoff``: the loss's
    round-off at the probes' last step, relative to twice the tensor's gradient, as a verdict sees it;
    ``truncated_at``: the coordinates' step, when truncation more than round-off widened their bounds)."""
    if not bool(np.all(np.isfinite(probes.numeric))):
        return ("the loss is not finite (nan or inf) within a step of the point: the parameters sit at the edge of "
                "the loss's domain (log, sqrt, a division) or it overflows there: check at another point, or pass "
                "a smaller epsilon")
    noise = probes.noise
    upper_noise = direction_upper(noise.tolist(), reference) if statistical else relative_upper(
        norm2(noise), reference)
    noisy = upper_noise >= 0.5 * threshold
    if noisy and ev.whole:
        return "the loss comes back as an integer, so it changes in whole units only: return it as a float"
    if noisy and ev.resolution > 0:
        return (f"the loss's values sit on a grid of {ev.resolution:.1e}, far coarser than their size needs: it "
                "cancels large terms (like (1e8 + x) - c) or is rounded: compute it without the large constant "
                "terms, and unrounded")
    if noisy and ev.computes_in > 2 * _EPS64:
        return ("the loss computes in float32 (moving its float32 tensors by less than float32's spacing does not "
                "change it), so its round-off swamps the changes a step makes: compute the forward pass in float64 "
                "(the arrays it is handed are float64 copies: do not cast them back), or pass a larger threshold")
    if noisy and ev.precision > 2 * _EPS64:
        return ("the loss comes back in low precision (float32 or less), so its round-off swamps the changes a "
                "step makes: return the loss in float64 (e.g. float(np.sum(..., dtype=np.float64)))")
    if noisy and ev.jitter > TOLERANCES.roundoff * _EPS64 * abs(j0):
        return (f"the loss varies by {ev.jitter:.1e} between calls at the same point, more than round-off: "
                "make the loss deterministic (fixed summation order, no randomness)")
    if noisy and truncated_at > 0:
        return (f"the loss bends so sharply (a large third derivative: exp, sin or a sharp softplus of a large multiple "
                f"of the parameter) that the truncation of a central difference at the step h = {truncated_at:.2g} "
                "could hide an error of the threshold's size: pass a smaller epsilon (truncation falls with h², "
                "round-off grows with 1/h), or check at another point")
    if epsilon is not None and epsilon > 100 * float(np.cbrt(ev.precision)) and (noisy or not probes.settled):
        return (f"epsilon={epsilon:g} is so large that the loss's bending over a step (truncation) swamps the "
                "differences: leave epsilon=None (gradwatch chooses the step) or pass a smaller one")
    if noisy and epsilon is not None:
        return (f"epsilon={epsilon:g} is so small that round-off swamps the differences: leave epsilon=None "
                "(gradwatch chooses the step) or pass a larger one")
    # round-off alone at the step makes every direction useless (replaced, then unsettled): not a kink
    swamped = statistical and not narrowed and step_roundoff > TOLERANCES.useful_noise_share * threshold
    if not probes.settled and not swamped:
        return ("the estimate moves at every step tried, as a kink (ReLU, max or abs switching) near the point or a "
                "loss that bends too sharply for these steps makes it, and no one-sided slope matches the gradient: "
                "check at another point (another seed or batch), or with smooth activations")
    if noisy and narrowed:
        return (f"kinks (ReLU, max or abs switching) lie so close to the point that the step had to shrink until the "
                f"loss's round-off (|J| = {abs(j0):.3g}) hides errors of the threshold's size (the noise alone bounds "
                f"the difference at {upper_noise:.1e}): check on a smaller batch (fewer units near a kink) or with "
                "smooth activations, or pass a threshold above that bound")
    if noisy or swamped:
        return (f"the loss's round-off (|J| = {abs(j0):.3g}) swamps the changes a step can make along a gradient "
                f"of |g| = {reference:.2e}: subtract the loss's constant part, or check fewer entries at "
                "a time (a loss summed over many entries is large against its gradient), or pass a larger threshold")
    return ("the gap is within the noise: neither clearly right nor wrong at the evaluations spent; "
            "check again with sample=\"all\" or a larger budget")
