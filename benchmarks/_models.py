"""Shared helpers for the benchmark scripts: models with hand-written backprop, planted bugs,
the machine report, timers and memory meters.

Not a test module and not part of the library. Import it first in every benchmark script: it pins
the BLAS to one thread (unless the caller set the variables), because the shared 2-core machines the
benchmarks run on make multi-threaded BLAS timings swing by 3-4x from run to run.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import gc
import platform
import statistics
import sys
import threading
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gradwatch  # noqa: E402  (after the path fix, so the checkout is measured)

# --------------------------------------------------------------------------------------------
# Models

#: MLP layer sizes by (rounded) parameter count; batch 64 for all of them.
SIZES: Dict[str, List[int]] = {
    "1e3": [20, 36, 10],  # 1,126 parameters
    "1e4": [96, 96, 10],  # 10,282
    "1e5": [310, 310, 10],  # 99,520
    "1e6": [1000, 1000, 10],  # 1,011,010 (W1 has exactly 1,000,000 entries)
    "1e7": [3000, 3300, 10],  # 9,936,310
}
BATCH = 64


def _act(name: str):
    if name == "relu":
        return (lambda z: np.maximum(z, 0)), (lambda z, a: (z > 0).astype(z.dtype))
    if name == "tanh":
        return np.tanh, (lambda z, a: 1 - a * a)
    if name == "sigmoid":
        def sig(z):
            return 1 / (1 + np.exp(-z))
        return sig, (lambda z, a: a * (1 - a))
    raise ValueError(f"activation must be relu, tanh or sigmoid; got {name!r}")


@dataclass
class MLP:
    """A softmax-cross-entropy MLP on one fixed batch, as a plain NumPy training loop writes it."""

    params: Dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray
    activation: str

    @property
    def layers(self) -> int:
        return len(self.params) // 2

    @property
    def size(self) -> int:
        return int(sum(v.size for v in self.params.values()))

    def _forward(self, p):
        f, _ = _act(self.activation)
        a = self.x
        cache = []
        for l in range(1, self.layers + 1):
            z = p[f"W{l}"] @ a + p[f"b{l}"]
            if l < self.layers:
                new = f(z)
                cache.append((a, z, new))
                a = new
            else:
                cache.append((a, z, None))
                a = z
        z = a - a.max(axis=0, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=0, keepdims=True))
        m = self.x.shape[1]
        loss = -logp[self.y, np.arange(m)].sum() / m
        return float(loss), cache, logp

    def loss(self, p) -> float:
        return self._forward(p)[0]

    def backward(self, p, bug: Optional[str] = None) -> Dict[str, np.ndarray]:
        """The gradients; ``bug="act"`` writes the first hidden layer's tanh' as 1 − a (not 1 − a²),
        ``bug="missing_m"`` forgets the 1/m in the output layer's dW and db."""
        _, fprime = _act(self.activation)
        _, cache, logp = self._forward(p)
        m = self.x.shape[1]
        dz = np.exp(logp)
        dz[self.y, np.arange(m)] -= 1
        grads: Dict[str, np.ndarray] = {}
        L = self.layers
        for l in range(L, 0, -1):
            a_prev = cache[l - 1][0]
            scale = 1.0 if (bug == "missing_m" and l == L) else 1.0 / m
            grads[f"dW{l}"] = (dz @ a_prev.T) * scale
            grads[f"db{l}"] = dz.sum(axis=1, keepdims=True) * scale
            if l > 1:
                _, z, a = cache[l - 2]
                d = (1 - a) if (bug == "act" and l - 1 == 1) else fprime(z, a)
                dz = (p[f"W{l}"].T @ dz) * d
        return {k: v.astype(p[k[1:]].dtype, copy=False) for k, v in grads.items()}


def mlp(sizes: Sequence[int], activation: str = "relu", seed: int = 0, batch: int = BATCH,
        dtype=np.float64) -> MLP:
    rng = np.random.default_rng(seed)
    params: Dict[str, np.ndarray] = {}
    for l in range(1, len(sizes)):
        params[f"W{l}"] = (rng.standard_normal((sizes[l], sizes[l - 1])) * np.sqrt(2.0 / sizes[l - 1])).astype(dtype)
        params[f"b{l}"] = (rng.standard_normal((sizes[l], 1)) * 0.1).astype(dtype)
    x = rng.standard_normal((sizes[0], batch)).astype(dtype)
    y = rng.integers(0, sizes[-1], size=batch)
    return MLP(params, x, y, activation)


