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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .errors import DropoutActiveError, GradWatchError
from .inputs import (
    Grads,
    Guard,
    Params,
    Sample,
    Slot,
    Workspace,
    build_slots,
    chunks,
    validate_positive,
    validate_sample,
    validate_seed,
)
from .localise import Located, localise
from .measure import Context, Outcome, coordinate_stage, direction_stage, runner, step_for
from .noise import Judgement, Settled, direction_upper, judge, reference_norm, why_unsure
from .numerics import relative_difference
from .probes import RAISED_BY_LOSS_FN, Evaluator, Grid, Probe, Progress, dyadic_grain, loss_at, random_direction
from .result import CheckResult, ParamCheck
from .screen import Screen, cleared, groups, screen_bounds, screen_group
from .tolerances import TOLERANCES, precision_of, threshold_for

__all__ = ["CheckResult", "ParamCheck", "check_gradients"]

#: Checks of the same arrays must not interleave (each perturbs them in place): one check at a time.
_LOCK = threading.RLock()
_EPS64 = float(np.finfo(np.float64).eps)


# --------------------------------------------------------------------------------------------
# Deciding and reporting


def _param_check(slot: Slot, outcome: Outcome, judgement: Judgement, threshold: float, note: str,
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


def _note(judgement: Judgement, outcome: Outcome, reason: str, located: Optional[Located], slot: Slot,
          threshold: float) -> str:
    parts = []
    if judgement.verdict == "wrong" and slot.grad_precision > threshold:
        parts.append(f"the gradient comes in {slot.grad.dtype}, whose rounding alone ({slot.grad_precision:.0e} per "
                     f"entry) is not below the threshold ({threshold:.0e}): compute it in the parameter's dtype")
    if judgement.verdict == "inconclusive":
        parts.append(reason)
    if outcome.kinks:
        parts.append(f"{outcome.kinks} measurement(s) sit on a kink at the point (ReLU at 0): the gradient lies "
                     "between the one-sided slopes, as a valid one-sided derivative does")
    if outcome.dropped:
        parts.append(f"{outcome.dropped} direction(s) could not be measured finely enough (a kink within the step, "
                     "or round-off) and were replaced by fresh ones")
    p = outcome.probes
    if judgement.verdict == "wrong" and p.numeric.size and not np.any(p.numeric) and np.any(p.analytic):
        parts.append("the loss did not change at all when this tensor moved (every numeric derivative is exactly 0): "
                     "does loss_fn read it from the mapping it is handed? (float32 and read-only tensors are handed "
                     "as float64 copies in another mapping, so arrays the loss closed over never move), does "
                     "the forward pass use it, and is the loss unrounded?")
    if located is not None and located.spread:
        parts.append("the error is spread over the tensor (no single entry carries it: a scale, a missing term, "
                     "a wrong axis, an off-by-one)"
                     + ("; the entry shown is one that carries a share of it" if located.worst is not None else ""))
    if located is not None and not located.localised:
        parts.append("not localised: the evaluation budget was spent, or the entry the bisection reached showed "
                     "no error once measured with care (a kink misled it)")
    return "; ".join(parts)


def _screened(slot: Slot, ctx: Context, screens: Sequence[Screen]) -> ParamCheck:
    threshold = ctx.thresholds[slot.name]
    step = screens[0].steps[slot.name]
    bounds = screen_bounds(ctx, screens)
    upper = direction_upper([b / step for b in bounds], ctx.references[slot.name])
    return ParamCheck(
        name=slot.name, shape=slot.shape, difference=upper, passed=True, checked=slot.size, worst_index=None,
        threshold=threshold, method="screen", probes=len(screens), verdict="right", bound=upper, step=step,
    )


def _localise_wrong(ctx: Context, slots: Sequence[Slot], outcomes: Dict[str, Outcome],
                    judgements: Dict[str, Judgement]) -> Dict[str, Located]:
    """Locate the wrong tensors' errors, worst first, within the budget."""
    wrong = sorted((s for s in slots if s.name in outcomes and judgements[s.name].verdict == "wrong"
                    and outcomes[s.name].statistical and s.grad_finite),
                   key=lambda s: -judgements[s.name].lower)
    located: Dict[str, Located] = {}
    for s in wrong:
        threshold = ctx.thresholds[s.name]
        step = step_for(ctx, s, 1, ctx.references[s.name])
        p = outcomes[s.name].probes
        first = [Settled(a, n, g, g, 0.0, True) for a, n, g in zip(p.analytic.tolist(), p.numeric.tolist(), p.gap.tolist())]
        with Workspace(ctx.params, [s]) as ws:
            located[s.name] = localise(runner(ctx, threshold, ctx.references[s.name]), ctx.ev, ws, s, first, step, ctx.rng,
                                     threshold)
    return located


def _judge_all(ctx: Context, slots: Sequence[Slot], outcomes: Dict[str, Outcome]) -> Dict[str, Judgement]:
    out = {}
    for s in slots:
        if s.name in outcomes:
            o = outcomes[s.name]
            judgement = _covering(judge(o.probes, ctx.thresholds[s.name], o.reference, o.statistical, s.grad_finite),
                                  o, s)
            out[s.name] = _flat_only_at_small_steps(ctx, s, o, judgement)
    return out


def _flat_only_at_small_steps(ctx: Context, slot: Slot, outcome: Outcome, judgement: Judgement) -> Judgement:
    """A tensor found wrong because the loss did not change at all when it moved (every numeric derivative
    exactly 0) is moved once more, ``flat_step_growth`` times further: a loss that changes there onto a grid
    (:class:`gradwatch.probes.Grid`) rounds (or cancels large terms) below that, and the check could not have
    seen an error: inconclusive. One that stays flat, changes smoothly (ReLU units dead at the point come
    alive that far out: a forgotten mask is wrong) or cannot be computed there leaves wrong standing. Two
    loss evaluations, for such tensors only."""
    p = outcome.probes
    if judgement.verdict != "wrong" or not p.numeric.size or np.any(p.numeric) or not np.any(p.analytic):
        return judgement
    probe = Probe.of([(random_direction(slot, 0, slot.size, ctx.rng), 1.0)])
    step = outcome.step * TOLERANCES.flat_step_growth  # per entry, as the probes' step
    with Workspace(ctx.params, [slot]) as ws:
        far = [loss_at(ctx.ev, ws, probe, sign * step, optional=True) for sign in (1.0, -1.0)]
    if not all(j is not None and math.isfinite(j) for j in far) or far[0] == far[1] or not _on_a_grid(far):
        return judgement  # flat there too, or moved without the grid a rounding loss lands on (dead units revived)
    return dataclasses.replace(judgement, verdict="inconclusive", reason=(
        f"the loss did not change at all at steps of {outcome.step:.2g}, but does at {step:.2g}: it rounds (or "
        "cancels large terms, like (1e12 + x) - 1e12) more coarsely than a step moves it; compute it without the "
        "large constant terms, and unrounded"))


def _on_a_grid(values: Sequence[Optional[float]]) -> bool:
    """Whether these losses sit on a grid far coarser than float64 (whatever precision their values suggest)."""
    grid = Grid()
    for v in values:
        grid.add(float(v) if v is not None else math.nan)
    return grid.resolution(_EPS64) > 0


def _covering(judgement: Judgement, outcome: Outcome, slot: Slot) -> Judgement:
    """A sample of a tensor's coordinates (``sample=k``) can show an error but never clear the entries it
    left out: agreement on the sample alone is inconclusive."""
    if judgement.verdict != "right" or outcome.method != "sampled" or outcome.checked >= slot.size:
        return judgement
    return dataclasses.replace(judgement, verdict="inconclusive", reason=(
        f"only {outcome.checked} of its {slot.size} entries were checked (sample={outcome.checked}) and they agree; "
        "the others could hide an error: leave sample at \"auto\" (the default) for a verdict on every entry, "
        "or pass sample=\"all\""))


# --------------------------------------------------------------------------------------------
# The public entry point


def _plan(slots: Sequence[Slot], sample: Sample) -> Tuple[str, Optional[int], int]:
    """``(mode, evaluation limit, evaluations planned)`` for the progress bar and the budget."""
    total = sum(s.size for s in slots)
    budget = max(TOLERANCES.budget, TOLERANCES.budget_per_tensor * len(slots))
    if sample == "all":
        return "all", None, 3 + 3 * total
    if isinstance(sample, int):
        return "sampled", None, 3 + 3 * sum(min(sample, s.size) for s in slots)
    if total <= TOLERANCES.full_loop_max_entries:
        return "all", budget - 1, 3 + 3 * total
    return "directions", budget - 1, 3 + 2 * TOLERANCES.screens_first


def _nonfinite_result(slots: Sequence[Slot], thresholds: Dict[str, float], j0: float, ev: Evaluator, seed: int,
                      sample: Sample, epsilon: Optional[float]) -> CheckResult:
    note = f"the loss is {j0} at the given parameters (training diverged?): no gradient can be checked"
    per = {s.name: ParamCheck(s.name, s.shape, math.nan, False, 0, None, thresholds[s.name], note=note) for s in slots}
    return CheckResult(math.nan, False, max(thresholds.values(), default=1e-7), per, tuple(per), ev.count, seed,
                       sample, epsilon)


def _context(ev: Evaluator, params: Params, slots: Sequence[Slot], j0: float, epsilon: Optional[float],
             threshold: Optional[float], seed: int) -> Context:
    norms = {s.name: s.grad_norm() for s in slots}
    entries = sum(s.size for s in slots)
    rms = math.hypot(*(v for v in norms.values() if math.isfinite(v))) / math.sqrt(entries) if entries else 0.0
    return Context(
        ev=ev, params=params, j0=j0, epsilon=epsilon,
        thresholds={s.name: threshold if threshold is not None else threshold_for(s.array.dtype) for s in slots},
        references={s.name: reference_norm(norms[s.name], s.size, rms, s.grad_precision) for s in slots},
        model_rms=rms, rng=np.random.default_rng(seed), norms=norms,
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
    components of each tensor drawn with ``seed`` (a tensor it covers only in part can be wrong or
    inconclusive, never right); ``"auto"`` (the default) screens all tensors at
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
        guard = Guard(params)
        try:
            result = _guarded_check(guard, loss_fn, params, slots, sample, epsilon, threshold, seed, progress)
        finally:
            guard.tidy()
        return result


def _guarded_check(guard: Guard, loss_fn: Callable[[Any], Any], params: Params, slots: List[Slot], sample: Sample,
                   epsilon: Optional[float], threshold: Optional[float], seed: int,
                   progress: Optional[Progress]) -> CheckResult:
    """The check, and the parameters put back whatever ``loss_fn`` did to them (named when it changed them)."""
    try:
        result = _check(loss_fn, params, slots, sample, epsilon, threshold, seed, progress)
    except DropoutActiveError:
        _refuse_if_changed(guard)  # a loss that changes its parameters also gives new values
        raise
    except BaseException as exc:
        changed = guard.changed()
        restored = guard.restore()
        if changed and isinstance(exc, Exception) and not getattr(exc, RAISED_BY_LOSS_FN, False):
            # the check ran into what loss_fn did to the arrays (resized, re-typed): name that, not the symptom
            raise GradWatchError(
                f"loss_fn changed params {_names(changed)} (in place, or by replacing the array), and the check "
                f"could not go on ({type(exc).__name__}: {exc}); it must compute the loss from the mapping it is "
                "handed without modifying it. "
                + ("The parameters were restored." if restored else "They could not all be restored.")
            ) from exc
        if changed and hasattr(exc, "add_note"):  # Python 3.11+
            exc.add_note(f"gradwatch: loss_fn changed params {_names(changed)} during the check"
                         + (": they were put back" if restored else
                            ", and not all could be put back (too large to have been copied, or changed in a "
                            "way NumPy cannot undo)"))
        raise
    _refuse_if_changed(guard)
    return result


def _names(names: Sequence[str], shown: int = 8) -> str:
    """Names for a message: the first ``shown``, and how many more."""
    listed = ", ".join(repr(n) for n in names[:shown])
    return listed + (f" and {len(names) - shown} more" if len(names) > shown else "")


def _refuse_if_changed(guard: Guard) -> None:
    """A loss_fn that changes the parameters it is handed (in place, or by rebinding a key) breaks the
    check: put them back, and say so."""
    changed = guard.changed()
    if not changed:
        return
    restored = guard.restore()
    raise GradWatchError(
        f"loss_fn changed params {_names(changed)} (in place, or by replacing the array): "
        "it must compute the loss from the mapping it is handed without modifying it. "
        + ("The parameters were restored." if restored else "They could not all be restored (too large to have been copied, "
           "or changed in a way NumPy cannot undo).")
    )


def _sees_below_float32(ev: Evaluator, params: Params, slots: Sequence[Slot], j0: float) -> bool:
    """Whether the loss sees a move of a float32 tensor too small for float32: a quarter of each entry's
    spacing, along its gradient's signs, in the float64 copy it is handed. One that casts the copy back to
    float32, or computes in float32, does not, and is then only float32-precise whatever it returns. One loss
    evaluation, when there are float32 tensors: the largest one is moved (its copy lives only while it is)."""
    narrow = [s for s in slots if not s.in_place and s.array.dtype == np.float32 and s.size]
    if not narrow or not ev.affords(1):
        return True
    slot = max(narrow, key=lambda s: s.size)
    expected = 0.0
    with Workspace(params, [slot]) as ws:
        for lo, hi in chunks(0, slot.size):
            base = ws.base(slot, lo, hi)
            move = 0.25 * np.spacing(np.abs(base).astype(np.float32)).astype(np.float64) * np.sign(slot.grad_chunk(lo, hi))
            expected += float(np.dot(slot.grad_chunk(lo, hi), move))
            ws.write(slot, lo, hi, base + move)
        if not expected > TOLERANCES.roundoff * _EPS64 * abs(j0):
            return True  # a change float64 could not show either: no evidence
        moved = ev(ws.mapping)
    return moved != j0


def _check(loss_fn: Callable[[Any], Any], params: Params, slots: List[Slot], sample: Sample, epsilon: Optional[float],
           threshold: Optional[float], seed: int, progress: Optional[Progress]) -> CheckResult:
    mode, limit, planned = _plan(slots, sample)
    ev = Evaluator(loss_fn, progress, planned, limit)
    if epsilon is not None and dyadic_grain(epsilon) >= epsilon * 2.0 ** -12:
        ev.grid = None  # a step of few binary digits (2**-20) puts exact values on a coarse grid by itself
    j0 = ev.base(params, "at the start")
    ctx = _context(ev, params, slots, j0, epsilon, threshold, seed)
    if not math.isfinite(j0):
        return _nonfinite_result(slots, ctx.thresholds, j0, ev, seed, sample, epsilon)
    ev.base(params, "at the start, measured twice")
    if not _sees_below_float32(ev, params, slots, j0):
        ev.computes_in = precision_of(np.dtype(np.float32))

    outcomes: Dict[str, Outcome] = {}
    screens: Dict[str, List[Screen]] = {}
    if mode == "directions":
        for group in groups([s for s in slots if s.size]):
            group_screens = screen_group(ctx, group)
            for name in cleared(ctx, group, group_screens):
                screens[name] = group_screens
        for s in slots:
            if s.name not in screens:
                outcomes[s.name] = (direction_stage(ctx, s) if s.size > 1 else
                                    coordinate_stage(ctx, s, np.arange(s.size), "coordinates"))
    else:
        for s in slots:
            if mode == "all":
                indices = np.arange(s.size)
            else:
                indices = np.sort(ctx.rng.choice(s.size, size=min(int(sample), s.size), replace=False))
            outcomes[s.name] = coordinate_stage(ctx, s, indices, mode)
    judgements = _judge_all(ctx, slots, outcomes)
    located = _localise_wrong(ctx, slots, outcomes, judgements) if mode == "directions" else {}
    jitter_used = ev.jitter
    ev.limit = None
    ev.base(params, "at the end of the check")
    return _result(ctx, slots, outcomes, judgements, screens, located, jitter_used, sample, seed)


def _result(ctx: Context, slots: Sequence[Slot], outcomes: Dict[str, Outcome], judgements: Dict[str, Judgement],
            screens: Dict[str, List[Screen]], located: Dict[str, Located], jitter_used: float, sample: Sample,
            seed: int) -> CheckResult:
    ev = ctx.ev
    drifted = ev.jitter > max(2 * jitter_used, TOLERANCES.roundoff * ev.precision * abs(ctx.j0))
    per_param: Dict[str, ParamCheck] = {}
    for s in slots:
        if s.name in screens:
            per_param[s.name] = _screened(s, ctx, screens[s.name])
            continue
        o, j = outcomes[s.name], judgements[s.name]
        step_roundoff = float(ev.roundoff(o.step, abs(ctx.j0))) / (2 * o.reference) if o.reference > 0 else 0.0
        reason = j.reason or why_unsure(o.probes, ev, ctx.epsilon, ctx.j0, o.reference, ctx.thresholds[s.name],
                                        o.statistical, o.narrowed, step_roundoff, o.step if o.truncated else 0.0)
        loc = located.get(s.name)
        threshold = ctx.thresholds[s.name]
        per_param[s.name] = _param_check(s, o, j, threshold, _note(j, o, reason, loc, s, threshold), loc)
    for s in slots:
        bad = s.first_nonfinite
        if bad is not None and s.grad_finite:
            where = tuple(int(i) for i in np.unravel_index(bad, s.shape))
            per_param[s.name] = dataclasses.replace(
                per_param[s.name], passed=False, verdict="inconclusive", worst_index=where,
                note=f"the parameter holds {s.array.reshape(-1)[bad] if s.array.flags.c_contiguous else 'inf or nan'} "
                     f"at {list(where)} (training diverged?): no finite difference can be taken there")
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
    scr_n = [sc.numeric for g in group_screens for sc in g]
    if a.size:
        difference = relative_difference(a, n)
    elif scr_a:
        difference = relative_difference(np.array(scr_a), np.array(scr_n))
    else:
        difference = 0.0
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
