"""The checkers gradwatch is measured against, each behind one call: ``tool(model, grads, seed) -> Outcome``.

Every peer is run the way its documentation shows, with its own defaults (step, tolerance); where a
peer returns a number rather than a verdict, the verdict rule is stated next to it and applied with
gradwatch's per-dtype threshold (1e-7 for float64, 1e-4 for float32), so it is no stricter than
gradwatch's own.

* ``gradwatch`` – ``check_gradients(...)`` with its defaults (``sample="auto"``).
* ``documents`` – the documents' loop, written the way the course does it: θ as one vector, and per
  component a copy of θ and a dict rebuilt with ``vector_to_params``; ε = 1e-7, one formula-(2)
  number for the whole model, fail when it is ≥ the threshold.
* ``sparse10`` – the idea of cs231n's ``grad_check_sparse``: 10 random coordinates (drawn with
  replacement) per tensor, central differences with h = 1e-5 on the parameter array in place;
  a tensor fails when formula (2) over its sampled coordinates is ≥ the threshold. (Our own code.)
* ``scipy`` – ``scipy.optimize.check_grad(func, grad, θ, direction="random")`` with its default
  step √eps (a forward difference along one Gaussian direction over all of θ); formula (2) on the
  two scalars it compares, fail when ≥ the threshold. It does not say which tensor is wrong.
* ``torch`` / ``torch_fast`` – ``torch.autograd.gradcheck`` (defaults eps 1e-6, atol 1e-5,
  rtol 1e-3; ``fast_mode`` False/True) on a ``torch.autograd.Function`` whose forward is the
  NumPy loss and whose backward returns the user's (planted-bug) gradients, so gradcheck checks the
  hand-written backprop. The failing input is read from its error message.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from _models import MLP
from gradwatch import check_gradients, params_to_vector, relative_difference, vector_to_params


@dataclass
class Outcome:
    passed: bool
    evals: int  # loss evaluations
    named: Optional[Tuple[str, ...]] = None  # tensors blamed (None: the tool does not say)
    index: Optional[Tuple[int, ...]] = None  # the entry blamed, for the single-entry bug
    backward_calls: int = 0  # calls of the user's backprop (torch only)
    skipped_evals: int = 0  # evaluations the shipped tool would add after its verdict (torch fast_mode)
    detail: float = math.nan  # the number the verdict was made from


def threshold_for(dtype) -> float:
    return 1e-4 if np.dtype(dtype) == np.float32 else 1e-7


# --------------------------------------------------------------------------------------------
# gradwatch


def gradwatch_default(model: MLP, grads: Dict[str, np.ndarray], seed: int, **kw) -> Outcome:
    r = check_gradients(model.loss, model.params, grads, seed=seed, **kw)
    index = None
    if len(r.failed) >= 1:
        index = r.per_param[r.failed[0]].worst_index
    return Outcome(r.passed, r.loss_evaluations, tuple(r.failed), index, detail=r.difference)


# --------------------------------------------------------------------------------------------
# The documents' loop


def documents_loop(model: MLP, grads: Dict[str, np.ndarray], seed: int = 0, epsilon: float = 1e-7,
                   limit: Optional[int] = None) -> Outcome:
    """The course's loop. ``limit`` stops after that many components (to time a prefix of a huge loop)."""
    theta, layout = params_to_vector(model.params)
    grad = np.concatenate([np.asarray(grads["d" + name]).reshape(-1) for name in layout.names]).astype(np.float64)
    n = theta.size if limit is None else min(limit, theta.size)
    gradapprox = np.zeros(n)
    evals = 0
    for i in range(n):
        thetaplus = np.copy(theta)
        thetaplus[i] = thetaplus[i] + epsilon
        j_plus = model.loss(vector_to_params(thetaplus, layout))
        thetaminus = np.copy(theta)
        thetaminus[i] = thetaminus[i] - epsilon
        j_minus = model.loss(vector_to_params(thetaminus, layout))
        evals += 2
        gradapprox[i] = (j_plus - j_minus) / (2 * epsilon)
    difference = relative_difference(grad[:n], gradapprox)
    passed = bool(difference < threshold_for(theta.dtype))
    return Outcome(passed, evals, None, None, detail=difference)


