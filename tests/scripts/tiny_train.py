"""A tiny NumPy training loop with a GradWatch attached, run by tests/test_cli.py under `gradwatch run`.

    python tests/scripts/tiny_train.py              # correct backprop: every check passes, exit 0
    python tests/scripts/tiny_train.py --bug        # dW1 10% too large: checks fail (the script still exits 0)
    python tests/scripts/tiny_train.py --dropout    # dropout inside the loss: the check is refused
    python tests/scripts/tiny_train.py --exit 3     # checks pass, then the script fails with status 3
    python tests/scripts/tiny_train.py --no-watch   # trains without building a GradWatch
    python tests/scripts/tiny_train.py --epochs 2 --bug-epochs 1   # the step counter restarts each
                                                    # epoch; dW1 is wrong in the first epoch only
    python tests/scripts/tiny_train.py --wait-for-signal READY   # writes READY, then waits for SIGINT
                                                    # or SIGTERM, writes READY.got, exits 3 ("--ignore-signals": never exits)

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
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--bug-epochs", type=int, default=0)
    parser.add_argument("--wait-for-signal", metavar="READY")
    parser.add_argument("--ignore-signals", action="store_true")
    args = parser.parse_args()
    if args.wait_for_signal:
        return wait_for_signal(args.wait_for_signal, args.ignore_signals)

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
    for epoch in range(args.epochs):
        for step in range(args.steps):
            grads = model.backward(params)
            if args.bug or epoch < args.bug_epochs:
                grads["dW1"] = grads["dW1"] * 1.1
            if watch is not None:
                watch.on_step(step, params, grads)
            for name in params:
                params[name] -= 0.1 * model.backward(params)["d" + name]
    if watch is not None:
        watch.close()
    print(f"tiny_train: trained {args.steps} steps, loss {model.loss(params):.4f}")
    return args.exit


def wait_for_signal(ready: str, ignore: bool) -> int:
    """Say READY (a file), then sleep until SIGINT or SIGTERM arrives; note which one in READY.got."""
    import signal
    import time

    got = []

    def handler(signum, frame):
        got.append(signum)
        with open(ready + ".got", "a") as handle:
            handle.write(f"{signum}\n")

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN if ignore else handler)
    with open(ready, "w") as handle:
        handle.write(str(os.getpid()))
    while not got:
        time.sleep(0.05)
    return 3


if __name__ == "__main__":
    sys.exit(main())
