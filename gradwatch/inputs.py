"""The check's inputs: option validation, which gradient belongs to which parameter, and the
parameter adapter (:class:`Slot`) that perturbs one tensor and restores it bitwise.

float64 arrays are perturbed in place (so a loss that reads the user's arrays still sees the
perturbation); arrays of lower precision, and read-only ones, are checked through a float64 working
copy that exists only while that tensor is measured and is handed to ``loss_fn`` in a shallow copy
of the mapping. The user's arrays are never replaced.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, MutableMapping, Optional, Sequence, Set, Tuple, Union

import numpy as np

from .errors import GradWatchError
from .numerics import named_tensors, norm2

Params = Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]
Grads = Union[Mapping[Any, Any], Sequence[Any]]
Sample = Union[str, int]

CHUNK = 1 << 14


# --------------------------------------------------------------------------------------------
# Options


def normalise_sample(sample: Any) -> Optional[Sample]:
    """``"all"``, ``"auto"`` or a positive int as given (the int as a Python int); ``None`` for anything else."""
    if isinstance(sample, str) and sample in ("all", "auto"):
        return sample
    if isinstance(sample, (int, np.integer)) and not isinstance(sample, (bool, np.bool_)) and sample > 0:
        return int(sample)
    return None


def validate_sample(sample: Any) -> Sample:
    value = normalise_sample(sample)
    if value is None:
        raise ValueError(f'sample must be "all", "auto" or a positive int; got {sample!r}')
    return value


def validate_positive(name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be None or a positive number; got {value!r}")
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"{name} must be None or a positive finite number; got {value!r}")
    return number


def validate_seed(seed: Any) -> int:
    if seed is None:
        return int(int(np.random.SeedSequence().entropy) % (2**32))  # type: ignore[arg-type]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be None or a non-negative int; got {seed!r}")
    return int(seed)


def as_loss(value: Any) -> Tuple[float, Optional[np.dtype]]:
    """The loss as a Python float, and its NumPy dtype when it came as a NumPy float of another precision
    than float64 (an integer dtype for an integer loss); a clear error for anything but a real scalar."""
    if type(value) is float:  # the common case first
        return value, None
    if isinstance(value, np.ndarray):
        if value.size != 1:
            raise GradWatchError(f"loss_fn must return a scalar; got an array of shape {value.shape}")
        value = value.reshape(())[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise GradWatchError(f"loss_fn must return a real scalar; got {type(value).__name__}: {value!r:.60}")
    if isinstance(value, (int, np.integer)):
        return float(value), np.dtype(np.int64)  # quantised to whole units
    dtype = value.dtype if isinstance(value, np.floating) and value.dtype != np.float64 else None
    return float(value), dtype


# --------------------------------------------------------------------------------------------
# Which gradient is whose


def _convention(grads: Mapping[Any, Any], names: List[str], keys: Sequence[Any], source: str) -> Dict[str, Any]:
    """The key of each parameter's gradient: one convention ("d" + name, or the bare name) for all; else the
    parameters' own keys (ints: a list's positions, or a mapping's int keys)."""
    taken = set(names)
    prefixed = all("d" + n in grads for n in names)
    bare = all(n in grads for n in names)
    for n in names:
        if "d" + n not in grads or n not in grads:
            continue
        # a key that the one covering convention gives to another parameter explains itself: "dW" is the
        # bare gradient of a parameter "dW", or the prefixed gradient of a parameter "W"
        if not (prefixed and bare) and (("d" + n in taken and bare) or (n[:1] == "d" and n[1:] in taken and prefixed)):
            continue
        a, b = grads["d" + n], grads[n]
        if a is not b and not np.array_equal(np.asarray(a), np.asarray(b)):
            raise GradWatchError(
                f"{source} holds both {'d' + n!r} and {n!r} with different arrays: which one is the "
                f"gradient of parameter {n!r} is ambiguous; pass one convention"
            )
    if prefixed:
        return {n: "d" + n for n in names}
    if bare:
        return {n: n for n in names}
    if names and all(not isinstance(k, str) and k in grads for k in keys):
        return dict(zip(names, keys))
    missing = [n for n in names if "d" + n not in grads and n not in grads]
    shown = ", ".join(repr(k) for k in list(grads)[:12])
    if missing:
        n = missing[0]
        raise GradWatchError(
            f"no gradient for {n!r}: {source} has neither {'d' + n!r} nor {n!r} (its keys: {shown})"
        )
    raise GradWatchError(
        f"{source} mixes conventions: neither 'd' + name nor the bare name covers every parameter "
        f"({', '.join(names)}); its keys: {shown}"
    )


