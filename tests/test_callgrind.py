"""perf.callgrind: reading callgrind's output files, the cycle estimate, the launcher, the shim, and one
end-to-end count of a small numpy call under valgrind (skipped, with the reason, without valgrind).

No test here reads a clock: counts are compared with counts.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from perf import callgrind
from perf.callgrind import CallgrindError, Counters

ROOT = Path(__file__).resolve().parent.parent
EVENTS = "Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim"


def dump_text(trigger: str = "Client Request: seed-relu-numpy", summary: str = "100 40 20 3 2 1 1 0 0 30 4 5 1",
              totals: str | None = "same", events: str = EVENTS, part: int = 1, pid: int = 4242) -> str:
    """A callgrind output file as valgrind 3.19 writes it (cost lines abridged)."""
    totals = summary if totals == "same" else totals
    lines = [
        "# callgrind format", "version: 1", "creator: callgrind-3.19.0", f"pid: {pid}",
        "cmd:  /usr/bin/python3 child.py", f"part: {part}", "", "",
        "desc: I1 cache: 32768 B, 64 B, 8-way associative",
        "desc: D1 cache: 32768 B, 64 B, 8-way associative",
        "desc: LL cache: 8388608 B, 64 B, 16-way associative",
        "desc: Timerange: Basic block 18650 - 64035",
        f"desc: Trigger: {trigger}", "", "positions: line", f"events: {events}", f"summary: {summary}", "", "",
        "ob=(1) /usr/lib/libc.so.6", "fl=(1) ???", "fn=(1) memcpy", "0 60 20 10 2 1 1", "", "fn=(2) relu", "0 40 20 10",
    ]
    if totals is not None:
        lines += ["", f"totals: {totals}"]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- parsing


def test_parse_dump_reads_totals_name_and_caches(tmp_path):
    d = callgrind.parse_dump(write(tmp_path / "callgrind.out.4242.1", dump_text()))
    assert d.name == "seed-relu-numpy"
    assert (d.pid, d.part) == (4242, 1)
    assert d.events == tuple(EVENTS.split())
    assert d.totals == Counters(100, 40, 20, 3, 2, 1, 1, 0, 0, 30, 4, 5, 1)
    assert d.caches[-1] == "LL cache: 8388608 B, 64 B, 16-way associative"


def test_parse_dump_pads_omitted_trailing_zeros(tmp_path):
    d = callgrind.parse_dump(write(tmp_path / "f", dump_text(summary="0", totals="0")))
    assert d.totals == Counters()
    d = callgrind.parse_dump(write(tmp_path / "g", dump_text(summary="7 3", totals="7 3")))
    assert (d.totals.ir, d.totals.dr, d.totals.bim) == (7, 3, 0)


def test_parse_dump_prefers_totals_where_summary_differs(tmp_path):
    # valgrind 3.19 writes a summary a few instructions off where collection was toggled often.
    d = callgrind.parse_dump(write(tmp_path / "f", dump_text(summary="1000 10", totals="1040 9")))
    assert (d.totals.ir, d.totals.dr) == (1040, 9)
    assert (d.summary.ir, d.summary.dr) == (1000, 10)


def test_parse_dump_takes_summary_alone_and_events_in_any_order(tmp_path):
    d = callgrind.parse_dump(write(tmp_path / "f", dump_text(events="Bcm Ir", summary="5 900", totals=None)))
    assert (d.totals.ir, d.totals.bcm, d.totals.dr) == (900, 5, 0)


@pytest.mark.parametrize("trigger, name", [
    ("Client Request: test_stage[seed-relu-numpy] [overhead]", "test_stage[seed-relu-numpy] [overhead]"),
    ("Client Request: ", ""),
    ("Program termination", None),
])
def test_dump_name_comes_from_the_client_request_only(tmp_path, trigger, name):
    assert callgrind.parse_dump(write(tmp_path / "f", dump_text(trigger=trigger))).name == name


@pytest.mark.parametrize("text, why", [
    ("", "not a callgrind output file"),
    ("\x00\x01binary garbage\n", "not a callgrind output file"),
    (dump_text().replace(f"events: {EVENTS}\n", ""), "no 'events:' line"),
    (dump_text().replace(f"events: {EVENTS}", "events:"), "empty 'events:' line"),
    (dump_text(totals=None).replace("summary: ", "nosummary "), "neither 'summary:' nor 'totals:'"),
    (dump_text(summary="1 2 3 4 5 6 7 8 9 10 11 12 13 14"), "14 values for 13 events"),
    (dump_text(summary="100 forty"), "not an integer"),
])
def test_damaged_files_are_one_line_errors_naming_the_file(tmp_path, text, why):
    path = write(tmp_path / "callgrind.out.1.1", text)
    with pytest.raises(CallgrindError) as err:
        callgrind.parse_dump(path)
    message = str(err.value)
    assert why in message and str(path) in message and "\n" not in message


def test_a_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(CallgrindError, match="cannot read callgrind output"):
        callgrind.parse_dump(tmp_path / "absent")


# --------------------------------------------------------------------------- counters and the estimate


def test_derived_counts_and_the_cycle_estimate():
    c = Counters(ir=1000, dr=300, dw=100, i1mr=5, d1mr=20, d1mw=3, ilmr=1, dlmr=2, dlmw=0, bc=200, bcm=7, bi=10, bim=2)
    assert (c.instructions, c.branches, c.mispredicts, c.l1_misses, c.ll_misses) == (1000, 210, 9, 28, 3)
    assert c.cycles == 1000 + 10 * 9 + 10 * 28 + 100 * 3
    assert c.summary() == {"instructions": 1000, "branches": 210, "mispredicts": 9, "l1_misses": 28, "ll_misses": 3,
                           "cycles": 1670}


def test_the_estimate_weighs_a_mispredict_like_ten_instructions():
    assert Counters(ir=100, bcm=1).cycles == Counters(ir=110).cycles


def test_count_per_call_takes_off_each_regions_overhead():
    total = Counters(ir=10_000, d1mr=30)
    overhead = Counters(ir=100, d1mr=5)
    one_region = callgrind.Count("x", calls=10, total=total, overhead=overhead, regions=1)
    assert one_region.per_call.ir == pytest.approx(990)
    per_call_regions = callgrind.Count("x", calls=10, total=total, overhead=overhead, regions=10)
    assert per_call_regions.per_call.ir == pytest.approx(900)
    assert per_call_regions.per_call.d1mr == 0  # clamped: the overhead missed more than the calls


# --------------------------------------------------------------------------- the launcher


def test_command_counts_nothing_until_asked_with_fixed_caches(tmp_path):
    line = callgrind.command(["python", "child.py"], tmp_path)
    assert line[-2:] == ["python", "child.py"]
    for option in ("--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no", "--cache-sim=yes", "--branch-sim=yes",
                   "--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64",
                   f"--callgrind-out-file={tmp_path / 'callgrind.out.'}%p"):
        assert option in line
    if shutil.which("setarch"):
        assert line[0] == "setarch" and "-R" in line[:3]


def test_valgrind_absent_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    why = callgrind.valgrind_problem()
    assert why is not None and "apt-get install valgrind" in why and "\n" not in why


def test_clean_name_keeps_a_dump_name_on_one_line():
    assert callgrind.clean_name("a\nb\r\nc") == "a b c"
    assert len(callgrind.clean_name("x" * 5000)) == callgrind.MAX_NAME


# --------------------------------------------------------------------------- the shim, outside valgrind


def test_shim_builds_once_and_its_requests_do_nothing_outside_valgrind(tmp_path, monkeypatch):
    if not Path("/usr/include/valgrind/callgrind.h").exists() or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("valgrind's headers or a C compiler are absent: the shim cannot be built here")
    path = callgrind.build_shim(tmp_path)
    assert path.parent == tmp_path and path.suffix == ".so"
    assert callgrind.build_shim(tmp_path) == path  # cached by the source's hash
    c = callgrind.Client(path)
    assert c.running() == 0
    c.toggle()
    c.dump("nothing happens outside valgrind")
    monkeypatch.setenv(callgrind.ENV_DIR, str(tmp_path))
    monkeypatch.setattr(callgrind, "_client", c)
    assert not callgrind.under_callgrind()  # the marker alone is not enough
    with pytest.raises(CallgrindError, match="does not run under callgrind"):
        callgrind.count(lambda: None, name="x")


def test_shim_without_a_compiler_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(CallgrindError) as err:
        callgrind.build_shim(tmp_path)
    assert "cannot build the valgrind shim" in str(err.value) and "\n" not in str(err.value)


def needs_a_shim() -> None:
    if not Path("/usr/include/valgrind/callgrind.h").exists() or not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("valgrind's headers or a C compiler are absent: the shim cannot be built here")


def test_shim_builds_in_an_empty_cache_folder_named_by_xdg_cache_home(tmp_path, monkeypatch):
    needs_a_shim()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty"))
    path = callgrind.build_shim()
    assert path.parent == tmp_path / "empty" / "relu-step-perf" and path.exists()


def test_shim_in_an_unwritable_cache_is_built_in_the_fallback_or_is_one_line_naming_what_to_set(tmp_path):
    needs_a_shim()
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user writes read-only folders (root): an unwritable cache cannot be made here")
        with pytest.raises(CallgrindError) as err:
            callgrind.build_shim(locked / "cache")
        assert "set XDG_CACHE_HOME to a writable folder" in str(err.value) and "\n" not in str(err.value)
        built = callgrind.build_shim(locked / "cache", fallback=tmp_path / "run")
        assert built.parent == tmp_path / "run" and built.exists()
    finally:
        locked.chmod(0o700)


def test_shim_in_a_cache_under_a_file_is_built_in_the_fallback(tmp_path):
    needs_a_shim()
    (tmp_path / "file").write_text("not a folder")
    built = callgrind.build_shim(tmp_path / "file" / "cache", fallback=tmp_path / "run")
    assert built.parent == tmp_path / "run"


# --------------------------------------------------------------------------- end to end, under valgrind

CHILD = r"""
import json, sys
import numpy as np
from perf import callgrind

