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


def test_parameters_named_w_and_dw_with_prefixed_gradients_are_not_called_ambiguous():
    # "dW" is the prefixed gradient of W, and only the prefixed convention covers both parameters
    gw, gdw = np.ones(2), np.full(2, 7.0)
    assert gradient_arrays({"dW": gw, "ddW": gdw}, ["W", "dW"]) == [gw, gdw]


def test_parameters_named_w_and_dw_with_both_conventions_covering_them_are_ambiguous():
    with pytest.raises(GradWatchError, match="'ddW' and 'dW'|'dW' and 'W'"):
        gradient_arrays({"W": np.ones(2), "dW": np.zeros(2), "ddW": np.full(2, 3.0)}, ["W", "dW"])


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


# ------------------------------------------------------------------ boundaries (mutation-guided)

def test_zero_and_non_finite_numbers_are_refused_and_tiny_ones_accepted():
    with pytest.raises(ValueError):
        validate_positive("epsilon", 0)
    with pytest.raises(ValueError):
        validate_positive("epsilon", float("nan"))
    with pytest.raises(TypeError):
        validate_positive("epsilon", True)
    assert validate_positive("epsilon", 1e-300) == 1e-300
    assert validate_positive("epsilon", np.float32(0.5)) == 0.5 and validate_positive("epsilon", None) is None


def test_seed_zero_is_a_seed_and_booleans_are_not():
    assert validate_seed(0) == 0 and validate_seed(np.int64(7)) == 7
    with pytest.raises(ValueError):
        validate_seed(True)


def test_fresh_seeds_are_distinct_32_bit_ints():
    seeds = [validate_seed(None) for _ in range(8)]
    assert all(isinstance(s, int) and 0 <= s < 2**32 for s in seeds)
    assert len(set(seeds)) > 1


def test_a_loss_array_of_one_entry_and_numpy_scalars_are_read_as_floats():
    assert as_loss(np.array([[2.5]])) == (2.5, None)
    assert as_loss(np.float64(0.5)) == (0.5, None)
    assert as_loss(3) == (3.0, np.dtype(np.int64)) and type(as_loss(3)[0]) is float  # an integer loss: quantised
    with pytest.raises(GradWatchError, match="scalar"):
        as_loss(np.ones(2))
    with pytest.raises(GradWatchError, match="real scalar"):
        as_loss(True)


def test_integer_keys_are_the_gradients_of_list_parameters():
    g0, g1 = np.ones(2), np.zeros(3)
    assert gradient_arrays({0: g0, 1: g1}, ["0", "1"]) == [g0, g1]


def test_mixed_conventions_are_refused_naming_the_parameters():
    with pytest.raises(GradWatchError, match="mixes conventions.*W, b"):
        gradient_arrays({"dW": 1, "b": 2}, ["W", "b"])


def test_grads_of_another_type_are_refused():
    with pytest.raises(TypeError, match="dict or a list"):
        gradient_arrays(np.ones(2), ["0"])
    assert gradient_arrays((1, 2), ["0", "1"]) == [1, 2]


def test_the_step_unit_is_the_rms_of_the_tensor_but_at_least_one():
    from gradwatch.inputs import build_slot

    assert build_slot("w", "w", np.full((2, 3), -3.0), np.zeros((2, 3))).scale == pytest.approx(3.0)
    assert build_slot("w", "w", np.array([3.0, 4.0]), np.zeros(2)).scale == pytest.approx(np.sqrt(12.5))
    assert build_slot("w", "w", np.full(4, 0.5), np.zeros(4)).scale == 1.0
    assert build_slot("w", "w", np.zeros(0), np.zeros(0)).scale == 1.0


def test_parameters_and_gradients_of_the_wrong_kind_are_named():
    from gradwatch.inputs import build_slot

    with pytest.raises(TypeError, match="NumPy float array"):
        build_slot("w", "w", [1.0], [1.0])
    with pytest.raises(TypeError, match="float array"):
        build_slot("w", "w", np.ones(2, dtype=int), np.ones(2))
    with pytest.raises(TypeError, match="real array"):
        build_slot("w", "w", np.ones(2), np.ones(2, dtype=complex))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        build_slot("w", "w", np.ones(2), np.ones(3))
    assert build_slot("w", "w", np.ones(2), np.ones(2, dtype=np.int32)).grad.dtype.kind == "i"


