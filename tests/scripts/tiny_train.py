"""A tiny NumPy training loop with a GradWatch attached, run by tests/test_cli.py under `gradwatch run`.

    python tests/scripts/tiny_train.py              # correct backprop: every check passes, exit 0
    python tests/scripts/tiny_train.py --bug        # dW1 10% too large: checks fail (the script still exits 0)
    python tests/scripts/tiny_train.py --dropout    # dropout inside the loss: the check is refused
    python tests/scripts/tiny_train.py --exit 3     # checks pass, then the script fails with status 3
    python tests/scripts/tiny_train.py --no-watch   # trains without building a GradWatch

The watch is built with gradwatch.GradWatch(...) and no schedule or logdir of its own choosing
beyond the defaults, so what `gradwatch run` puts in the environment (GRADWATCH=1,
GRADWATCH_CONFIG, GRADWATCH_LOGDIR) decides where and when it checks.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/, for models.py
import models  # noqa: E402

import gradwatch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bug", action="store_true")
    parser.add_argument("--dropout", action="store_true")
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--no-watch", action="store_true")
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()

    model = models.mlp([4, 5, 3], activation="tanh", seed=0, batch=8)
    params = model.params
    rng = np.random.default_rng(0)

    def loss_fn(p):
        if not args.dropout:
            return model.loss(p)
        # inverted dropout on the inputs, a fresh mask at every call: randomness the check must refuse
        keep = (rng.random(model.x.shape) < 0.8) / 0.8
        return models.Model(p, model.x * keep, model.y, model.activation).loss(p)

    watch = None if args.no_watch else gradwatch.GradWatch(loss_fn)
    for step in range(args.steps):
        grads = model.backward(params)
        if args.bug:
            grads["dW1"] = grads["dW1"] * 1.1
        if watch is not None:
            watch.on_step(step, params, grads)
        for name in params:
            params[name] -= 0.1 * model.backward(params)["d" + name]
    if watch is not None:
        watch.close()
    print(f"tiny_train: trained {args.steps} steps, loss {model.loss(params):.4f}")
    return args.exit


if __name__ == "__main__":
    sys.exit(main())