assert callgrind.under_callgrind()
h = np.random.default_rng(0).standard_normal((64, 100)).astype(np.float32)
work = h.copy()
calls = []

def setup():
    calls.append(1)
    np.copyto(work, h)  # outside collection: must not be counted
    for _ in range(50):
        np.add(work, 1.0)
    return (work, 0), {}

out = {}
for name, kw in {"relu": {}, "relu again": {}, "relu setup": {"setup": setup}}.items():
    c = callgrind.count(np.maximum, (h, 0), name=name, calls=5, **kw)
    out[name] = c.per_call.summary()
double = callgrind.count(lambda a: (np.maximum(a, 0), np.maximum(a, 0)), (h,), name="two relus", calls=5)
out["two relus"] = double.per_call.summary()
out["setup calls"] = len(calls)
json.dump(out, open(sys.argv[1], "w"))
"""


def skip_unless_counting_works() -> None:
    """Skip, with the reason, where valgrind cannot run or the client-request shim cannot be built."""
    why = callgrind.valgrind_problem()
    if why:
        pytest.skip(why)
    try:
        callgrind.build_shim()
    except CallgrindError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def counted(tmp_path_factory):
    skip_unless_counting_works()
    tmp = tmp_path_factory.mktemp("callgrind")
    result = tmp / "result.json"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", callgrind.ENV_DIR: str(tmp), callgrind.SHIM_ENV: str(callgrind.build_shim())}
    proc = subprocess.run(callgrind.command([sys.executable, "-c", CHILD, str(result)], tmp), env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dumps = sorted(tmp.glob("callgrind.out.*"), key=lambda p: [int(x) for x in p.name.split(".")[2:]] + [1 << 62])
    return json.loads(result.read_text()), [callgrind.parse_dump(p) for p in dumps]


def test_end_to_end_counts_a_numpy_call_under_valgrind(counted):
    out, _ = counted
    relu = out["relu"]
    assert 1_000 < relu["instructions"] < 1_000_000
    assert relu["branches"] > 0 and relu["l1_misses"] > 0 and relu["cycles"] > relu["instructions"]
    assert out["relu again"]["instructions"] == pytest.approx(relu["instructions"], rel=0.01)
    # Twice the work counts about twice the instructions: the calls are what is counted.
    assert out["two relus"]["instructions"] == pytest.approx(2 * relu["instructions"], rel=0.15)


def test_end_to_end_setup_runs_outside_collection(counted):
    out, _ = counted
    assert out["setup calls"] == 5 + callgrind.DEFAULT_WARMUP + callgrind.DEFAULT_CACHE_WARMUP
    # 50 numpy adds per setup would be ~50x the relu's instructions, were they counted.
    assert out["relu setup"]["instructions"] == pytest.approx(out["relu"]["instructions"], rel=0.1)


def test_end_to_end_dumps_carry_the_benchmark_names(counted):
    _, dumps = counted
    names = [d.name for d in dumps if d.name is not None]
    names = [n for n in names if not n.startswith("[prime")]
    assert names == ["relu [overhead]", "relu", "relu again [overhead]", "relu again",
                     "relu setup [overhead]", "relu setup", "two relus [overhead]", "two relus"]
    assert all(d.caches[-1].startswith("LL cache: 8388608 B") for d in dumps)
    assert os.path.basename(dumps[-1].path).count(".") == 2  # the final dump, at exit
