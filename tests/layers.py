"""NumPy layers with hand-written backward passes, as a deep-learning course has people write them,
for the layer-check tests and the benchmark. Each ``*_layer(..., bug=None)`` returns a :class:`Layer`:
its inputs (seeded, float64, sensible scales), ``forward(q)`` and ``backward(q, dout)``; ``bug``
plants one of the mistakes listed in ``BUGS`` in the backward pass.

Written for gradwatch (not copied from any course): forward passes are vectorised, the conv
backward is the naive loop people write first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Layer:
    name: str
    inputs: dict[str, np.ndarray]
    forward: Callable[[Any], Any]
    backward: Callable[[Any, Any], Any]
    wrong: tuple = ()  # the inputs whose gradient the planted bug makes wrong


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# affine: out = x.reshape(N, -1) @ w + b


def affine_layer(n=4, d=(3, 5), m=6, seed=0, bug: str | None = None) -> Layer:
    rng = _rng(seed)
    dim = int(np.prod(d))
    inputs = {"x": rng.standard_normal((n, *d)), "w": rng.standard_normal((dim, m)) / np.sqrt(dim),
              "b": rng.standard_normal(m)}

    def forward(q):
        return q["x"].reshape(q["x"].shape[0], -1) @ q["w"] + q["b"]

    def backward(q, dout):
        x2 = q["x"].reshape(q["x"].shape[0], -1)
        dx = (dout @ q["w"].T).reshape(q["x"].shape)
        dw = x2.T @ dout
        db = dout.mean(axis=0) if bug == "db_mean" else dout.sum(axis=0)
        return {"dx": dx, "dw": dw, "db": db}

    return Layer("affine", inputs, forward, backward, ("b",) if bug == "db_mean" else ())


# --------------------------------------------------------------------------------------------
# ReLU


def relu_layer(shape=(5, 8), seed=0, bug: str | None = None) -> Layer:
    x = _rng(seed).standard_normal(shape)
    x[np.abs(x) < 1e-3] = 0.5  # keep the kink at 0 well outside ±ε

    def forward(q):
        return np.maximum(q["x"], 0)

    def backward(q, dout):
        return {"dx": dout if bug == "no_mask" else dout * (q["x"] > 0)}

    return Layer("relu", {"x": x}, forward, backward, ("x",) if bug == "no_mask" else ())


# --------------------------------------------------------------------------------------------
# conv (stride 1, zero padding ``pad``): vectorised forward, the naive loop for backward


def conv_forward(x, w, b, pad):
    kh, kw = w.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    windows = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))  # N, C, Ho, Wo, kh, kw
    return np.einsum("nchwij,fcij->nfhw", windows, w, optimize=True) + b[None, :, None, None]


def conv_backward_naive(x, w, dout, pad, bug=None):
    _n, _c, h, wd = x.shape
    _f, _, kh, kw = w.shape
    ho, wo = dout.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for i in range(ho):
        for j in range(wo - 1 if bug == "last_column" else wo):
            window = xp[:, :, i : i + kh, j : j + kw]  # N, C, kh, kw
            g = dout[:, :, i, j]  # N, F
            dxp[:, :, i : i + kh, j : j + kw] += np.einsum("nf,fcij->ncij", g, w)
            dw += np.einsum("nf,ncij->fcij", g, window)
    if bug == "last_column":  # the weights still see every column; only dx misses the last one
        dw = np.einsum("nfhw,nchwij->fcij", dout,
                       np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3)), optimize=True)
    db = dout.sum(axis=(0, 2, 3))
    return dxp[:, :, pad : pad + h, pad : pad + wd], dw, db


def conv_layer(n=2, c=3, hw=8, f=4, k=3, seed=0, bug: str | None = None) -> Layer:
    rng = _rng(seed)
    inputs = {"x": rng.standard_normal((n, c, hw, hw)), "w": rng.standard_normal((f, c, k, k)) / np.sqrt(c * k * k),
              "b": rng.standard_normal(f)}
    pad = k // 2

    def forward(q):
        return conv_forward(q["x"], q["w"], q["b"], pad)

    def backward(q, dout):
        return conv_backward_naive(q["x"], q["w"], dout, pad, bug)  # a tuple in the inputs' order

    return Layer("conv", inputs, forward, backward, ("x",) if bug == "last_column" else ())


# --------------------------------------------------------------------------------------------
# batch normalisation (training mode)


def batchnorm_layer(n=16, d=5, seed=0, bug: str | None = None) -> Layer:
    rng = _rng(seed)
    inputs = {"x": 2 + 3 * rng.standard_normal((n, d)), "gamma": 1 + 0.1 * rng.standard_normal(d),
              "beta": 0.1 * rng.standard_normal(d)}
    eps = 1e-5

    def forward(q):
        x = q["x"]
        mu = x.mean(axis=0)
        var = x.var(axis=0)
        return q["gamma"] * (x - mu) / np.sqrt(var + eps) + q["beta"]

    def backward(q, dout):
        x, gamma = q["x"], q["gamma"]
        m = x.shape[0]
        mu = x.mean(axis=0)
        var = x.var(axis=0)
        inv = 1 / np.sqrt(var + eps)
        xhat = (x - mu) * inv
        dxhat = dout * gamma
        m_var = m - 1 if bug == "unbiased_var" else m  # the variance's 1/m written as 1/(m-1)
        dvar = np.sum(dxhat * (x - mu), axis=0) * -0.5 * inv**3
        dmu = -np.sum(dxhat, axis=0) * inv + dvar * np.mean(-2 * (x - mu), axis=0)
        dx = dxhat * inv + dvar * 2 * (x - mu) / m_var + dmu / m
        return {"dx": dx, "dgamma": np.sum(dout * xhat, axis=0), "dbeta": dout.sum(axis=0)}

    return Layer("batchnorm", inputs, forward, backward, ("x",) if bug == "unbiased_var" else ())


# --------------------------------------------------------------------------------------------
# one LSTM step: (x, prev_h, prev_c, Wx, Wh, b) -> (next_h, next_c)


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def lstm_step_forward(x, prev_h, prev_c, wx, wh, b):
    a = x @ wx + prev_h @ wh + b
    h = prev_h.shape[1]
    i, f, o, g = _sigmoid(a[:, :h]), _sigmoid(a[:, h : 2 * h]), _sigmoid(a[:, 2 * h : 3 * h]), np.tanh(a[:, 3 * h :])
    next_c = f * prev_c + i * g
    next_h = o * np.tanh(next_c)
    return next_h, next_c, (i, f, o, g)


def lstm_step_backward(q, dnext_h, dnext_c, bug=None):
    """Updates ``dnext_c`` in place, as real LSTM code does."""
    x, prev_h, prev_c, wx, wh = q["x"], q["prev_h"], q["prev_c"], q["Wx"], q["Wh"]
    _, next_c, (i, f, o, g) = lstm_step_forward(x, prev_h, prev_c, wx, wh, q["b"])
    t = np.tanh(next_c)
    dtanh = (1 - t) if bug == "tanh_derivative" else (1 - t * t)
    dnext_c += dnext_h * o * dtanh  # in place: the caller's dout is changed
    di, df, do, dg = dnext_c * g, dnext_c * prev_c, dnext_h * t, dnext_c * i
    da = np.hstack([di * i * (1 - i), df * f * (1 - f), do * o * (1 - o), dg * (1 - g * g)])
    return {"dx": da @ wx.T, "dprev_h": da @ wh.T, "dprev_c": dnext_c * f,
            "dWx": x.T @ da, "dWh": prev_h.T @ da, "db": da.sum(axis=0)}


def lstm_layer(n=3, d=4, h=5, seed=0, bug: str | None = None, outputs: str = "tuple") -> Layer:
    """``outputs="tuple"``: forward returns ``(next_h, next_c)``; ``"dict"``: ``{"h": ..., "c": ...}``."""
    rng = _rng(seed)
    inputs = {"x": rng.standard_normal((n, d)), "prev_h": rng.standard_normal((n, h)),
              "prev_c": rng.standard_normal((n, h)), "Wx": rng.standard_normal((d, 4 * h)) / np.sqrt(d),
              "Wh": rng.standard_normal((h, 4 * h)) / np.sqrt(h), "b": 0.1 * rng.standard_normal(4 * h)}

    def forward(q):
        next_h, next_c, _ = lstm_step_forward(q["x"], q["prev_h"], q["prev_c"], q["Wx"], q["Wh"], q["b"])
        return (next_h, next_c) if outputs == "tuple" else {"h": next_h, "c": next_c}

    def backward(q, dout):
        dnext_h, dnext_c = dout if outputs == "tuple" else (dout["h"], dout["c"])
        return lstm_step_backward(q, dnext_h, dnext_c, bug)

    wrong = ("prev_c", "x", "prev_h", "Wx", "Wh", "b") if bug == "tanh_derivative" else ()
    return Layer("lstm", inputs, forward, backward, wrong)


# --------------------------------------------------------------------------------------------
# softmax cross-entropy: scores -> a scalar loss (labels bound by closure)


def softmax_loss_layer(n=6, c=4, seed=0, bug: str | None = None) -> Layer:
    rng = _rng(seed)
    scores = rng.standard_normal((n, c))
    y = rng.integers(0, c, size=n)

    def forward(q):
        s = q["x"] - q["x"].max(axis=1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
        return -logp[np.arange(n), y].mean()

    def backward(q, dout):
        s = q["x"] - q["x"].max(axis=1, keepdims=True)
        p = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)
        p[np.arange(n), y] -= 1
        return {"dx": dout * p if bug == "missing_1_over_n" else dout * p / n}

    return Layer("softmax_loss", {"x": scores}, forward, backward, ("x",) if bug == "missing_1_over_n" else ())


LAYERS = {"affine": affine_layer, "relu": relu_layer, "conv": conv_layer, "batchnorm": batchnorm_layer,
          "lstm": lstm_layer, "softmax_loss": softmax_loss_layer}
BUGS = {"affine": "db_mean", "relu": "no_mask", "conv": "last_column", "batchnorm": "unbiased_var",
        "lstm": "tanh_derivative", "softmax_loss": "missing_1_over_n"}
