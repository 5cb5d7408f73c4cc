"""One gradient check: validate, plan, measure, decide.

* ``sample="all"`` (or an int) measures coordinates, the documents' loop; ``"auto"`` measures random
  directions: first joint *screens* over all tensors at once, each tensor's part weighted so that
  every tensor weighs the same, then per-tensor probes only for the tensors the screens did not
  clear, then bisection of the wrong tensors to their worst entry, within a budget.
* Every measured gap that is not clearly small is measured again at the same step (randomness) and
  at smaller steps until two estimates agree (:mod:`gradwatch.probes`, :mod:`gradwatch.noise`).
* The verdicts come from one function, :func:`gradwatch.noise.judge`.

The numbers the check uses are in :mod:`gradwatch.tolerances`.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

from .inputs import Grads, Params, Sample, Slot, Workspace, build_slots, validate_positive, validate_sample, validate_seed
from .localise import Located, localise
from .noise import Judgement, ProbeSet, Settled, agree, direction_upper, gap_is_small, judge, settle, why_unsure
from .numerics import relative_difference
from .probes import Evaluator, Measurement, Probe, Progress, choose_step, coordinate, measure, random_direction
from .result import CheckResult, ParamCheck
from .tolerances import TOLERANCES, threshold_for

__all__ = ["CheckResult", "ParamCheck", "check_gradients"]

#: Checks of the same arrays must not interleave (each perturbs them in place): one check at a time.
_LOCK = threading.RLock()
#: At most this many suspicious probes per check are measured twice at the same step (randomness).
_REPEATS = 3


@dataclass(frozen=True)
class _Context:
    ev: Evaluator
    params: Params
    j0: float
    epsilon: Optional[float]
    thresholds: Dict[str, float]
    references: Dict[str, float]  # each tensor's ‖g‖, floored for near-zero gradients
    floor_rms: float  # the floor per entry: zero_gradient_floor × the model's RMS gradient entry
    rng: np.random.Generator


@dataclass(frozen=True)
class _Outcome:
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


# --------------------------------------------------------------------------------------------
# Measuring one probe


def _step(ctx: _Context, slot: Slot, entries: int, reference: float) -> float:
    """:func:`gradwatch.probes.choose_step` with what this check knows of the loss's noise."""
    ev = ctx.ev
    return choose_step(slot, entries, ctx.epsilon, ev.precision, ev.roundoff(1.0, abs(ctx.j0)), reference,
                       ctx.thresholds[slot.name])


def _base_loss(ctx: _Context, ws: Workspace) -> float:
    """The loss at the unperturbed point as ``loss_fn`` sees it through this workspace (the float64
    working copies of substituted tensors give another value than the user's arrays)."""
    if ws.mapping is ctx.params:
        return ctx.j0
    if ws.base_loss is None:
        ws.base_loss = ctx.ev(ws.mapping)
    return ws.base_loss


def _refine(ctx: _Context, ws: Workspace, probe: Probe, first: Measurement, threshold: float, reference: float) -> Settled:
    """Re-measure a suspicious probe: once at the same step (randomness), then at smaller steps until
    two estimates agree."""
    ev, a = ctx.ev, probe.analytic
    roundoff = ev.roundoff(first.step, max(first.loss_size, abs(ctx.j0)))
    if gap_is_small(a, first, roundoff, threshold, reference):
        return settle(a, [first], ev, ctx.j0, threshold, reference)
    if ev.repeats < _REPEATS:
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
        if agree(trail[-2], nxt, ev, a, threshold, reference):
            break
    j_base = _base_loss(ctx, ws) if len(trail) > 1 and ev.affords(1) else ctx.j0
    return settle(a, trail, ev, j_base, threshold, reference)


