"""One gradient check: ``check_gradients`` and its result types.

The design, in short (the README's "How the check stays honest" says it for users):

* every comparison is between an *analytic* number (from the user's ``grads``) and a *numeric*
  one (a central difference of ``loss_fn``) along a *direction* in one tensor: a single
  coordinate (``sample="all"`` or an int), or a random ±1 (Rademacher) unit vector over a range of
  entries (``sample="auto"``). Rademacher projections estimate formula (2) of the documents without
  bias, and a single wrong entry shows in every projection with its full size.
* a gap above the threshold is re-measured at a quarter of the step: a real error stays put,
  while round-off (∝ 1/ε) and a kink crossed inside ±ε (ReLU) move. What moves, and what the
  round-off floor explains, is reported as noise instead of a bug.
* a tensor that fails under ``"auto"`` is localised by bisection over its entries, down to one
  entry, within a fixed budget of loss evaluations.

Parameters are perturbed in place (float64) and restored bitwise in ``finally`` blocks; tensors of
lower precision are checked through a float64 copy handed to ``loss_fn`` in a shallow copy of the
mapping, so the user's float32 arrays are never written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import DropoutActiveError, GradWatchError
from .numerics import default_epsilon, default_threshold, named_tensors, relative_difference

Params = Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]
Grads = Union[Mapping[str, Any], Sequence[Any]]
Progress = Callable[[int, int], None]

#: Loss evaluations allowed to ``sample="auto"`` for a model of up to 20 tensors (then 20 per tensor).
AUTO_BUDGET = 400
#: Below this many entries in all, ``sample="auto"`` runs the documents' full loop.
AUTO_FULL_LOOP_MAX_ENTRIES = 100
#: Random directions per tensor in ``sample="auto"``.
AUTO_DIRECTIONS = 2
#: The re-check uses the step divided by this.
RECHECK_RATIO = 4.0
#: How many times the step may be divided by RECHECK_RATIO while re-checking (ε/256 at most).
REFINE_LEVELS = 4
#: At most this many quantities per tensor are re-checked at the smaller step.
RECHECK_CAP = 16
#: Safety factors on the round-off floors of the numeric (loss) and analytic (gradient) numbers.
LOSS_ROUNDOFF_FACTOR = 32.0
GRAD_ROUNDOFF_FACTOR = 32.0
#: In bisection, a half whose probe carries at least this share of the error (squared) is followed
#: without measuring the other half.
CLEAR_SHARE = 0.9
_CHUNK = 1 << 14


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class ParamCheck:
    """The check of one tensor.

    ``difference`` is formula (2) over what was checked in this tensor; ``passed`` the verdict;
    ``checked`` how many of its entries the check covered; ``worst_index`` the entry with the
    largest error found, in the tensor's own shape (``None`` when no single entry was examined).
    """

    name: str
    shape: Tuple[int, ...]
    difference: float
    passed: bool
    checked: int
    worst_index: Optional[Tuple[int, ...]]
    threshold: float
    method: str = "coordinates"
    probes: int = 0
    max_abs_error: float = 0.0
    entry_errors: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False, compare=False)
    worst_analytic: Optional[float] = None
    worst_numeric: Optional[float] = None
    explained_by: Tuple[str, ...] = ()
    localised: bool = True
    note: str = ""
    verdict: str = ""  # "right", "wrong" or "inconclusive"; derived from ``passed`` when not given

    def __post_init__(self) -> None:
        if not self.verdict:
            object.__setattr__(self, "verdict", "right" if self.passed else "wrong")

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True)
class CheckResult:
    """The outcome of :func:`check_gradients`.

    >>> import numpy as np
    >>> params = {"w": np.array([1.0, 2.0])}
    >>> result = check_gradients(lambda p: float(np.sum(p["w"] ** 2)), params, {"dw": 2 * params["w"]}, seed=0)
    >>> result.passed, result.failed
    (True, ())
    """

    difference: float
    passed: bool
    threshold: float
    per_param: Dict[str, ParamCheck]
    failed: Tuple[str, ...]
    loss_evaluations: int
    seed: int
    sample: Union[str, int] = "auto"
    epsilon: Optional[float] = None
    not_localised: Tuple[str, ...] = ()
    notes: Tuple[str, ...] = ()
    inconclusive: Tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        """``"passed"`` (every tensor right), ``"failed"`` (some tensor wrong) or ``"inconclusive"``."""
        return "failed" if self.failed else "inconclusive" if self.inconclusive else "passed"

    def __str__(self) -> str:
        return format_report(self)

    def _repr_html_(self) -> str:
        from .display import to_html  # a notebook shows the table

        return to_html(self)

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        from .display import pretty  # IPython shows the report

        pretty(self, p, cycle)


def _fmt_index(name: str, index: Optional[Tuple[int, ...]]) -> str:
    if index is None:
        return ""
    return f"{name}[{', '.join(str(i) for i in index)}]" if index else name


def format_report(result: CheckResult) -> str:
    """The report a person reads: the verdict, a row per tensor, the worst entries, the notes."""
    n = len(result.per_param)
    if result.passed:
        head = f"gradient check PASSED: {n} tensor{'s' if n != 1 else ''} right"
    else:
        head = f"gradient check FAILED: {len(result.failed)} of {n} tensors wrong ({', '.join(result.failed)})"
    sample = f'"{result.sample}"' if isinstance(result.sample, str) else str(result.sample)
    lines = [
        head,
        f"difference {result.difference:.3e} (threshold {result.threshold:.0e}), sample {sample}, "
        f"{result.loss_evaluations} loss evaluations, seed {result.seed}",
    ]
    rows = [("tensor", "shape", "checked", "difference", "verdict", "worst entry")]
    for name, pc in result.per_param.items():
        verdict = "ok" if pc.passed else "WRONG"
        if pc.passed and pc.explained_by:
            verdict = "ok (noise)"
        worst = _fmt_index(name, pc.worst_index)
        if worst and pc.worst_analytic is not None and pc.worst_numeric is not None:
            worst += f"  analytic {pc.worst_analytic:.6g}, numeric {pc.worst_numeric:.6g}"
        checked = f"{pc.checked}/{pc.size}"
        rows.append((name, str(pc.shape), checked, f"{pc.difference:.3e}", verdict, worst))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else ""))
    notes = [f"{name}: {pc.note}" for name, pc in result.per_param.items() if pc.note]
    notes += list(result.notes)
    if notes:
        lines.append("notes:")
        lines.extend(f"  - {note}" for note in notes)
    return "\n".join(line.rstrip() for line in lines)


# --------------------------------------------------------------------------------------------
# Inputs


def normalise_sample(sample: Any) -> Optional[Union[str, int]]:
    """``"all"``, ``"auto"`` or a positive int as given (the int as a Python int); ``None`` for anything else."""
    if isinstance(sample, str) and sample in ("all", "auto"):
        return sample
    if isinstance(sample, (int, np.integer)) and not isinstance(sample, (bool, np.bool_)) and sample > 0:
        return int(sample)
    return None


def _validate_sample(sample: Any) -> Union[str, int]:
    value = normalise_sample(sample)
    if value is None:
        raise ValueError(f'sample must be "all", "auto" or a positive int; got {sample!r}')
    return value


def _validate_positive(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be None or a positive number; got {value!r}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be None or a positive finite number; got {value!r}")
    return value


def _validate_seed(seed: Any) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy % (2**32))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be None or a non-negative int; got {seed!r}")
    return int(seed)


def _lookup_grad(grads: Grads, name: str, index: int, n_params: int) -> np.ndarray:
    if isinstance(grads, Mapping):
        for key in ("d" + name, name):
            if key in grads:
                return grads[key]
        if name.isdigit() and index in grads:
            return grads[index]
        shown = ", ".join(repr(k) for k in list(grads)[:12])
        raise GradWatchError(
            f"no gradient for parameter {name!r}: grads has neither {'d' + name!r} nor {name!r} (its keys: {shown})"
        )
    if isinstance(grads, (list, tuple)):
        if len(grads) != n_params:
            raise GradWatchError(f"grads is a sequence of {len(grads)} arrays but params holds {n_params} tensors")
        return grads[index]
    raise TypeError(f"grads must be a dict or a list/tuple of arrays; got {type(grads).__name__}")


def _as_loss(value: Any) -> float:
    """The loss as a Python float; a clear error for anything but a real scalar."""
    if isinstance(value, float):  # float and np.float64: the common case, first
        return float(value)
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise GradWatchError(f"loss_fn must return a scalar; got an array of shape {value.shape}")
        value = value.reshape(())[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GradWatchError(f"loss_fn must return a real scalar; got {type(value).__name__}: {value!r:.60}")
    return float(value)


class _Tensor:
    """One parameter under check: where to write perturbations and what mapping to hand ``loss_fn``."""

    def __init__(self, name: str, key: Any, array: np.ndarray, grad: np.ndarray, params: Params):
        self.name = name
        self.array = array
        self.shape = array.shape
        self.size = int(array.size)
        self.grad = grad.reshape(-1)
        self.grad_finite = all(bool(np.isfinite(self.grad[i : i + _CHUNK]).all()) for i in range(0, self.size, _CHUNK))
        flat = array.reshape(-1)
        in_place = (
            array.dtype.itemsize >= 8
            and array.flags.writeable
            and np.shares_memory(flat, array)
            and array.dtype.kind == "f"
        )
        if in_place:
            self.work = flat
            self.source = None  # values saved per perturbation
            self.mapping: Any = params
        else:
            # a float64 copy handed to loss_fn in a shallow copy of the container
            self.work = np.array(array, dtype=np.float64, order="C").reshape(-1)
            self.source = flat if np.shares_memory(flat, array) else None
            self.mapping = _replaced(params, key, self.work.reshape(self.shape))
        self.in_place = in_place
        rms = math.sqrt(float(np.dot(self.work, self.work)) / self.size) if self.size else 0.0
        self.scale = max(1.0, rms)
        self.base_loss: Optional[float] = None  # loss at the unperturbed copy (substitute mode only)

    def base_values(self, lo: int, hi: int) -> np.ndarray:
        if self.in_place:
            return self.work[lo:hi].copy()
        if self.source is not None:
            return self.source[lo:hi]
        return self.work[lo:hi].copy()


def _replaced(params: Params, key: Any, value: np.ndarray) -> Any:
    if isinstance(params, Mapping):
        out: MutableMapping = dict(params)
        out[key] = value
        return out
    seq = list(params)
    seq[key] = value
    return tuple(seq) if isinstance(params, tuple) else seq


# --------------------------------------------------------------------------------------------
# Evaluation


class _Budget(Exception):
    """Internal: the evaluation budget is spent."""


class _Evaluator:
    """Counts loss evaluations, checks what ``loss_fn`` returns, reports progress."""

    def __init__(self, loss_fn: Callable, progress: Optional[Progress], planned: int):
        self.loss_fn = loss_fn
        self.count = 0
        self.progress = progress
        self.planned = planned
        self.limit: Optional[int] = None

    def __call__(self, mapping: Any) -> float:
        if self.limit is not None and self.count >= self.limit:
            raise _Budget()
        value = _as_loss(self.loss_fn(mapping))
        self.count += 1
        if self.progress is not None:
            self.progress(self.count, max(self.planned, self.count))
        return value


@dataclass
class _Probe:
    """One compared quantity: the analytic and numeric derivatives along a direction."""

    lo: int
    hi: int
    seed: Optional[int]  # None: a single coordinate (lo)
    step: float  # the step along the unit direction
    analytic: float
    analytic_mag: float  # scale of the analytic number's round-off
    numeric: float
    j_plus: float
    j_minus: float
    unexplained: float = 0.0
    cause: str = ""


def _signs(seed: int, lo: int, hi: int):
    """Yield ``(start, stop, signs)`` chunks of a Rademacher vector over ``[lo, hi)``."""
    rng = np.random.default_rng(seed)
    for c0 in range(lo, hi, _CHUNK):
        c1 = min(hi, c0 + _CHUNK)
        yield c0, c1, rng.integers(0, 2, size=c1 - c0, dtype=np.int8) * np.int8(2) - np.int8(1)


def _analytic(t: _Tensor, lo: int, hi: int, seed: Optional[int]) -> Tuple[float, float]:
    if seed is None:
        g = float(t.grad[lo])
        return g, abs(g)
    m = hi - lo
    dot = 0.0
    sq = 0.0
    for c0, c1, s in _signs(seed, lo, hi):
        g = t.grad[c0:c1].astype(np.float64, copy=False)
        dot += float(np.dot(g, s))
        sq += float(np.dot(g, g))
    return dot / math.sqrt(m), math.sqrt(sq / m)


def _set(t: _Tensor, base: np.ndarray, lo: int, hi: int, seed: Optional[int], delta: float) -> None:
    """Write ``base + delta * direction`` (per-entry step ``delta``) into the work array."""
    if seed is None:
        t.work[lo] = base[0] + delta
        return
    for c0, c1, s in _signs(seed, lo, hi):
        out = t.work[c0:c1]
        np.multiply(s, delta, out=out)  # in place: no temporaries beyond the chunk of signs
        out += base[c0 - lo : c1 - lo]


def _central(ev: _Evaluator, t: _Tensor, lo: int, hi: int, seed: Optional[int], step: float) -> Tuple[float, float, float]:
    """``(D, J+, J−)``: the central difference along the unit direction, restoring the tensor bitwise."""
    per_entry = step if seed is None else step / math.sqrt(hi - lo)
    base = t.base_values(lo, hi)
    try:
        _set(t, base, lo, hi, seed, per_entry)
        j_plus = ev(t.mapping)
        _set(t, base, lo, hi, seed, -per_entry)
        j_minus = ev(t.mapping)
    finally:
        t.work[lo:hi] = base
    return (j_plus - j_minus) / (2 * step), j_plus, j_minus


@dataclass
class _Context:
    ev: _Evaluator
    j0: float
    epsilon: Optional[float]
    threshold_of: Dict[str, float]


def _step(ctx: _Context, t: _Tensor, m: int, boost: bool = True) -> float:
    """The step along a unit direction over ``m`` entries: ε·m^¼ (ε per coordinate).

    The m^¼ boost keeps round-off well under the 1e-7 threshold for wide directions; localisation,
    which needs only to see an error above noise, goes without it (``boost=False``) so that fewer
    kinks fall inside the step.
    """
    eps = ctx.epsilon if ctx.epsilon is not None else default_epsilon(np.float64) * t.scale
    return eps * m**0.25 if boost else eps


def _probe(ctx: _Context, t: _Tensor, lo: int, hi: int, seed: Optional[int], boost: bool = True) -> _Probe:
    step = _step(ctx, t, 1 if seed is None else hi - lo, boost)
    a, amag = _analytic(t, lo, hi, seed)
    d, jp, jm = _central(ctx.ev, t, lo, hi, seed, step)
    return _Probe(lo, hi, seed, step, a, amag, d, jp, jm)


def _roundoff_floor(ctx: _Context, t: _Tensor, analytic_mag: Any, step: Any) -> Any:
    """What round-off alone can put between analytic and numeric numbers (scalars or arrays):
    the loss's round-off divided by the step, plus the gradient dtype's round-off on the analytic side."""
    grad_eps = float(np.finfo(t.grad.dtype).eps) if t.grad.dtype.kind == "f" else float(np.finfo(np.float64).eps)
    loss_part = LOSS_ROUNDOFF_FACTOR * np.finfo(np.float64).eps * abs(ctx.j0) / step
    return loss_part + GRAD_ROUNDOFF_FACTOR * grad_eps * analytic_mag


def _floor(ctx: _Context, t: _Tensor, p: _Probe, step: float) -> float:
    """The round-off floor of one probe at this step."""
    return float(_roundoff_floor(ctx, t, p.analytic_mag, step))


def _refine(ctx: _Context, t: _Tensor, p: _Probe, threshold: float) -> List[Tuple[float, float, float, float]]:
    """Measure again at steps ε/4, ε/16, … until two successive estimates agree or the gap closes.

    Round-off grows as the step shrinks, while a kink crossed inside ±ε drops out of a small enough
    step, and a real error stays put. Returns the trail of ``(step, D, J+, J−)``, the first pass first.
    """
    trail = [(p.step, p.numeric, p.j_plus, p.j_minus)]
    step = p.step
    for _ in range(REFINE_LEVELS):
        step /= RECHECK_RATIO
        try:
            d, jp, jm = _central(ctx.ev, t, p.lo, p.hi, p.seed, step)
        except _Budget:
            break
        trail.append((step, d, jp, jm))
        floor = _floor(ctx, t, p, step)
        gap, moved = abs(p.analytic - d), abs(d - trail[-2][1])
        if gap <= floor + threshold * (abs(p.analytic) + abs(d)) or moved <= 0.1 * gap + floor:
            break
    return trail


def _recheck(ctx: _Context, t: _Tensor, p: _Probe, threshold: float) -> None:
    """Decide how much of a probe's gap is noise (round-off, a kink) and how much is a real error."""
    trail = _refine(ctx, t, p, threshold)
    if len(trail) < 2:
        return  # the budget is spent: the first-pass judgement stands
    (s1, d1, jp1, jm1), (s2, d2, jp2, jm2) = trail[-2], trail[-1]
    floor2 = _floor(ctx, t, p, s2)
    gap_first, gap_last = abs(p.analytic - p.numeric), abs(p.analytic - d2)
    moved = abs(d1 - d2)
    # a kink at the point itself: one-sided slopes differ by the same amount at both steps, and the
    # analytic number is one of them, up to curvature (O(step))
    j0 = ctx.j0 if t.in_place else _base_loss(ctx, t)
    asym1 = abs((jp1 - j0) / s1 - (j0 - jm1) / s1)
    sf2, sb2 = (jp2 - j0) / s2, (j0 - jm2) / s2
    asym2 = abs(sf2 - sb2)
    slack = floor2 + 0.25 * asym2
    if asym2 > 2 * floor2 * RECHECK_RATIO and asym2 > 0.5 * asym1 and min(sf2, sb2) - slack <= p.analytic <= max(sf2, sb2) + slack:
        p.unexplained, p.cause = 0.0, "kink"
        return
    p.unexplained = max(0.0, gap_last - floor2 - moved)
    if p.unexplained < gap_first:
        # round-off grows as the step shrinks; a kink crossed inside ±ε drops out as it shrinks
        kinked = any(
            abs(b[1] - a[1]) > 2 * _floor(ctx, t, p, b[0]) and abs(p.analytic - b[1]) < abs(p.analytic - a[1])
            for a, b in zip(trail, trail[1:])
        )
        p.cause = "kink" if kinked or gap_last < 0.5 * gap_first else "round-off"