def gradient_arrays(grads: Grads, names: List[str], keys: Optional[Sequence[Any]] = None,
                    source: str = "grads") -> List[Any]:
    """The gradient of each named parameter, in order, by the contract's convention rule (``keys``: the
    parameters' own keys; a list's positions when not given)."""
    if isinstance(grads, Mapping):
        chosen = _convention(grads, names, list(range(len(names))) if keys is None else keys, source)
        return [grads[chosen[n]] for n in names]
    if isinstance(grads, (list, tuple)):
        if len(grads) != len(names):
            raise GradWatchError(f"grads is a sequence of {len(grads)} arrays but params holds {len(names)} tensors")
        return list(grads)
    raise TypeError(f"grads must be a dict or a list/tuple of arrays; got {type(grads).__name__}")


def check_no_aliasing(pairs: List[Tuple[str, np.ndarray]]) -> None:
    """Parameters that share memory (tied weights, views) cannot be perturbed one at a time."""
    for i, (name_a, a) in enumerate(pairs):
        for name_b, b in pairs[i + 1 :]:
            if np.may_share_memory(a, b) and np.shares_memory(a, b):
                raise GradWatchError(
                    f"parameters {name_a!r} and {name_b!r} share memory (tied weights, or one is a view of "
                    "the other): a check perturbs one tensor at a time and cannot tell their gradients "
                    "apart. Pass the shared array once, with its total gradient."
                )


# --------------------------------------------------------------------------------------------
# The parameter adapter


def _replaced(params: Params, replacements: Dict[Any, np.ndarray]) -> Any:
    if isinstance(params, Mapping):
        out: MutableMapping[Any, Any] = dict(params)
        out.update(replacements)
        return out
    seq = list(params)
    for key, value in replacements.items():
        seq[key] = value
    return tuple(seq) if isinstance(params, tuple) else seq


@dataclass
class Slot:
    """One parameter under check: its gradient (flat), where perturbations are written, and how to restore."""

    name: str
    key: Any
    array: np.ndarray
    grad: np.ndarray  # flat, real dtype
    in_place: bool
    scale: float  # max(1, RMS of the tensor): the step's unit

    @property
    def size(self) -> int:
        return int(self.array.size)

    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def grad_finite(self) -> bool:
        return all(bool(np.isfinite(self.grad[i : i + CHUNK]).all()) for i in range(0, self.size, CHUNK))

    @property
    def first_nonfinite(self) -> Optional[int]:
        """The flat index of the tensor's first infinite or NaN entry, or ``None``."""
        for lo, hi in chunks(0, self.size):
            bad = np.flatnonzero(~np.isfinite(self.values(lo, hi)))
            if bad.size:
                return lo + int(bad[0])
        return None

    @property
    def grad_precision(self) -> float:
        """The epsilon of the gradient's dtype (float64's for integer gradients)."""
        return float(np.finfo(self.grad.dtype).eps) if self.grad.dtype.kind == "f" else float(np.finfo(np.float64).eps)

    def grad_chunk(self, lo: int, hi: int) -> np.ndarray:
        return self.grad[lo:hi].astype(np.float64, copy=False)

    def grad_norm(self) -> float:
        """‖grad‖₂, chunk by chunk, by :func:`gradwatch.numerics.norm2` (no overflow at 1e160, no underflow
        at 1e-160)."""
        return norm2([norm2(self.grad_chunk(lo, hi)) for lo, hi in chunks(0, self.size)])

    def values(self, lo: int, hi: int) -> np.ndarray:
        """The tensor's entries ``[lo, hi)`` as float64 (a copy)."""
        if self.array.flags.c_contiguous:
            return self.array.reshape(-1)[lo:hi].astype(np.float64)
        return np.array(self.array.flat[lo:hi], dtype=np.float64)