def _runner(ctx: _Context, threshold: float, reference: float) -> Callable[[Workspace, Probe, float, bool], Optional[Settled]]:
    def run(ws: Workspace, probe: Probe, step: float, careful: bool) -> Optional[Settled]:
        first = measure(ctx.ev, ws, probe, step)
        if first is None:
            return None
        if not careful:
            return settle(probe.analytic, [first], ctx.ev, ctx.j0, threshold, reference)
        return _refine(ctx, ws, probe, first, threshold, reference)

    return run


# --------------------------------------------------------------------------------------------
# Coordinates: the documents' loop


def _sweep(ctx: _Context, ws: Workspace, slot: Slot, indices: np.ndarray, step: float) -> Tuple[np.ndarray, np.ndarray]:
    """The losses ``(J+, J−)`` at each coordinate in ``indices`` moved by ±step."""
    ev, mapping = ctx.ev, ws.mapping
    if not slot.in_place:
        flat = ws.work[slot.name]
    elif slot.array.flags.c_contiguous:
        flat = slot.array.reshape(-1)
    else:
        return _sweep_generic(ctx, ws, slot, indices, step)
    plus = np.empty(indices.size)
    minus = np.empty(indices.size)
    full = indices.size == slot.size  # then indices is arange(size): iterate a range, not a list
    for k, i in enumerate(range(slot.size) if full else indices.tolist()):
        saved = flat[i]
        try:
            flat[i] = saved + step
            plus[k] = ev(mapping)
            flat[i] = saved - step
            minus[k] = ev(mapping)
        finally:
            flat[i] = saved
    return plus, minus


def _sweep_generic(ctx: _Context, ws: Workspace, slot: Slot, indices: np.ndarray, step: float) -> Tuple[np.ndarray, np.ndarray]:
    plus = np.empty(indices.size)
    minus = np.empty(indices.size)
    for k, i in enumerate(indices.tolist()):
        m = measure(ctx.ev, ws, Probe.of([(coordinate(slot, i), 1.0)]), step)
        assert m is not None  # coordinate sweeps are planned within the budget
        plus[k], minus[k] = m.j_plus, m.j_minus
    return plus, minus


def _coordinate_stage(ctx: _Context, slot: Slot, indices: np.ndarray, method: str) -> _Outcome:
    """Measure each coordinate in ``indices``; while the verdict is unclear, re-measure the coordinate
    with the largest bound (at most ``recheck_cap`` of them)."""
    threshold = ctx.thresholds[slot.name]
    ev = ctx.ev
    analytic = slot.grad[indices].astype(np.float64)
    reference = max(float(np.linalg.norm(analytic)), ctx.floor_rms * math.sqrt(indices.size))
    rms = reference / math.sqrt(max(1, indices.size))
    step = _step(ctx, slot, 1, rms)
    kinks = 0
    with Workspace(ctx.params, [slot]) as ws:
        plus, minus = _sweep(ctx, ws, slot, indices, step)
        numeric = (plus - minus) / (2 * step)
        gap = np.abs(analytic - numeric)
        bound = gap + ev.roundoff(step, np.maximum(np.maximum(np.abs(plus), np.abs(minus)), abs(ctx.j0)))
        unexplained = np.zeros(indices.size)
        settled = np.ones(indices.size, dtype=bool)
        order = np.argsort(-np.nan_to_num(bound, nan=np.inf), kind="stable")[: TOLERANCES.recheck_cap]
        for k in order.tolist():
            probes = ProbeSet(analytic, numeric, gap, bound, unexplained, bool(np.all(settled)))
            if judge(probes, threshold, reference, False, slot.grad_finite).verdict != "inconclusive":
                break
            if not ev.affords(4):
                break
            probe = Probe(((coordinate(slot, int(indices[k])), 1.0),), float(analytic[k]))
            first = Measurement(step, float(numeric[k]), float(plus[k]), float(minus[k]))
            s = _refine(ctx, ws, probe, first, threshold, reference)
            gap[k], bound[k], unexplained[k], settled[k] = s.gap, s.bound, s.unexplained, s.settled
            kinks += s.cause == "kink"
    probes = ProbeSet(analytic, numeric, gap, bound, unexplained, bool(np.all(settled)))
    return _Outcome(probes, False, method, int(indices.size), reference, step, indices, 0, kinks)


