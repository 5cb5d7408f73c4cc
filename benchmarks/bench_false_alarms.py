"""False alarms: how often each checker fails a *correct* backprop.

Correct MLPs with ReLU, tanh and sigmoid hidden layers, in float64 and float32, a fresh model (and
checker seed) per seed. Every checker at 1e3 parameters (the 2n-evaluation ones included); the cheap
ones also at 1e5. Thresholds: 1e-7 for float64, 1e-4 for float32 (gradwatch's defaults, given to
every peer that returns a number); torch gradcheck keeps its own tolerances.

    python3 benchmarks/bench_false_alarms.py                # 100 seeds, about 5 min on 1 core
    python3 benchmarks/bench_false_alarms.py --seeds 20 --sizes 1e3
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import _models as M  # first: pins the BLAS threads
import numpy as np

import _peers as P

ALL = ["gradwatch", "documents", "sparse10", "scipy", "torch_fast", "torch"]
CHEAP = ["gradwatch", "sparse10", "scipy", "torch_fast"]
TOOLS = {"gradwatch": P.gradwatch_default, "documents": P.documents_loop, "sparse10": P.sparse10,
         "scipy": P.scipy_random, "torch_fast": P.torch_fast_verdict, "torch": P.torch_slow}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--sizes", default="1e3,1e5")
    ap.add_argument("--activations", default="relu,tanh,sigmoid")
    ap.add_argument("--dtypes", default="float64,float32")
    ap.add_argument("--tools", default=",".join(ALL), help="which checkers to run (gradwatch alone: --tools gradwatch)")
    args = ap.parse_args(argv)
    chosen = args.tools.split(",")
    M.print_header("False alarms on correct models", ["benchmarks/bench_false_alarms.py"] + (argv if argv is not None else sys.argv[1:]))
    warm = M.mlp(M.SIZES["1e3"])
    if "torch_fast" in chosen:
        P.torch_fast(warm, warm.backward(warm.params))
    if "scipy" in chosen:
        P.scipy_random(warm, warm.backward(warm.params), 0)

    alarms = defaultdict(list)
    unsure = defaultdict(int)  # gradwatch: checks that were inconclusive (counted as alarms too)
    evals = defaultdict(list)
    examples = {}
    t0 = time.perf_counter()
    sizes = args.sizes.split(",")
    for size in sizes:
        tools = [t for t in (ALL if size == "1e3" else CHEAP) if t in chosen]
        for act in args.activations.split(","):
            for dt in args.dtypes.split(","):
                t1 = time.perf_counter()
                for seed in range(args.seeds):
                    model = M.mlp(M.SIZES[size], act, seed=seed, dtype=np.dtype(dt))
                    grads = model.backward(model.params)
                    for tool in tools:
                        if tool == "gradwatch":
                            r = P.check_gradients(model.loss, model.params, grads, seed=seed)
                            o = P.Outcome(r.passed, r.loss_evaluations, r.failed + r.inconclusive)
                            unsure[(size, act, dt)] += int(r.verdict == "inconclusive")
                        else:
                            o = TOOLS[tool](model, grads, seed)
                        alarms[(size, act, dt, tool)].append(not o.passed)
                        evals[(size, tool)].append(o.evals)
                        if not o.passed and (size, act, dt, tool) not in examples:
                            examples[(size, act, dt, tool)] = (seed, o)
                print(f"  [{size} {act} {dt}: {time.perf_counter() - t1:.0f} s]", file=sys.stderr, flush=True)

    print(f"Models: {', '.join(f'{s}: {M.n_params(M.SIZES[s]):,} params {M.SIZES[s]}' for s in sizes)}; batch {M.BATCH}; "
          f"a fresh model per seed; {args.seeds} seeds per cell. Cell: false-alarm rate (alarms/checks).\n")
    header = ["params", "hidden", "dtype"] + [P.LABELS[t] for t in ALL] + ["gradwatch: of which inconclusive"]
    rows = []
    for size in sizes:
        for act in args.activations.split(","):
            for dt in args.dtypes.split(","):
                cells = []
                for tool in ALL:
                    a = alarms.get((size, act, dt, tool))
                    cells.append(M.pct(sum(a), len(a)) if a else "not run")
                rows.append([size, act, dt] + cells + [M.pct(unsure[(size, act, dt)], args.seeds)])
    print(M.table(rows, header))
    print("\nMean loss evaluations per check: " + "; ".join(
        f"{s} {t}: {np.mean(evals[(s, t)]):.0f}" for s in sizes for t in ALL if evals.get((s, t))))
    gw = [(k, v) for k, v in examples.items() if k[3] == "gradwatch"]
    if gw:
        print("\ngradwatch false alarms (reproduce with the model seed = check seed):")
        for (size, act, dt, _), (seed, o) in gw:
            print(f"  size {size} {M.SIZES[size]} {act} {dt} seed {seed}: failed or inconclusive {o.named}")
    print(f"\ntotal run time {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