def _base_loss(ctx: _Context, t: _Tensor) -> float:
    if t.base_loss is None:
        t.base_loss = ctx.ev(t.mapping)
    return t.base_loss


@dataclass
class _Comparison:
    """What one tensor's check compared: analytic ``a`` and numeric ``n`` numbers, the part ``u`` of each
    gap that noise does not explain, the causes noise was found to have, and the coordinates (if any)."""

    a: np.ndarray
    n: np.ndarray
    u: np.ndarray
    causes: set
    indices: Optional[np.ndarray] = None

    @classmethod
    def of_probes(cls, probes: List[_Probe]) -> "_Comparison":
        return cls(
            a=np.array([p.analytic for p in probes], dtype=np.float64),
            n=np.array([p.numeric for p in probes], dtype=np.float64),
            u=np.array([p.unexplained for p in probes], dtype=np.float64),
            causes={p.cause for p in probes if p.cause},
        )


def _first_pass(
    ctx: _Context, t: _Tensor, a: np.ndarray, n: np.ndarray, mags: np.ndarray, steps: Any
) -> Tuple[np.ndarray, set]:
    """The unexplained part of each gap after the round-off floor, vectorised; and whether the floor mattered."""
    u = np.abs(a - n)
    finite = np.isfinite(u)
    u -= _roundoff_floor(ctx, t, mags, steps)
    floored = bool(np.any(u < 0))
    np.maximum(u, 0.0, out=u)
    u[~finite] = np.inf
    return u, ({"round-off"} if floored else set())


