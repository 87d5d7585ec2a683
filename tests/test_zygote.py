"""perf.zygote on its own: a fresh child per request, failures as one-line replies, the zygote going on.

The zygote here is a plain Python process serving a tiny handler (no pytest, no valgrind): what is
tested is the protocol and the forks. The zygote as pytest perf starts it is tested end to end in
tests/test_processes.py (timing) and tests/test_counting.py (counting)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from perf import zygote
from perf.errors import MeasureError

ROOT = Path(__file__).resolve().parents[1]
HANDLER = """
import os, sys
from perf import zygote

state = {"touched": 0}

def handle(request, send):
    if request.get("crash"):
        os._exit(9)
    if request.get("fail"):
        raise ValueError("asked to fail\\nover two lines")
    state["touched"] += 1  # a child's change: the next child starts from the zygote's state again
    for i in range(request.get("replies", 1)):
        send({"pid": os.getpid(), "touched": state["touched"], "i": i, "dir": os.listdir("/dev/fd/3")})

zygote.serve(handle)
"""


@pytest.fixture
def served(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "marker").write_text("")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with zygote.Zygote([sys.executable, "-c", HANDLER], env, tmp_path, tmp_path / "zygote.log",
                       {3: tmp_path / "folder"}) as z:
        yield z


def test_each_request_is_answered_by_a_fresh_child_of_the_same_state(served):
    first = served.request({})
    second = served.request({"replies": 3})
    assert len(first) == 1 and len(second) == 3
    assert first[0]["pid"] != second[0]["pid"] != os.getpid()
    assert {r["touched"] for r in first + second} == {1}  # nothing one child did reaches the next
    assert first[0]["dir"] == ["marker"]  # a folder handed over on a fixed descriptor


def test_a_failing_or_dying_child_is_one_line_and_the_zygote_goes_on(served):
    with pytest.raises(MeasureError, match=r"^ValueError: asked to fail over two lines$"):
        served.request({"fail": True})
    with pytest.raises(MeasureError, match=r"the measuring child died \(exit status 9\)"):
        served.request({"crash": True})
    assert served.request({})[0]["touched"] == 1


def test_replies_come_as_they_are_sent(served):
    seen = []
    served.request({"replies": 2}, on_reply=seen.append)
    assert [r["i"] for r in seen] == [0, 1]


def test_a_zygote_that_cannot_start_or_ends_is_one_line(tmp_path):
    with pytest.raises(MeasureError, match="cannot start"):
        zygote.Zygote([str(tmp_path / "no-such-program")], dict(os.environ), tmp_path, tmp_path / "log")
    ends = [sys.executable, "-c", "import sys; print('gone before serving', file=sys.stderr)"]
    with zygote.Zygote(ends, dict(os.environ), tmp_path, tmp_path / "log") as z:
        with pytest.raises(MeasureError, match=r"the zygote ended \(exit status 0\): gone before serving"):
            z.request({})


def test_serving_is_said_by_the_environment(monkeypatch):
    monkeypatch.delenv(zygote.SERVE_ENV, raising=False)
    assert zygote.serving() == ""
    monkeypatch.setenv(zygote.SERVE_ENV, "count")
    assert zygote.serving() == "count"
