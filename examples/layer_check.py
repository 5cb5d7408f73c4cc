"""A layer check at a size where sampling matters: a convolution written in NumPy, its naive backward
pass, and an off-by-one planted in that backward pass, found and located by ``check_backward``.

    python examples/layer_check.py            # the correct layer passes, the planted bug is located
    python examples/layer_check.py --seed 3

The layer has 12,512 inputs and parameters (x: 4×3×32×32, w: 8×3×3×3, b: 8). The documents' loop
would need 2 forward passes per entry, 25,024 in all; ``check_backward``'s default check needs a
few dozen, and bisects a wrong tensor down to one entry.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from gradwatch import check_backward


def conv_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int = 1) -> np.ndarray:
    """Stride-1 convolution with zero padding: (N, C, H, W) * (F, C, k, k) -> (N, F, H', W')."""
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    return np.einsum("nchwij,fcij->nfhw", windows, w, optimize=True) + b[None, :, None, None]


def conv_backward_naive(dout, x, w, pad=1, off_by_one=False):
    """The backward pass as it is first written: a loop over output positions.

    ``off_by_one`` plants a classic slip: the loop over output columns that accumulates ``dx``
    stops one column short (``range(W_out - 1)``), so the last input columns get too little gradient.
    """
    kh, kw = w.shape[2:]
    h, wd = x.shape[2:]
    ho, wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(ho):
        for j in range(wo):
            g = dout[:, :, i, j]  # (N, F)
            dw += np.einsum("nf,ncij->fcij", g, xp[:, :, i : i + kh, j : j + kw])
            if off_by_one and j == wo - 1:
                continue  # the planted bug: as if the dx loop ran over range(wo - 1)
            dxp[:, :, i : i + kh, j : j + kw] += np.einsum("nf,fcij->ncij", g, w)
    db = dout.sum(axis=(0, 2, 3))
    return dxp[:, :, pad : pad + h, pad : pad + wd], dw, db


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the layer's inputs and of the check")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    inputs = {
        "x": rng.standard_normal((4, 3, 32, 32)),
        "w": rng.standard_normal((8, 3, 3, 3)) / np.sqrt(27),
        "b": 0.1 * rng.standard_normal(8),
    }
    total = sum(v.size for v in inputs.values())

    def forward(q):
        return conv_forward(q["x"], q["w"], q["b"])

    def backward(q, dout):  # a tuple in the inputs' order: dx, dw, db
        return conv_backward_naive(dout, q["x"], q["w"])

    def backward_buggy(q, dout):
        return conv_backward_naive(dout, q["x"], q["w"], off_by_one=True)

    print(f"conv layer: {total:,} inputs and parameters; the documents' loop would need {2 * total:,} forward passes\n")
    good = check_backward(forward, backward, inputs, seed=args.seed)
    print("-- the correct backward pass")
    print(good, end="\n\n")
    bad = check_backward(forward, backward_buggy, inputs, seed=args.seed)
    print("-- with the planted off-by-one")
    print(bad, end="\n\n")
    if bad.failed:
        name = bad.failed[0]
        index = bad.per_param[name].worst_index
        print(f"located: {name}{list(index)}, column {index[-1]} of 0..31: the dx loop misses the last output column")
    return 0 if good.passed and bad.failed == ("x",) else 1


if __name__ == "__main__":
    sys.exit(main())
