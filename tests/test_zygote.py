"""perf.zygote on its own: a fresh child per request, failures as one-line replies, the zygote going on.

The zygote here is a plain Python process serving a tiny handler (no pytest, no valgrind): what is
tested is the protocol and the forks. The zygote as pytest perf starts it is tested end to end in
tests/test_processes.py (timing) and tests/test_counting.py (counting)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perf import zygote
from perf.errors import MeasureError

ROOT = Path(__file__).resolve().parents[1]
HANDLER = """
import os, sys, time
from perf import zygote

state = {"touched": 0}

def handle(request, send):
    if "linger" in request:  # answer, then go on writing, as a child under callgrind writes its dump on exit
        send({"pid": os.getpid()})
        send({"end": True})
        time.sleep(request["linger"])
        with open("/dev/fd/3/written", "w") as out:
            out.write("after the answer")
        os._exit(0)
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


def test_a_parent_s_error_lets_the_child_that_answered_finish_before_the_zygote_is_gone(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with pytest.raises(RuntimeError, match="the caller gives up"):
        with zygote.Zygote([sys.executable, "-c", HANDLER], env, tmp_path, tmp_path / "zygote.log", {3: tmp_path}) as z:
            z.request({"linger": 0.5})
            raise RuntimeError("the caller gives up")
    assert (tmp_path / "written").read_text() == "after the answer"  # done before the caller removes the folder


def test_a_zygote_that_does_not_end_in_its_grace_is_killed_with_its_children(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    z = zygote.Zygote([sys.executable, "-c", HANDLER], env, tmp_path, tmp_path / "zygote.log", {3: tmp_path})
    (reply,) = z.request({"linger": 60})
    z.stop(grace_s=0.2)
    assert z._proc.returncode == -9
    assert not _alive(reply["pid"])  # the child killed with it, not left to run on
    assert not (tmp_path / "written").exists()


def test_a_zygote_dies_with_its_parent_even_while_it_waits_for_a_child(tmp_path):
    # Its process group is its own: a signal to the parent's group no longer reaches it, and a zygote waiting
    # for a child reads no end of its requests either.
    parent = f"""
import os, sys, time
sys.path.insert(0, {str(ROOT)!r})
from perf import zygote
z = zygote.Zygote([sys.executable, "-c", {HANDLER!r}], {{**os.environ, "PYTHONPATH": {str(ROOT)!r}}}, {str(tmp_path)!r},
                  {str(tmp_path / "zygote.log")!r}, {{3: {str(tmp_path)!r}}})
z.request({{"linger": 5}})
print(z._proc.pid, flush=True)
time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    try:
        zygote_pid = int(proc.stdout.readline())
        assert _alive(zygote_pid, settle=0)
        proc.kill()
        proc.wait()
        assert not _alive(zygote_pid)
    finally:
        proc.kill()


def _alive(pid: int, settle: int = 100) -> bool:
    """Whether ``pid`` runs (a zombie nobody has reaped yet does not)."""
    for _ in range(settle + 1):  # a killed process is gone a moment after its signal
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return False
        if state in "ZX":
            return False
        time.sleep(0.02)
    return True
