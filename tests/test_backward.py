"""check_backward: one layer's backward pass against ⟨forward, dout⟩ (tests/layers.py holds the layers)."""

from __future__ import annotations

import layers as L
import numpy as np
import pytest

from gradwatch import GradWatchError, check_backward

# name -> (make the layer, keyword arguments): every layer of tests/layers.py, the LSTM with both output styles
CASES = {
    "affine": (L.affine_layer, {}),
    "relu": (L.relu_layer, {}),
    "conv": (L.conv_layer, {}),
    "batchnorm": (L.batchnorm_layer, {}),
    "lstm_tuple": (L.lstm_layer, {"outputs": "tuple"}),
    "lstm_dict": (L.lstm_layer, {"outputs": "dict"}),
    "softmax_loss": (L.softmax_loss_layer, {}),
}
BUG_OF = {"lstm_tuple": L.BUGS["lstm"], "lstm_dict": L.BUGS["lstm"]}


def layer_for(case: str, bug: bool = False) -> L.Layer:
    make, kw = CASES[case]
    return make(bug=(BUG_OF.get(case) or L.BUGS[case]) if bug else None, **kw)


def check(layer: L.Layer, **kw):
    return check_backward(layer.forward, layer.backward, layer.inputs, **kw)


def snapshot(inputs):
    return {k: (v, v.copy()) for k, v in inputs.items()}


def assert_restored(inputs, snap):
    for k, (obj, saved) in snap.items():
        assert inputs[k] is obj
        assert inputs[k].dtype == saved.dtype and inputs[k].tobytes() == saved.tobytes(), k


# --------------------------------------------------------------------------------------------
# verdicts on real layers: right passes, a planted bug fails and names exactly the wrong inputs


@pytest.mark.parametrize("case", list(CASES))
def test_a_correct_layer_passes(case):
    result = check(layer_for(case), seed=0)
    assert result.verdict == "passed", str(result)
    assert result.failed == ()


@pytest.mark.parametrize("case", list(CASES))
def test_a_planted_bug_fails_and_names_the_wrong_inputs(case):
    layer = layer_for(case, bug=True)
    result = check(layer, seed=0)
    assert result.verdict == "failed"
    assert set(result.failed) == set(layer.wrong), str(result)


@pytest.mark.parametrize("case", ["affine", "lstm_tuple"])
def test_inputs_are_restored_bitwise(case):
    layer = layer_for(case, bug=True)
    snap = snapshot(layer.inputs)
    check(layer, seed=3)
    assert_restored(layer.inputs, snap)


def test_inputs_as_a_list_are_named_by_position_and_take_a_tuple_of_gradients():
    layer = L.conv_layer(bug="last_column")
    inputs = [layer.inputs["x"], layer.inputs["w"], layer.inputs["b"]]
    result = check_backward(lambda q: layer.forward(dict(zip("xwb", q))),
                            lambda q, dout: layer.backward(dict(zip("xwb", q)), dout), inputs, seed=0)
    assert list(result.per_param) == ["0", "1", "2"] and result.failed == ("0",)


def test_a_single_input_may_get_a_bare_array_back():
    w = np.array([[1.0, -2.0], [0.5, 3.0]])
    x = {"x": np.array([[0.3, -0.7], [1.1, 0.2]])}
    assert check_backward(lambda q: q["x"] @ w, lambda q, d: d @ w.T, x, seed=0).passed
    assert check_backward(lambda q: q["x"] @ w, lambda q, d: d @ w, x, seed=0).failed == ("x",)


def test_a_float32_layer_is_checked_at_its_threshold_and_stays_float32():
    layer = L.affine_layer()
    inputs = {k: v.astype(np.float32) for k, v in layer.inputs.items()}
    snap = snapshot(inputs)
    good = check_backward(layer.forward, layer.backward, inputs, seed=0)
    bad = check_backward(layer.forward, L.affine_layer(bug="db_mean").backward, inputs, seed=0)
    assert good.passed and bad.failed == ("b",)
    assert_restored(inputs, snap)


# --------------------------------------------------------------------------------------------
# dout: drawn from the seed, or given; backward gets its own copy


class Recorder:
    """Wraps a backward pass and keeps (a copy of) the dout it was handed, and the object itself."""

    def __init__(self, backward):
        self.backward = backward
        self.seen = []
        self.objects = []

    def __call__(self, q, dout):
        self.objects.append(dout)
        self.seen.append(tuple(np.array(d) for d in (dout if isinstance(dout, tuple) else (dout,))))
        return self.backward(q, dout)