def n_params(sizes: Sequence[int]) -> int:
    return int(sum(sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(sizes) - 1)))


# --------------------------------------------------------------------------------------------
# Planted bugs

BUGS = {
    "entry": "one wrong entry in W1 (+ W1's RMS gradient, random entry)",
    "scale": "0.1% scale error in one tensor (random tensor)",
    "act": "wrong activation derivative (tanh' = 1 - a in layer 1; tanh net)",
    "missing_m": "missing 1/m in the output layer's dW, db",
}


@dataclass
class Planted:
    grads: Dict[str, np.ndarray]
    tensor: str  # the parameter name the bug is in (the first one for bugs spanning several)
    index: Optional[Tuple[int, ...]] = None  # the wrong entry, for "entry"
    wrong: Tuple[str, ...] = ()  # every tensor whose gradient is wrong


def plant(model: MLP, correct: Dict[str, np.ndarray], bug: str, rng: np.random.Generator,
          wrong_grads: Optional[Dict[str, np.ndarray]] = None) -> Planted:
    """The user's (wrong) gradients. ``correct`` is not modified (arrays are shared where unchanged)."""
    grads = dict(correct)
    if bug == "entry":
        g = correct["dW1"].copy()
        flat = g.reshape(-1)
        i = int(rng.integers(flat.size))
        flat[i] += np.sqrt(np.mean(np.square(correct["dW1"], dtype=np.float64)))
        grads["dW1"] = g
        return Planted(grads, "W1", tuple(int(v) for v in np.unravel_index(i, g.shape)), ("W1",))
    if bug == "scale":
        names = list(model.params)
        name = names[int(rng.integers(len(names)))]
        grads["d" + name] = correct["d" + name] * np.asarray(1.001, dtype=correct["d" + name].dtype)
        return Planted(grads, name, None, (name,))
    if bug in ("act", "missing_m"):
        g = wrong_grads if wrong_grads is not None else model.backward(model.params, bug=bug)
        wrong = tuple(k[1:] for k in g if not np.array_equal(g[k], correct[k]))
        return Planted(g, wrong[0] if wrong else "", None, wrong)
    raise ValueError(f"bug must be one of {sorted(BUGS)}; got {bug!r}")


def activation_for(bug: Optional[str]) -> str:
    return "tanh" if bug == "act" else "relu"


# --------------------------------------------------------------------------------------------
# Timing and memory


def median_time(fn: Callable[[], object], repeat: int = 3) -> Tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RSSPeak:
    """Samples the resident set size every millisecond in a thread; ``.extra`` is the peak above the start."""

    def __enter__(self):
        gc.collect()
        self.start = _rss()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.extra = self.peak - self.start
        return False


def peak_memory(fn: Callable[[], object]) -> Tuple[int, int]:
    """``(tracemalloc peak extra bytes, sampled RSS peak extra bytes)`` while ``fn`` runs.

    tracemalloc sees NumPy's allocations (and Python objects) but not torch's allocator; the RSS
    sample sees everything but is coarse (pages, 1 ms sampling, freed memory may stay resident).
    """
    gc.collect()
    with RSSPeak() as rss:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        try:
            fn()
            peak = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    return int(peak), int(rss.extra)


# --------------------------------------------------------------------------------------------
# Reporting


def machine() -> Dict[str, str]:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "numpy": np.__version__,
        "blas": _blas(),
        "blas threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
        "gradwatch": getattr(gradwatch, "__version__", "?") + f" ({_git_rev()})",
    }
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # older numpy
        return "see numpy.show_config()"


def _git_rev() -> str:
    try:
        import subprocess

        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "gradwatch"], capture_output=True, text=True)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except Exception:
        return "?"


def peer_versions() -> Dict[str, str]:
    out = {}
    for mod in ("scipy", "torch", "matplotlib"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = "not installed"
    return out


def print_header(title: str, argv: Sequence[str]) -> None:
    print(f"# {title}")
    print(f"command: python3 {' '.join(argv)}")
    info = machine()
    info.update({f"{k} (peer)": v for k, v in peer_versions().items()})
    print("machine: " + "; ".join(f"{k} {v}" for k, v in info.items()))
    print()


def table(rows: List[Sequence[object]], header: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table."""
    cells = [[str(c) for c in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells[1:]]
    return "\n".join(lines)


def pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:.0f}% ({k}/{n})" if n else "-"


def fmt_s(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} µs"


def fmt_bytes(b: float) -> str:
    for unit, k in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if abs(b) >= k:
            return f"{b / k:.1f} {unit}"
    return f"{b:.0f} B"
