"""Assertions for a project's own test suite: a gradient check or a layer check that raises
``AssertionError`` with the report when it did not pass.

.. code-block:: python

    # test_layers.py, in your project
    from gradwatch.testing import assert_backward

    def test_affine_backward():
        x, w, b = rng.standard_normal((4, 5)), rng.standard_normal((5, 3)), rng.standard_normal(3)
        assert_backward(lambda q: affine_forward(q["x"], q["w"], q["b"])[0],
                        lambda q, dout: affine_backward(dout, affine_forward(q["x"], q["w"], q["b"])[1]),
                        {"x": x, "w": w, "b": b}, seed=0)
"""

from __future__ import annotations

from typing import Any, Callable

from .backward import Inputs, check_backward
from .check import CheckResult, check_gradients
from .inputs import Grads, Params


def _passed_or_raise(result: CheckResult) -> CheckResult:
    __tracebackhide__ = True
    if not result.passed:  # failed or inconclusive: either way the gradient is not shown right
        raise AssertionError(str(result))
    return result


def assert_gradients(loss_fn: Callable[[Any], float], params: Params, grads: Grads, **kw: Any) -> CheckResult:
    """:func:`gradwatch.check_gradients` that returns the result when it passed and raises
    ``AssertionError`` with the report otherwise (an inconclusive check included).

    >>> import numpy as np
    >>> p = {"w": np.array([1.0, -2.0])}
    >>> assert_gradients(lambda q: float(np.sum(q["w"] ** 2)), p, {"dw": 2 * p["w"]}, seed=0).passed
    True
    """
    __tracebackhide__ = True
    return _passed_or_raise(check_gradients(loss_fn, params, grads, **kw))


def assert_backward(
    forward: Callable[[Any], Any], backward: Callable[[Any, Any], Any], inputs: Inputs, **kw: Any
) -> CheckResult:
    """:func:`gradwatch.check_backward` that returns the result when it passed and raises
    ``AssertionError`` with the report otherwise (an inconclusive check included).

    >>> import numpy as np
    >>> w = np.array([[2.0, 0.0], [1.0, -1.0]])
    >>> assert_backward(lambda q: q["x"] @ w, lambda q, dout: {"dx": dout @ w.T},
    ...                 {"x": np.array([[1.0, 3.0]])}, seed=0).verdict
    'passed'
    """
    __tracebackhide__ = True
    return _passed_or_raise(check_backward(forward, backward, inputs, **kw))


__all__ = ["assert_backward", "assert_gradients"]