def test_a_given_dout_is_the_one_backward_sees_and_stays_unchanged():
    layer = L.lstm_layer()  # its backward updates dnext_c in place
    rng = np.random.default_rng(7)
    dout = (rng.standard_normal((3, 5)), rng.standard_normal((3, 5)))
    saved = tuple(d.copy() for d in dout)
    rec = Recorder(layer.backward)
    assert check_backward(layer.forward, rec, layer.inputs, dout=dout, seed=0).passed
    assert all(np.array_equal(s, d) for s, d in zip(rec.seen[0], saved))
    assert all(np.array_equal(d, s) for d, s in zip(dout, saved))  # the caller's dout was not mutated
    assert rec.objects[0][1] is not dout[1]


def test_a_given_dout_is_the_one_checked_against():
    # a backward that ignores dout (computes dx as if dout were all ones) is right for dout = ones only
    layer = L.affine_layer()

    def backward(q, dout):
        return {**layer.backward(q, dout), "dx": layer.backward(q, np.ones_like(dout))["dx"]}

    assert check_backward(layer.forward, backward, layer.inputs, dout=np.ones((4, 6)), seed=0).passed
    assert check_backward(layer.forward, backward, layer.inputs, seed=0).failed == ("x",)


def test_a_drawn_dout_is_standard_normal_in_the_outputs_shapes_and_float64():
    layer = L.lstm_layer()
    rec = Recorder(layer.backward)
    check_backward(layer.forward, rec, layer.inputs, seed=0)
    dh, dc = rec.seen[0]
    assert dh.shape == dc.shape == (3, 5) and dh.dtype == dc.dtype == np.float64
    assert not np.array_equal(dh, dc) and 0.3 < np.std(np.concatenate([dh, dc])) < 2.0


def test_the_reported_seed_replays_the_whole_check():
    layer = L.lstm_layer(bug="tanh_derivative")
    first_rec, again_rec = Recorder(layer.backward), Recorder(layer.backward)
    first = check_backward(layer.forward, first_rec, layer.inputs)  # seed=None: a fresh one, reported
    again = check_backward(layer.forward, again_rec, layer.inputs, seed=first.seed)
    assert all(np.array_equal(a, b) for a, b in zip(first_rec.seen[0], again_rec.seen[0]))
    assert str(first) == str(again)


def test_different_seeds_draw_different_douts():
    layer = L.affine_layer()
    recs = [Recorder(layer.backward) for _ in range(2)]
    for seed, rec in enumerate(recs):
        check_backward(layer.forward, rec, layer.inputs, seed=seed)
    assert not np.array_equal(recs[0].seen[0][0], recs[1].seen[0][0])


def test_a_backward_that_mutates_dout_is_checked_against_the_unmutated_dout():
    # the LSTM step adds into dnext_c; were that array also the loss's dout, the correct layer would fail
    layer = L.lstm_layer()
    rec = Recorder(layer.backward)
    result = check_backward(layer.forward, rec, layer.inputs, seed=5)
    assert result.passed, str(result)
    assert isinstance(rec.objects[0], tuple)


# --------------------------------------------------------------------------------------------
# a layer large enough for sampling: bounded cost, the wrong entry located


def test_a_large_conv_layer_is_sampled_and_the_wrong_entry_located():
    layer = L.conv_layer(n=4, c=3, hw=16, f=8)  # 3,072 + 216 + 8 entries
    planted = (2, 1, 9, 4)

    def backward(q, dout):
        dx, dw, db = layer.backward(q, dout)
        dx = dx.copy()
        dx[planted] += 0.05
        return dx, dw, db

    result = check_backward(layer.forward, backward, layer.inputs, seed=0)
    assert result.failed == ("x",)
    assert result.per_param["x"].worst_index == planted
    pc = result.per_param["x"]
    assert abs((pc.worst_analytic - pc.worst_numeric) - 0.05) < 1e-6
    assert result.loss_evaluations <= 400 < 2 * 3296


# --------------------------------------------------------------------------------------------
# clear errors, naming the culprit


def affine():
    return L.affine_layer()


def test_a_dout_of_another_structure_is_refused():
    layer = L.lstm_layer()
    with pytest.raises(ValueError, match=r"the output is a tuple of 2 arrays, dout is an array of shape \(3, 5\)"):
        check_backward(layer.forward, layer.backward, layer.inputs, dout=np.zeros((3, 5)))


