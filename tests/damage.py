"""A corpus of damaged saved runs, made from a good one: every reader of a baseline must turn each
into a one-line error naming the file and what is wrong, never a traceback, a crash or a pass."""

from __future__ import annotations

import copy
import json
import statistics
from collections.abc import Callable


def _edited(good: dict, edit: Callable[[dict], object]) -> bytes:
    doc = copy.deepcopy(good)
    edit(doc)
    return json.dumps(doc).encode()


def _first(doc: dict) -> dict:
    return doc["benchmarks"][0]


def _records_disagree(doc: dict) -> None:
    """The first benchmark's records say what its rounds said before its stats.data was edited (faster)."""
    data = _first(doc)["stats"]["data"]
    median = statistics.median(data)
    _first(doc).setdefault("extra_info", {})["processes"] = [{"rounds": len(data), "min": min(data), "median": median}]
    _first(doc)["stats"]["data"] = [v * 0.5 for v in data]


def damaged_runs(good: dict) -> list[tuple[str, bytes, str]]:
    """(name, the file's bytes, a fragment of the error that must name what is wrong), from ``good``:
    a pytest-benchmark run as the suite saves it, with at least one benchmark holding stats.data."""
    text = json.dumps(good).encode()
    return [
        ("empty", b"", "empty file"),
        ("truncated", text[: len(text) // 2], "invalid JSON"),
        ("not JSON", b"{not json", "invalid JSON"),
        ("not UTF-8", b"\xff\xfe\x00garbage", "not UTF-8"),
        ("an empty object", b"{}", "benchmarks: missing or not a list"),
        ("a list", b"[1, 2]", "the top level is a list"),
        ("benchmarks a number", _edited(good, lambda d: d.update(benchmarks=5)), "benchmarks: missing or not a list"),
        ("a benchmark a string", _edited(good, lambda d: d["benchmarks"].insert(0, "relu")),
         "benchmarks[0]: expected an object"),
        ("no fullname", _edited(good, lambda d: _first(d).pop("fullname")), "benchmarks[0].fullname: missing"),
        ("a fullname twice", _edited(good, lambda d: d["benchmarks"].append(copy.deepcopy(_first(d)))), "appears twice"),
        ("no stats", _edited(good, lambda d: _first(d).pop("stats")), ".stats: missing or not an object"),
        ("samples strings", _edited(good, lambda d: _first(d)["stats"].update(data=["fast", "slow"])),
         ".stats.data[0]: expected a finite number"),
        ("samples not a list", _edited(good, lambda d: _first(d)["stats"].update(data="1.0")),
         ".stats.data: expected a list of numbers"),
        ("a NaN sample", text.replace(b'"data": [', b'"data": [NaN, ', 1), ".stats.data[0]: expected a finite number"),
        ("a negative sample", _edited(good, lambda d: _first(d)["stats"]["data"].__setitem__(0, -1.0)), ".stats.data[0]"),
        ("a string median", _edited(good, lambda d: _first(d)["stats"].update(median="fast", data=[])), ".stats.median"),
        ("extra_info a list", _edited(good, lambda d: _first(d).update(extra_info=["relu"])),
         ".extra_info: expected an object"),
        ("an unknown metric", _edited(good, lambda d: _first(d).setdefault("extra_info", {}).update(metric="joules")),
         "unknown metric 'joules'"),
        ("a damaged process record",
         _edited(good, lambda d: _first(d).setdefault("extra_info", {}).update(processes=[{"rounds": "x"}])),
         ".extra_info.processes[0].rounds"),
        ("stats edited, its process records not", _edited(good, _records_disagree), ".extra_info.processes[0].min: "),
        ("machine_info a list", _edited(good, lambda d: d.update(machine_info=[1])), "machine_info: expected an object"),
        ("the fingerprint a string", _edited(good, lambda d: d.setdefault("machine_info", {}).update(perf_fingerprint="x")),
         "machine_info.perf_fingerprint: expected an object"),
        ("the suite's header a string", _edited(good, lambda d: d.update(perf="x")), "perf: expected an object"),
        ("the run's metric unknown", _edited(good, lambda d: d.update(perf={"metric": "joules"})), "unknown metric"),
    ]
