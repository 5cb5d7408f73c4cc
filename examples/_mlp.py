"""The model the examples share: an L-layer NumPy MLP written the way the course writes one.

ReLU hidden layers, a softmax output with cross-entropy, L2 regularisation (``lambd``) and
optional inverted dropout on the hidden layers (``keep_prob``), trained by full-batch gradient
descent on a generated three-arm spiral. Parameters are a dict ``W1, b1, ..., WL, bL``; gradients
a dict ``dW1, db1, ...`` — the two shapes gradwatch reads.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

Params = Dict[str, np.ndarray]


def make_spirals(n_per_class: int = 100, classes: int = 3, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``classes`` interleaved spiral arms in the plane: X of shape (2, m), integer labels y of shape (m,)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0.0, 1.0, n_per_class)
        t = np.linspace(c * 4.0, (c + 1) * 4.0, n_per_class) + rng.standard_normal(n_per_class) * 0.2
        xs.append(np.stack([r * np.sin(t), r * np.cos(t)]))
        ys.append(np.full(n_per_class, c))
    return np.concatenate(xs, axis=1), np.concatenate(ys)


def init_params(sizes: Sequence[int], seed: int = 0) -> Params:
    """He initialisation for ReLU layers, zero biases."""
    rng = np.random.default_rng(seed)
    params: Params = {}
    for l in range(1, len(sizes)):
        params[f"W{l}"] = rng.standard_normal((sizes[l], sizes[l - 1])) * np.sqrt(2.0 / sizes[l - 1])
        params[f"b{l}"] = np.zeros((sizes[l], 1))
    return params


def layers(params: Params) -> int:
    return len(params) // 2


def forward(
    params: Params, X: np.ndarray, keep_prob: float = 1.0, rng: Optional[np.random.Generator] = None
) -> Tuple[np.ndarray, List[dict]]:
    """Class probabilities (classes, m) and the caches of every layer (A_prev, Z, dropout mask)."""
    L = layers(params)
    A = X
    caches: List[dict] = []
    for l in range(1, L + 1):
        Z = params[f"W{l}"] @ A + params[f"b{l}"]
        cache = {"A_prev": A, "Z": Z, "D": None}
        if l < L:
            A = np.maximum(Z, 0.0)
            if keep_prob < 1.0:  # inverted dropout on the hidden layers
                if rng is None:
                    raise ValueError("dropout (keep_prob < 1) needs a random generator")
                D = rng.random(A.shape) < keep_prob
                A = A * D / keep_prob
                cache["D"] = D
        caches.append(cache)
    Z = Z - Z.max(axis=0, keepdims=True)
    expZ = np.exp(Z)
    return expZ / expZ.sum(axis=0, keepdims=True), caches


def cost_from_probs(probs: np.ndarray, params: Params, y: np.ndarray, lambd: float) -> float:
    m = y.shape[0]
    cross_entropy = -np.sum(np.log(probs[y, np.arange(m)])) / m
    l2 = lambd / (2 * m) * sum(np.sum(np.square(params[f"W{l}"])) for l in range(1, layers(params) + 1))
    return float(cross_entropy + l2)


def cost(params: Params, X: np.ndarray, y: np.ndarray, lambd: float = 0.0, keep_prob: float = 1.0,
         rng: Optional[np.random.Generator] = None) -> float:
    """The cost J: cross-entropy plus L2, with dropout only when ``keep_prob < 1``."""
    probs, _ = forward(params, X, keep_prob, rng)
    return cost_from_probs(probs, params, y, lambd)


def backward(params: Params, probs: np.ndarray, caches: List[dict], y: np.ndarray, lambd: float,
             keep_prob: float = 1.0) -> Params:
    """The correct backward pass through ``forward``'s caches."""
    m = y.shape[0]
    L = layers(params)
    dZ = probs.copy()
    dZ[y, np.arange(m)] -= 1.0  # softmax + cross-entropy
    grads: Params = {}
    for l in range(L, 0, -1):
        cache = caches[l - 1]
        grads[f"dW{l}"] = dZ @ cache["A_prev"].T / m + lambd / m * params[f"W{l}"]
        grads[f"db{l}"] = np.sum(dZ, axis=1, keepdims=True) / m
        if l > 1:
            dA = params[f"W{l}"].T @ dZ
            below = caches[l - 2]
            if below["D"] is not None:
                dA = dA * below["D"] / keep_prob
            dZ = dA * (below["Z"] > 0)
    return grads


def cost_and_grads(params: Params, X: np.ndarray, y: np.ndarray, lambd: float = 0.0, keep_prob: float = 1.0,
                   rng: Optional[np.random.Generator] = None) -> Tuple[float, Params]:
    probs, caches = forward(params, X, keep_prob, rng)
    return cost_from_probs(probs, params, y, lambd), backward(params, probs, caches, y, lambd, keep_prob)


def accuracy(params: Params, X: np.ndarray, y: np.ndarray) -> float:
    probs, _ = forward(params, X)
    return float(np.mean(np.argmax(probs, axis=0) == y))


def update(params: Params, grads: Params, learning_rate: float) -> None:
    """One step of gradient descent, in place."""
    for name in params:
        params[name] -= learning_rate * grads["d" + name]