def build_slot(name: str, key: Any, array: Any, grad: Any) -> Slot:
    if not isinstance(array, np.ndarray):
        raise TypeError(f"parameter {name!r} must be a NumPy float array; got {type(array).__name__}")
    if isinstance(array, (np.matrix, np.ma.MaskedArray)):  # their arithmetic is not an ndarray's
        raise TypeError(f"parameter {name!r} is a {type(array).__module__}.{type(array).__name__}: pass a plain "
                        "ndarray (np.asarray), with a loss that computes on ndarrays")
    if array.dtype.kind != "f":
        raise TypeError(f"parameter {name!r} must be a float array; got dtype {array.dtype}")
    if grad is None or isinstance(grad, (str, bytes)):
        raise TypeError(f"gradient of parameter {name!r} must be an array of shape {array.shape}; "
                        f"got {type(grad).__name__}: {grad!r:.40}")
    g = np.asarray(grad)
    if g.shape != array.shape:
        raise ValueError(f"gradient of parameter {name!r} has shape {g.shape}, but the parameter has shape {array.shape}")
    if g.dtype.kind not in "fiu":
        raise TypeError(f"gradient of parameter {name!r} must be a real array; got dtype {g.dtype}")
    if np.may_share_memory(g, array) and np.shares_memory(g, array):
        g = g.copy()  # perturbing the parameter must not move its gradient
    in_place = array.dtype == np.float64 and array.flags.writeable
    slot = Slot(name, key, array, g.reshape(-1), in_place, 1.0)
    sq = sum(float(np.dot(v, v)) for v in (slot.values(i, min(slot.size, i + CHUNK)) for i in range(0, slot.size, CHUNK)))
    slot.scale = max(1.0, math.sqrt(sq / slot.size)) if slot.size else 1.0
    return slot


def build_slots(params: Params, grads: Grads) -> List[Slot]:
    """Validate ``params`` and ``grads`` and pair them up, naming the culprit of any mismatch."""
    pairs = named_tensors(params)
    if not pairs:
        raise GradWatchError(f"params holds no tensors (got an empty {type(params).__name__}): there is nothing to check")
    keys: List[Any] = list(params.keys()) if isinstance(params, Mapping) else list(range(len(pairs)))
    names = [n for n, _ in pairs]
    for (name, array) in pairs:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"parameter {name!r} must be a NumPy float array; got {type(array).__name__}")
    check_no_aliasing(pairs)
    gradients = gradient_arrays(grads, names, keys)
    return [build_slot(n, k, a, g) for (n, a), k, g in zip(pairs, keys, gradients)]


