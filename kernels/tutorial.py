"""The tutorial's own code, literally, as a reference variant for the step benchmarks.

Not a backend: a yardstick. ``train_step`` must be at least as fast as this. Note the
torch version's ``.item()``: a device-to-host synchronisation every step.
"""

from __future__ import annotations

import numpy as np


def step_numpy(x, y, w1, w2, learning_rate):
    h = x.dot(w1)
    h_relu = np.maximum(h, 0)
    y_pred = h_relu.dot(w2)
    loss = np.square(y_pred - y).sum()
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h_relu.T.dot(grad_y_pred)
    grad_h_relu = grad_y_pred.dot(w2.T)
    grad_h = grad_h_relu.copy()
    grad_h[h < 0] = 0
    grad_w1 = x.T.dot(grad_h)
    w1 -= learning_rate * grad_w1
    w2 -= learning_rate * grad_w2
    return loss


def step_torch(x, y, w1, w2, learning_rate):
    h = x.mm(w1)
    h_relu = h.clamp(min=0)
    y_pred = h_relu.mm(w2)
    loss = (y_pred - y).pow(2).sum().item()
    grad_y_pred = 2.0 * (y_pred - y)
    grad_w2 = h_relu.t().mm(grad_y_pred)
    grad_h_relu = grad_y_pred.mm(w2.t())
    grad_h = grad_h_relu.clone()
    grad_h[h < 0] = 0
    grad_w1 = x.t().mm(grad_h)
    w1 -= learning_rate * grad_w1
    w2 -= learning_rate * grad_w2
    return loss


# Backend module FAMILY -> the tutorial's step for that library.
STEPS = {"numpy": step_numpy, "torch": step_torch}
