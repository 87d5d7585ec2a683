"""The float64 reference every check compares against: the tutorial's numpy code, literally."""

from __future__ import annotations

import numpy as np


def hidden(x, w1):
    return x.dot(w1)


def relu(h):
    return np.maximum(h, 0)


def output(h_relu, w2):
    return h_relu.dot(w2)


def loss(y_pred, y):
    return np.square(y_pred - y).sum()


def grad_y_pred(y_pred, y):
    return 2.0 * (y_pred - y)


def grad_w2(h_relu, grad_y_pred):
    return h_relu.T.dot(grad_y_pred)


def grad_h_relu(grad_y_pred, w2):
    return grad_y_pred.dot(w2.T)


def relu_backward(grad_h_relu, h):
    grad_h = grad_h_relu.copy()
    grad_h[h < 0] = 0
    return grad_h


def grad_w1(x, grad_h):
    return x.T.dot(grad_h)


def sgd_update(w, grad, lr):
    """Returns the updated copy (the reference never mutates its inputs)."""
    return w - lr * grad


def f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def forward_backward(x, y, w1, w2) -> dict[str, np.ndarray]:
    """Every intermediate of one step, in float64, named as the stages' arguments are."""
    x, y, w1, w2 = f64(x), f64(y), f64(w1), f64(w2)
    v = {"x": x, "y": y, "w1": w1, "w2": w2}
    v["h"] = hidden(x, w1)
    v["h_relu"] = relu(v["h"])
    v["y_pred"] = output(v["h_relu"], w2)
    v["loss"] = loss(v["y_pred"], y)
    v["grad_y_pred"] = grad_y_pred(v["y_pred"], y)
    v["grad_w2"] = grad_w2(v["h_relu"], v["grad_y_pred"])
    v["grad_h_relu"] = grad_h_relu(v["grad_y_pred"], w2)
    v["grad_h"] = relu_backward(v["grad_h_relu"], v["h"])
    v["grad_w1"] = grad_w1(x, v["grad_h"])
    return v


def train(x, y, w1, w2, lr: float, steps: int) -> tuple[list[float], np.ndarray, np.ndarray]:
    """The tutorial's loop in float64: the loss of every step and the final weights."""
    x, y, w1, w2 = f64(x), f64(y), f64(w1).copy(), f64(w2).copy()
    losses = []
    for _ in range(steps):
        v = forward_backward(x, y, w1, w2)
        losses.append(float(v["loss"]))
        w1 = sgd_update(w1, v["grad_w1"], lr)
        w2 = sgd_update(w2, v["grad_w2"], lr)
    return losses, w1, w2
