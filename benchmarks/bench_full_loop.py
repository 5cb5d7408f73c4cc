"""``sample="all"``: its time as a ratio to the bare loss evaluations it needs, and to the documents' naive loop.

On an MLP whose loss is not trivially cheap (a few thousand parameters, batch 64), interleaved in
one run and repeated (median):
  A. ``check_gradients(loss, params, grads, sample="all")`` — it makes E loss evaluations;
  B. E bare calls ``loss(params)`` in a plain loop (nothing else);
  C. the documents' loop as the course writes it: per component a copy of θ and a dict rebuilt with
     ``vector_to_params`` (2n evaluations).
Target (issue 2): A / B <= 1.15. Two more models show how the ratio moves with the loss's cost.

    python3 benchmarks/bench_full_loop.py            # about 1 min
    python3 benchmarks/bench_full_loop.py --repeat 11
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import _models as M  # first: pins the BLAS threads

import _peers as P
from gradwatch import check_gradients

MODELS = [
    ("main: 32-64-10, batch 64", [32, 64, 10], 64),
    ("cheaper loss: 20-36-10, batch 16", [20, 36, 10], 16),
    ("dearer loss: 96-96-10, batch 64", [96, 96, 10], 64),
]


def measure(sizes, batch, repeat):
    model = M.mlp(sizes, "relu", seed=0, batch=batch)
    grads = model.backward(model.params)
    n = model.size
    warm = check_gradients(model.loss, model.params, grads, sample="all", seed=0)
    evals = warm.loss_evaluations
    loss, params = model.loss, model.params

    def run_all():
        return check_gradients(loss, params, grads, sample="all", seed=0)

    def run_bare(k):
        for _ in range(k):
            loss(params)

    def run_naive():
        return P.documents_loop(model, grads)

    a, b, b2n, c = [], [], [], []
    for rep in range(repeat):
        steps = [("a", run_all), ("b", lambda: run_bare(evals)), ("b2n", lambda: run_bare(2 * n)), ("c", run_naive)]
        if rep % 2:
            steps.reverse()
        for key, fn in steps:
            t = time.perf_counter()
            out = fn()
            dt = time.perf_counter() - t
            {"a": a, "b": b, "b2n": b2n, "c": c}[key].append(dt)
            if key == "a" and not out.passed:
                print(f"  note: sample='all' did not pass the correct model {sizes}: {out.failed}", file=sys.stderr)
    ratios = [x / y for x, y in zip(a, b)]
    naive = [x / y for x, y in zip(c, b2n)]
    return dict(n=n, evals=evals, t_all=statistics.median(a), t_bare=statistics.median(b),
                t_naive=statistics.median(c), t_loss=statistics.median(b) / evals,
                ratio=statistics.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                naive=statistics.median(naive), speedup=statistics.median([x / y for x, y in zip(c, a)]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args(argv)
    M.print_header('sample="all" against bare loss evaluations and the documents\' naive loop',
                   ["benchmarks/bench_full_loop.py"] + (argv if argv is not None else sys.argv[1:]))
    t0 = time.perf_counter()
    rows = []
    for label, sizes, batch in MODELS:
        r = measure(sizes, batch, args.repeat)
        rows.append([label, f"{r['n']:,}", f"{r['t_loss'] * 1e6:.1f} µs", f"{r['evals']:,} (3n+{r['evals'] - 3 * r['n']})",
                     f"{r['t_all']:.3f} s", f"{r['t_bare']:.3f} s",
                     f"**{r['ratio']:.3f}** ({r['ratio_min']:.3f}–{r['ratio_max']:.3f})",
                     f"{r['t_naive']:.3f} s", f"{r['naive']:.2f}", f"{r['speedup']:.2f}x"])
        print(f"  [{label}: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
    print(f"Interleaved, {args.repeat} repetitions, medians (range of the per-repetition ratio in brackets).\n")
    print(M.table(rows, ["model", "params n", "1 loss eval", "evaluations E of sample=\"all\"", "sample=\"all\"",
                         "E bare loss calls", "ratio all / bare (target <= 1.15)", "documents' naive loop",
                         "naive / 2n bare calls", "naive / sample=\"all\""]))
    main_ratio = float(rows[0][6].split("**")[1])
    print(f"\nmain model: ratio {main_ratio:.3f}: {'within' if main_ratio <= 1.15 else 'ABOVE'} the 1.15 target")
    print(f"total run time {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
