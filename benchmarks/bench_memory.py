"""Peak extra memory of check_gradients, as a multiple of the largest tensor's bytes (target <= 2).

Measured with tracemalloc (NumPy reports its buffers to it) around the check alone; the loss
function is allocation-free (a dot product) so the figure is gradwatch's own.

    python benchmarks/bench_memory.py
"""

import sys
import tracemalloc

import numpy as np

from gradwatch import check_gradients


def measure(n: int, dtype, sample) -> float:
    rng = np.random.default_rng(0)
    w = rng.standard_normal(n).astype(dtype)
    params = {"w": w, "b": np.zeros(3, dtype=dtype)}
    grads = {"dw": (2 * w).astype(dtype), "db": np.zeros(3, dtype=dtype)}
    grads["dw"][n // 3] += 1.0  # a wrong entry, so that localisation runs too

    def loss(p):
        v = p["w"]
        return float(np.dot(v, v)) + float(np.sum(p["b"]))

    tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    check_gradients(loss, params, grads, sample=sample, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return (peak - base) / w.nbytes


def main() -> int:
    print(f"numpy {np.__version__}; extra peak memory / largest tensor bytes (target <= 2.0)")
    print(f"{'entries':>10} {'dtype':>8} {'sample':>7} {'ratio':>7}")
    for n in (10**5, 10**6, 10**7):
        for dtype in (np.float64, np.float32):
            print(f"{n:>10} {np.dtype(dtype).name:>8} {'auto':>7} {measure(n, dtype, 'auto'):7.3f}")
    print(f"{10**4:>10} {'float64':>8} {'all':>7} {measure(10**4, np.float64, 'all'):7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
