"""Layer checks: ``check_backward``, one layer's backward pass against its forward pass.

A layer maps inputs to one or several outputs; its backward pass maps an upstream gradient
``dout`` (one array per output) to a gradient per input. ``check_backward`` reduces that to
:func:`gradwatch.check_gradients`: the scalar is ``⟨forward(q), dout⟩`` summed over the outputs
(in float64), and the gradients are what ``backward(inputs, dout)`` returns. Sampling, verdicts,
noise handling, localisation, the evaluation budget and the bitwise restore are check_gradients'
own: nothing here perturbs an array.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable, Union

import numpy as np

from .check import CheckResult, check_gradients
from .errors import GradWatchError
from .inputs import Guard, gradient_arrays
from .numerics import named_tensors

Inputs = Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]
Forward = Callable[[Any], Any]
Backward = Callable[[Any, Any], Any]

#: Mixed into the seed for the stream that draws ``dout`` (check_gradients draws from the seed itself).
_DOUT_STREAM = 0x646F7574


class _Structure:
    """An output (or ``dout``) taken apart: ``kind`` is "array", "sequence" or "dict"; ``keys`` the
    indices or dict keys; ``leaves`` the arrays, in that order."""

    def __init__(self, kind: str, keys: list[Any], leaves: list[np.ndarray], container: type):
        self.kind = kind
        self.keys = keys
        self.leaves = leaves
        self.container = container

    def label(self, role: str, k: int) -> str:
        if self.kind == "array":
            return role
        return f"{role}[{self.keys[k]!r}]" if self.kind == "dict" else f"{role}[{self.keys[k]}]"

    def describe(self) -> str:
        if self.kind == "array":
            return f"an array of shape {self.leaves[0].shape}"
        if self.kind == "dict":
            return f"a dict with keys {', '.join(repr(k) for k in self.keys)}"
        return f"a {self.container.__name__} of {len(self.leaves)} arrays"

    def rebuild(self, leaves: list[np.ndarray]) -> Any:
        """The same structure holding ``leaves`` (a tuple stays a tuple, a dict keeps its key order)."""
        if self.kind == "array":
            return leaves[0]
        if self.kind == "dict":
            return dict(zip(self.keys, leaves))
        return tuple(leaves) if self.container is tuple else list(leaves)


_ALLOWED = "an array, or a tuple, list or dict of arrays"


def _leaf(value: Any, label: str) -> np.ndarray:
    if isinstance(value, (list, tuple, dict)):
        raise TypeError(
            f"{label} is a {type(value).__name__}: each output must be an array ({_ALLOWED}; not nested). "
            "Does forward return (out, cache)? Return the output alone"
        )
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (np.ndarray, np.generic, float, int)):
        raise TypeError(f"{label} must be a NumPy array; got {type(value).__name__} ({_ALLOWED})")
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(f"{label} must be a real (float) array; got dtype {array.dtype}")
    return array


def _take_apart(value: Any, role: str) -> _Structure:
    """``value`` as a :class:`_Structure`; a TypeError saying what is allowed for anything else."""
    if isinstance(value, Mapping):
        keys = list(value.keys())
        s = _Structure("dict", keys, [], dict)
        s.leaves = [_leaf(value[k], s.label(role, i)) for i, k in enumerate(keys)]
    elif isinstance(value, (tuple, list)):
        s = _Structure("sequence", list(range(len(value))), [], type(value))
        s.leaves = [_leaf(v, s.label(role, i)) for i, v in enumerate(value)]
    else:
        s = _Structure("array", [None], [], np.ndarray)
        s.leaves = [_leaf(value, role)]
    if not s.leaves:
        raise ValueError(f"{role} is an empty {type(value).__name__}: it must hold at least one array")
    return s


def _same_structure(out: _Structure, dout: _Structure) -> None:
    """Raise a ValueError naming the difference between the output's and dout's structures."""
    mismatch = out.kind != dout.kind
    if not mismatch and out.kind == "dict" and set(out.keys) != set(dout.keys):
        missing = [k for k in out.keys if k not in dout.keys]
        extra = [k for k in dout.keys if k not in out.keys]
        raise ValueError(
            f"dout's keys do not match the output's: missing {missing}, unexpected {extra} "
            f"(the output is {out.describe()})"
        )
    if mismatch or len(out.leaves) != len(dout.leaves):
        raise ValueError(
            f"dout must have the structure of forward's output: the output is {out.describe()}, "
            f"dout is {dout.describe()}"
        )


def _given_dout(out: _Structure, dout: Any) -> list[np.ndarray]:
    """The caller's ``dout``, checked against the output, as float64 copies in the output's order."""
    d = _take_apart(dout, "dout")
    _same_structure(out, d)
    by_key = dict(zip(d.keys, d.leaves))
    leaves: list[np.ndarray] = []
    for k, key in enumerate(out.keys):
        given = by_key[key] if out.kind == "dict" else d.leaves[k]
        if given.shape != out.leaves[k].shape:
            raise ValueError(
                f"{out.label('dout', k)} has shape {given.shape}, "
                f"but {out.label('output', k)} has shape {out.leaves[k].shape}"
            )
        if not np.all(np.isfinite(given)):
            raise ValueError(f"{out.label('dout', k)} holds a NaN or infinity; dout must be finite")
        leaves.append(np.array(given, dtype=np.float64, copy=True))
    if not any(np.any(leaf) for leaf in leaves):
        raise ValueError("dout is all zeros: <forward(inputs), dout> is then 0 whatever the layer computes, and every "
                         "gradient would be compared with 0; pass a nonzero dout, or dout=None for a random one")
    return leaves


def _drawn_dout(out: _Structure, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng([_DOUT_STREAM, seed])
    return [rng.standard_normal(leaf.shape) for leaf in out.leaves]


def _inputs(inputs: Inputs) -> list[tuple[str, np.ndarray]]:
    pairs = named_tensors(inputs)
    if not pairs:
        raise ValueError("inputs is empty: give the layer's inputs and parameters as a dict name -> float array")
    for name, array in pairs:
        if not isinstance(array, np.ndarray):
            raise TypeError(
                f"input {name!r} must be a NumPy float array; got {type(array).__name__} "
                "(bind constants such as indices, masks and hyper-parameters by closure)"
            )
        if array.dtype.kind != "f":
            raise TypeError(
                f"input {name!r} must be a float array; got dtype {array.dtype} "
                "(bind constants such as indices, masks and hyper-parameters by closure)"
            )
    return pairs


def _gradients(returned: Any, pairs: list[tuple[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """What ``backward`` returned, checked and keyed ``"d" + name`` for check_gradients."""
    names = [name for name, _ in pairs]
    if isinstance(returned, Mapping):
        raw = gradient_arrays(returned, names, source="what backward returned")
    elif isinstance(returned, (tuple, list)):
        if len(returned) != len(pairs):
            raise GradWatchError(
                f"backward returned a {type(returned).__name__} of {len(returned)} gradients, but there are "
                f"{len(pairs)} inputs ({', '.join(names)}): return one per input in that order, or a dict "
                f"keyed like {'d' + names[0]!r} or {names[0]!r}"
            )
        raw = list(returned)
    elif isinstance(returned, np.ndarray) and len(pairs) == 1:
        raw = [returned]
    else:
        raise GradWatchError(
            f"backward must return a dict keyed like {'d' + names[0]!r} or {names[0]!r}, or a tuple/list of "
            f"one gradient per input ({', '.join(names)}); got {type(returned).__name__}"
        )
    grads: dict[str, np.ndarray] = {}
    for (name, array), grad in zip(pairs, raw):
        if not isinstance(grad, np.ndarray) or grad.dtype.kind not in "fiu":
            what = f"dtype {grad.dtype}" if isinstance(grad, np.ndarray) else type(grad).__name__
            raise GradWatchError(f"backward's gradient for input {name!r} must be a real array; got {what}")
        if grad.shape != array.shape:
            raise GradWatchError(
                f"backward's gradient for input {name!r} has shape {grad.shape}, but the input has shape {array.shape}"
            )
        grads["d" + name] = grad
    return grads


def _validate_seed(seed: Any) -> int:
    if seed is None:
        entropy = np.random.SeedSequence().entropy
        return int(entropy) % (2**32) if isinstance(entropy, int) else 0
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be None or a non-negative int; got {seed!r}")
    return int(seed)


def _checked_output(forward: Forward, inputs: Inputs) -> _Structure:
    out = _take_apart(forward(inputs), "output")
    for k, leaf in enumerate(out.leaves):
        if not np.all(np.isfinite(leaf)):
            raise GradWatchError(
                f"{out.label('output', k)} holds a NaN or infinity at the given inputs: "
                "a layer check needs a finite output"
            )
    return out


def _scalar(out: _Structure, douts: list[np.ndarray]) -> Callable[[Any], float]:
    """``value -> ⟨value, dout⟩`` in float64, checking that the output keeps its structure."""
    flat = [d.reshape(-1) for d in douts]

    def inner(value: Any) -> float:
        now = _take_apart(value, "output")
        if now.kind != out.kind or now.keys != out.keys:
            raise GradWatchError(f"forward's output changed structure: it was {out.describe()}, now {now.describe()}")
        total = 0.0
        for k, (leaf, d) in enumerate(zip(now.leaves, flat)):
            if leaf.shape != out.leaves[k].shape:
                raise GradWatchError(
                    f"{out.label('output', k)} changed shape from {out.leaves[k].shape} to {leaf.shape} between calls"
                )
            total += float(np.dot(leaf.reshape(-1).astype(np.float64, copy=False), d))
        return total

    return inner


def check_backward(
    forward: Forward,
    backward: Backward,
    inputs: Inputs,
    *,
    dout: Any = None,
    sample: str | int = "auto",
    epsilon: float | None = None,
    threshold: float | None = None,
    seed: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CheckResult:
    """Check one layer's ``backward`` against central differences of ``⟨forward(inputs), dout⟩``.

    ``inputs`` is a dict name -> float array (or a list/tuple) of what the layer is differentiated
    by, inputs and parameters alike; constants are bound by closure. ``forward(inputs)`` returns an
    array, or a tuple, list or dict of arrays, computed from the mapping it is handed.
    ``backward(inputs, dout)`` returns the gradient of ``⟨forward(inputs), dout⟩`` with respect to
    each input, keyed like grads (``"dx"`` or ``"x"``) or as a sequence in the inputs' order; it is
    handed its own float64 copy of ``dout``, in the output's structure, and may change it.
    ``dout=None`` draws a standard normal upstream gradient from ``seed``; ``result.seed`` replays
    the whole check. Sampling, verdicts, localisation, budget and restore are those of
    :func:`gradwatch.check_gradients`; ``forward`` is called once more, first, to learn the outputs,
    and ``backward`` right after that call (a layer object that caches in ``forward`` works).
    A loss layer whose backward ignores ``dout`` is checked with ``dout=1.0``.

    >>> import numpy as np
    >>> w = np.array([[1.0, 2.0], [3.0, -1.0]])
    >>> layer = lambda q: q["x"] @ w                        # out = x·w
    >>> grad = lambda q, dout: {"dx": dout @ w.T}           # right
    >>> check_backward(layer, grad, {"x": np.array([[0.5, -1.5]])}, seed=0).passed
    True
    >>> check_backward(layer, lambda q, dout: {"dx": dout @ w}, {"x": np.array([[0.5, -1.5]])}, seed=0).failed
    ('x',)
    """
    if not callable(forward):
        raise TypeError(f"forward must be callable, forward(inputs) -> array(s); got {type(forward).__name__}")
    if not callable(backward):
        raise TypeError(f"backward must be callable, backward(inputs, dout) -> gradients; got {type(backward).__name__}")
    pairs = _inputs(inputs)
    seed = _validate_seed(seed)
    guard = Guard(inputs)
    try:
        out = _checked_output(forward, inputs)
        douts = _drawn_dout(out, seed) if dout is None else _given_dout(out, dout)
        grads = _gradients(backward(inputs, out.rebuild([d.copy() for d in douts])), pairs)
    finally:
        changed = guard.changed()
        if changed:
            guard.restore()
        guard.tidy()
    if changed:
        raise GradWatchError(
            f"forward or backward changed inputs {', '.join(repr(n) for n in changed)} (in place, or by replacing "
            "the array); a layer must leave its inputs as it found them. They were restored."
        )
    scalar = _scalar(out, douts)

    def loss_fn(q: Any) -> float:
        return scalar(forward(q))

    return check_gradients(
        loss_fn, inputs, grads, sample=sample, epsilon=epsilon, threshold=threshold, seed=seed, progress=progress
    )


__all__ = ["check_backward"]
