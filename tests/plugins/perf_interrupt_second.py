"""A ``-p`` plugin for tests/test_perf_plugin.py: Ctrl-C during the second benchmark of the run."""

import pytest

_started: list[str] = []


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item):
    if "benchmark" in getattr(item, "fixturenames", ()):
        _started.append(item.nodeid)
        if len(_started) == 2:
            raise KeyboardInterrupt