# --------------------------------------------------------------------------------------------
# Random directions: screens over every tensor, then probes per tensor


def _useful(s: Settled, threshold: float, reference: float) -> bool:
    """A settled probe helps the verdict: it shows an error, or its noise is small enough to clear one.
    A probe that sat on a kink down to a step where round-off swamps it is replaced instead."""
    return s.settled and (s.unexplained > 0 or s.bound - s.gap <= TOLERANCES.suspicious_share * threshold * 2 * reference)


def _direction_stage(ctx: _Context, slot: Slot) -> _Outcome:
    """Probe one tensor along random directions, two at a time, until the verdict is clear."""
    threshold, reference = ctx.thresholds[slot.name], ctx.references[slot.name]
    ev = ctx.ev
    step = _step(ctx, slot, slot.size, reference)
    kept: List[Settled] = []
    dropped: List[Settled] = []
    with Workspace(ctx.params, [slot]) as ws:
        while len(kept) + len(dropped) < TOLERANCES.probes_max:
            probe = Probe.of([(random_direction(slot, 0, slot.size, ctx.rng), 1.0)])
            first = measure(ev, ws, probe, step)
            if first is None:
                break
            s = _refine(ctx, ws, probe, first, threshold, reference)
            (kept if _useful(s, threshold, reference) else dropped).append(s)
            if s.cause == "step" or not _useful(s, threshold, reference):
                # a kink within the step: fresh directions at the step where this one came clean
                step = min(step, s.clean_step) if math.isfinite(s.clean_step) else step / TOLERANCES.refine_ratio
            if len(kept) >= TOLERANCES.probes_first and (len(kept) + len(dropped)) % 2 == 0:
                if judge(ProbeSet.of(kept), threshold, reference, True).verdict != "inconclusive":
                    break
    if len(kept) >= TOLERANCES.probes_first:
        probes = ProbeSet.of(kept)
    else:  # too few useful probes: the verdict is inconclusive, and the reason is in every probe measured
        probes = dataclasses.replace(ProbeSet.of(kept + dropped), settled=False)
    kinks = sum(s.cause == "kink" for s in kept)
    return _Outcome(probes, True, "directions", slot.size, reference, step, None, len(dropped), kinks)


@dataclass(frozen=True)
class _Screen:
    """One joint probe over a group of tensors: each tensor moved by its own per-entry step."""

    steps: Dict[str, float]
    analytic: float
    measurement: Measurement


def _screen_steps(ctx: _Context, group: Sequence[Slot]) -> Dict[str, float]:
    """Per-entry steps that make every tensor weigh the same in a screen (within a factor of
    ``screen_weight_range`` of its own step); its own step when epsilon was given."""
    own = {s.name: _step(ctx, s, s.size, ctx.references[s.name]) for s in group}
    if ctx.epsilon is not None:
        return own
    weight = math.exp(sum(math.log(own[s.name] * ctx.references[s.name]) for s in group) / len(group))
    r = TOLERANCES.screen_weight_range
    return {s.name: min(max(weight / ctx.references[s.name], own[s.name] / r), own[s.name] * r) for s in group}


def _cleared(ctx: _Context, group: Sequence[Slot], screens: Sequence[_Screen]) -> Set[str]:
    """The tensors of ``group`` whose relative difference the screens bound below the threshold."""
    if len(screens) < TOLERANCES.screens_first:
        return set()
    bounds = [
        abs(sc.analytic - sc.measurement.numeric) + ctx.ev.roundoff(1.0, max(sc.measurement.loss_size, abs(ctx.j0)))
        for sc in screens
    ]
    out = set()
    for s in group:
        step = screens[0].steps[s.name]
        if direction_upper([b / step for b in bounds], ctx.references[s.name]) < ctx.thresholds[s.name]:
            out.add(s.name)
    return out


