"""Pure numerical building blocks: the documents' formulas (1) and (2), the flattening of
parameters into one vector, and the default step sizes and thresholds per dtype.

Nothing here prints, reads files or touches global randomness.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Sequence, Tuple, Union

import numpy as np

from .errors import GradWatchError
from .tolerances import THRESHOLDS, threshold_for  # noqa: F401  (THRESHOLDS lives with the other tolerances)

ArrayLike = Union[float, np.ndarray]


def numerical_gradient(f: Callable[[Any], Any], theta: ArrayLike, epsilon: float = 1e-7) -> ArrayLike:
    """Two-sided difference ``(f(θ+ε) − f(θ−ε)) / 2ε``, formula (1) of the documents.

    ``theta`` is a float (the result is a float) or an array (the result has its shape, one
    component at a time, ``f`` taking an array of that shape). ``theta`` is left unchanged.

    >>> round(numerical_gradient(lambda t: t**3, 1.0, epsilon=0.01), 10)
    3.0001
    """
    if isinstance(epsilon, (bool, np.bool_)) or not isinstance(epsilon, (int, float, np.integer, np.floating)) \
            or not (0 < epsilon < math.inf):
        raise ValueError(f"epsilon must be a positive finite number; got {epsilon!r}")
    if np.ndim(theta) == 0 and not isinstance(theta, np.ndarray):
        t = float(theta)
        return (_scalar(f(t + epsilon)) - _scalar(f(t - epsilon))) / (2 * epsilon)
    work = np.array(theta, dtype=np.result_type(np.asarray(theta).dtype, np.float64), copy=True)
    out = np.empty(work.shape, dtype=np.float64)
    flat = work.reshape(-1)
    out_flat = out.reshape(-1)
    for i in range(flat.size):
        saved = flat[i]
        try:
            flat[i] = saved + epsilon
            j_plus = _scalar(f(work))
            flat[i] = saved - epsilon
            j_minus = _scalar(f(work))
        finally:
            flat[i] = saved
        out_flat[i] = (j_plus - j_minus) / (2 * epsilon)
    return out


def _scalar(value: Any) -> float:
    """What ``f`` returned, as a float: a real scalar or a one-element array."""
    array = np.asarray(value) if value is not None and not isinstance(value, (str, bytes)) else None
    if array is None or array.size != 1 or array.dtype.kind not in "fiub":
        shown = f"an array of shape {array.shape}" if array is not None and array.size != 1 else f"{value!r:.60}"
        raise TypeError(f"f must return a real scalar; got {shown} ({type(value).__name__})")
    return float(array.reshape(()))


def norm2(x: Union[ArrayLike, Sequence[float]]) -> float:
    """‖x‖₂ in float64 whatever the entries' size: where their squares overflow (1e200) or underflow
    (1e-200), again over the entries scaled by the largest. NaN when an entry is NaN.

    >>> norm2([3e-200, 4e-200])
    5e-200
    """
    a = np.asarray(x, dtype=np.float64).reshape(-1)
    with np.errstate(over="ignore", under="ignore"):
        squares = float(np.dot(a, a))
    if math.isfinite(squares) and squares > _SAFE_SQUARES:
        return math.sqrt(squares)
    top = float(np.max(np.abs(a), initial=0.0))
    if top == 0.0 or not math.isfinite(top):
        return top
    scaled = a / top
    return top * math.sqrt(float(np.dot(scaled, scaled)))


#: Sums of squares above this lost no entry to underflow that could matter to their root (a square
#: below float64's smallest normal is below this by a factor ~1e16: under round-off).
_SAFE_SQUARES = 1e-290


def relative_difference(grad: ArrayLike, gradapprox: ArrayLike) -> float:
    """Formula (2): ``‖grad − gradapprox‖₂ / (‖grad‖₂ + ‖gradapprox‖₂)``; 0.0 when both are zero.

    A NaN or infinity in either argument gives NaN (never a pass).

    >>> relative_difference([1.0, 2.0], [1.0, 2.0])
    0.0
    """
    if np.iscomplexobj(grad) or np.iscomplexobj(gradapprox):
        raise TypeError("grad and gradapprox must be real; got complex values (formula (2) would drop their "
                        "imaginary parts)")
    g = np.asarray(grad, dtype=np.float64)
    a = np.asarray(gradapprox, dtype=np.float64)
    if g.shape != a.shape:
        raise ValueError(f"grad and gradapprox must have the same shape; got {g.shape} and {a.shape}")
    if not (np.all(np.isfinite(g)) and np.all(np.isfinite(a))):
        return float("nan")
    scale = max(float(np.max(np.abs(g), initial=0.0)), float(np.max(np.abs(a), initial=0.0)))
    if scale == 0.0:
        return 0.0
    g, a = g / scale, a / scale  # the formula is scale-free; scaled, 1e200-sized entries do not overflow it
    return norm2(g - a) / (norm2(g) + norm2(a))


@dataclass(frozen=True)
class Layout:
    """Where each tensor lives inside the flat vector: names, shapes, dtypes, in order."""

    names: Tuple[str, ...]
    shapes: Tuple[Tuple[int, ...], ...]
    dtypes: Tuple[np.dtype, ...]

    @property
    def sizes(self) -> Tuple[int, ...]:
        return tuple(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    @property
    def offsets(self) -> Tuple[int, ...]:
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.sizes)]))


def named_tensors(params: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]) -> List[Tuple[str, np.ndarray]]:
    """``params`` as ``(name, array)`` pairs: a mapping keeps its keys, a list or tuple is named ``"0"``, ``"1"``…"""
    if isinstance(params, Mapping):
        seen: Dict[str, Any] = {}
        for k in params:
            if str(k) in seen:
                raise GradWatchError(f"params keys {seen[str(k)]!r} and {k!r} are both named {str(k)!r}: a report, a "
                                     "layout and a gradient key could not tell them apart; give each tensor its own name")
            seen[str(k)] = k
        return [(str(k), v) for k, v in params.items()]
    if isinstance(params, (list, tuple)):
        return [(str(i), v) for i, v in enumerate(params)]
    raise TypeError(
        f"params must be a dict of name -> ndarray, or a list/tuple of ndarrays; got {type(params).__name__}"
    )


def params_to_vector(params: Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]) -> Tuple[np.ndarray, Layout]:
    """Reshape every tensor into a column and concatenate them, in order: the documents' θ.

    The vector's dtype holds every tensor exactly (float64 for a float64 or mixed model), so
    ``vector_to_params(*params_to_vector(p))`` gives back ``p`` bitwise.
    """
    pairs = named_tensors(params)
    arrays = [np.asarray(v) for _, v in pairs]
    for (name, _), arr in zip(pairs, arrays):
        if not np.issubdtype(arr.dtype, np.floating):
            raise TypeError(f"parameter {name!r} must be a float array; got dtype {arr.dtype}")
    layout = Layout(
        names=tuple(n for n, _ in pairs),
        shapes=tuple(a.shape for a in arrays),
        dtypes=tuple(a.dtype for a in arrays),
    )
    dtype = np.result_type(*layout.dtypes) if arrays else np.float64
    theta = np.concatenate([a.reshape(-1).astype(dtype) for a in arrays]) if arrays else np.zeros(0)
    return theta, layout


def vector_to_params(theta: np.ndarray, layout: Layout) -> Dict[str, np.ndarray]:
    """The inverse of :func:`params_to_vector`: a new dict of fresh arrays in the recorded shapes and dtypes."""
    theta = np.asarray(theta)
    total = layout.offsets[-1]
    if theta.shape != (total,):
        raise ValueError(f"theta must be a vector of {total} entries for this layout; got shape {theta.shape}")
    out: Dict[str, np.ndarray] = {}
    for name, shape, dtype, lo, hi in zip(layout.names, layout.shapes, layout.dtypes, layout.offsets, layout.offsets[1:]):
        out[name] = theta[lo:hi].astype(dtype).reshape(shape)
    return out


def default_epsilon(dtype: np.dtype) -> float:
    """The step that balances truncation (∝ ε²) and round-off (∝ 1/ε) for central differences: ∛(machine ε)."""
    return float(np.cbrt(np.finfo(np.dtype(dtype)).eps))


def default_threshold(dtype: np.dtype) -> float:
    """The verdict threshold on formula (2) for parameters of this dtype (see :data:`THRESHOLDS`)."""
    return threshold_for(dtype)