class Workspace:
    """Writes perturbations into a set of slots and hands ``loss_fn`` the mapping that shows them.

    Building it makes the float64 working copies of substituted slots (they live only while those
    slots are measured); ``write(slot, lo, hi, values)`` sets entries; ``restore()`` puts every written
    range back bitwise. Use it as a context manager so restoring happens whatever ``loss_fn`` does.
    """

    def __init__(self, params: Params, slots: Sequence[Slot]):
        self.work: Dict[str, np.ndarray] = {}
        # what written ranges held (``None``: restored from the user's array); whole-tensor copies are kept
        # until the workspace closes, so that successive probes over a tensor copy it once
        self.saved: Dict[Tuple[str, int, int], Tuple[Slot, Optional[np.ndarray]]] = {}
        self.dirty: Set[Tuple[str, int, int]] = set()
        replacements: Dict[Any, np.ndarray] = {}
        for s in slots:
            if not s.in_place:
                copy = np.array(s.array, dtype=np.float64, order="C")
                self.work[s.name] = copy.reshape(-1)
                replacements[s.key] = copy
        self.mapping: Any = _replaced(params, replacements) if replacements else params
        self.base_loss: Optional[float] = None  # the loss at the working copies, once measured

    def _save(self, slot: Slot, lo: int, hi: int, current: Callable[[], Optional[np.ndarray]]) -> None:
        key = (slot.name, lo, hi)
        if key not in self.saved:
            self.saved[key] = (slot, current())
        self.dirty.add(key)

    def unlocked(self, slot: Slot) -> bool:
        """Whether the array that ``loss_fn`` sees for ``slot`` is writable, made so again if ``loss_fn``
        set it read-only (it was writable when the check began; the check writes to it, and restores it)."""
        array = slot.array if slot.in_place else self.work[slot.name]
        if not array.flags.writeable:
            try:
                array.flags.writeable = True
            except ValueError:  # its memory's owner is read-only now
                return False
        return True

    def flat(self, slot: Slot) -> Optional[np.ndarray]:
        """A writable flat view of what ``loss_fn`` sees for ``slot``; ``None`` for a non-contiguous array."""
        if slot.in_place and not slot.array.flags.c_contiguous:
            return None
        self.unlocked(slot)
        return slot.array.reshape(-1) if slot.in_place else self.work[slot.name]

    def writable_flat(self, slot: Slot, flat: np.ndarray) -> np.ndarray:
        """``flat`` (from :meth:`flat`), or a fresh writable view when ``loss_fn`` made it read-only since."""
        if flat.flags.writeable:
            return flat
        self.writable(slot)
        fresh = self.flat(slot)
        if fresh is None:
            raise GradWatchError(f"parameter {slot.name!r} stopped being contiguous during the check (by loss_fn)")
        return fresh

    def writable(self, slot: Slot) -> None:
        if not self.unlocked(slot):
            raise GradWatchError(
                f"parameter {slot.name!r} was made read-only during the check (by loss_fn) and cannot be "
                "made writable again: loss_fn must not change the arrays it is handed"
            )

    def write(self, slot: Slot, lo: int, hi: int, values: np.ndarray) -> None:
        self.writable(slot)
        if not slot.in_place:
            self._save(slot, lo, hi, lambda: None)  # restored from the user's array, exactly
            self.work[slot.name][lo:hi] = values
        elif slot.array.flags.c_contiguous:
            target = slot.array.reshape(-1)
            self._save(slot, lo, hi, lambda: target[lo:hi].copy())
            target[lo:hi] = values
        else:
            self._save(slot, lo, hi, lambda: np.array(slot.array.flat[lo:hi]))
            slot.array.flat[lo:hi] = values

    def target(self, slot: Slot, lo: int, hi: int) -> Optional[np.ndarray]:
        """A writable float64 view of entries ``[lo, hi)`` that ``loss_fn`` sees (their original values saved
        first); ``None`` for a non-contiguous array, which is written through :meth:`write`."""
        self.writable(slot)
        if not slot.in_place:
            self._save(slot, lo, hi, lambda: None)
            return self.work[slot.name][lo:hi]
        if not slot.array.flags.c_contiguous:
            return None
        target = slot.array.reshape(-1)[lo:hi]
        self._save(slot, lo, hi, target.copy)
        return target

    def base_view(self, slot: Slot, lo: int, hi: int) -> np.ndarray:
        """The unperturbed entries ``[lo, hi)`` without a copy: the saved values, or the user's own array
        (in its dtype: float32 entries widen exactly when added to float64)."""
        entry = self.saved.get((slot.name, lo, hi))
        if entry is not None and entry[1] is not None:
            return entry[1]
        if slot.array.flags.c_contiguous:
            return slot.array.reshape(-1)[lo:hi]
        return slot.values(lo, hi)

    def base(self, slot: Slot, lo: int, hi: int) -> np.ndarray:
        """The unperturbed float64 entries ``[lo, hi)`` of ``slot``, whatever has been written since."""
        entry = self.saved.get((slot.name, lo, hi))
        if entry is not None and entry[1] is not None:
            return entry[1]
        return slot.values(lo, hi)

    def restore(self) -> None:
        """Put every written range back bitwise; copies of parts of a tensor are dropped, whole ones kept."""
        while self.dirty:
            key = self.dirty.pop()
            slot, old = self.saved[key]
            _, lo, hi = key
            if not self.unlocked(slot):
                continue  # the guard names it: it cannot be put back
            if old is None:
                self.work[slot.name][lo:hi] = self.base_view(slot, lo, hi)
            elif slot.array.flags.c_contiguous:
                slot.array.reshape(-1)[lo:hi] = old
            else:
                slot.array.flat[lo:hi] = old
            if hi - lo < slot.size:
                del self.saved[key]

    def close(self) -> None:
        """Restore, and let go of every saved copy."""
        self.restore()
        self.saved.clear()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Fingerprint = Tuple[int, int, Tuple[int, ...], str]