def _screen_group(ctx: _Context, group: Sequence[Slot]) -> List[_Screen]:
    """Joint screens over ``group`` until every tensor is cleared, or more screens cannot clear them."""
    steps = _screen_steps(ctx, group)
    screens: List[_Screen] = []
    with Workspace(ctx.params, group) as ws:
        for _ in range(TOLERANCES.screens_max):
            probe = Probe.of([(random_direction(s, 0, s.size, ctx.rng), steps[s.name]) for s in group])
            m = measure(ctx.ev, ws, probe, 1.0)
            if m is None:
                break
            screens.append(_Screen(steps, probe.analytic, m))
            if len(screens) >= TOLERANCES.screens_first and len(_cleared(ctx, group, screens)) == len(group):
                break
            if len(screens) >= TOLERANCES.screens_first and not _more_screens_help(ctx, group, screens):
                break
    return screens


def _more_screens_help(ctx: _Context, group: Sequence[Slot], screens: Sequence[_Screen]) -> bool:
    """Whether the uncleared tensors are within reach of the tightest bound ``screens_max`` screens give."""
    k, k_max = len(screens), TOLERANCES.screens_max
    if k >= k_max:
        return False
    bounds = [abs(sc.analytic - sc.measurement.numeric) for sc in screens]
    cleared = _cleared(ctx, group, screens)
    typical = math.sqrt(math.fsum(b * b for b in bounds) / k)
    for s in group:
        if s.name in cleared:
            continue
        step = screens[0].steps[s.name]
        best = direction_upper([typical / step] * k_max, ctx.references[s.name])
        if best >= ctx.thresholds[s.name]:
            return False
    return True


def _groups(slots: Sequence[Slot]) -> List[List[Slot]]:
    """Slots screened together, so that the working memory of a screen (a saved or float64 copy and a
    byte of direction per entry) stays within twice the largest tensor (or what that tensor alone needs)."""
    need = {s.name: 9 * s.size for s in slots}
    limit = max([2 * s.array.nbytes for s in slots] + list(need.values()) + [1])
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


# --------------------------------------------------------------------------------------------
# Deciding and reporting


def _param_check(slot: Slot, outcome: _Outcome, judgement: Judgement, threshold: float, note: str,
                 located: Optional[Located]) -> ParamCheck:
    p = outcome.probes
    gap = p.gap
    worst: Optional[Tuple[int, float, float]] = None
    if located is not None:
        worst = located.worst
    elif outcome.indices is not None and p.analytic.size:
        k = int(np.lexsort((np.nan_to_num(gap, nan=np.inf), p.unexplained))[-1])
        worst = (int(outcome.indices[k]), float(p.analytic[k]), float(p.numeric[k]))
    if not slot.grad_finite:
        worst = (int(np.argmax(~np.isfinite(slot.grad))), math.nan, math.nan)
    denom = np.abs(p.analytic) + np.abs(p.numeric)
    with np.errstate(divide="ignore", invalid="ignore"):
        errors = np.where(denom > 0, gap / np.where(denom > 0, denom, 1.0), 0.0)
    return ParamCheck(
        name=slot.name, shape=slot.shape, difference=judgement.difference, passed=judgement.verdict == "right",
        checked=outcome.checked,
        worst_index=None if worst is None else tuple(int(i) for i in np.unravel_index(worst[0], slot.shape)),
        threshold=threshold, method=outcome.method, probes=int(p.analytic.size),
        max_abs_error=float(np.max(gap)) if gap.size else 0.0, entry_errors=errors.astype(np.float32),
        worst_analytic=None if worst is None else worst[1], worst_numeric=None if worst is None else worst[2],
        explained_by=("kink",) if outcome.kinks else (), localised=located is None or located.localised, note=note,
        verdict=judgement.verdict, bound=judgement.upper, step=outcome.step, spread=located is not None and located.spread,
    )


