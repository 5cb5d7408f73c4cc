"""The course exercise the documents come from: a 3-layer net (relu, relu, sigmoid; cross-entropy),
its test case and its backprop with the two planted bugs (dW2 doubled, db1 with 4/m).

Written from the exercise's description, for the tests that reproduce its published figures.
"""

from __future__ import annotations

import numpy as np


def test_case():
    np.random.seed(1)
    x = np.random.randn(4, 3)
    y = np.array([1, 1, 0])
    shapes = {"W1": (5, 4), "b1": (5, 1), "W2": (3, 5), "b2": (3, 1), "W3": (1, 3), "b3": (1, 1)}
    params = {name: np.random.randn(*shape) for name, shape in shapes.items()}
    return x, y, params


def forward(x, y, p):
    m = x.shape[1]
    z1 = np.dot(p["W1"], x) + p["b1"]
    a1 = np.maximum(0, z1)
    z2 = np.dot(p["W2"], a1) + p["b2"]
    a2 = np.maximum(0, z2)
    z3 = np.dot(p["W3"], a2) + p["b3"]
    a3 = 1 / (1 + np.exp(-z3))
    logprobs = np.multiply(-np.log(a3), y) + np.multiply(-np.log(1 - a3), 1 - y)
    cost = 1.0 / m * np.sum(logprobs)
    return cost, (z1, a1, z2, a2, z3, a3)


def backward(x, y, p, cache, buggy=True):
    m = x.shape[1]
    z1, a1, z2, a2, z3, a3 = cache
    dz3 = a3 - y
    dW3 = 1.0 / m * np.dot(dz3, a2.T)
    db3 = 1.0 / m * np.sum(dz3, axis=1, keepdims=True)
    da2 = np.dot(p["W3"].T, dz3)
    dz2 = np.multiply(da2, np.int64(a2 > 0))
    dW2 = 1.0 / m * np.dot(dz2, a1.T) * (2 if buggy else 1)
    db2 = 1.0 / m * np.sum(dz2, axis=1, keepdims=True)
    da1 = np.dot(p["W2"].T, dz2)
    dz1 = np.multiply(da1, np.int64(a1 > 0))
    dW1 = 1.0 / m * np.dot(dz1, x.T)
    db1 = (4.0 if buggy else 1.0) / m * np.sum(dz1, axis=1, keepdims=True)
    return {"dZ3": dz3, "dW3": dW3, "db3": db3, "dA2": da2, "dZ2": dz2, "dW2": dW2, "db2": db2,
            "dA1": da1, "dZ1": dz1, "dW1": dW1, "db1": db1}