def _suspects(a: np.ndarray, n: np.ndarray, u: np.ndarray, threshold: float, cap: int) -> np.ndarray:
    """Positions whose gap is beyond the floor and above the threshold, the largest first, at most ``cap``."""
    gap = np.abs(a - n)
    with np.errstate(invalid="ignore"):
        mask = (u > 0) & np.isfinite(gap) & (gap > threshold * (np.abs(a) + np.abs(n)))
    where = np.flatnonzero(mask)
    return where[np.argsort(-u[where], kind="stable")][:cap]


def _coordinate_pass(ctx: _Context, t: _Tensor, indices: np.ndarray, threshold: float) -> _Comparison:
    """The documents' loop over ``indices`` (flat), two evaluations per coordinate, and the round-off floor."""
    step = _step(ctx, t, 1)
    full = indices.size == t.size  # then indices is arange(size): iterate a range, not a list
    a = t.grad.astype(np.float64, copy=False) if full else t.grad[indices].astype(np.float64)
    n = np.empty(indices.size, dtype=np.float64)
    work, mapping, ev = t.work, t.mapping, ctx.ev
    for k, i in enumerate(range(t.size) if full else indices.tolist()):
        saved = work[i]
        try:
            work[i] = saved + step
            j_plus = ev(mapping)
            work[i] = saved - step
            j_minus = ev(mapping)
        finally:
            work[i] = saved
        n[k] = (j_plus - j_minus) / (2 * step)
    u, causes = _first_pass(ctx, t, a, n, np.abs(a), step)
    return _Comparison(a, n, u, causes, indices)


