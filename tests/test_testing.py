"""gradwatch.testing: assertions that return the result when it passed and raise with the report otherwise."""

from __future__ import annotations

import layers as L
import numpy as np
import pytest

import gradwatch.testing as gt
from gradwatch import CheckResult, ParamCheck
from gradwatch.testing import assert_backward, assert_gradients

pytest_plugins = ["pytester"]


def quadratic():
    params = {"W": np.array([[1.0, -2.0], [0.5, 3.0]])}
    return (lambda q: float(np.sum(q["W"] ** 2))), params


def test_assert_gradients_returns_the_result_when_it_passed():
    loss, params = quadratic()
    result = assert_gradients(loss, params, {"dW": 2 * params["W"]}, seed=0)
    assert isinstance(result, CheckResult) and result.passed


def test_assert_gradients_raises_the_report_when_a_gradient_is_wrong():
    loss, params = quadratic()
    with pytest.raises(AssertionError) as info:
        assert_gradients(loss, params, {"dW": 3 * params["W"]}, seed=0)
    assert str(info.value).startswith("gradient check FAILED: 1 of 1 tensors wrong (W)")
    assert "W[" in str(info.value) and "analytic" in str(info.value)


def test_assert_gradients_passes_keywords_through():
    loss, params = quadratic()
    result = assert_gradients(loss, params, {"dW": 2 * params["W"]}, sample="all", seed=4)
    assert result.sample == "all" and result.seed == 4


def test_assert_backward_returns_the_result_when_it_passed():
    layer = L.lstm_layer()
    result = assert_backward(layer.forward, layer.backward, layer.inputs, seed=0)
    assert result.passed and set(result.per_param) == set(layer.inputs)


def test_assert_backward_raises_the_report_when_a_layer_is_wrong():
    layer = L.batchnorm_layer(bug="unbiased_var")
    with pytest.raises(AssertionError) as info:
        assert_backward(layer.forward, layer.backward, layer.inputs, seed=0)
    assert str(info.value).startswith("gradient check FAILED: 1 of 3 tensors wrong (x)")


def inconclusive_result() -> CheckResult:
    pc = ParamCheck("W", (2, 2), 3e-7, False, 4, None, 1e-7, verdict="inconclusive",
                    note="the loss's noise is larger than the step's change")
    return CheckResult(3e-7, False, 1e-7, {"W": pc}, (), 12, 0, inconclusive=("W",))


@pytest.mark.parametrize("helper", ["assert_gradients", "assert_backward"])
def test_an_inconclusive_check_raises_too(monkeypatch, helper):
    monkeypatch.setattr(gt, "check_gradients", lambda *a, **k: inconclusive_result())
    monkeypatch.setattr(gt, "check_backward", lambda *a, **k: inconclusive_result())
    with pytest.raises(AssertionError, match="noise is larger"):
        getattr(gt, helper)(None, None, None)


SUITE = '''
import numpy as np
from gradwatch.testing import assert_backward

W = np.array([[1.0, 2.0, 0.5], [-1.0, 0.3, 2.0]])
X = {"x": np.array([[0.2, -1.0], [1.5, 0.7]])}


def forward(q):
    return q["x"] @ W


def test_right_layer():
    assert_backward(forward, lambda q, dout: {"dx": dout @ W.T}, X, seed=0)


def test_wrong_layer():
    assert_backward(forward, lambda q, dout: {"dx": 2 * dout @ W.T}, X, seed=0)
'''


def test_pytest_shows_the_report_and_hides_gradwatch_frames(pytester):
    pytester.makepyfile(test_user_layer=SUITE)
    outcome = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    outcome.assert_outcomes(passed=1, failed=1)
    text = outcome.stdout.str()
    assert "AssertionError: gradient check FAILED: 1 of 1 tensors wrong (x)" in text
    assert "analytic" in text and "numeric" in text
    assert "_passed_or_raise" not in text and "raise AssertionError(str(result))" not in text