def test_a_dout_with_too_few_arrays_is_refused():
    layer = L.lstm_layer()
    with pytest.raises(ValueError, match="the output is a tuple of 2 arrays, dout is a tuple of 1 arrays"):
        check_backward(layer.forward, layer.backward, layer.inputs, dout=(np.zeros((3, 5)),))


def test_a_dout_with_other_keys_is_refused():
    layer = L.lstm_layer(outputs="dict")
    with pytest.raises(ValueError, match=r"missing \['c'\], unexpected \['cell'\]"):
        check_backward(layer.forward, layer.backward, layer.inputs, dout={"h": np.zeros((3, 5)), "cell": np.zeros((3, 5))})


def test_a_dout_of_the_wrong_shape_is_refused_naming_the_output():
    layer = L.lstm_layer(outputs="dict")
    with pytest.raises(ValueError, match=r"dout\['c'\] has shape \(5, 3\), but output\['c'\] has shape \(3, 5\)"):
        check_backward(layer.forward, layer.backward, layer.inputs, dout={"h": np.zeros((3, 5)), "c": np.zeros((5, 3))})


def test_a_non_finite_dout_is_refused():
    layer = affine()
    dout = np.zeros((4, 6))
    dout[1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        check_backward(layer.forward, layer.backward, layer.inputs, dout=dout)


def test_a_backward_returning_too_few_gradients_is_refused():
    layer = affine()
    with pytest.raises(GradWatchError, match=r"a tuple of 2 gradients, but there are 3 inputs \(x, w, b\)"):
        check_backward(layer.forward, lambda q, d: tuple(layer.backward(q, d).values())[:2], layer.inputs)


def test_a_backward_missing_a_gradient_is_refused_naming_it():
    layer = affine()

    def backward(q, d):
        g = layer.backward(q, d)
        del g["dw"]
        return g

    with pytest.raises(GradWatchError, match="no gradient for 'w': what backward returned has neither 'dw' nor 'w'"):
        check_backward(layer.forward, backward, layer.inputs)


def test_a_backward_returning_both_conventions_is_refused():
    layer = affine()

    def backward(q, d):
        g = layer.backward(q, d)
        return {**g, "b": g["db"] * 2}

    with pytest.raises(GradWatchError, match="both 'db' and 'b'"):
        check_backward(layer.forward, backward, layer.inputs)


def test_a_backward_returning_something_else_is_refused():
    layer = affine()
    with pytest.raises(GradWatchError, match="backward must return a dict .* got float"):
        check_backward(layer.forward, lambda q, d: 1.0, layer.inputs)


def test_a_gradient_of_the_wrong_shape_is_refused_naming_the_input():
    layer = affine()

    def backward(q, d):
        g = layer.backward(q, d)
        g["dw"] = g["dw"].T
        return g

    with pytest.raises(GradWatchError, match=r"gradient for input 'w' has shape \(6, 15\), but the input has shape \(15, 6\)"):
        check_backward(layer.forward, backward, layer.inputs)


def test_a_gradient_that_is_not_an_array_is_refused_naming_the_input():
    layer = affine()
    with pytest.raises(GradWatchError, match="gradient for input 'b' must be a real array; got NoneType"):
        check_backward(layer.forward, lambda q, d: {**layer.backward(q, d), "db": None}, layer.inputs)


def test_an_integer_input_is_refused_naming_it():
    layer = affine()
    inputs = {**layer.inputs, "idx": np.arange(3)}
    with pytest.raises(TypeError, match="input 'idx' must be a float array; got dtype int64.*closure"):
        check_backward(layer.forward, layer.backward, inputs)


def test_an_input_that_is_not_an_array_is_refused_naming_it():
    layer = affine()
    with pytest.raises(TypeError, match="input 'w' must be a NumPy float array; got list"):
        check_backward(layer.forward, layer.backward, {**layer.inputs, "w": [[1.0]]})


def test_a_non_finite_output_is_refused_naming_it():
    layer = L.lstm_layer(outputs="dict")

    def forward(q):
        out = layer.forward(q)
        out["c"] = out["c"] / 0.0
        return out

    with np.errstate(divide="ignore", invalid="ignore"), pytest.raises(
        GradWatchError, match=r"output\['c'\] holds a NaN or infinity"
    ):
        check_backward(forward, layer.backward, layer.inputs)


def test_a_nested_output_is_refused():
    layer = L.lstm_layer()
    with pytest.raises(TypeError, match=r"output\[1\] is a tuple.*not nested"):
        check_backward(lambda q: (layer.forward(q)[0], layer.forward(q)), layer.backward, layer.inputs)


def test_an_output_that_is_not_an_array_is_refused():
    layer = affine()
    with pytest.raises(TypeError, match="output must be a NumPy array; got str"):
        check_backward(lambda q: "out", layer.backward, layer.inputs)


def test_an_output_that_changes_shape_between_calls_is_refused():
    layer = affine()
    calls = []

    def forward(q):
        calls.append(1)
        out = layer.forward(q)
        return out if len(calls) == 1 else out[:2]

    with pytest.raises(GradWatchError, match=r"output changed shape from \(4, 6\) to \(2, 6\)"):
        check_backward(forward, layer.backward, layer.inputs)


def test_empty_inputs_are_refused():
    with pytest.raises(ValueError, match="inputs is empty"):
        check_backward(lambda q: np.zeros(1), lambda q, d: {}, {})


@pytest.mark.parametrize("bad", ["forward", "backward"])
def test_non_callables_are_refused(bad):
    layer = affine()
    args = {"forward": layer.forward, "backward": layer.backward, bad: 3}
    with pytest.raises(TypeError, match=f"{bad} must be callable"):
        check_backward(args["forward"], args["backward"], layer.inputs)


def test_a_bad_seed_is_refused():
    layer = affine()
    with pytest.raises(ValueError, match="seed must be None or a non-negative int; got -1"):
        check_backward(layer.forward, layer.backward, layer.inputs, seed=-1)


def test_a_forward_returning_its_cache_is_refused_with_a_hint():
    layer = affine()
    with pytest.raises(TypeError, match=r"output\[1\] is a tuple.*\(out, cache\)"):
        check_backward(lambda q: (layer.forward(q), (q["x"], q["w"])), layer.backward, layer.inputs)


def test_a_layer_object_that_caches_in_forward_is_checked_at_the_given_inputs():
    class Affine:  # the class style: backward uses what the last forward call stored
        def forward(self, x, w, b):
            self.cache = (x.copy(), w.copy())
            return x @ w + b

        def backward(self, dout):
            x, w = self.cache
            return {"dx": dout @ w.T, "dw": x.T @ dout, "db": dout.sum(axis=0)}

    obj = Affine()
    rng = np.random.default_rng(2)
    inputs = {"x": rng.standard_normal((3, 4)), "w": rng.standard_normal((4, 2)), "b": rng.standard_normal(2)}
    result = check_backward(lambda q: obj.forward(q["x"], q["w"], q["b"]), lambda q, d: obj.backward(d), inputs, seed=0)
    assert result.passed, str(result)


def test_a_loss_layer_whose_backward_ignores_dout_passes_with_dout_one():
    layer = L.softmax_loss_layer()

    def backward(q, dout):
        return layer.backward(q, 1.0)  # as loss layers are written: the gradient of the loss itself

    assert check_backward(layer.forward, backward, layer.inputs, dout=1.0, seed=0).passed
    assert check_backward(layer.forward, backward, layer.inputs, seed=0).failed == ("x",)


def test_a_backward_that_changes_its_inputs_is_named_and_they_are_restored():
    x = np.arange(6.0).reshape(2, 3)

    def backward(q, dout):
        q["x"] *= 2
        return {"dx": dout}

    with pytest.raises(GradWatchError, match="changed inputs 'x'"):
        check_backward(lambda q: q["x"] * 1.0, backward, {"x": x}, seed=0)
    assert np.array_equal(x, np.arange(6.0).reshape(2, 3))


def test_inputs_named_x_and_dx_with_prefixed_gradients_are_not_ambiguous():
    x, dx = np.ones(3), np.full(3, 2.0)
    result = check_backward(lambda i: i["x"] * i["dx"], lambda i, d: {"dx": d * i["dx"], "ddx": d * i["x"]},
                            {"x": x, "dx": dx}, seed=0)
    assert result.passed


def test_an_all_zero_dout_is_refused_rather_than_checking_nothing():
    with pytest.raises(ValueError, match="dout is all zeros"):
        check_backward(lambda i: i["x"] * 2, lambda i, d: {"dx": 3 * d}, {"x": np.ones(3)}, dout=np.zeros(3), seed=0)