def _coordinate_rechecks(ctx: _Context, t: _Tensor, c: _Comparison, threshold: float) -> None:
    """Re-check the most suspicious coordinates of a swept tensor, within the evaluation budget."""
    a, n, u, causes, indices = c.a, c.n, c.u, c.causes, c.indices
    for k in _suspects(a, n, u, threshold, RECHECK_CAP).tolist():
        i = int(indices[k])
        try:
            p = _probe(ctx, t, i, i + 1, None)  # measured again: the same numbers, now with J±
        except _Budget:
            break  # the first-pass judgement stands for the rest
        p.unexplained = float(u[k])
        _recheck(ctx, t, p, threshold)
        u[k] = p.unexplained
        if p.cause:
            causes.add(p.cause)


def _unexplained_difference(c: _Comparison) -> float:
    if not np.all(np.isfinite(c.u)):
        return math.inf
    denom = np.linalg.norm(c.a) + np.linalg.norm(c.n)
    if denom == 0.0:
        return 0.0 if not np.any(c.u) else math.inf
    return float(np.linalg.norm(c.u) / denom)


def _entry_errors(c: _Comparison) -> np.ndarray:
    """Per-quantity relative errors |a − n| / (|a| + |n|), as float32 (for histograms)."""
    err = np.abs(c.a - c.n)
    denom = np.abs(c.a) + np.abs(c.n)
    with np.errstate(divide="ignore", invalid="ignore"):
        np.divide(err, denom, out=err, where=denom > 0)
    err[denom == 0] = 0.0
    return err.astype(np.float32)


