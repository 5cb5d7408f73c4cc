"""The documents' formulas and the flattening of parameters."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from gradwatch import numerical_gradient, params_to_vector, relative_difference, vector_to_params
from gradwatch.numerics import default_epsilon, default_threshold, norm2


def test_numerical_gradient_reproduces_the_documents_worked_example():
    assert numerical_gradient(lambda t: t**3, 1.0, epsilon=0.01) == pytest.approx(3.0001, abs=1e-12)


def test_numerical_gradient_of_an_array_is_componentwise_and_leaves_theta_unchanged():
    theta = np.array([[1.0, -2.0], [0.5, 3.0]])
    before = theta.copy()
    approx = numerical_gradient(lambda t: float(np.sum(t**3)), theta, epsilon=1e-5)
    np.testing.assert_allclose(approx, 3 * theta**2, rtol=1e-8)
    assert approx.shape == theta.shape
    np.testing.assert_array_equal(theta, before)


def test_numerical_gradient_restores_theta_when_f_raises():
    theta = np.array([1.0, 2.0])
    calls = []

    def f(t):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("boom")
        return float(t.sum())

    with pytest.raises(RuntimeError):
        numerical_gradient(f, theta)
    np.testing.assert_array_equal(theta, [1.0, 2.0])


def test_numerical_gradient_rejects_a_non_positive_step():
    with pytest.raises(ValueError, match="epsilon must be a positive"):
        numerical_gradient(lambda t: t, 1.0, epsilon=0.0)


def test_relative_difference_is_formula_2():
    g, a = np.array([3.0, 4.0]), np.array([3.0, 4.5])
    assert relative_difference(g, a) == pytest.approx(0.5 / (5.0 + np.hypot(3.0, 4.5)))


def test_relative_difference_is_zero_when_both_are_zero():
    assert relative_difference(np.zeros(3), np.zeros(3)) == 0.0


def test_relative_difference_of_scalars():
    assert relative_difference(2.0, 1.0) == pytest.approx(1.0 / 3.0)


def test_relative_difference_of_non_finite_is_nan_never_a_pass():
    assert np.isnan(relative_difference([1.0, np.nan], [1.0, 2.0]))
    assert np.isnan(relative_difference([1.0, 2.0], [np.inf, 2.0]))


def test_relative_difference_rejects_different_shapes():
    with pytest.raises(ValueError, match=r"same shape.*\(2,\).*\(3,\)"):
        relative_difference(np.zeros(2), np.zeros(3))


@settings(max_examples=50, deadline=None)
@given(st.lists(hnp.arrays(st.sampled_from([np.float64, np.float32, np.float16]),
                           hnp.array_shapes(min_dims=0, max_dims=3, max_side=4),
                           elements=st.floats(-1e3, 1e3, width=16)), min_size=1, max_size=5))
def test_params_round_trip_is_exact(arrays):
    params = {f"p{i}": a for i, a in enumerate(arrays)}
    theta, layout = params_to_vector(params)
    assert theta.ndim == 1 and theta.size == sum(a.size for a in arrays)
    back = vector_to_params(theta, layout)
    assert list(back) == list(params)
    for name, original in params.items():
        assert back[name].dtype == original.dtype and back[name].shape == original.shape
        assert back[name].tobytes() == original.tobytes()


def test_params_to_vector_follows_the_documents_order():
    params = {"W1": np.arange(6.0).reshape(2, 3), "b1": np.array([[10.0], [11.0]])}
    theta, layout = params_to_vector(params)
    np.testing.assert_array_equal(theta, [0, 1, 2, 3, 4, 5, 10, 11])
    assert layout.names == ("W1", "b1") and layout.shapes == ((2, 3), (2, 1))


def test_a_list_of_arrays_is_named_by_position():
    theta, layout = params_to_vector([np.ones(2), np.zeros((1, 1))])
    assert layout.names == ("0", "1")
    assert set(vector_to_params(theta, layout)) == {"0", "1"}


def test_params_to_vector_rejects_an_integer_tensor_by_name():
    with pytest.raises(TypeError, match="'b1'.*int"):
        params_to_vector({"W1": np.ones(2), "b1": np.array([1, 2])})


def test_vector_to_params_rejects_a_vector_of_the_wrong_length():
    _, layout = params_to_vector({"W": np.ones((2, 2))})
    with pytest.raises(ValueError, match="4 entries"):
        vector_to_params(np.zeros(5), layout)


def test_default_step_balances_truncation_and_round_off_per_dtype():
    assert default_epsilon(np.float64) == pytest.approx(np.finfo(np.float64).eps ** (1 / 3))
    assert default_epsilon(np.float32) > 100 * default_epsilon(np.float64)


def test_default_thresholds():
    assert default_threshold(np.float64) == 1e-7
    assert default_threshold(np.float32) == 1e-4
    assert default_threshold(np.float16) == 1e-2


def test_formula_2_of_entries_whose_squares_overflow_is_finite():
    from gradwatch import relative_difference

    assert relative_difference([3e200, 4e200], [3e200, 4e200]) == 0.0
    assert relative_difference([1e300], [3e300]) == pytest.approx(0.5)


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(np.float64, st.integers(1, 20),
                 elements=st.one_of(st.just(0.0), st.floats(1e-6, 1e3), st.floats(-1e3, -1e-6))),
       st.sampled_from([1e-290, 1e-200, 1.0, 1e200, 1e300]))  # scaled entries stay normal floats
def test_norm2_is_the_euclidean_norm_at_any_scale_property(x, scale):
    top = float(np.max(np.abs(x)))
    expected = top * float(np.sqrt(np.sum((x / top) ** 2))) * scale if top else 0.0
    assert norm2(x * scale) == pytest.approx(expected, rel=1e-12, abs=0)


def test_norm2_of_nan_zero_and_inf():
    assert np.isnan(norm2([np.nan, 1e200])) and norm2([]) == 0.0 and norm2(np.zeros(3)) == 0.0
    assert norm2([np.inf, 1.0]) == np.inf


def test_params_to_vector_refuses_keys_that_print_alike():
    from gradwatch import GradWatchError

    with pytest.raises(GradWatchError, match="both named '1'"):
        params_to_vector({1: np.ones(2), "1": np.zeros(2)})


@pytest.mark.parametrize("epsilon", [None, "1e-3", True, 0.0, -1e-3, float("nan"), float("inf")])
def test_numerical_gradient_names_an_epsilon_it_cannot_use(epsilon):
    with pytest.raises(ValueError, match=f"epsilon must be a positive finite number; got {re.escape(repr(epsilon))}"):
        numerical_gradient(lambda t: t**2, 1.0, epsilon=epsilon)


@pytest.mark.parametrize("returned,shown", [(np.ones(3), r"an array of shape \(3,\)"), (None, "None"), ("1.0", "'1.0'")])
def test_numerical_gradient_names_what_f_returned_when_it_is_no_scalar(returned, shown):
    with pytest.raises(TypeError, match=f"f must return a real scalar; got {shown}"):
        numerical_gradient(lambda t: returned, np.ones(2), epsilon=1e-3)


def test_numerical_gradient_takes_a_one_element_array_for_a_scalar():
    assert numerical_gradient(lambda t: np.array([t**2]), 2.0, epsilon=1e-3) == pytest.approx(4.0, rel=1e-12)


def test_formula_2_refuses_complex_values_rather_than_dropping_their_imaginary_parts():
    with pytest.raises(TypeError, match="must be real"):
        relative_difference([1j], [1.0])