def _note(judgement: Judgement, outcome: _Outcome, reason: str, located: Optional[Located]) -> str:
    parts = []
    if judgement.verdict == "inconclusive":
        parts.append(reason)
    if outcome.kinks:
        parts.append(f"{outcome.kinks} measurement(s) sit on a kink at the point (ReLU at 0): the gradient lies "
                     "between the one-sided slopes, as a valid one-sided derivative does")
    if outcome.dropped:
        parts.append(f"{outcome.dropped} direction(s) sat on a kink down to steps where round-off swamps them "
                     "and were replaced by fresh ones")
    if located is not None and located.spread:
        parts.append("the error is spread over the tensor (no single entry carries it: a scale, a missing term, "
                     "a wrong axis, an off-by-one); the entry shown is one that carries a share of it")
    if located is not None and not located.localised:
        parts.append("not localised: the evaluation budget was spent")
    return "; ".join(parts)


def _screened(slot: Slot, ctx: _Context, screens: Sequence[_Screen]) -> ParamCheck:
    threshold = ctx.thresholds[slot.name]
    step = screens[0].steps[slot.name]
    bounds = [abs(sc.analytic - sc.measurement.numeric) + ctx.ev.roundoff(1.0, max(sc.measurement.loss_size, abs(ctx.j0)))
              for sc in screens]
    upper = direction_upper([b / step for b in bounds], ctx.references[slot.name])
    return ParamCheck(
        name=slot.name, shape=slot.shape, difference=upper, passed=True, checked=slot.size, worst_index=None,
        threshold=threshold, method="screen", probes=len(screens), verdict="right", bound=upper, step=step,
    )


def _localise_wrong(ctx: _Context, slots: Sequence[Slot], outcomes: Dict[str, _Outcome],
                    judgements: Dict[str, Judgement]) -> Dict[str, Located]:
    """Locate the wrong tensors' errors, worst first, within the budget."""
    wrong = sorted((s for s in slots if s.name in outcomes and judgements[s.name].verdict == "wrong"
                    and outcomes[s.name].statistical and s.grad_finite),
                   key=lambda s: -judgements[s.name].lower)
    located: Dict[str, Located] = {}
    for s in wrong:
        threshold = ctx.thresholds[s.name]
        step = _step(ctx, s, 1, ctx.references[s.name])
        p = outcomes[s.name].probes
        first = [Settled(a, n, g, g, 0.0, True) for a, n, g in zip(p.analytic.tolist(), p.numeric.tolist(), p.gap.tolist())]
        with Workspace(ctx.params, [s]) as ws:
            located[s.name] = localise(_runner(ctx, threshold, ctx.references[s.name]), ctx.ev, ws, s, first, step, ctx.rng)
    return located


def _judge_all(ctx: _Context, slots: Sequence[Slot], outcomes: Dict[str, _Outcome]) -> Dict[str, Judgement]:
    out = {}
    for s in slots:
        if s.name in outcomes:
            o = outcomes[s.name]
            out[s.name] = judge(o.probes, ctx.thresholds[s.name], o.reference, o.statistical, s.grad_finite)
    return out


# --------------------------------------------------------------------------------------------
# The public entry point


def _plan(slots: Sequence[Slot], sample: Sample) -> Tuple[str, Optional[int], int]:
    """``(mode, evaluation limit, evaluations planned)`` for the progress bar and the budget."""
    total = sum(s.size for s in slots)
    budget = max(TOLERANCES.budget, TOLERANCES.budget_per_tensor * len(slots))
    if sample == "all":
        return "all", None, 3 + 2 * total
    if isinstance(sample, int):
        return "sampled", None, 3 + 2 * sum(min(sample, s.size) for s in slots)
    if total <= TOLERANCES.full_loop_max_entries:
        return "all", budget - 1, 3 + 2 * total
    return "directions", budget - 1, 3 + 2 * TOLERANCES.screens_first