# --------------------------------------------------------------------------------------------
# Per-tensor strategies


def _settle(ctx: _Context, t: _Tensor, probes: List[_Probe], threshold: float) -> None:
    """First-pass floors for every direction probe, then re-checks of the suspicious ones."""
    if not probes:
        return
    a = np.array([p.analytic for p in probes])
    n = np.array([p.numeric for p in probes])
    mags = np.array([p.analytic_mag for p in probes])
    steps = np.array([p.step for p in probes])
    u, causes = _first_pass(ctx, t, a, n, mags, steps)
    for p, uk in zip(probes, u.tolist()):
        p.unexplained = uk
        if uk < abs(p.analytic - p.numeric):
            p.cause = "round-off"
    for k in _suspects(a, n, u, threshold, len(probes)).tolist():
        _recheck(ctx, t, probes[k], threshold)


def _direction_probes(ctx: _Context, t: _Tensor, rng: np.random.Generator, k: int) -> List[_Probe]:
    if t.size == 1:
        return [_probe(ctx, t, 0, 1, None)]
    return [_probe(ctx, t, 0, t.size, int(rng.integers(2**63))) for _ in range(k)]


def _localise(ctx: _Context, t: _Tensor, probes: List[_Probe], rng: np.random.Generator) -> Optional[_Probe]:
    """Bisect over the tensor's entries, following the half that carries the error, to one entry."""
    # the size of the error carried by a range, estimated from a unit-direction gap: |gap|·√m
    est = math.sqrt(np.mean([((p.analytic - p.numeric) ** 2) * (p.hi - p.lo) for p in probes]))
    lo, hi = 0, t.size
    threshold = ctx.threshold_of[t.name]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        est_a = _carried(ctx, t, lo, mid, rng, threshold)
        if est > 0 and (est_a / est) ** 2 >= CLEAR_SHARE:
            hi, est = mid, est_a
            continue
        # not clearly in the first half: measure the second half too and follow the larger
        est_b = _carried(ctx, t, mid, hi, rng, threshold)
        if est > 0 and max(est_a, est_b) ** 2 < 0.5 * est * est:
            # neither half carries the error its parent showed: a kink upset a probe; refine both
            est_a = _carried(ctx, t, lo, mid, rng, threshold, refine=True)
            est_b = _carried(ctx, t, mid, hi, rng, threshold, refine=True)
        if est_a >= est_b:
            hi, est = mid, est_a
        else:
            lo, est = mid, est_b
    return _probe(ctx, t, lo, lo + 1, None)


