"""The default check (sample="auto") on a 784-1024-512-10 ReLU MLP (batch 32, 1,333,770 parameters).

Per seed s (>= 100): a fresh model (weights and batch drawn with seed s) and gradwatch's own seed s;
1. one wrong entry in W1 (the true value + W1's RMS gradient, at a random entry): detected? only W1
   named? ``worst_index`` the planted entry?
2. a 0.1% scale error in one tensor (drawn per seed): detected, and that tensor (only) named?
3. the correct gradients: a false alarm?
Loss evaluations and seconds per check, against what the documents' full loop would cost
(2 × parameters evaluations; its time from the measured seconds per loss evaluation, and from the
first components of the naive loop timed in this run). Issue 2's targets: <= 400 evaluations,
detection and localisation >= 99%, false alarms <= 1%.

    python3 benchmarks/bench_default_check.py            # 100 seeds, about 2 min on 1 core
    python3 benchmarks/bench_default_check.py --seeds 20
"""

from __future__ import annotations

import argparse
import sys
import time

import _models as M  # first: pins the BLAS threads
import numpy as np

import _peers as P
from gradwatch import check_gradients

SIZES = [784, 1024, 512, 10]
BATCH = 32


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args(argv)
    argv = argv if argv is not None else sys.argv[1:]
    M.print_header("The default check on a 784-1024-512-10 ReLU MLP, batch 32", ["benchmarks/bench_default_check.py"] + argv)
    n = M.n_params(SIZES)
    stats = {k: [] for k in ("entry", "scale", "correct")}
    misses = []
    t_loss = []
    t0 = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        model = M.mlp(SIZES, "relu", seed=seed, batch=BATCH)
        correct = model.backward(model.params)
        for _ in range(3):
            t = time.perf_counter()
            model.loss(model.params)
            t_loss.append(time.perf_counter() - t)
        rng = np.random.default_rng(10_000 + seed)
        for case in ("entry", "scale", "correct"):
            if case == "correct":
                grads, planted = correct, None
            else:
                planted = M.plant(model, correct, case, rng)
                grads = planted.grads
            t = time.perf_counter()
            r = check_gradients(model.loss, model.params, grads, seed=seed)
            dt = time.perf_counter() - t
            row = dict(seconds=dt, evals=r.loss_evaluations, failed=r.failed, passed=r.passed)
            if planted is not None:
                row["detected"] = not r.passed
                row["named"] = r.failed == (planted.tensor,)
                if case == "entry":
                    row["index"] = (not r.passed) and r.per_param["W1"].worst_index == planted.index
                ok = row["detected"] and row["named"] and row.get("index", True)
                if not ok:
                    misses.append(f"{case}: seed {seed}: planted {planted.tensor}{list(planted.index) if planted.index else ''}, "
                                  f"got passed={r.passed} failed={r.failed} worst_index="
                                  f"{r.per_param[planted.tensor].worst_index} evals={r.loss_evaluations}")
            elif not r.passed:
                misses.append(f"correct: seed {seed}: false alarm, failed={r.failed}\n{r}")
            if r.loss_evaluations > 400:
                misses.append(f"{case}: seed {seed}: {r.loss_evaluations} loss evaluations (> 400)")
            stats[case].append(row)
        if (seed - args.first_seed) % 20 == 19:
            print(f"  [{seed - args.first_seed + 1} seeds: {time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)

    sec_eval = float(np.median(t_loss))
    # the documents' naive loop, its first components on the last model
    k = 10
    naive_s, _ = M.median_time(lambda: P.documents_loop(model, correct, limit=k), 1)
    naive_per_component = naive_s / k

    S = args.seeds
    e, s, c = stats["entry"], stats["scale"], stats["correct"]
    print(f"Model: {SIZES}, ReLU, float64, batch {BATCH}: {n:,} parameters in 6 tensors (W1 {SIZES[0] * SIZES[1]:,} entries). "
          f"{S} seeds (model seed = check seed = s, s = {args.first_seed}…{args.first_seed + S - 1}).\n")

    def ev(rows):
        x = np.array([r["evals"] for r in rows])
        return f"{x.mean():.0f} (min {x.min()}, max {x.max()})"

    def secs(rows):
        x = np.array([r["seconds"] for r in rows])
        return f"{np.median(x):.2f} s (max {x.max():.2f} s)"

    rows = [
        ["one wrong entry in W1", M.pct(sum(r["detected"] for r in e), S), M.pct(sum(r["named"] for r in e), S),
         M.pct(sum(r["index"] for r in e), S), ev(e), secs(e)],
        ["0.1% scale error, one tensor", M.pct(sum(r["detected"] for r in s), S), M.pct(sum(r["named"] for r in s), S),
         "–", ev(s), secs(s)],
        ["correct gradients", f"false alarms {M.pct(sum(not r['passed'] for r in c), S)}", "–", "–", ev(c), secs(c)],
    ]
    print(M.table(rows, ["case", "detected", "only the right tensor named", "worst_index = planted entry",
                         "loss evaluations", "seconds per check (median)"]))
    full_evals = 2 * n
    gw_med = float(np.median([r["seconds"] for r in e]))
    print()
    print(M.table([
        ["gradwatch default (one wrong entry)", ev(e), f"{gw_med:.2f} s (measured)"],
        ["the documents' full loop, 2 × params (sample=\"all\" adds 1 × for truncation)", f"{full_evals:,}",
         f"{M.fmt_s(full_evals * sec_eval)} (= {full_evals:,} × {sec_eval * 1e3:.2f} ms per loss evaluation)"],
        ["the documents' naive loop (θ copy + dict per component)", f"{full_evals:,}",
         f"{M.fmt_s(naive_per_component * n)} (= {n:,} × {naive_per_component * 1e3:.1f} ms per component, first {k} timed)"],
    ], ["check", "loss evaluations", "time to a verdict"]))
    print(f"\nratio full loop / default check: {full_evals / np.mean([r['evals'] for r in e]):,.0f}x in loss evaluations, "
          f"{full_evals * sec_eval / gw_med:,.0f}x in time")
    worst = max(r["evals"] for rows in stats.values() for r in rows)
    print(f"budget: most loss evaluations in any of the {3 * S} checks: {worst} (target <= 400): "
          f"{'OK' if worst <= 400 else 'MISSED'}")
    print("\nmisses (each a reproducer: python3 benchmarks/bench_default_check.py --first-seed SEED --seeds 1):")
    print("\n".join("  " + m for m in misses) if misses else "  none")
    print(f"\ntotal run time {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
