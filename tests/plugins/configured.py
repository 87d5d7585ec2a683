"""Test-only pytest plugin: a stage replaced in ``pytest_configure``, as a project's own plugin or conftest
configures the code it measures, chosen by a variable that is not one of the suite's own.

    RELU_FORM=where pytest perf -p tests.plugins.configured ...   # numpy's relu as np.where(h < 0, 0, h)
    RELU_FORM=extra pytest perf -p tests.plugins.configured ...   # one more small ufunc call a call

Nothing happens at import: only the hook changes the kernel, so only a process that runs pytest's
configuration (a timed run, its measuring processes, the counting zygote) measures the change.
"""

from __future__ import annotations

import os

import numpy as np

FORMS = ("where", "extra")


def relu_where(h, out=None):
    chosen = np.where(h < 0, 0, h)
    if out is None:
        return chosen
    out[...] = chosen
    return out


def relu_with_extra(relu):
    def relu_extra(h, out=None):
        np.negative(h[:1, :1])  # one more small ufunc call
        return relu(h, out=out)

    return relu_extra


def pytest_configure(config) -> None:
    form = os.environ.get("RELU_FORM", "")
    if not form:
        return
    if form not in FORMS:
        raise ValueError(f"RELU_FORM={form!r}: expected one of {', '.join(FORMS)}")
    import kernels.numpy_ as numpy_

    numpy_.relu = relu_where if form == "where" else relu_with_extra(numpy_.relu)