def _carried(
    ctx: _Context, t: _Tensor, lo: int, hi: int, rng: np.random.Generator, threshold: float, refine: bool = False
) -> float:
    """The size of the gradient error carried by entries ``[lo, hi)``: |gap|·√m of a unit-direction probe.

    With ``refine``, a probe whose estimate moves when the step shrinks (a kink crossed) is refined
    until it settles.
    """
    p = _probe(ctx, t, lo, hi, None if hi - lo == 1 else int(rng.integers(2**63)), boost=False)
    trail = _refine(ctx, t, p, threshold) if refine and _moves(ctx, t, p) else [(p.step, p.numeric)]
    return abs(p.analytic - trail[-1][1]) * math.sqrt(hi - lo)


def _moves(ctx: _Context, t: _Tensor, p: _Probe) -> bool:
    """Whether the probe's estimate changes at a quarter of the step (one extra pair of evaluations)."""
    d, _, _ = _central(ctx.ev, t, p.lo, p.hi, p.seed, p.step / RECHECK_RATIO)
    return abs(d - p.numeric) > 2 * _floor(ctx, t, p, p.step / RECHECK_RATIO) + 1e-3 * abs(p.analytic - p.numeric)


def _verdict(
    t: _Tensor, c: _Comparison, method: str, checked: int, threshold: float,
    worst: Optional[Tuple[int, float, float]] = None, localised: bool = True,
) -> ParamCheck:
    """The tensor's verdict. ``worst`` is ``(flat index, analytic, numeric)`` of the worst entry found."""
    difference = relative_difference(c.a, c.n) if c.a.size else 0.0
    grad_finite = t.grad_finite
    finite = math.isfinite(difference) and grad_finite
    passed = finite and (difference < threshold or _unexplained_difference(c) < threshold)
    causes = tuple(sorted(c.causes)) if passed and difference >= threshold else ()
    if t.grad.dtype.kind == "f" and np.finfo(t.grad.dtype).bits < 64:
        causes = tuple(x if x != "round-off" else f"{t.grad.dtype.name} precision" for x in causes)
    note = ""
    if not finite:
        note = "a NaN or infinity in the gradient or the loss"
    elif causes:
        verb = "explain" if len(causes) > 1 else "explains"
        note = (
            f"difference {difference:.2e} is above the threshold, but {' and '.join(causes)} {verb} the gap"
            + (" (a kink such as ReLU at 0 lies within ±ε of the point)" if "kink" in causes else "")
        )
    elif not localised:
        note = "not localised: the evaluation budget was spent"
    if worst is None and c.indices is not None and c.a.size:
        gap = np.abs(c.a - c.n)
        k = int(np.lexsort((np.nan_to_num(gap, nan=np.inf), c.u))[-1])
        worst = (int(c.indices[k]), float(c.a[k]), float(c.n[k]))
    if not grad_finite:
        worst = (int(np.argmax(~np.isfinite(t.grad))), math.nan, math.nan)
    return ParamCheck(
        name=t.name,
        shape=tuple(t.shape),
        difference=difference,
        passed=passed,
        checked=checked,
        worst_index=None if worst is None else tuple(int(i) for i in np.unravel_index(worst[0], t.shape)),
        threshold=threshold,
        method=method,
        probes=int(c.a.size),
        max_abs_error=float(np.max(np.abs(c.a - c.n))) if c.a.size else 0.0,
        entry_errors=_entry_errors(c),
        worst_analytic=None if worst is None else worst[1],
        worst_numeric=None if worst is None else worst[2],
        explained_by=causes,
        localised=localised,
        note=note,
    )