# --------------------------------------------------------------------------------------------
# cs231n-style sparse coordinate sampling (our own implementation of the idea)


def sparse10(model: MLP, grads: Dict[str, np.ndarray], seed: int, k: int = 10, h: float = 1e-5) -> Outcome:
    rng = np.random.default_rng(seed)
    evals = 0
    failed = []
    for name, x in model.params.items():
        g = np.asarray(grads["d" + name])
        analytic, numeric = np.zeros(k), np.zeros(k)
        for j in range(k):
            ix = tuple(int(rng.integers(s)) for s in x.shape)
            old = x[ix]
            try:
                x[ix] = old + h
                fp = model.loss(model.params)
                x[ix] = old - h
                fm = model.loss(model.params)
            finally:
                x[ix] = old
            evals += 2
            numeric[j] = (fp - fm) / (2 * h)
            analytic[j] = g[ix]
        if not relative_difference(analytic, numeric) < threshold_for(x.dtype):
            failed.append(name)
    return Outcome(not failed, evals, tuple(failed))


# --------------------------------------------------------------------------------------------
# scipy.optimize.check_grad(direction="random")


def scipy_random(model: MLP, grads: Dict[str, np.ndarray], seed: int) -> Outcome:
    from scipy.optimize import check_grad

    theta, layout = params_to_vector(model.params)
    gvec = np.concatenate([np.asarray(grads["d" + name]).reshape(-1) for name in layout.names])
    seen = []

    def func(x):
        value = model.loss(vector_to_params(np.asarray(x, dtype=theta.dtype), layout))
        seen.append(value)
        return value

    def grad(x):
        return gvec

    try:
        err = check_grad(func, grad, theta, direction="random", rng=np.random.default_rng(seed))
    except TypeError:  # scipy < 1.15 spells it seed=
        err = check_grad(func, grad, theta, direction="random", seed=np.random.default_rng(seed))
    # rebuild the two scalars it compared: the analytic projection g·v and the forward difference
    v = np.random.default_rng(seed).standard_normal(size=theta.shape)
    a = float(np.dot(gvec.astype(np.float64), v))
    n = a - err if len(seen) < 2 else (seen[1] - seen[0]) / math.sqrt(np.finfo(float).eps)
    rel = abs(a - n) / (abs(a) + abs(n)) if (a or n) else 0.0
    return Outcome(bool(rel < threshold_for(theta.dtype)), len(seen), None, None, detail=rel)


# --------------------------------------------------------------------------------------------
# torch.autograd.gradcheck on the user's backprop


def _torch_function(model: MLP, grads: Dict[str, np.ndarray], counter: Dict[str, int]):
    import torch

    names = list(model.params)
    user = [torch.from_numpy(np.ascontiguousarray(grads["d" + n])) for n in names]

    class UserBackprop(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *tensors):
            counter["forward"] += 1
            p = {n: t.detach().numpy() for n, t in zip(names, tensors)}
            return torch.tensor(model.loss(p), dtype=tensors[0].dtype)

        @staticmethod
        def backward(ctx, grad_out):
            counter["backward"] += 1
            return tuple(grad_out * g for g in user)

    return UserBackprop, names


_INPUT = re.compile(r"with respect to input (\d+)")


