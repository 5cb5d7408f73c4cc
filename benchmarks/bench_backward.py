"""Layer checks (issue 10): ``check_backward`` against torch ``gradcheck`` and a cs231n-style
``eval_numerical_gradient_array``, on the same NumPy layers, planted bugs and upstream gradients.

Layers (``tests/layers.py``, float64, a fresh draw of inputs per seed): affine (6,208 entries),
conv (608), batchnorm (2,112), LSTM step (2,496; two outputs, its backward updates ``dnext_c`` in
place), each correct and with one planted bug. Per (layer, variant, seed) every tool checks the same
layer; gradwatch and the cs231n-style loop use the same ``dout`` (standard normal, from the seed).

* ``gradwatch`` - ``check_backward(forward, backward, inputs, dout=dout, seed=seed)``, defaults.
* ``cs231n-style`` - the idea of cs231n's ``eval_numerical_gradient_array`` (our own code): every
  entry of every input in place, h = 1e-5, numeric = Σ (f(x+h) − f(x−h))·dout / 2h; an input fails
  when formula (2) between numeric and analytic is ≥ 1e-7 (gradwatch's float64 threshold).
* ``torch`` / ``torch fast`` - ``torch.autograd.gradcheck`` (defaults; ``fast_mode`` False/True) on a
  ``torch.autograd.Function`` whose forward is the NumPy forward and whose backward calls the NumPy
  backward: it checks the user's backward pass. Slow mode builds the whole Jacobian (2 forwards per
  input entry, one backward per output entry); fast mode's failure message runs the slow mode, whose
  evaluations are counted in the table (what a user of fast_mode pays for the message).

Columns: detection (bug variants failed) / false alarms (correct variants failed), *named* = the
tool blamed exactly the planted bug's inputs, forward calls (mean), backward calls (mean), seconds
(median per check).

    python3 benchmarks/bench_backward.py              # 5 seeds, about 4 min on 1 core
    python3 benchmarks/bench_backward.py --seeds 3 --layers affine,lstm
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
import warnings
from collections import defaultdict
from typing import Any

import _models as M  # first: pins the BLAS threads
import numpy as np

sys.path.insert(0, str(M.ROOT / "tests"))
import layers as L

from gradwatch import check_backward, relative_difference

SIZES = {
    "affine": {"n": 32, "d": (64,), "m": 64},
    "conv": {"n": 2, "c": 3, "hw": 8, "f": 8},
    "batchnorm": {"n": 64, "d": 32},
    "lstm": {"n": 8, "d": 16, "h": 16},
}
TOOLS = ["gradwatch", "cs231n", "torch", "torch_fast"]
LABELS = {"gradwatch": "gradwatch check_backward", "cs231n": "cs231n-style eval_numerical_gradient_array",
          "torch": "torch gradcheck", "torch_fast": "torch gradcheck fast_mode"}


class Counted:
    """A layer whose forward and backward calls are counted."""

    def __init__(self, layer: L.Layer):
        self.layer, self.forwards, self.backwards = layer, 0, 0

    def forward(self, q):
        self.forwards += 1
        return self.layer.forward(q)

    def backward(self, q, dout):
        self.backwards += 1
        return self.layer.backward(q, dout)


def _leaves(out) -> list[np.ndarray]:
    if isinstance(out, dict):
        return list(out.values())
    if isinstance(out, (tuple, list)):
        return list(out)
    return [out]


def _rebuild(template, leaves):
    if isinstance(template, dict):
        return dict(zip(template, leaves))
    if isinstance(template, (tuple, list)):
        return type(template)(leaves)
    return leaves[0]


def _grads_in_order(returned, names) -> list[np.ndarray]:
    if isinstance(returned, dict):
        return [returned["d" + n] if "d" + n in returned else returned[n] for n in names]
    return list(returned)


def draw_dout(layer: L.Layer, seed: int):
    out = layer.forward(layer.inputs)
    rng = np.random.default_rng([7, seed])
    return _rebuild(out, [rng.standard_normal(np.shape(o)) for o in _leaves(out)])


# --------------------------------------------------------------------------------------------
# the tools: each returns (failed: bool, blamed: tuple of input names)


def run_gradwatch(c: Counted, dout, seed: int) -> tuple[bool, tuple[str, ...]]:
    r = check_backward(c.forward, c.backward, c.layer.inputs, dout=dout, seed=seed)
    return (not r.passed), tuple(r.failed)


def run_cs231n(c: Counted, dout, seed: int, h: float = 1e-5) -> tuple[bool, tuple[str, ...]]:
    names = list(c.layer.inputs)
    analytic = _grads_in_order(c.backward(c.layer.inputs, _rebuild(dout, [d.copy() for d in _leaves(dout)])), names)
    douts = _leaves(dout)
    blamed = []
    for name, a in zip(names, analytic):
        x = c.layer.inputs[name]
        numeric = np.zeros_like(x)
        it = np.nditer(x, flags=["multi_index"], op_flags=["readwrite"])
        while not it.finished:
            ix = it.multi_index
            old = x[ix]
            x[ix] = old + h
            pos = _leaves(c.forward(c.layer.inputs))
            x[ix] = old - h
            neg = _leaves(c.forward(c.layer.inputs))
            x[ix] = old
            numeric[ix] = sum(np.sum((p - m) * d) for p, m, d in zip(pos, neg, douts)) / (2 * h)
            it.iternext()
        if not relative_difference(a, numeric) < 1e-7:
            blamed.append(name)
    return bool(blamed), tuple(blamed)


_INPUT = re.compile(r"with respect to input (\d+)")


def run_torch(c: Counted, dout, seed: int, fast: bool = False) -> tuple[bool, tuple[str, ...]]:
    import torch
    from torch.autograd.gradcheck import GradcheckError

    names = list(c.layer.inputs)
    template = c.layer.forward(c.layer.inputs)  # the output's structure (not counted)

    class UserLayer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *tensors):
            q = {n: t.detach().numpy() for n, t in zip(names, tensors)}
            ctx.q = {n: v.copy() for n, v in q.items()}
            return tuple(torch.from_numpy(np.array(o, dtype=np.float64)) for o in _leaves(c.forward(q)))

        @staticmethod
        def backward(ctx, *grad_outputs):
            d = _rebuild(template, [g.detach().numpy().copy() for g in grad_outputs])
            return tuple(torch.from_numpy(np.ascontiguousarray(g, dtype=np.float64))
                         for g in _grads_in_order(c.backward(ctx.q, d), names))

    # the user's arrays, shared: gradcheck perturbs entries in place and restores them
    inputs = tuple(torch.from_numpy(c.layer.inputs[n]).requires_grad_(True) for n in names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.autograd.gradcheck(lambda *t: UserLayer.apply(*t), inputs, fast_mode=fast)
            return False, ()
        except GradcheckError as exc:
            hits = sorted({int(i) for i in _INPUT.findall(str(exc))})
            return True, tuple(names[i] for i in hits)


RUN = {"gradwatch": run_gradwatch, "cs231n": run_cs231n, "torch": run_torch,
       "torch_fast": lambda c, d, s: run_torch(c, d, s, fast=True)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--layers", default=",".join(SIZES))
    ap.add_argument("--tools", default=",".join(TOOLS))
    args = ap.parse_args(argv)
    M.print_header("Layer checks: check_backward against torch gradcheck and eval_numerical_gradient_array",
                   ["benchmarks/bench_backward.py"] + (argv if argv is not None else sys.argv[1:]))
    tools = args.tools.split(",")
    stats: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for name in args.layers.split(","):
        for bug in (None, L.BUGS[name]):
            for seed in range(args.seeds):
                for tool in tools:
                    layer = L.LAYERS[name](seed=seed, bug=bug, **SIZES[name])
                    c = Counted(layer)
                    dout = draw_dout(layer, seed)
                    saved = {k: v.copy() for k, v in layer.inputs.items()}
                    t0 = time.perf_counter()
                    failed, blamed = RUN[tool](c, dout, seed)
                    seconds = time.perf_counter() - t0
                    assert all(np.array_equal(saved[k], layer.inputs[k]) for k in saved), (tool, name)
                    stats[(name, bug or "correct", tool)].append({
                        "failed": failed, "named": set(blamed) == set(layer.wrong), "fw": c.forwards, "bw": c.backwards, "s": seconds})
            print(f"  {name} {bug or 'correct'}: done", file=sys.stderr, flush=True)
    rows = []
    for (name, variant, tool), runs in stats.items():
        n = len(runs)
        k = sum(r["failed"] for r in runs)
        entries = sum(v.size for v in L.LAYERS[name](**SIZES[name]).inputs.values())
        rows.append([
            f"{name} ({entries:,})", variant, LABELS[tool],
            M.pct(k, n) + (" caught" if variant != "correct" else " false alarms"),
            M.pct(sum(r["named"] for r in runs), n) if variant != "correct" else "-",
            f"{statistics.mean(r['fw'] for r in runs):,.0f}",
            f"{statistics.mean(r['bw'] for r in runs):,.0f}",
            M.fmt_s(statistics.median(r["s"] for r in runs)),
        ])
    print(M.table(rows, ["layer (entries)", "variant", "tool", "verdict", "named exactly",
                         "forward calls", "backward calls", "seconds (median)"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
