"""Train an L-layer NumPy MLP on three spiral arms, with gradwatch checking its backprop.

    python examples/train_mlp.py                       # checks at step 0 and after half the steps
    python examples/train_mlp.py --keep-prob 0.8       # dropout in training, checks without it
    python examples/train_mlp.py --config configs/debug.yaml
    tensorboard --logdir runs                          # the checks, per tensor

The watch follows the documents' advice: check at random initialisation and again after some
training, and never through dropout. The loss_fn it is given computes the cost with dropout off
(keep_prob=1), and at a step where a check is due (``watch.due(step)``) the script runs one extra
backward pass without dropout and hands those gradients to the watch. Every other step costs the
watch one O(1) test. Exit status: 0 when every check passed, 1 when one failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

# the matrices here are small: one BLAS thread is fastest, and immune to busy neighbours
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _mlp  # noqa: E402  (the model shared by the examples)

from gradwatch import CheckResult, DropoutActiveError, GradWatch  # noqa: E402
from gradwatch.callback import GradientCheckError  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="gradient-descent steps (default 1000)")
    parser.add_argument("--check-after", type=int, default=None,
                        help="step of the check after some training (default: half of --steps)")
    parser.add_argument("--keep-prob", type=float, default=1.0, help="dropout keep probability in training (default 1: off)")
    parser.add_argument("--hidden", default="64,32", help="hidden layer sizes (default 64,32)")
    parser.add_argument("--learning-rate", type=float, default=1.0)
    parser.add_argument("--lambd", type=float, default=1e-2, help="L2 strength (default 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the weights, dropout and the checks")
    parser.add_argument("--logdir", default=None, help="TensorBoard logdir (default runs/train_mlp; with --config, the config's)")
    parser.add_argument("--config", default=None, help="a gradwatch YAML config (its schedule replaces the built-in one)")
    parser.add_argument("--dropout-in-check", action="store_true",
                        help="hand the watch the dropout gradients (to see it refuse the check)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0.0 < args.keep_prob <= 1.0:
        print(f"--keep-prob must be in (0, 1]; got {args.keep_prob}", file=sys.stderr)
        return 2
    sizes = [2, *(int(h) for h in args.hidden.split(",") if h), 3]
    X, y = _mlp.make_spirals(100, 3, seed=args.seed)
    params = _mlp.init_params(sizes, seed=args.seed)
    rng = np.random.default_rng(args.seed)
    keep_prob, lambd = args.keep_prob, args.lambd

    # the cost gradwatch differentiates: same batch, L2 included, dropout OFF
    def loss_fn(p):
        return _mlp.cost(p, X, y, lambd, keep_prob=1.0)

    # whether the gradients handed to the watch came through dropout (then it refuses to check)
    def dropout_active():
        return args.dropout_in_check and keep_prob < 1.0

    if args.config:
        extra = {"logdir": args.logdir} if args.logdir else {}
        watch = GradWatch.from_config(args.config, loss_fn=loss_fn, dropout_active=dropout_active, **extra)
    else:
        check_after = args.steps // 2 if args.check_after is None else args.check_after
        watch = GradWatch(
            loss_fn,
            at_init=True,                 # at random initialisation ...
            after_steps=check_after,      # ... and again after some training
            seed=args.seed,
            logdir=args.logdir or os.path.join("runs", "train_mlp"),
            dropout_active=dropout_active,
        )

    print(f"MLP {sizes}, {X.shape[1]} spiral points, {args.steps} steps, keep_prob {keep_prob}, lambd {lambd}")
    failed = []
    started = time.perf_counter()
    try:
        with watch:
            for step in range(args.steps):
                cost, grads = _mlp.cost_and_grads(params, X, y, lambd, keep_prob, rng)
                check_grads = grads
                if keep_prob < 1.0 and not args.dropout_in_check and watch.due(step):
                    # gradient checking does not work with dropout: one extra pass without it
                    _, check_grads = _mlp.cost_and_grads(params, X, y, lambd, keep_prob=1.0)
                result = watch.on_step(step, params, check_grads)  # None unless a check is due
                if result is not None:
                    print(f"\n-- step {step}, cost {cost:.4f}\n{result}\n")
                    if not result.passed:
                        failed.append(step)
                _mlp.update(params, grads, args.learning_rate)
                if step % 500 == 0 or step == args.steps - 1:
                    print(f"step {step:5d}  cost {cost:.4f}  train accuracy {_mlp.accuracy(params, X, y):.1%}")
    except DropoutActiveError as err:  # on_dropout="raise" (the default)
        print(f"stopped: {err}", file=sys.stderr)
        return 2
    except GradientCheckError as err:  # on_failure="raise", from a config
        print(f"stopped at step {err.step}:\n{err.result}", file=sys.stderr)
        return 1
    accuracy = _mlp.accuracy(params, X, y)
    print(f"final train accuracy {accuracy:.1%} after {args.steps} steps in {time.perf_counter() - started:.1f} s")
    checks = [entry for _, entry in watch.history]
    print(f"gradient checks: {len(checks)} scheduled, {sum(isinstance(c, CheckResult) and c.passed for c in checks)} passed, "
          f"{len(failed)} failed, {sum(not isinstance(c, CheckResult) for c in checks)} refused")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