def torch_gradcheck(model: MLP, grads: Dict[str, np.ndarray], seed: int = 0, fast_mode: bool = False,
                    slow_message: bool = True) -> Outcome:
    """``slow_message=False``: when fast mode has found a mismatch, skip the slow-mode Jacobians it
    computes only to word its error message (2 evaluations per parameter) and count them instead
    in ``skipped_evals``; the verdict is already made by then."""
    import sys

    import torch
    from torch.autograd.gradcheck import GradcheckError

    gc_module = sys.modules["torch.autograd.gradcheck"]
    counter = {"forward": 0, "backward": 0, "skipped": 0}
    fn, names = _torch_function(model, grads, counter)
    # the user's arrays, shared (no copy): gradcheck perturbs entries in place and restores them
    inputs = tuple(torch.from_numpy(model.params[n]).requires_grad_(True) for n in names)
    named: Tuple[str, ...] = ()
    original = gc_module._run_slow_mode_and_get_error
    if not slow_message:
        def no_slow_message(*args, **kwargs):
            counter["skipped"] += 2 * model.size
            return ""
        gc_module._run_slow_mode_and_get_error = no_slow_message
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "not a double precision" for the float32 models
            try:
                passed = bool(torch.autograd.gradcheck(lambda *t: fn.apply(*t), inputs, fast_mode=fast_mode))
            except GradcheckError as exc:
                passed = False
                m = _INPUT.search(str(exc))
                named = (names[int(m.group(1))],) if m else ()
    finally:
        gc_module._run_slow_mode_and_get_error = original
    return Outcome(passed, counter["forward"], named if not passed else (), None, counter["backward"],
                   skipped_evals=counter["skipped"])


def torch_slow(model, grads, seed=0):
    return torch_gradcheck(model, grads, seed, fast_mode=False)


def torch_fast(model, grads, seed=0):
    """fast_mode as shipped: a failure also pays for the slow-mode Jacobians of its error message."""
    return torch_gradcheck(model, grads, seed, fast_mode=True)


def torch_fast_verdict(model, grads, seed=0):
    """fast_mode up to its verdict (the slow-mode error message skipped and counted)."""
    return torch_gradcheck(model, grads, seed, fast_mode=True, slow_message=False)


def torch_slow_predicted(model: MLP, grads: Dict[str, np.ndarray], correct: Dict[str, np.ndarray]) -> Outcome:
    """gradcheck's slow-mode verdict without running it: it compares every entry of the analytic
    gradient with a central difference (error ~1e-10 here, far below its atol) by
    ``|a − n| <= atol + rtol·|n|``; with the true gradient for ``n`` that verdict is exact."""
    for name in model.params:
        a, n = np.asarray(grads["d" + name], np.float64), np.asarray(correct["d" + name], np.float64)
        if np.any(np.abs(a - n) > 1e-5 + 1e-3 * np.abs(n)):
            return Outcome(False, 2 * model.size + 1, (name,))
    return Outcome(True, 2 * model.size + 1, ())


def documents_predicted(model: MLP, grads: Dict[str, np.ndarray], correct: Dict[str, np.ndarray]) -> Outcome:
    """The documents' loop's verdict on a planted bug without running it: formula (2) between the
    user's and the true gradient (the loop's round-off only adds to the gap, so a bug this shows is
    caught; a pass here would need a run to confirm)."""
    names = list(model.params)
    a = np.concatenate([np.asarray(grads["d" + n], np.float64).reshape(-1) for n in names])
    t = np.concatenate([np.asarray(correct["d" + n], np.float64).reshape(-1) for n in names])
    d = relative_difference(a, t)
    return Outcome(bool(d < threshold_for(model.params[names[0]].dtype)), 2 * model.size, None, detail=d)


TOOLS: Dict[str, Callable[..., Outcome]] = {
    "gradwatch": gradwatch_default,
    "documents": documents_loop,
    "sparse10": sparse10,
    "scipy": scipy_random,
    "torch_fast": torch_fast,
    "torch": torch_slow,
}

LABELS = {
    "gradwatch": "gradwatch (auto)",
    "documents": "documents' loop",
    "sparse10": "cs231n-style sparse (10/tensor)",
    "scipy": "scipy check_grad (random)",
    "torch_fast": "torch gradcheck fast_mode",
    "torch": "torch gradcheck",
}
