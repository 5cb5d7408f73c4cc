"""The cases of the sound-verdicts issue (issue 8), each over many seeds: how often a wrong gradient is
called right, a right one wrong, the check crashes or the arrays are corrupted.

Uses the public API only, so the same script measures an older checkout too:

    python benchmarks/bench_soundness.py                 # this checkout (~3 min)
    git worktree add /tmp/old fe1a498 && PYTHONPATH=/tmp/old python benchmarks/bench_soundness.py
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import Counter

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import gradwatch  # noqa: E402
from gradwatch import DropoutActiveError, GradWatchError, check_gradients  # noqa: E402


def outcome(result, name=None):
    """"right", "wrong" or "inconclusive" for one tensor (or the whole check)."""
    if name is None:
        if result.failed:
            return "wrong"
        return "inconclusive" if getattr(result, "inconclusive", ()) else "right"
    if name in result.failed:
        return "wrong"
    return "inconclusive" if name in getattr(result, "inconclusive", ()) else "right"


def run(fn):
    try:
        return fn()
    except DropoutActiveError:
        return "refused"
    except GradWatchError as err:
        return "error: " + type(err).__name__
    except Exception as err:  # noqa: BLE001 - a crash is what is counted
        return "crash: " + type(err).__name__


def tanh_regression(dtype, seed, lambd=0.1):
    from test_check import tanh_regression as make

    return make(dtype, seed, lambd)


def case_float32_l2(seeds):
    c = Counter()
    for seed in range(seeds):
        for sample in ("auto", "all"):
            loss, params, backward = tanh_regression(np.float32, seed)
            c[run(lambda: outcome(check_gradients(loss, params, backward(params, forget_l2=True), sample=sample,
                                                  seed=seed), "W2"))] += 1
    return c


def case_offset(seeds):
    c = Counter()
    for seed in range(seeds):
        loss, params, backward = tanh_regression(np.float64, seed)
        doubled = {k: 2 * v for k, v in backward(params).items()}
        c[run(lambda: outcome(check_gradients(lambda q: 1e12 + loss(q), params, doubled, seed=seed)))] += 1
    return c


def case_tiny_epsilon(seeds):
    c = Counter()
    for seed in range(seeds):
        loss, params, backward = tanh_regression(np.float64, seed)
        doubled = {k: 2 * v for k, v in backward(params).items()}
        c[run(lambda: outcome(check_gradients(loss, params, doubled, epsilon=1e-15, seed=seed)))] += 1
    return c


def case_every_third(seeds):
    c = Counter()
    for seed in range(seeds):
        loss, params, backward = tanh_regression(np.float64, seed)
        doubled = {k: 2 * v for k, v in backward(params).items()}
        calls = []

        def jumpy(q):
            calls.append(1)
            return loss(q) + (1e-2 if len(calls) % 3 == 0 else 0.0)

        c[run(lambda: outcome(check_gradients(jumpy, params, doubled, seed=seed)))] += 1
    return c


def case_kink_hides(seeds):
    import _models as M

    c = Counter()
    for seed in range(seeds):
        m = M.mlp([784, 1024, 512, 10], "relu", seed=seed, batch=32)
        grads = m.backward(m.params)
        g = grads["dW1"].copy()
        g.reshape(-1)[int(np.random.default_rng(seed).integers(g.size))] += 1e-5
        c[run(lambda: outcome(check_gradients(m.loss, m.params, dict(grads, dW1=g), seed=seed), "W1"))] += 1
    return c


def case_constant_offset(seeds):
    c = Counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        params = {"W": rng.standard_normal((4, 30)), "b": rng.standard_normal((4, 1))}
        x = rng.standard_normal((30, 8))
        z = np.tanh(params["W"] @ x + params["b"])
        grads = {"dW": (1 - z**2) @ x.T, "db": (1 - z**2).sum(1, keepdims=True) + 1e-3}
        c[run(lambda: outcome(check_gradients(lambda q: float(np.sum(np.tanh(q["W"] @ x + q["b"]))), params, grads,
                                              seed=seed), "b"))] += 1
    return c


def case_float32_loss(seeds):
    c = Counter()
    for seed in range(seeds):
        loss, params, backward = tanh_regression(np.float64, seed)
        c[run(lambda: outcome(check_gradients(lambda q: np.float32(loss(q)), params, backward(params), seed=seed)))] += 1
    return c


def case_jitter(seeds):
    c = Counter()
    for seed in range(seeds):
        loss, params, backward = tanh_regression(np.float64, seed, lambd=0.0)
        rng = np.random.default_rng(seed)
        scale = 1e-3 / loss(params)
        grads = {k: scale * v for k, v in backward(params).items()}
        c[run(lambda: outcome(check_gradients(lambda q: scale * loss(q) + rng.uniform(-1e-15, 1e-15), params, grads,
                                              seed=seed)))] += 1
    return c


def case_sample_leaves_a_column(seeds):
    c = Counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        W, A = rng.standard_normal((400, 500)), rng.standard_normal((400, 500))
        g = np.cos(W) * A
        g[:, seed % 500] = 0.0  # one column's gradient missing: 400 of 200,000 entries
        c[run(lambda: outcome(check_gradients(lambda q: float(np.sum(np.sin(q["W"]) * A)), {"W": W}, {"W": g},
                                              sample=20, seed=seed)))] += 1
    return c


def case_large_sum(seeds):
    c = Counter()
    for seed in range(seeds):
        b = np.random.default_rng(seed).standard_normal(200_000)
        c[run(lambda: outcome(check_gradients(lambda q: float(np.sum(q["b"] ** 2)), {"b": b}, {"b": 2 * b},
                                              seed=seed)))] += 1
    return c


def case_exp_scale(seeds):
    c = Counter()
    for seed in range(seeds):
        b = 0.5 * np.random.default_rng(seed).standard_normal(10_000)
        c[run(lambda: outcome(check_gradients(lambda q: float(np.sum(np.exp(q["b"]))), {"b": b},
                                              {"db": (1 + 3e-7) * np.exp(b)}, sample="all", seed=seed)))] += 1
    return c


def case_scalars(seeds):
    c = Counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        W, a, b = rng.standard_normal(200), np.array(0.7), np.array(-0.4)
        grads = {"dW": 1 - np.tanh(W) ** 2, "da": -2 * a, "db": -2 * b}  # both scalars: the wrong sign
        c[run(lambda: outcome(check_gradients(lambda q: float(np.sum(np.tanh(q["W"])) + q["a"] ** 2 + q["b"] ** 2),
                                              {"W": W, "a": a, "b": b}, grads, seed=seed)))] += 1
    return c


def case_dropout(seeds):
    c = Counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        dropout = np.random.default_rng(seed + 1000)
        params = {"W1": rng.standard_normal((5, 3)), "W2": rng.standard_normal((1, 5))}
        x = np.abs(rng.standard_normal((3, 1)))
        params["W1"][0] = np.abs(params["W1"][0])
        live = params["W1"] @ x > 0

        def loss(q):
            a = np.maximum(q["W1"] @ x, 0) * (dropout.random((5, 1)) < 0.9) / 0.9
            return float(np.sum(q["W2"] @ a))

        grads = {"dW2": np.maximum(params["W1"] @ x, 0).T, "dW1": (params["W2"].T * live) @ x.T}
        c[run(lambda: outcome(check_gradients(loss, params, grads, seed=seed)))] += 1
    return c


def case_w_and_dw(_):
    params = {"W": np.ones((2, 2)), "dW": np.full((2, 2), 3.0)}
    loss = lambda q: float(np.sum(q["W"] ** 2) + np.sum(q["dW"] ** 3))  # noqa: E731
    return Counter([run(lambda: outcome(check_gradients(loss, params, {"W": 2 * params["W"], "dW": 27 * np.ones((2, 2))},
                                                        seed=0)))])


def case_both_keys(_):
    w = np.ones((2, 2))
    return Counter([run(lambda: outcome(check_gradients(lambda q: float(np.sum(q["W"] ** 2)), {"W": w},
                                                        {"dW": 2 * w, "W": 5 * w}, seed=0)))])


def case_tied(_):
    c = Counter()
    for dtype in (np.float64, np.float32):
        w = np.ones((3, 3), dtype)
        loss = lambda q: float(np.sum(q["enc"] ** 2) + np.sum(q["dec"] ** 2))  # noqa: E731
        c[run(lambda: outcome(check_gradients(loss, {"enc": w, "dec": w}, {"denc": 2 * w, "ddec": 2 * w}, seed=0)))] += 1
    return c


def case_budget_crash(seeds):
    c = Counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        params = {f"w{i}": rng.standard_normal(3).astype(np.float32) for i in range(20)}
        grads = {f"dw{i}": (2 * v * (1.5 if i % 2 else 1.0)).astype(np.float32) for i, v in enumerate(params.values())}
        loss = lambda q: np.float32(sum(np.sum(v.astype(np.float32) ** 2) for v in q.values()))  # noqa: E731
        c[run(lambda: "no crash" if check_gradients(loss, params, grads, seed=seed) is not None else "")] += 1
    return c


def case_threads(seeds):
    c = Counter()
    for seed in range(seeds):
        w = np.random.default_rng(seed).standard_normal((30, 30))
        before = w.tobytes()
        grads = {"dW": np.cos(w)}
        verdicts = []

        def one():
            verdicts.append(run(lambda: outcome(check_gradients(lambda q: float(np.sum(np.sin(q["W"]))), {"W": w},
                                                                grads, sample="all", seed=seed))))

        threads = [threading.Thread(target=one) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        c["intact" if w.tobytes() == before else "CORRUPTED"] += 1
        c["both right" if verdicts == ["right", "right"] else "verdicts " + "/".join(verdicts)] += 1
    return c


def case_cancelling_loss(seeds):
    c = Counter()
    for seed in range(seeds):
        w = np.random.default_rng(seed).standard_normal((3, 4))
        for big in (1e6, 1e8, 1e12):
            const = big + float(np.sum(w ** 2))
            c[run(lambda: outcome(check_gradients(lambda q: (big + float(np.sum(q["W"] ** 2))) - const, {"W": w},
                                                  {"dW": 2 * w}, seed=seed)))] += 1
    return c


def case_zero_at_the_point(seeds):
    c = Counter()
    for seed in range(seeds):
        a, b = np.array([1.0, -2.0]), np.array([1.0, -2.0])
        c[run(lambda: outcome(check_gradients(lambda q: float(np.sum(q["a"] ** 2) + 5 * np.sum(q["b"])), {"a": a, "b": b},
                                              {"da": 2 * a, "db": 2 * b}, seed=seed), "b"))] += 1
    return c


def case_underflow(seeds):
    c = Counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        for n in (20, 400):
            w, k = rng.standard_normal(n), rng.uniform(0.5, 2.0, n)
            c[run(lambda: outcome(check_gradients(lambda q: float(1e-200 * np.sum(k * q["w"] ** 2)), {"w": w},
                                                  {"dw": -2e-200 * k * w}, seed=seed)))] += 1
    return c


def case_float32_cast(seeds):
    from test_check import _Float32Net

    c = Counter()
    for seed in range(seeds):
        for hidden in (8, 64):
            net = _Float32Net(hidden, seed)
            c[run(lambda: outcome(check_gradients(lambda q: net.loss(q, True), net.params, net.grads(), seed=seed)))] += 1
    return c


def case_keys_alike(_):
    a, b = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    loss = lambda q: float(np.sum(q[1] ** 2) + np.sum(q["1"] ** 2))  # noqa: E731
    return Counter([run(lambda: outcome(check_gradients(loss, {1: a, "1": b}, {1: np.array([7.0, -9.0]), "1": 2 * b},
                                                        seed=0)))])


def case_decimal_epsilon(seeds):
    c = Counter()
    for seed in range(seeds):
        for eps in (1e-7, 1e-4):
            c[run(lambda: outcome(check_gradients(lambda q: float(q["t"] * 2.0), {"t": np.array(4.0 + seed)},
                                                  {"dt": np.array(2.5)}, epsilon=eps, seed=seed)))] += 1
    return c


CASES = [
    ("float32 tanh regression (73 params), dW2 without its L2 term (auto and all)", case_float32_l2, 20, "wrong"),
    ("loss 1e12 + J, gradient doubled", case_offset, 10, "not right"),
    ("epsilon=1e-15, gradient doubled", case_tiny_epsilon, 10, "not right"),
    ("loss +1e-2 every third call, gradient doubled", case_every_third, 10, "refused or not right"),
    ("784-1024-512-10 ReLU MLP, +1e-5 on one W1 entry (about 10x the threshold)", case_kink_hides, 20, "not right"),
    ("constant offset on a 4-entry bias", case_constant_offset, 100, "wrong"),
    ("loss returned as np.float32, right gradient", case_float32_loss, 10, "not wrong"),
    ("1e-15 jitter on a loss of 1e-3, right gradient", case_jitter, 10, "not refused, not wrong"),
    ("dropout keep_prob 0.9 on a 5-unit layer (one unit live at least)", case_dropout, 100, "refused"),
    ("sample=20 on a 400x500 tensor whose gradient misses a column", case_sample_leaves_a_column, 10, "not right"),
    ("np.sum(b**2) over 2e5 entries (|J| = 2e5, |g| = 900), right gradient", case_large_sum, 10, "not wrong"),
    ("sum(exp(b)) over 1e4 entries, sample=\"all\", gradient scaled by 1 + 3e-7", case_exp_scale, 10, "not right"),
    ("two scalar parameters whose gradients both have the wrong sign", case_scalars, 10, "not right"),
    ("parameters W and dW, gradients by bare names, right", case_w_and_dw, 1, "right"),
    ("gradients under both dW and W with different arrays", case_both_keys, 1, "an error naming the keys"),
    ("tied weights {enc: W, dec: W} (float64 and float32)", case_tied, 1, "an error naming both"),
    ("20 float32 tensors of 3 entries, float32 loss, half wrong", case_budget_crash, 100, "no crash"),
    ("two threads checking the same arrays", case_threads, 10, "intact, both right"),
    ("loss (big + sum W^2) - c, big 1e6, 1e8, 1e12, right gradient", case_cancelling_loss, 10, "not wrong"),
    ("sum(a^2) + 5 sum(b), 0 at the point, db wrong", case_zero_at_the_point, 10, "wrong"),
    ("loss and gradient scaled by 1e-200 (20, 400 entries), gradient's sign flipped", case_underflow, 10, "not right"),
    ("float32 net (8, 64 units), loss casts to float32, right gradient", case_float32_cast, 10, "not wrong"),
    ("params keyed 1 and '1', one gradient wrong", case_keys_alike, 1, "an error, or not right"),
    ("2 theta at an integer, epsilon 1e-7 and 1e-4, gradient 25% off", case_decimal_epsilon, 10, "wrong"),
]


def main():
    print(f"# Soundness cases (issue 8): gradwatch {getattr(gradwatch, '__file__', '?')}")
    print("| case | seeds | expected | outcomes |")
    print("|---|---|---|---|")
    t0 = time.perf_counter()
    for label, fn, seeds, expected in CASES:
        counts = fn(seeds)
        shown = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"| {label} | {seeds} | {expected} | {shown} |", flush=True)
    print(f"\ntotal run time {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
