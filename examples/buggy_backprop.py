"""The spiral MLP of train_mlp.py with a planted backprop bug, and the report that finds it.

    python examples/buggy_backprop.py        # exits 1: the check at initialisation fails

The backward pass below is written out layer by layer, as hand-written backprop often is, and
forgets the 1/m in ``db2``. Nothing crashes: training just does badly (here it stalls near chance
accuracy), which is easy to blame on the learning rate or the data. The gradient check at
initialisation stops training, and its report names the wrong tensor (``b2``, whose gradient is
``db2``) with the analytic and numeric values of its worst entry. Exit status 1 when a check
fails (so ``gradwatch run`` and CI see it), 0 if every check passes.
"""

from __future__ import annotations

import argparse
import os
import sys

# the matrices here are small: one BLAS thread is fastest, and immune to busy neighbours
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _mlp  # noqa: E402  (the model shared by the examples)

from gradwatch import GradWatch  # noqa: E402
from gradwatch.callback import GradientCheckError  # noqa: E402


def backward_3_layers(params, probs, caches, y, lambd):
    """Backprop of a 3-layer net (ReLU, ReLU, softmax), one layer at a time, with one bug."""
    m = y.shape[0]
    A0, A1, A2 = (c["A_prev"] for c in caches)
    Z1, Z2 = caches[0]["Z"], caches[1]["Z"]
    dZ3 = probs.copy()
    dZ3[y, np.arange(m)] -= 1.0
    dW3 = dZ3 @ A2.T / m + lambd / m * params["W3"]
    db3 = np.sum(dZ3, axis=1, keepdims=True) / m
    dZ2 = (params["W3"].T @ dZ3) * (Z2 > 0)
    dW2 = dZ2 @ A1.T / m + lambd / m * params["W2"]
    db2 = np.sum(dZ2, axis=1, keepdims=True)  # BUG: the 1/m is missing
    dZ1 = (params["W2"].T @ dZ2) * (Z1 > 0)
    dW1 = dZ1 @ A0.T / m + lambd / m * params["W1"]
    db1 = np.sum(dZ1, axis=1, keepdims=True) / m
    return {"dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2, "dW3": dW3, "db3": db3}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", default=os.path.join("runs", "buggy_backprop"))
    args = parser.parse_args(argv)

    X, y = _mlp.make_spirals(100, 3, seed=args.seed)
    params = _mlp.init_params([2, 64, 32, 3], seed=args.seed)
    lambd = 1e-2

    def loss_fn(p):
        return _mlp.cost(p, X, y, lambd)

    watch = GradWatch(loss_fn, at_init=True, after_steps=args.steps // 2, seed=args.seed,
                      logdir=args.logdir, on_failure="raise")
    failed = False
    with watch:
        for step in range(args.steps):
            probs, caches = _mlp.forward(params, X)
            grads = backward_3_layers(params, probs, caches, y, lambd)
            try:
                result = watch.on_step(step, params, grads)
            except GradientCheckError as err:  # on_failure="raise": stop training at a wrong gradient
                print(f"training stopped at step {err.step}:\n{err.result}")
                failed = True
                break
            if result is not None:
                print(f"step {step}:\n{result}")
                failed = failed or not result.passed
            _mlp.update(params, grads, 1.0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
