"""Cost against the number of tensors, the passing check's overhead, and float32 memory (issue 11).

Measured side by side in one run (BLAS on one thread):

1. Growth: MLPs of width 64 and 1…32 hidden layers (4…66 tensors), tanh, batch 32. For each depth:
   loss evaluations of gradwatch's default check on the correct model, with one wrong entry in W1
   (named alone? located?) and with every tensor wrong (x1.01: all named?), against the documents'
   full loop (2 per parameter), cs231n-style sampling (10 coordinates per tensor: 20 per tensor),
   scipy's check_grad(direction="random") (2) and torch gradcheck fast mode.
2. Overhead: the 784-1024-512-10 ReLU MLP (batch 32 and 64): median seconds of a passing default
   check against scipy's check_grad(direction="random") on the same model (its gradient call is our
   backward), and against the time of the loss evaluations the check made; and the floor of that
   last ratio: the loss evaluations plus, for each one off the point, one bare NumPy write of every
   entry (base + step x direction), the least any checker that moves every entry must do.
3. float32 memory: an MLP with three large float32 tensors; tracemalloc peak over the largest
   tensor's bytes (target <= 2.5).

    python benchmarks/bench_tensors.py            # ~3 min
    python benchmarks/bench_tensors.py --depths 1,4,16 --seeds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc

import _models as M  # first: pins the BLAS threads
import numpy as np

import _peers as P
from gradwatch import check_gradients


def growth(depths, seeds, plot=None):
    rows, series = [], []
    for depth in depths:
        sizes = [64] * (depth + 1) + [10]
        m = M.mlp(sizes, "tanh", seed=0, batch=32)
        correct = m.backward(m.params)
        passing, entry, named_alone, located, every, all_named = [], [], 0, 0, [], 0
        for seed in range(seeds):
            r = check_gradients(m.loss, m.params, correct, seed=seed)
            passing.append(r.loss_evaluations if r.passed else float("nan"))
            planted = M.plant(m, correct, "entry", np.random.default_rng(seed))
            r = check_gradients(m.loss, m.params, planted.grads, seed=seed)
            entry.append(r.loss_evaluations)
            named_alone += r.failed == ("W1",)
            located += r.per_param["W1"].worst_index == planted.index
            wrong = {k: v * 1.01 for k, v in correct.items()}
            r = check_gradients(m.loss, m.params, wrong, seed=seed)
            every.append(r.loss_evaluations)
            all_named += len(r.failed) == len(m.params)
        torch = P.torch_fast(m, correct, 0).evals
        series.append((len(m.params), statistics.median(passing), statistics.median(entry), 2 * m.size,
                       20 * len(m.params), 2, torch))
        rows.append([
            len(m.params), f"{m.size:,}", f"{statistics.median(passing):.0f} (max {max(passing):.0f})",
            f"{statistics.median(entry):.0f}", f"{named_alone}/{seeds}, {located}/{seeds}",
            f"{statistics.median(every):.0f} / {max(400, 20 * len(m.params))}", f"{all_named}/{seeds}",
            f"{2 * m.size:,}", 20 * len(m.params), 2, torch,
        ])
    if plot:
        _plot(series, plot)
    header = ["tensors", "params", "gradwatch passing", "gradwatch one wrong entry", "named alone, located",
              "every tensor wrong (x1.01) / budget", "all named", "documents' loop", "cs231n 10/tensor",
              "scipy random", "torch fast"]
    return M.table(rows, header)


def _plot(series, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [row[0] for row in series]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for k, label, style in ((1, "gradwatch, passing", "o-"), (2, "gradwatch, one wrong entry (named, located)", "s-"),
                            (3, "documents' loop (2 per parameter)", "--"), (4, "cs231n-style, 10 per tensor", ":"),
                            (6, "torch gradcheck fast_mode", "-."), (5, "scipy check_grad(random), names nothing", "-")):
        ax.plot(x, [row[k] for row in series], style, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tensors (width-64 tanh MLPs, 1-32 hidden layers)")
    ax.set_ylabel("loss evaluations per check")
    ax.set_title("Cost of a check against the number of tensors")
    ax.legend(fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _write_seconds(params, repeat=21):
    """Median seconds of the write an evaluation off the point cannot avoid: every entry set to
    base + step x direction from a byte of direction, as bare NumPy; the faster of a casting multiply
    then an add, and a widening copy then a multiply and an add."""
    rng = np.random.default_rng(0)
    work = [(v.reshape(-1), np.frombuffer(rng.bytes(v.size), dtype=np.int8), np.empty(v.size)) for v in params.values()]

    def casting():
        for base, codes, out in work:
            np.multiply(codes, 1e-7, out=out)
            out += base

    def widening():
        for base, codes, out in work:
            np.copyto(out, codes)
            out *= 1e-7
            out += base

    best = []
    for write in (casting, widening):
        ts = []
        for _ in range(repeat):
            t = time.perf_counter()
            write()
            ts.append(time.perf_counter() - t)
        best.append(statistics.median(ts))
    return min(best)


def overhead(repeat, batch):
    m = M.mlp([784, 1024, 512, 10], "relu", seed=0, batch=batch)
    grads = m.backward(m.params)
    moved = {"n": 0}
    origin = {k: v.copy() for k, v in m.params.items()}

    def counting(p):  # a separate, untimed run counts the evaluations off the point
        moved["n"] += any(not np.array_equal(p[k], origin[k]) for k in p)
        return m.loss(p)

    times_check, times_scipy, times_loss, evals, off, verdicts = [], [], [], [], [], []
    for k in range(repeat):
        t = time.perf_counter()
        r = check_gradients(m.loss, m.params, grads, seed=k)
        times_check.append(time.perf_counter() - t)
        evals.append(r.loss_evaluations)
        verdicts.append(r.verdict)
        t = time.perf_counter()
        for _ in range(r.loss_evaluations):
            m.loss(m.params)
        times_loss.append(time.perf_counter() - t)
        t = time.perf_counter()
        P.scipy_random(m, grads, k)
        times_scipy.append(time.perf_counter() - t)
        moved["n"] = 0
        check_gradients(counting, m.params, grads, seed=k)
        off.append(moved["n"])
    write = _write_seconds(m.params)
    med = statistics.median
    ratios_loss = [c / lo for c, lo in zip(times_check, times_loss)]
    ratios_scipy = [c / s for c, s in zip(times_check, times_scipy)]
    floors = [(lo + n * write) / lo for lo, n in zip(times_loss, off)]
    tally = ", ".join(f"{v} {verdicts.count(v)}" for v in sorted(set(verdicts)))
    return (f"784-1024-512-10 ReLU MLP, batch {batch}, {repeat} interleaved repetitions (correct gradients: {tally}): check "
            f"{med(times_check) * 1e3:.0f} ms ({med(evals):.0f} loss evaluations, {min(evals)}-{max(evals)}), "
            f"scipy check_grad(random) {med(times_scipy) * 1e3:.0f} ms, the check's own loss evaluations alone "
            f"{med(times_loss) * 1e3:.0f} ms; one bare write of all {m.size:,} entries {write * 1e3:.2f} ms, "
            f"{med(off):.0f} evaluations off the point.\n"
            f"  median ratio check / scipy: {med(ratios_scipy):.2f} (target <= 1.5; worst {max(ratios_scipy):.2f}); "
            f"check / its own loss evaluations: {med(ratios_loss):.3f} (target <= 1.15); floor of that ratio "
            f"(loss evaluations + their bare writes): {med(floors):.3f}")


def _peak_over_largest(loss, params, grads):
    largest = max(v.nbytes for v in params.values())
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    r = check_gradients(loss, params, grads, seed=0)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return r.verdict, peak / largest


def float32_memory():
    # gradwatch's own memory: three large float32 tensors and an allocation-free loss
    rng = np.random.default_rng(0)
    params = {name: rng.standard_normal(n).astype(np.float32) for name, n in (("W1", 10**6), ("W2", 800_000), ("W3", 600_000))}
    grads = {"d" + k: (2 * v.astype(np.float64)).astype(np.float32) for k, v in params.items()}

    def quadratic(p):
        return float(sum(np.einsum("i,i->", v, v, dtype=np.float64) for v in p.values()))

    wrong = dict(grads, dW2=grads["dW2"].copy())
    wrong["dW2"][123] += 1.0
    lines = ["three float32 tensors (1e6, 8e5, 6e5 entries), allocation-free loss: "
             + "; ".join(f"{name}: {v} at {x:.3f}x the largest tensor" for name, (v, x) in
                         (("correct", _peak_over_largest(quadratic, params, grads)),
                          ("one wrong entry", _peak_over_largest(quadratic, params, wrong)))) + " (target <= 2.5)"]
    # and a float32 MLP, whose own forward pass upcasts the next layer's float32 weights when one
    # tensor is handed to it as a float64 copy: those temporaries are the loss's, counted here too
    m = M.mlp([1000, 1000, 800, 10], "tanh", seed=0, batch=8, dtype=np.float32)
    verdict, ratio = _peak_over_largest(m.loss, m.params, m.backward(m.params))
    lines.append(f"float32 MLP 1000-1000-800-10 (its forward's upcast temporaries included): {verdict} at {ratio:.2f}x")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", default="1,2,4,8,16,32")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--plot", default="benchmarks/tensors.png", help="where to draw the growth plot ('' for none)")
    args = ap.parse_args(argv)
    M.print_header("Cost against the number of tensors (issue 11)",
                   ["benchmarks/bench_tensors.py"] + (argv if argv is not None else sys.argv[1:]))
    t0 = time.perf_counter()
    print(growth([int(d) for d in args.depths.split(",")], args.seeds, args.plot))
    print()
    for batch in (32, 64):
        print(overhead(args.repeat, batch))
    print()
    print(float32_memory())
    print(f"\ntotal run time {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
