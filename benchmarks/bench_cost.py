"""Cost: seconds to a verdict and peak extra memory, 1e3…1e7 parameters, and how each grows.

Per size (MLPs of ``_models.SIZES``, batch 64): the seconds of one loss evaluation, then each checker
on the correct model (a pass) and on the model with one wrong entry in W1 (a failure: gradwatch
localises it), median of 3 runs (1 at 1e7), and the peak extra memory of the failing check in a
separate run (tracemalloc: NumPy and Python allocations; sampled RSS: everything, torch included).

The documents' loop runs whole at 1e3/1e4 and for its first components at 1e5/1e6 (time and memory
per component are flat, so the whole loop is that × the parameter count: marked *est.*). torch's
slow gradcheck runs at 1e3/1e4; above, its time is estimated as 2n loss evaluations + n × its
per-parameter overhead measured at 1e4. Neither runs at 1e7 (days).

    python3 benchmarks/bench_cost.py            # about 2 min on 1 core; writes benchmarks/growth.png
    python3 benchmarks/bench_cost.py --sizes 1e3,1e4,1e5 --no-plot
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import _models as M  # first: pins the BLAS threads
import numpy as np

import _peers as P

CHEAP = ["gradwatch", "sparse10", "scipy", "torch_fast"]
FULL = ["documents", "torch"]
TOOLS = {"gradwatch": P.gradwatch_default, "sparse10": P.sparse10, "scipy": P.scipy_random,
         "torch_fast": P.torch_fast_verdict, "documents": P.documents_loop, "torch": P.torch_slow}
PREFIX = {"1e5": 400, "1e6": 40}  # components of the documents' loop timed at these sizes


def loss_seconds(model) -> float:
    ts = []
    for _ in range(7 if model.size > 5e6 else 21):
        t = time.perf_counter()
        model.loss(model.params)
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1e3,1e4,1e5,1e6,1e7")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    sizes = args.sizes.split(",")
    M.print_header("Cost: seconds to a verdict and peak extra memory", ["benchmarks/bench_cost.py"] + (argv if argv is not None else sys.argv[1:]))
    warm = M.mlp(M.SIZES["1e3"])
    P.torch_fast(warm, warm.backward(warm.params))
    P.scipy_random(warm, warm.backward(warm.params), 0)

    res = defaultdict(dict)  # res[tool][size] = dict(pass_s, fail_s, evals, tm, rss, est)
    t_loss = {}
    loss_mem = {}
    torch_overhead = None
    t0 = time.perf_counter()
    for size in sizes:
        t1 = time.perf_counter()
        model = M.mlp(M.SIZES[size], "relu", seed=0)
        n = model.size
        correct = model.backward(model.params)
        planted = M.plant(model, correct, "entry", np.random.default_rng(1))
        t_loss[size] = loss_seconds(model)
        loss_mem[size] = M.peak_memory(lambda: model.loss(model.params))
        repeat = 1 if n > 5e6 else 3
        tools = list(CHEAP)
        if size in ("1e3", "1e4"):
            tools += FULL
        for tool in tools:
            fn = TOOLS[tool]
            pass_s, o_pass = M.median_time(lambda: fn(model, correct, 0), repeat)
            fail_s, o_fail = M.median_time(lambda: fn(model, planted.grads, 0), repeat)
            tm, rss = M.peak_memory(lambda: fn(model, planted.grads, 0))
            res[tool][size] = dict(pass_s=pass_s, fail_s=fail_s, evals_pass=o_pass.evals, evals_fail=o_fail.evals,
                                   tm=tm, rss=rss, est=False, caught=not o_fail.passed, passed=o_pass.passed)
            if tool == "torch" and size == "1e4":
                torch_overhead = (pass_s - o_pass.evals * t_loss[size]) / n
        if size in PREFIX:
            k = PREFIX[size]
            s, o = M.median_time(lambda: P.documents_loop(model, planted.grads, limit=k), 1)
            tm, rss = M.peak_memory(lambda: P.documents_loop(model, planted.grads, limit=max(4, k // 10)))
            whole = s / k * n
            res["documents"][size] = dict(pass_s=whole, fail_s=whole, evals_pass=2 * n, evals_fail=2 * n,
                                          tm=tm, rss=rss, est=True, caught=None, passed=None)
        if size not in ("1e3", "1e4") and size != "1e7" and torch_overhead is not None:
            est = (2 * n + 1) * t_loss[size] + max(torch_overhead, 0.0) * n
            res["torch"][size] = dict(pass_s=est, fail_s=est, evals_pass=2 * n + 1, evals_fail=2 * n + 1,
                                      tm=None, rss=None, est=True, caught=None, passed=None)
        model = correct = planted = None  # free the big arrays before the next size
        print(f"  [{size}: {time.perf_counter() - t1:.0f} s]", file=sys.stderr, flush=True)

    order = CHEAP + FULL
    print(f"Models: {', '.join(f'{s}: {M.n_params(M.SIZES[s]):,} params {M.SIZES[s]}' for s in sizes)}; batch {M.BATCH}; "
          "ReLU, float64. *est.* = extrapolated, not run whole (see the docstring).\n")
    print("### Seconds to a verdict (pass = correct model; fail = one wrong entry in W1) and loss evaluations\n")
    rows = [["1 loss evaluation", "–"] + [M.fmt_s(t_loss[s]) for s in sizes]]
    for tool in order:
        for case in ("pass", "fail"):
            cells = []
            for s in sizes:
                r = res[tool].get(s)
                if r is None:
                    cells.append("not run")
                    continue
                ev = r[f"evals_{case}"]
                cells.append(f"{M.fmt_s(r[f'{case}_s'])} · {ev:,} ev" + (" *est.*" if r["est"] else ""))
            rows.append([P.LABELS[tool], case] + cells)
    print(M.table(rows, ["checker", "case"] + sizes))
    print(f"\ntorch gradcheck per-parameter overhead beyond its loss evaluations (measured at 1e4): "
          f"{(torch_overhead or float('nan')) * 1e6:.1f} µs")
    verdicts = "; ".join(f"{P.LABELS[t]} {s}: {'pass' if r['passed'] else 'FAIL'} on correct, "
                         f"{'caught' if r['caught'] else 'MISSED'} the entry"
                         for t in order for s, r in res[t].items() if r["caught"] is not None)
    print(f"(verdicts in these timed runs: {verdicts})")

    print("\n### Peak extra memory of the failing check (tracemalloc / sampled RSS)\n")
    rows = [["θ (all params, float64)"] + [M.fmt_bytes(8 * M.n_params(M.SIZES[s])) for s in sizes],
            ["largest tensor (W1)"] + [M.fmt_bytes(8 * M.SIZES[s][0] * M.SIZES[s][1]) for s in sizes],
            ["1 loss evaluation (bare)"] + [f"{M.fmt_bytes(loss_mem[s][0])} / {M.fmt_bytes(loss_mem[s][1])}" for s in sizes]]
    for tool in order:
        cells = []
        for s in sizes:
            r = res[tool].get(s)
            if r is None or r["tm"] is None:
                cells.append("not run" if r is None else "not measured")
            else:
                cells.append(f"{M.fmt_bytes(r['tm'])} / {M.fmt_bytes(r['rss'])}")
        rows.append([P.LABELS[tool]] + cells)
    print(M.table(rows, ["checker"] + sizes))
    gw = res["gradwatch"]
    print("\ngradwatch tracemalloc peak / largest tensor: " + ", ".join(
        f"{s}: {gw[s]['tm'] / (8 * M.SIZES[s][0] * M.SIZES[s][1]):.2f}x" for s in sizes if s in gw))
    print("torch allocations are invisible to tracemalloc (its own allocator): read its RSS column. RSS is sampled every "
          "ms and counts pages, so small sizes show 0 B.")

    # growth: log-log slope over the sizes from 1e5 up (where fixed overheads no longer dominate)
    print("\n### Growth with the parameter count n: exponent k in cost ∝ n^k (least-squares fit over 1e5 and up, "
          "*est.* points included; 1.0 = linear)\n")
    rows = []
    xs_all = {s: M.n_params(M.SIZES[s]) for s in sizes}
    for tool in order:
        def slope(key, only_real=False):
            pts = [(xs_all[s], r[key]) for s, r in res[tool].items()
                   if r.get(key) and r[key] > 0 and not (only_real and r["est"])]
            if sum(p[0] >= 5e4 for p in pts) >= 2:
                pts = [p for p in pts if p[0] >= 5e4]
            if len(pts) < 2:
                return "–"
            x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            return f"{np.polyfit(x, y, 1)[0]:.2f}"
        rows.append([P.LABELS[tool], slope("evals_fail"), slope("fail_s"), slope("pass_s"), slope("tm", True)])
    big = [s for s in sizes if xs_all[s] >= 5e4] if sum(xs_all[s] >= 5e4 for s in sizes) >= 2 else sizes
    rows.append(["1 loss evaluation", "–",
                 f"{np.polyfit(np.log([xs_all[s] for s in big]), np.log([t_loss[s] for s in big]), 1)[0]:.2f}" if len(big) > 1 else "–",
                 "–", "–"])
    print(M.table(rows, ["checker", "loss evals (fail)", "seconds (fail)", "seconds (pass)", "memory (tracemalloc)"]))
    print(f"\ntotal run time {(time.perf_counter() - t0) / 60:.1f} min")

    if not args.no_plot:
        plot(res, sizes, t_loss, order, Path(__file__).with_name("growth.png"))


def plot(res, sizes, t_loss, order, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [("evals_fail", "loss evaluations (failing check)"), ("fail_s", "seconds to a verdict (failing check)"),
              ("mem", "peak extra memory, bytes (max of tracemalloc, RSS)")]
    for r in (r for t in order for r in res[t].values()):
        r["mem"] = max(r["tm"] or 0, r["rss"] or 0) or None
    for ax, (key, title) in zip(axes, panels):
        for tool in order:
            pts = sorted((M.n_params(M.SIZES[s]), r[key], r["est"]) for s, r in res[tool].items() if r.get(key))
            if not pts:
                continue
            x = [p[0] for p in pts]
            y = [p[1] for p in pts]
            line, = ax.plot(x, y, marker="o", label=P.LABELS[tool])
            est = [(a, b) for a, b, e in pts if e]
            if est:
                ax.plot([a for a, _ in est], [b for _, b in est], "x", color=line.get_color(), markersize=10)
        if key == "fail_s":
            ax.plot([M.n_params(M.SIZES[s]) for s in sizes], [t_loss[s] for s in sizes], "k--", label="1 loss evaluation")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle("gradwatch benchmarks: growth with model size (x = extrapolated)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print(f"plot written to {path.relative_to(M.ROOT)}")


if __name__ == "__main__":
    main()
