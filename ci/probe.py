"""A pytest plugin for ``python -m pytest perf --collect-only -p ci.probe``: what ci.gpu_baseline must
know before it measures, from a session set up exactly as the measuring one will be.

It writes to $CI_PROBE_JSON the GPU record (``perf.machine.gpu_record``) and the fingerprint as
the perf plugin takes it when it checks a baseline (in its pytest_configure, threads pinned, the
same libraries loaded): a fingerprint taken in a bare process differs in the BLAS pools loaded so
far (scipy brings its own OpenBLAS) and would call every baseline foreign. A bad pytest argument
fails here, before anything is measured.
"""

from __future__ import annotations

import os

import pytest

from perf import machine, results
from perf.plugin import perf_session

VARIABLE = "CI_PROBE_JSON"


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    path = os.environ.get(VARIABLE)
    if path:
        results.write_json(path, {"environment": machine.gpu_record(), "fingerprint": perf_session(config).fingerprint})