def _nonfinite_result(slots: Sequence[Slot], thresholds: Dict[str, float], j0: float, ev: Evaluator, seed: int,
                      sample: Sample, epsilon: Optional[float]) -> CheckResult:
    note = f"the loss is {j0} at the given parameters (training diverged?): no gradient can be checked"
    per = {s.name: ParamCheck(s.name, s.shape, math.nan, False, 0, None, thresholds[s.name], note=note) for s in slots}
    return CheckResult(math.nan, False, max(thresholds.values(), default=1e-7), per, tuple(per), ev.count, seed,
                       sample, epsilon)


def _context(ev: Evaluator, params: Params, slots: Sequence[Slot], j0: float, epsilon: Optional[float],
             threshold: Optional[float], seed: int) -> _Context:
    norms = {s.name: s.grad_norm() for s in slots}
    entries = sum(s.size for s in slots)
    rms = math.sqrt(math.fsum(v * v for v in norms.values() if math.isfinite(v)) / entries) if entries else 0.0
    floor_rms = TOLERANCES.zero_gradient_floor * rms
    return _Context(
        ev=ev, params=params, j0=j0, epsilon=epsilon,
        thresholds={s.name: threshold if threshold is not None else threshold_for(s.array.dtype) for s in slots},
        references={s.name: max(norms[s.name], floor_rms * math.sqrt(s.size)) for s in slots},
        floor_rms=floor_rms, rng=np.random.default_rng(seed),
    )


