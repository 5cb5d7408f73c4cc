"""The tolerance table: the documented numbers, and the per-dtype thresholds and precisions."""

import dataclasses

import numpy as np
import pytest

from gradwatch.tolerances import THRESHOLDS, TOLERANCES, precision_of, threshold_for


def test_the_thresholds_are_the_documented_ones():
    # README: 1e-7 for float64 (the notes'), 1e-4 for float32, 1e-2 for float16
    assert THRESHOLDS == {"float64": 1e-7, "float32": 1e-4, "float16": 1e-2}


@pytest.mark.parametrize("dtype,threshold", [(np.float64, 1e-7), (np.float32, 1e-4), (np.float16, 1e-2),
                                             (np.longdouble, 1e-7)])
def test_each_float_dtype_gets_the_threshold_of_its_precision(dtype, threshold):
    assert threshold_for(np.dtype(dtype)) == threshold


def test_the_budget_and_the_full_loop_are_the_documented_ones():
    # README: at most max(400, 20 × tensors) evaluations; the full loop for ≤ 100 parameters
    assert (TOLERANCES.budget, TOLERANCES.budget_per_tensor, TOLERANCES.full_loop_max_entries) == (400, 20, 100)


def test_the_noise_model_constants_are_the_documented_ones():
    # round-off of one difference 4·eps·|J|/h; re-measuring at ε/4, ε/16, …; the step grows at most 16×
    assert TOLERANCES.roundoff == 4.0 and TOLERANCES.refine_ratio == 4.0 and TOLERANCES.max_step_growth == 16.0
    assert TOLERANCES.false_pass_rate == 1e-4


def test_the_table_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TOLERANCES.budget = 1  # type: ignore[misc]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_the_precision_of_a_float_is_its_machine_epsilon(dtype):
    assert precision_of(np.dtype(dtype)) == float(np.finfo(dtype).eps)


def test_anything_but_a_float_has_float64_precision():
    assert precision_of(np.dtype(np.int32)) == float(np.finfo(np.float64).eps)
