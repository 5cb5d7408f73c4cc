"""Small NumPy models with hand-written backprop, for tests and benchmarks.

``mlp(sizes, activation, seed, ...)`` returns a :class:`Model`: its params, a loss function and a
correct backprop. The bug zoo in ``tests/zoo.py`` plants errors in the gradients it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Sequence, Tuple

import numpy as np

ACTIVATIONS: Dict[str, Tuple[Callable, Callable]] = {
    # name: (f(z), f'(z) written from z)
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda z: (1 / (1 + np.exp(-z))) * (1 - 1 / (1 + np.exp(-z)))),
}


@dataclass
class Model:
    params: Dict[str, np.ndarray]
    x: np.ndarray
    y: np.ndarray  # integer class labels
    activation: str
    lambd: float = 0.0

    @property
    def layers(self) -> int:
        return len(self.params) // 2

    def forward(self, p) -> Tuple[float, list]:
        f, _ = ACTIVATIONS[self.activation]
        a = self.x
        caches = []
        L = self.layers
        for l in range(1, L + 1):
            z = p[f"W{l}"] @ a + p[f"b{l}"]
            caches.append((a, z))
            a = f(z) if l < L else z
        z = a - a.max(axis=0, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=0, keepdims=True))
        m = self.x.shape[1]
        loss = -logp[self.y, np.arange(m)].sum() / m
        if self.lambd:
            loss = loss + self.lambd / (2 * m) * sum(np.sum(p[f"W{l}"] ** 2) for l in range(1, L + 1))
        return float(loss), caches + [np.exp(logp)]

    def loss(self, p) -> float:
        return self.forward(p)[0]

    def backward(self, p) -> Dict[str, np.ndarray]:
        _, fprime = ACTIVATIONS[self.activation]
        _, caches = self.forward(p)
        probs = caches.pop()
        m = self.x.shape[1]
        dz = probs.copy()
        dz[self.y, np.arange(m)] -= 1
        dz /= m
        grads = {}
        for l in range(self.layers, 0, -1):
            a_prev, _ = caches[l - 1]
            grads[f"dW{l}"] = dz @ a_prev.T + self.lambd / m * p[f"W{l}"]
            grads[f"db{l}"] = dz.sum(axis=1, keepdims=True)
            if l > 1:
                dz = (p[f"W{l}"].T @ dz) * fprime(caches[l - 2][1])
        return grads


def mlp(sizes: Sequence[int], activation: str = "relu", seed: int = 0, batch: int = 16,
        dtype=np.float64, lambd: float = 0.0) -> Model:
    rng = np.random.default_rng(seed)
    params = {}
    for l in range(1, len(sizes)):
        params[f"W{l}"] = (rng.standard_normal((sizes[l], sizes[l - 1])) * np.sqrt(2.0 / sizes[l - 1])).astype(dtype)
        params[f"b{l}"] = (rng.standard_normal((sizes[l], 1)) * 0.1).astype(dtype)
    x = rng.standard_normal((sizes[0], batch)).astype(dtype)
    y = rng.integers(0, sizes[-1], size=batch)
    return Model(params, x, y, activation, lambd)
