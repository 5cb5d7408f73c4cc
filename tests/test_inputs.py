"""Inputs: which gradient is whose, aliasing, option validation, the parameter adapter."""

import numpy as np
import pytest

from gradwatch.errors import GradWatchError
from gradwatch.inputs import (
    Workspace,
    as_loss,
    build_slots,
    gradient_arrays,
    normalise_sample,
    validate_positive,
    validate_seed,
)


def test_the_d_prefix_convention_is_used_when_it_covers_every_parameter():
    g = gradient_arrays({"dW": 1, "db": 2, "dA1": 3}, ["W", "b"])
    assert g == [1, 2]


def test_bare_names_are_used_when_they_cover_every_parameter():
    assert gradient_arrays({"W": 1, "b": 2}, ["W", "b"]) == [1, 2]


def test_parameters_named_w_and_dw_with_bare_gradients_are_not_crossed():
    # "dW" is both a parameter and the prefixed name of "W": only the bare convention covers both
    gw, gdw = np.ones(2), np.full(2, 7.0)
    assert gradient_arrays({"W": gw, "dW": gdw}, ["W", "dW"]) == [gw, gdw]


def test_both_conventions_with_different_arrays_are_ambiguous_and_named():
    with pytest.raises(GradWatchError, match="'dW' and 'W'"):
        gradient_arrays({"dW": np.ones(2), "W": np.zeros(2)}, ["W"])


def test_both_conventions_with_the_same_values_are_fine():
    g = np.ones(2)
    assert gradient_arrays({"dW": g, "W": g.copy()}, ["W"])[0] is g


def test_a_missing_gradient_names_the_keys_tried_and_the_keys_given():
    with pytest.raises(GradWatchError, match=r"'db'.*'b'.*'dW'"):
        gradient_arrays({"dW": 1}, ["W", "b"])


def test_a_sequence_of_gradients_must_match_the_parameters():
    with pytest.raises(GradWatchError, match="2 arrays.*3 tensors"):
        gradient_arrays([1, 2], ["0", "1", "2"])


def test_tied_weights_are_refused_naming_both():
    w = np.ones((2, 2))
    with pytest.raises(GradWatchError, match="'enc' and 'dec' share memory"):
        build_slots({"enc": w, "dec": w}, {"denc": w, "ddec": w})


def test_a_view_of_another_parameter_is_refused():
    w = np.ones((4, 4))
    with pytest.raises(GradWatchError, match="'a' and 'b'"):
        build_slots({"a": w, "b": w[1:3]}, {"da": w, "db": w[1:3]})


def test_a_gradient_that_shares_memory_with_its_parameter_is_copied():
    w = np.ones(3)
    (slot,) = build_slots({"w": w}, {"dw": w})
    assert not np.shares_memory(slot.grad, w)


@pytest.mark.parametrize("value", ["auto", "all", 5, np.int64(3)])
def test_sample_values_allowed(value):
    assert normalise_sample(value) == value


@pytest.mark.parametrize("value", [0, -3, 2.5, True, "some", None])
def test_sample_values_refused(value):
    assert normalise_sample(value) is None


def test_bad_numbers_say_what_is_allowed():
    with pytest.raises(ValueError, match="positive finite"):
        validate_positive("epsilon", float("inf"))
    with pytest.raises(TypeError, match="threshold must be None or a positive number; got 'x'"):
        validate_positive("threshold", "x")
    with pytest.raises(ValueError, match="non-negative int"):
        validate_seed(-1)


def test_a_float32_loss_is_read_with_its_dtype():
    value, dtype = as_loss(np.float32(0.5))
    assert value == 0.5 and dtype == np.float32
    assert as_loss(0.25) == (0.25, None)


def test_a_loss_that_is_not_a_real_scalar_is_named():
    with pytest.raises(GradWatchError, match="complex"):
        as_loss(1 + 2j)


def test_a_workspace_hands_a_float64_copy_of_a_float32_tensor_and_never_writes_the_users_array():
    w = np.ones(3, dtype=np.float32)
    params = {"w": w, "b": np.zeros(2)}
    slots = build_slots(params, {"dw": w, "db": np.zeros(2)})
    with Workspace(params, slots) as ws:
        assert ws.mapping is not params and ws.mapping["b"] is params["b"]
        assert ws.mapping["w"].dtype == np.float64
        ws.write(slots[0], 0, 3, np.array([2.0, 2.0, 2.0]))
        assert np.all(w == 1)
    assert np.all(ws.work["w"] == 1.0)


def test_a_workspace_restores_in_place_writes_bitwise():
    w = np.random.default_rng(0).standard_normal(5)
    before = w.tobytes()
    (slot,) = build_slots({"w": w}, {"dw": w.copy()})
    with Workspace({"w": w}, [slot]) as ws:
        ws.write(slot, 1, 4, np.zeros(3))
        ws.write(slot, 1, 4, np.ones(3))
        assert ws.base(slot, 1, 4).tobytes() == np.frombuffer(before)[1:4].tobytes()
    assert w.tobytes() == before