def check_gradients(
    loss_fn: Callable[[Any], Any],
    params: Params,
    grads: Grads,
    *,
    sample: Sample = "auto",
    epsilon: Optional[float] = None,
    threshold: Optional[float] = None,
    seed: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> CheckResult:
    """Compare the analytic gradients ``grads`` with central differences of ``loss_fn`` at ``params``.

    ``sample="all"`` checks every component (the documents' loop); an int ``k`` checks ``k``
    components of each tensor drawn with ``seed``; ``"auto"`` (the default) screens all tensors at
    once along random directions, probes the tensors the screens did not clear, and bisects a wrong
    one to its worst entry, within ``max(400, 20 × tensors)`` loss evaluations (the full loop for
    models of up to 100 entries). Each tensor is right, wrong or inconclusive (see the README).
    ``progress(done, planned)`` is called after each loss evaluation when given.

    After the call every array in ``params`` is bitwise what it was, also when ``loss_fn`` raises.

    >>> import numpy as np
    >>> p = {"W": np.array([[1.0, -2.0]])}
    >>> bad = check_gradients(lambda q: float(np.sum(q["W"] ** 2)), p, {"dW": 3 * p["W"]}, seed=1)
    >>> bad.verdict, bad.failed
    ('failed', ('W',))
    """
    sample = validate_sample(sample)
    epsilon = validate_positive("epsilon", epsilon)
    threshold = validate_positive("threshold", threshold)
    seed = validate_seed(seed)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, loss_fn(params) -> float; got {type(loss_fn).__name__}")
    slots = build_slots(params, grads)
    with _LOCK:
        return _check(loss_fn, params, slots, sample, epsilon, threshold, seed, progress)


def _check(loss_fn: Callable[[Any], Any], params: Params, slots: List[Slot], sample: Sample, epsilon: Optional[float],
           threshold: Optional[float], seed: int, progress: Optional[Progress]) -> CheckResult:
    mode, limit, planned = _plan(slots, sample)
    ev = Evaluator(loss_fn, progress, planned, limit)
    j0 = ev.base(params, "at the start")
    ctx = _context(ev, params, slots, j0, epsilon, threshold, seed)
    if not math.isfinite(j0):
        return _nonfinite_result(slots, ctx.thresholds, j0, ev, seed, sample, epsilon)
    ev.base(params, "at the start, measured twice")

    outcomes: Dict[str, _Outcome] = {}
    screens: Dict[str, List[_Screen]] = {}
    if mode == "directions":
        for group in _groups([s for s in slots if s.size]):
            group_screens = _screen_group(ctx, group)
            for name in _cleared(ctx, group, group_screens):
                screens[name] = group_screens
        for s in slots:
            if s.name not in screens:
                outcomes[s.name] = (_direction_stage(ctx, s) if s.size > 1 else
                                    _coordinate_stage(ctx, s, np.arange(s.size), "coordinates"))
    else:
        for s in slots:
            if mode == "all":
                indices = np.arange(s.size)
            else:
                indices = np.sort(ctx.rng.choice(s.size, size=min(int(sample), s.size), replace=False))
            outcomes[s.name] = _coordinate_stage(ctx, s, indices, mode)
    judgements = _judge_all(ctx, slots, outcomes)
    located = _localise_wrong(ctx, slots, outcomes, judgements) if mode == "directions" else {}
    jitter_used = ev.jitter
    ev.limit = None
    ev.base(params, "at the end of the check")
    return _result(ctx, slots, outcomes, screens, located, jitter_used, sample, seed)


def _result(ctx: _Context, slots: Sequence[Slot], outcomes: Dict[str, _Outcome], screens: Dict[str, List[_Screen]],
            located: Dict[str, Located], jitter_used: float, sample: Sample, seed: int) -> CheckResult:
    ev = ctx.ev
    drifted = ev.jitter > max(2 * jitter_used, TOLERANCES.roundoff * ev.precision * abs(ctx.j0))
    per_param: Dict[str, ParamCheck] = {}
    for s in slots:
        if s.name in screens:
            per_param[s.name] = _screened(s, ctx, screens[s.name])
            continue
        o = outcomes[s.name]
        j = judge(o.probes, ctx.thresholds[s.name], o.reference, o.statistical, s.grad_finite)
        reason = why_unsure(o.probes, ev, ctx.epsilon, ctx.j0, o.reference, ctx.thresholds[s.name], o.statistical)
        loc = located.get(s.name)
        per_param[s.name] = _param_check(s, o, j, ctx.thresholds[s.name], _note(j, o, reason, loc), loc)
    if drifted:
        for name, pc in list(per_param.items()):
            if pc.verdict == "right":
                per_param[name] = dataclasses.replace(
                    pc, passed=False, verdict="inconclusive",
                    note=f"the loss varied by {ev.jitter:.1e} between calls at the same point during the check: "
                         "make the loss deterministic")
    a = np.concatenate([outcomes[n].probes.analytic for n in outcomes] + [np.zeros(0)])
    n = np.concatenate([outcomes[n].probes.numeric for n in outcomes] + [np.zeros(0)])
    group_screens = {id(v): v for v in screens.values()}.values()
    scr_a = [sc.analytic for g in group_screens for sc in g]
    scr_n = [sc.measurement.numeric for g in group_screens for sc in g]
    if a.size:
        difference = relative_difference(a, n)
    elif scr_a:
        difference = relative_difference(np.array(scr_a), np.array(scr_n))
    else:
        difference = 0.0
    if any(not math.isfinite(pc.difference) and pc.verdict == "wrong" for pc in per_param.values()):
        difference = math.nan if not a.size else difference
    failed = tuple(k for k, pc in per_param.items() if pc.verdict == "wrong")
    inconclusive = tuple(k for k, pc in per_param.items() if pc.verdict == "inconclusive")
    not_localised = tuple(k for k in located if not located[k].localised)
    notes = (f"not localised within the budget of loss evaluations: {', '.join(not_localised)}",) if not_localised else ()
    return CheckResult(
        difference=difference, passed=not failed and not inconclusive,
        threshold=max(ctx.thresholds.values(), default=1e-7), per_param=per_param, failed=failed,
        loss_evaluations=ev.count, seed=seed, sample=sample, epsilon=ctx.epsilon, not_localised=not_localised,
        notes=notes, inconclusive=inconclusive,
    )
