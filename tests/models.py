"""Small NumPy models with hand-written backprop, for tests and benchmarks.

``mlp(sizes, activation, seed, ...)`` returns a :class:`Model`: its params, a loss function and a
correct backprop. The bug zoo in ``tests/zoo.py`` plants errors in the gradients it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np

def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


ACTIVATIONS: Dict[str, Tuple[Callable, Callable, Callable]] = {
    # name: (f(z), f'(z), a wrong f'(z) as people write it)
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0).astype(z.dtype), lambda z: np.ones_like(z)),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2, lambda z: 1 - z**2),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z)), _sigmoid),
}

#: The bug zoo: planted in layer ``layer`` by ``Model.backward(p, bug=..., layer=...)``.
BUGS = ("missing_1_over_m", "missing_regularisation", "activation_derivative", "transposed",
        "swapped_rows", "one_wrong_entry", "bias_off_by_1pct")


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
        f = ACTIVATIONS[self.activation][0]
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

    def backward(self, p, bug: Optional[str] = None, layer: int = 1) -> Dict[str, np.ndarray]:
        """The gradients; with ``bug`` (one of :data:`BUGS`), that bug planted in layer ``layer``."""
        _, fprime, wrong = ACTIVATIONS[self.activation]
        _, caches = self.forward(p)
        probs = caches.pop()
        m = self.x.shape[1]
        dz = probs.copy()
        dz[self.y, np.arange(m)] -= 1
        dz /= m
        grads = {}
        for l in range(self.layers, 0, -1):
            here = l == layer
            a_prev, _ = caches[l - 1]
            dW = dz @ a_prev.T
            if here and bug == "missing_1_over_m":
                dW = dW * m
            if self.lambd and not (here and bug == "missing_regularisation"):
                dW = dW + self.lambd / m * p[f"W{l}"]
            if here and bug == "transposed":
                dW = dW.T.copy()
            if here and bug == "swapped_rows":
                dW = dW.copy()
                dW[[0, 1]] = dW[[1, 0]]
            if here and bug == "one_wrong_entry":
                dW = dW.copy()
                dW[self.wrong_entry(dW.shape)] += np.sqrt(np.mean(dW**2))
            db = dz.sum(axis=1, keepdims=True)
            if here and bug == "bias_off_by_1pct":
                db = db * 1.01
            grads[f"dW{l}"], grads[f"db{l}"] = dW, db
            if l > 1:
                deriv = wrong if (bug == "activation_derivative" and l - 1 == layer) else fprime
                dz = (p[f"W{l}"].T @ dz) * deriv(caches[l - 2][1])
        return grads

    @staticmethod
    def wrong_entry(shape) -> Tuple[int, ...]:
        """Where ``one_wrong_entry`` plants its error: a fixed, off-centre entry."""
        return tuple(int(n * 2 // 3) for n in shape)

    def expected_failures(self, bug: str, layer: int) -> Tuple[str, ...]:
        """The tensors a check must name for ``bug`` planted in ``layer``."""
        if bug == "bias_off_by_1pct":
            return (f"b{layer}",)
        if bug == "activation_derivative":
            # the activation of layer ``layer`` feeds back into every tensor at or below it
            return tuple(n for l in range(1, layer + 1) for n in (f"W{l}", f"b{l}"))
        return (f"W{layer}",)


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


@dataclass
class RNN:
    """A vanilla RNN (tanh) over T steps with a softmax cross-entropy at every step, trained by BPTT."""

    params: Dict[str, np.ndarray]
    xs: np.ndarray  # (T, n_x, batch)
    ys: np.ndarray  # (T, batch) integer labels

    def loss(self, p) -> float:
        return self._run(p)[0]

    def _run(self, p):
        T, _, batch = self.xs.shape
        h = np.zeros((p["Waa"].shape[0], batch))
        hs, probs, loss = [h], [], 0.0
        for t in range(T):
            h = np.tanh(p["Wax"] @ self.xs[t] + p["Waa"] @ h + p["ba"])
            z = p["Wya"] @ h + p["by"]
            z = z - z.max(axis=0, keepdims=True)
            pr = np.exp(z) / np.exp(z).sum(axis=0, keepdims=True)
            loss -= np.log(pr[self.ys[t], np.arange(batch)]).sum() / batch
            hs.append(h)
            probs.append(pr)
        return float(loss), hs, probs

    def backward(self, p, drop_recurrent: bool = False) -> Dict[str, np.ndarray]:
        """BPTT; ``drop_recurrent`` forgets the gradient flowing back through ``Waa @ h`` (a classic bug)."""
        _, hs, probs = self._run(p)
        T, _, batch = self.xs.shape
        g = {k: np.zeros_like(v) for k, v in p.items()}
        dh_next = np.zeros_like(hs[0])
        for t in reversed(range(T)):
            dz = probs[t].copy()
            dz[self.ys[t], np.arange(batch)] -= 1
            dz /= batch
            g["Wya"] += dz @ hs[t + 1].T
            g["by"] += dz.sum(axis=1, keepdims=True)
            dh = p["Wya"].T @ dz + dh_next
            dpre = dh * (1 - hs[t + 1] ** 2)
            g["Wax"] += dpre @ self.xs[t].T
            g["Waa"] += dpre @ hs[t].T
            g["ba"] += dpre.sum(axis=1, keepdims=True)
            dh_next = np.zeros_like(dh) if drop_recurrent else p["Waa"].T @ dpre
        return {"d" + k: v for k, v in g.items()}


def rnn(n_x: int = 3, n_a: int = 5, n_y: int = 4, T: int = 4, batch: int = 6, seed: int = 0) -> RNN:
    rng = np.random.default_rng(seed)
    params = {
        "Wax": rng.standard_normal((n_a, n_x)) * 0.5,
        "Waa": rng.standard_normal((n_a, n_a)) * 0.5,
        "ba": rng.standard_normal((n_a, 1)) * 0.1,
        "Wya": rng.standard_normal((n_y, n_a)) * 0.5,
        "by": rng.standard_normal((n_y, 1)) * 0.1,
    }
    return RNN(params, rng.standard_normal((T, n_x, batch)), rng.integers(0, n_y, size=(T, batch)))