class Guard:
    """What ``params`` held before a check, to tell whether ``loss_fn`` changed it (it must not) and to
    put it back. Arrays are copied up to ``copy_limit`` bytes in all (256 KiB: small models), and then
    compared byte for byte; above that only fingerprints are kept (shape, dtype and a checksum of the
    bytes), so that the check's memory stays within its budget: a change is then named but cannot be
    undone, and the checksum is blind to some changes (a reordering of the same bytes, the signs of a pair
    of entries). Replaced arrays, a list's elements, and keys a mapping lost or gained are always put
    right, and so is an array's shape or dtype changed in place where NumPy allows it."""

    def __init__(self, params: Params, copy_limit: int = 256 << 10):
        pairs = named_tensors(params)
        keys: List[Any] = list(params.keys()) if isinstance(params, Mapping) else list(range(len(pairs)))
        total = sum(int(a.nbytes) for _, a in pairs if isinstance(a, np.ndarray))
        self.params = params
        self.keys = list(keys)
        self.items: List[Any] = list(params) if isinstance(params, list) else []
        self.entries: List[Tuple[str, Any, Any, Optional[np.ndarray], Fingerprint]] = [
            (name, key, array, array.copy() if total <= copy_limit else None, _fingerprint(array))
            for (name, array), key in zip(pairs, keys)
            if isinstance(array, np.ndarray)
        ]
        self.writeable = [entry[2].flags.writeable for entry in self.entries]

    def _holds(self, key: Any, array: np.ndarray) -> bool:
        if isinstance(self.params, Mapping):
            return key in self.params and self.params[key] is array
        return bool(key < len(self.params) and self.params[key] is array)

    def _added(self) -> List[Any]:
        """Keys a mapping gained, or positions a list gained."""
        if isinstance(self.params, Mapping):
            known = set(self.keys)
            return [k for k in self.params if k not in known]
        return list(range(len(self.keys), len(self.params)))

    def changed(self) -> List[str]:
        """Names of the parameters that are no longer the same array, or no longer hold the same bytes,
        shape or dtype, and of keys (or list positions) that were added."""
        out = []
        for name, key, array, copy, fingerprint in self.entries:
            if not self._holds(key, array) or not _same(array, copy, fingerprint):
                out.append(name)
        return out + [str(k) for k in self._added()]

    def restore(self) -> bool:
        """Put every parameter back (the same objects, the same bytes); whether that was possible."""
        complete = True
        if isinstance(self.params, list):
            self.params[:] = self.items
        elif isinstance(self.params, MutableMapping):
            for k in self._added():
                del self.params[k]
        for _, key, array, copy, fingerprint in self.entries:
            if not self._holds(key, array) and isinstance(self.params, MutableMapping):
                self.params[key] = array
            if not _same(array, copy, fingerprint):
                complete = _put_back(array, copy, fingerprint) and complete
        return complete and not self.changed()

    def tidy(self) -> None:
        """Put back what no byte shows: each array's writeable flag, and the order of a mapping's keys
        (a ``loss_fn`` that deleted and re-added a key moved it to the end)."""
        for entry, flag in zip(self.entries, self.writeable):
            array = entry[2]
            if array.flags.writeable != flag:
                with contextlib.suppress(ValueError):  # its memory's owner is read-only now: leave it
                    array.flags.writeable = flag
        params = self.params
        if isinstance(params, MutableMapping) and list(params) != self.keys and set(params) == set(self.keys):
            held = {k: params.pop(k) for k in self.keys}
            for k in self.keys:
                params[k] = held[k]


def _put_back(array: np.ndarray, copy: Optional[np.ndarray], fingerprint: Fingerprint) -> bool:
    """Undo an in-place change of ``array``: its shape and dtype where NumPy allows, then its bytes from the copy."""
    _, _, shape, dtype = fingerprint
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # setting .dtype in place is deprecated, and still the only way back
            if array.dtype.str != dtype:
                array.dtype = np.dtype(dtype)  # type: ignore[misc]
            if array.size != math.prod(shape):  # resized in place (ndarray.resize): its own buffer, resized back
                array.resize(shape, refcheck=False)
            if array.shape != shape:
                array.shape = shape
        if copy is None or not array.flags.writeable:
            return False
        np.copyto(array, copy)
        return True
    except (AttributeError, TypeError, ValueError):
        return False


def _same(array: np.ndarray, copy: Optional[np.ndarray], fingerprint: Fingerprint) -> bool:
    """Whether ``array`` holds what it held: shape and dtype, then byte for byte against a copy, else by checksum."""
    if array.shape != fingerprint[2] or array.dtype.str != fingerprint[3]:
        return False
    if copy is None:
        return _fingerprint(array) == fingerprint
    return bool(np.array_equal(np.ascontiguousarray(array).reshape(-1).view(np.uint8), copy.reshape(-1).view(np.uint8)))


def _fingerprint(array: np.ndarray) -> Fingerprint:
    """An array's shape, dtype and a checksum of its bytes (their sum and xor as 64-bit words): cheap, and
    blind only to changes that keep both (a reordering, the sign bits of a pair of entries)."""
    data = np.ascontiguousarray(array).reshape(-1)
    words = data.view(np.uint64) if data.nbytes % 8 == 0 and data.nbytes else data.view(np.uint8)
    total = int(np.add.reduce(words, dtype=np.uint64))
    xor = int(np.bitwise_xor.reduce(words)) if words.size else 0
    return total, xor, tuple(array.shape), array.dtype.str


def chunks(lo: int, hi: int) -> Iterator[Tuple[int, int]]:
    for c0 in range(lo, hi, CHUNK):
        yield c0, min(hi, c0 + CHUNK)


LossFn = Callable[[Any], Any]
