"""What an attached GradWatch costs a training loop between checks.

A small NumPy training step (~40 µs on the machine it was written on: a 2-layer net's forward, backward and update on a
mini-batch) is timed in three loops, side by side in one process, interleaved in a fresh random
order at every repetition:

* bare:  the step alone;
* inert: the step plus ``watch.on_step(...)`` on a watch built with ``enabled=False``;
* idle:  the step plus ``on_step`` on an enabled watch whose checks are all elsewhere
         (``at_init`` already consumed, an ``after_steps`` set and ``every`` that never match),
         so every branch of the O(1) test runs.

A fourth loop, the bare step again, shows the noise floor. The ratios (loop time / bare loop time
of the same repetition) are summarised by their median; the target is <= 1.01. Usage::

    python benchmarks/bench_idle_overhead.py [--reps 401] [--steps 200]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time

# small matrices: one BLAS thread is fastest and steadiest
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
for _var in ("GRADWATCH", "GRADWATCH_CONFIG", "GRADWATCH_LOGDIR"):
    os.environ.pop(_var, None)  # measure the watch as built here, not as a caller's environment says

import numpy as np  # noqa: E402

from gradwatch import GradWatch  # noqa: E402


def make_step(seed: int = 0, width: int = 56, batch: int = 32):
    """A training step of a 2-layer ReLU net with a squared loss; returns (step, backward, params, loss).

    ``step()`` computes the gradients, updates the params in place and returns the gradients
    (of the params before the update); ``backward()`` only computes them.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((width, batch))
    y = rng.standard_normal((8, batch))
    params = {
        "W1": rng.standard_normal((width, width)) * 0.1, "b1": np.zeros((width, 1)),
        "W2": rng.standard_normal((8, width)) * 0.1, "b2": np.zeros((8, 1)),
    }
    m = x.shape[1]

    def backward():
        z1 = params["W1"] @ x + params["b1"]
        a1 = np.maximum(z1, 0.0)
        out = params["W2"] @ a1 + params["b2"]
        d = (out - y) / m
        grads = {"dW2": d @ a1.T, "db2": d.sum(axis=1, keepdims=True)}
        dz1 = (params["W2"].T @ d) * (z1 > 0)
        grads["dW1"] = dz1 @ x.T
        grads["db1"] = dz1.sum(axis=1, keepdims=True)
        return grads

    def step():
        grads = backward()
        for name, value in params.items():
            value -= 1e-3 * grads["d" + name]
        return grads

    def loss(p):
        r = p["W2"] @ np.maximum(p["W1"] @ x + p["b1"], 0.0) + p["b2"] - y
        return float(0.5 * np.sum(r * r) / m)

    return step, backward, params, loss


def loop_bare(step, params, watch, steps):
    t0 = time.perf_counter()
    for _ in range(1, steps + 1):
        step()
    return time.perf_counter() - t0


def loop_watched(step, params, watch, steps):
    t0 = time.perf_counter()
    for i in range(1, steps + 1):
        grads = step()
        watch.on_step(i, params, grads)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="GradWatch's cost between checks, side by side")
    parser.add_argument("--reps", type=int, default=401)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed block (short blocks: a noisy neighbour spoils few of them)")
    args = parser.parse_args(argv)

    step, backward, params, loss = make_step()
    inert = GradWatch(loss, enabled=False, every=1)
    idle = GradWatch(loss, at_init=True, after_steps=[10**9, 10**9 + 7], every=10**8, seed=0)
    first = idle.on_step(0, params, backward())  # the check at init, out of the way
    assert first is not None and first.passed, first
    assert not any(idle.due(i) for i in range(1, args.steps + 1)), "the idle watch must not check"

    variants = {
        "bare": (loop_bare, None),
        "control": (loop_bare, None),  # the bare loop again: the noise floor of the ratios
        "inert": (loop_watched, inert),
        "idle": (loop_watched, idle),
    }
    for fn, watch in variants.values():  # warm up
        fn(step, params, watch, args.steps // 4)

    shuffle = random.Random(0)
    times = {name: [] for name in variants}
    for _ in range(args.reps):
        order = list(variants)
        shuffle.shuffle(order)
        for name in order:
            fn, watch = variants[name]
            times[name].append(fn(step, params, watch, args.steps))

    per_step_us = statistics.median(times["bare"]) / args.steps * 1e6
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, {platform.system()}, Python {platform.python_version()}, "
          f"NumPy {np.__version__}, BLAS threads {os.environ.get('OPENBLAS_NUM_THREADS')}")
    print(f"loop: {args.steps} steps x {args.reps} repetitions per variant, interleaved; bare step {per_step_us:.1f} us (median)")
    for name in ("control", "inert", "idle"):
        ratios = [w / b for w, b in zip(times[name], times["bare"])]
        extra_ns = (statistics.median(times[name]) - statistics.median(times["bare"])) / args.steps * 1e9
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        label = "bare again / bare loop" if name == "control" else f"{name} watch / bare loop"
        verdict = "" if name == "control" else (
            "  [ok: target <= 1.01]" if statistics.median(ratios) <= 1.01 else "  [ABOVE TARGET 1.01]")
        fastest = min(times[name]) / min(times["bare"])  # robust to a busy machine's slow blocks
        print(f"{label:24s} median ratio {statistics.median(ratios):.4f} (quartiles {q1:.4f}-{q3:.4f}), "
              f"fastest blocks {fastest:.4f}, {extra_ns:+.0f} ns per step{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