def test_only_writable_float64_arrays_are_perturbed_in_place():
    from gradwatch.inputs import build_slot

    ro = np.ones(3)
    ro.flags.writeable = False
    assert build_slot("w", "w", np.ones(3), np.ones(3)).in_place
    assert not build_slot("w", "w", ro, np.ones(3)).in_place
    assert not build_slot("w", "w", np.ones(3, dtype=np.float32), np.ones(3)).in_place


def test_a_gradient_norm_and_finiteness_cover_every_chunk():
    from gradwatch.inputs import CHUNK, build_slot

    g = np.ones(2 * CHUNK + 3)
    s = build_slot("w", "w", np.zeros_like(g), g)
    assert s.grad_norm() == pytest.approx(np.sqrt(g.size)) and s.grad_finite
    g[-1] = np.nan
    assert not build_slot("w", "w", np.zeros_like(g), g).grad_finite


def test_chunks_cover_a_range_exactly():
    from gradwatch.inputs import CHUNK, chunks

    assert list(chunks(5, 2 * CHUNK + 9)) == [(5, CHUNK + 5), (CHUNK + 5, 2 * CHUNK + 5), (2 * CHUNK + 5, 2 * CHUNK + 9)]


@pytest.mark.parametrize("container", [list, tuple])
def test_a_workspace_keeps_the_container_type_of_list_params(container):
    w, b = np.ones(2, dtype=np.float32), np.zeros(2)
    params = container([w, b])
    slots = build_slots(params, [w, b])
    with Workspace(params, slots) as ws:
        assert type(ws.mapping) is container and ws.mapping[1] is b and ws.mapping[0].dtype == np.float64


def test_a_workspace_restores_a_non_contiguous_array_and_reads_its_base():
    base = np.arange(12.0).reshape(3, 4)
    w = base[:, ::2]
    before = w.copy()
    (slot,) = build_slots({"w": w}, {"dw": np.ones_like(w)})
    with Workspace({"w": w}, [slot]) as ws:
        ws.write(slot, 1, 3, np.array([-1.0, -2.0]))
        ws.write(slot, 1, 3, np.array([-3.0, -4.0]))
        assert w.reshape(-1)[1:3].tolist() == [-3.0, -4.0]
        assert ws.base(slot, 1, 3).tolist() == before.reshape(-1)[1:3].tolist()
    assert np.array_equal(w, before)


def test_a_workspace_base_of_a_substituted_tensor_is_the_users_values():
    w = np.array([1.5, 2.5], dtype=np.float32)
    (slot,) = build_slots({"w": w}, {"dw": np.ones(2)})
    with Workspace({"w": w}, [slot]) as ws:
        ws.write(slot, 0, 2, np.array([9.0, 9.0]))
        assert ws.base(slot, 0, 2).tolist() == [1.5, 2.5] and ws.work["w"].tolist() == [9.0, 9.0]
    assert ws.work["w"].tolist() == [1.5, 2.5]


def test_views_of_one_buffer_that_do_not_overlap_are_separate_parameters():
    buf = np.zeros((3, 2))
    a, b = buf[:, 0], buf[:, 1]  # interleaved: their bounds overlap, no entry is shared
    assert np.may_share_memory(a, b)
    slots = build_slots({"a": a, "b": b}, {"da": np.ones(3), "db": np.ones(3)})
    assert [s.name for s in slots] == ["a", "b"]


def test_a_gradient_norm_whose_squares_overflow_is_computed_scaled():
    slot = build_slots({"w": np.zeros(3)}, {"dw": np.array([3e160, -4e160, 0.0])})[0]
    assert slot.grad_norm() == pytest.approx(5e160)
    assert build_slots({"w": np.zeros(2)}, {"dw": np.array([3.0, 4.0])})[0].grad_norm() == 5.0


def test_parameter_keys_with_the_same_name_are_refused_naming_both():
    params = {1: np.array([1.0, 2.0]), "1": np.array([3.0, 4.0])}
    with pytest.raises(GradWatchError, match=r"keys 1 and '1' are both named '1'"):
        build_slots(params, {1: np.ones(2), "1": np.ones(2)})


def test_int_gradient_keys_serve_only_parameters_whose_own_keys_they_are():
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    with pytest.raises(GradWatchError, match="no gradient for '01'"):
        build_slots({"01": a, "1": b}, {1: 2 * b})
    slots = build_slots({0: a, 1: b}, {0: 2 * a, 1: 2 * b})
    assert [s.grad.tolist() for s in slots] == [[2.0, 4.0], [6.0, 8.0]]