# --------------------------------------------------------------------------------------------
# The public entry point


def check_gradients(
    loss_fn: Callable[[Any], float],
    params: Params,
    grads: Grads,
    *,
    sample: Union[str, int] = "auto",
    epsilon: Optional[float] = None,
    threshold: Optional[float] = None,
    seed: Optional[int] = None,
    progress: Optional[Progress] = None,
) -> CheckResult:
    """Compare the analytic gradients ``grads`` with central differences of ``loss_fn`` at ``params``.

    ``sample="all"`` checks every component (the documents' loop); an int ``k`` checks ``k``
    components of each tensor drawn with ``seed``; ``"auto"`` (the default) checks every tensor
    along random ±1 directions and bisects a failing one down to its worst entry, within
    ``max(400, 20 × tensors)`` loss evaluations (the full loop when that is cheaper).
    ``progress(done, planned)`` is called after each loss evaluation when given.

    After the call every array in ``params`` is bitwise what it was, also when ``loss_fn`` raises.

    >>> import numpy as np
    >>> p = {"W": np.array([[1.0, -2.0]])}
    >>> bad = check_gradients(lambda q: float(np.sum(q["W"] ** 2)), p, {"dW": 3 * p["W"]}, seed=1)
    >>> bad.passed, bad.failed
    (False, ('W',))
    """
    sample = _validate_sample(sample)
    epsilon = _validate_positive("epsilon", epsilon)
    threshold = _validate_positive("threshold", threshold)
    seed = _validate_seed(seed)
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, loss_fn(params) -> float; got {type(loss_fn).__name__}")

    pairs = named_tensors(params)
    keys = list(params.keys()) if isinstance(params, Mapping) else list(range(len(pairs)))
    tensors: List[_Tensor] = []
    for index, ((name, array), key) in enumerate(zip(pairs, keys)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"parameter {name!r} must be a NumPy float array; got {type(array).__name__}")
        if array.dtype.kind != "f":
            raise TypeError(f"parameter {name!r} must be a float array; got dtype {array.dtype}")
        grad = np.asarray(_lookup_grad(grads, name, index, len(pairs)))
        if grad.shape != array.shape:
            raise ValueError(
                f"gradient of parameter {name!r} has shape {grad.shape}, but the parameter has shape {array.shape}"
            )
        if grad.dtype.kind not in "fiu":
            raise TypeError(f"gradient of parameter {name!r} must be a real array; got dtype {grad.dtype}")
        tensors.append(_Tensor(name, key, array, grad, params))
    threshold_of = {t.name: threshold if threshold is not None else default_threshold(t.array.dtype) for t in tensors}
    overall_threshold = threshold if threshold is not None else max(threshold_of.values(), default=1e-7)

    total_entries = sum(t.size for t in tensors)
    budget = max(AUTO_BUDGET, 20 * len(tensors))
    full = sample == "all" or (sample == "auto" and total_entries <= AUTO_FULL_LOOP_MAX_ENTRIES)
    planned = (
        2 + 2 * total_entries if full
        else 2 + 2 * sum(min(sample, t.size) for t in tensors) if isinstance(sample, int)
        else min(budget, 2 + 2 * AUTO_DIRECTIONS * len(tensors))
    )
    ev = _Evaluator(loss_fn, progress, planned)
    rng = np.random.default_rng(seed)

    # randomness probe: the same parameters must give the same loss
    j0 = ev(params)
    if not math.isfinite(j0):
        note = f"the loss is {j0} at the given parameters (training diverged?): no gradient can be checked"
        per_nan = {
            t.name: ParamCheck(t.name, tuple(t.shape), math.nan, False, 0, None, threshold_of[t.name], note=note)
            for t in tensors
        }
        return CheckResult(
            difference=math.nan, passed=False, threshold=overall_threshold, per_param=per_nan,
            failed=tuple(per_nan), loss_evaluations=ev.count, seed=seed, sample=sample, epsilon=epsilon,
        )
    j0b = ev(params)
    lowest = min((np.finfo(t.array.dtype).eps for t in tensors), default=np.finfo(np.float64).eps)
    lowest = max(lowest, np.finfo(np.float64).eps)
    if abs(j0 - j0b) > 1e3 * lowest * max(abs(j0), abs(j0b)):
        raise DropoutActiveError(
            f"loss_fn returned {j0!r} and then {j0b!r} for the same parameters: randomness (dropout?) is active "
            "in the loss, and a gradient check cannot work through it. Switch dropout off for the check "
            "(keep_prob=1, or pass a loss_fn without dropout) and compute grads without it."
        )
    ctx = _Context(ev, j0, epsilon, threshold_of)

    per_param: Dict[str, ParamCheck] = {}
    notes: List[str] = []
    not_localised: List[str] = []
    if full or isinstance(sample, int):
        method = "all" if full else "sampled"
        parts: List[_Comparison] = []
        for t in tensors:
            if full:
                indices = np.arange(t.size)
            else:
                indices = np.sort(rng.choice(t.size, size=min(int(sample), t.size), replace=False))
            parts.append(_coordinate_pass(ctx, t, indices, threshold_of[t.name]))
        if sample == "auto":
            ev.limit = budget  # the sweep fits (≤ 2 + 2 × 100); re-checks stop at the budget
        for t, comparison in zip(tensors, parts):
            _coordinate_rechecks(ctx, t, comparison, threshold_of[t.name])
            per_param[t.name] = _verdict(t, comparison, method, comparison.a.size, threshold_of[t.name])
        ev.limit = None
    else:
        method = "directions"
        ev.limit = budget  # detection (2 + 4 per tensor) always fits; refinement and localisation stop at it
        found = {t.name: _direction_probes(ctx, t, rng, AUTO_DIRECTIONS) if t.size else [] for t in tensors}
        for t in tensors:
            _settle(ctx, t, found[t.name], threshold_of[t.name])
        comparisons = {t.name: _Comparison.of_probes(found[t.name]) for t in tensors}
        verdicts = {t.name: _verdict(t, comparisons[t.name], method, t.size, threshold_of[t.name]) for t in tensors}
        # localise the failing tensors, worst first, within the budget
        order = sorted((t for t in tensors if not verdicts[t.name].passed), key=lambda t: -verdicts[t.name].difference)
        for t in order:
            probes = found[t.name]
            if t.size == 1:
                entry: Optional[_Probe] = probes[0]
            elif ev.count + 2 * math.ceil(math.log2(t.size)) + 2 > budget:
                entry = None  # not even an unambiguous bisection fits
            else:
                try:
                    entry = _localise(ctx, t, probes, rng)
                except _Budget:
                    entry = None
            if entry is None:
                not_localised.append(t.name)
            verdicts[t.name] = _verdict(
                t, comparisons[t.name], method, t.size, threshold_of[t.name],
                worst=None if entry is None else (entry.lo, entry.analytic, entry.numeric),
                localised=entry is not None,
            )
        ev.limit = None
        per_param = {t.name: verdicts[t.name] for t in tensors}
        parts = [comparisons[t.name] for t in tensors]
        if not_localised:
            notes.append(f"not localised within the budget of {budget} loss evaluations: {', '.join(not_localised)}")
    a = np.concatenate([c.a for c in parts]) if parts else np.zeros(0)
    n = np.concatenate([c.n for c in parts]) if parts else np.zeros(0)
    difference = relative_difference(a, n) if a.size else 0.0
    failed = tuple(name for name, pc in per_param.items() if not pc.passed)
    return CheckResult(
        difference=difference,
        passed=not failed,
        threshold=overall_threshold,
        per_param=per_param,
        failed=failed,
        loss_evaluations=ev.count,
        seed=seed,
        sample=sample,
        epsilon=epsilon,
        not_localised=tuple(not_localised),
        notes=tuple(notes),
    )
