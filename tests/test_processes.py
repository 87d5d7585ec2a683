"""The process as the unit of evidence (--perf-processes): the decision rule on constructed
per-process data, and the child orchestration end to end on a tiny selection.

Nothing here passes or fails on a timing: decisions are checked on constructed values, and the
end-to-end runs check what is measured where, what is saved and what a failing child does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perf import gate, machine, processes, results
from perf.baseline import SavedGate
from perf.command import passed_through
from perf.measured import Measured, ProcessResult
from perf.processes import Budget
from tests.test_perf_plugin import child_env, node, pytest_perf, storage_option

TINY_FAST = ("-p", "no:cacheprovider", "--perf-size", "8,16,8,4", "--perf-backend", "numpy",
             "--benchmark-max-time=0.002", "--benchmark-min-rounds=4", "-k", "(relu or hidden) and not stage_out")
slow = pytest.mark.slow
M = 1e-6


# --------------------------------------------------------------------------- the decision rule


def test_a_real_shift_of_every_process_is_a_regression():
    base = [3.0 * M * f for f in (1.00, 1.02, 0.99, 1.01, 1.00)]
    c = gate.compare_processes("x", base, [1.5 * v for v in base], 0.05)
    assert c.verdict == gate.REGRESSED and c.ratio == pytest.approx(1.5)
    assert c.n_baseline == c.n_current == 5 and c.ci_low > 1.05


def test_one_whole_process_running_slow_is_not_a_regression():
    base = [3.0 * M * f for f in (1.00, 1.01, 0.99, 1.00, 1.02)]
    current = [3.0 * M * f for f in (1.00, 0.99, 1.01, 1.00, 1.60)]  # its CPU was taken for most of its life
    assert gate.compare_processes("x", base, current, 0.05).verdict != gate.REGRESSED


def test_bimodal_processes_on_both_sides_are_not_a_regression():
    # Two levels a window lands on by chance (the machine's state), mixed differently on each side.
    low, high = 3.3 * M, 4.8 * M
    c = gate.compare_processes("x", [low, low, low, high, low], [high, low, high, high, low], 0.05)
    assert c.verdict == gate.UNCHANGED and c.ratio == 1.0


def test_one_lucky_process_cannot_decide_alone():
    base = [2.5 * M, 3.3 * M, 3.31 * M, 3.32 * M]  # one baseline window far faster than the rest
    c = gate.compare_processes("x", base, [3.3 * M, 3.31 * M, 3.3 * M], 0.05)
    assert c.ratio == pytest.approx(1.32) and c.ci_low == pytest.approx(1.0) and c.verdict == gate.INCONCLUSIVE
    assert gate.undecided(c)  # so it is measured again


def test_too_few_processes_decide_nothing():
    c = gate.compare_processes("x", [3 * M], [9 * M, 9 * M, 9 * M], 0.05)
    assert c.verdict == gate.INCONCLUSIVE and "too few processes (1 baseline, 3 current" in c.note


def test_equal_counts_are_unchanged_and_a_small_real_change_of_counts_is_not():
    same = gate.compare_processes("n", [43_210.0] * 3, [43_210.0] * 3, 0.01)
    assert same.verdict == gate.UNCHANGED and same.ratio == 1.0 and same.ci_low == same.ci_high == 1.0
    more = gate.compare_processes("n", [43_210.0, 43_215.0, 43_212.0], [44_506.0, 44_510.0, 44_509.0], 0.01)
    assert more.verdict == gate.REGRESSED and more.ratio == pytest.approx(1.03, abs=1e-3)


def windows(rng: np.random.Generator, n: int, level: float = 1.0, slow_share: float = 0.4) -> np.ndarray:
    """Per-process minima as this machine gives them: a window is fast (within 0.5%) or, as often as
    `slow_share`, caught in a slow state 5-60% above it; noise only adds time."""
    fast = level * (1 + np.abs(rng.normal(0, 0.005, n)))
    return np.where(rng.random(n) < slow_share, fast * rng.uniform(1.05, 1.6, n), fast)


def test_on_constructed_windows_false_alarms_are_rare_and_a_ten_percent_shift_is_seen():
    rng = np.random.default_rng(11)
    trials, p = 2000, 6
    false = sum(gate.compare_processes("x", windows(rng, p), windows(rng, p), 0.05).verdict == gate.REGRESSED
                for _ in range(trials))
    seen = sum(gate.compare_processes("x", windows(rng, p), windows(rng, p, level=1.10), 0.05).verdict == gate.REGRESSED
               for _ in range(trials))
    assert false / trials <= 0.01 and seen / trials >= 0.9, (false, seen)


def test_the_process_rule_sees_a_shift_that_the_rounds_of_one_process_cannot_tell_from_placement():
    rng = np.random.default_rng(3)
    c = gate.compare_processes("x", windows(rng, 6) * 3 * M, windows(rng, 6, level=1.3) * 3 * M, 0.05)
    assert c.verdict == gate.REGRESSED


# --------------------------------------------------------------------------- the saved baseline's use of it


def run_with(processes_per_bench: dict[str, list[list[float]]]) -> results.Run:
    benchmarks = []
    for name, per_process in processes_per_bench.items():
        data = [v for p in per_process for v in p]
        procs = [{"rounds": len(p), "min": min(p), "median": float(np.median(p))} for p in per_process]
        benchmarks.append({"fullname": name, "stats": {"data": data, "median": float(np.median(data))},
                           "extra_info": {"processes": procs} if len(per_process) > 1 else {}})
    return results.parse_run({"benchmarks": benchmarks}, "base.json")


def measured(per_process: list[list[float]]) -> Measured:
    return Measured([ProcessResult("p", tuple(p)) for p in per_process])


def test_the_saved_gate_compares_processes_with_processes():
    base = run_with({"a": [[1.0, 1.1], [1.02, 1.2], [0.99, 1.0]]})
    g = SavedGate(base, 0.05, 0.05, processes=3)
    now = measured([[2.0, 2.1], [2.02, 2.2], [1.98, 2.0]])
    c = g.judge_processes("a", now.values(), now.samples)
    assert c.verdict == gate.REGRESSED and c.n_baseline == 3 and c.n_current == 3
    assert g.judge_processes("not in the baseline", now.values(), now.samples) is None
    assert g.meta({})["evidence"].startswith("processes: 3 of the baseline against 3 of this run")


def test_a_baseline_of_one_process_is_judged_on_rounds_and_says_so():
    base = run_with({"a": [[1.0, 1.01, 0.99, 1.02, 1.0, 1.01]]})
    g = SavedGate(base, 0.05, 0.05, processes=3)
    now = measured([[1.0, 1.01], [1.02, 1.0], [0.99, 1.01]])
    c = g.judge_processes("a", now.values(), now.samples)
    assert "the baseline was measured in one process" in c.note
    assert "one process cannot tell code from placement" in SavedGate(base, 0.05, 0.05, processes=1).meta({})["evidence"]


def test_a_damaged_processes_record_in_a_baseline_is_one_line_naming_the_field():
    doc = {"benchmarks": [{"fullname": "a", "stats": {"data": [1.0, 2.0]},
                           "extra_info": {"processes": [{"rounds": 3, "min": 1.0, "median": 1.5}]}}]}
    with pytest.raises(results.ResultsError, match=r"b.json: benchmarks\[0\] \(a\).extra_info.processes: their rounds add "):
        results.parse_run(doc, "b.json")
    doc["benchmarks"][0]["extra_info"]["processes"] = [{"rounds": "2", "min": 1.0, "median": 1.5}]
    with pytest.raises(results.ResultsError, match=r"processes\[0\].rounds: expected a positive integer"):
        results.parse_run(doc, "b.json")


# --------------------------------------------------------------------------- the children's command


def test_each_process_gets_its_share_of_the_time_budget():
    share = Budget(max_time=0.5, min_time=1e-4, min_rounds=10).share(5)
    assert share == Budget(0.1, 1e-4, 2) and Budget(0.5, 1e-4, 30).share(5).min_rounds == 6
    assert Budget(0.5, 1e-4, 10).share(6).min_rounds == 2  # never one round a process


def test_a_forked_process_s_share_leaves_out_what_starting_it_costs_but_never_more_than_half():
    assert Budget(0.6, 1e-4, 10).share(6, start_s=0.02) == Budget(pytest.approx(0.08), 1e-4, 2)
    assert Budget(0.6, 1e-4, 10).share(6, start_s=0.3) == Budget(pytest.approx(0.05), 1e-4, 2)


def test_what_a_forked_child_costs_is_the_median_of_pings(monkeypatch):
    clock = iter([0.0, 0.02, 1.0, 1.9, 2.0, 2.03])  # three pings: 20 ms, 900 ms, 30 ms

    class Pinged:
        def __init__(self):
            self.requests = []

        def request(self, payload):
            self.requests.append(payload)
            return []

    monkeypatch.setattr(processes.time, "perf_counter", lambda: next(clock))
    z = Pinged()
    assert processes._start_cost(z) == pytest.approx(0.03)
    assert z.requests == [{"ping": True}] * 3


def test_each_forked_process_is_a_zygote_of_its_own_and_later_ones_get_the_first_s_calibration(monkeypatch, tmp_path):
    started, events = [], []

    class FakeZygote:  # what the parent asks a zygote, per zygote; each benchmark answers with one sample
        def __init__(self, argv, env, cwd, log):
            self.k, self.requests, self.closed = len(started) + 1, [], False
            started.append(self)
            events.append(f"start {self.k}")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

        def close(self):
            self.closed = True
            events.append(f"close {self.k}")

        def request(self, payload):
            assert not self.closed
            self.requests.append(payload)
            if payload.get("ping"):
                if len(self.requests) == 1:
                    events.append(f"ready {self.k}")
                return []
            events.append(f"measure {self.k}")
            return [{**ProcessResult(payload["name"], (1.0 + self.k,)).as_dict(), "call_s": 0.5 * self.k}]

    monkeypatch.setattr(processes.zygote, "Zygote", FakeZygote)
    monkeypatch.setattr(processes.machine, "cpus", lambda: [0, 1, 2, 3])

    class Quiet:
        def step(self, what=""):
            pass

        def finished(self, text):
            pass

    forked = processes.ForkedProcesses(3, Budget(0.6, 1e-4, 10), [], tmp_path, tmp_path, 1)
    found = forked.measure({"a": None, "b": None}, Quiet())
    assert len(started) == 3 and all(z.closed for z in started)
    for z in started:
        assert [r["name"] for r in z.requests if "name" in r] == ["a", "b"]  # every benchmark from its own zygote
    assert [r["call_s"] for r in started[0].requests if "name" in r] == [None, None]  # the first calibrates
    assert [r["call_s"] for r in started[2].requests if "name" in r] == [0.5, 0.5]    # later ones are given it
    assert found["a"].values() == [2.0, 3.0, 4.0]
    # Two start at once, both ready before either measures; the third starts once the second is done.
    compact = list(dict.fromkeys(events))
    assert compact == ["start 1", "start 2", "ready 1", "ready 2", "measure 1", "close 1", "measure 2", "close 2",
                       "start 3", "ready 3", "measure 3", "close 3"]


def test_a_zygote_that_never_gets_ready_is_one_line_naming_its_process_and_its_batch_is_closed(monkeypatch, tmp_path):
    started = []

    class FakeZygote:
        def __init__(self, argv, env, cwd, log):
            self.k, self.closed = len(started) + 1, False
            started.append(self)

        def stop(self, grace_s):
            self.closed = True

        def request(self, payload):
            if self.k == 2:
                raise processes.MeasureError("the zygote ended (exit status 4): ERROR: usage")
            return []

    monkeypatch.setattr(processes.zygote, "Zygote", FakeZygote)
    monkeypatch.setattr(processes.machine, "cpus", lambda: [0, 1])
    forked = processes.ForkedProcesses(3, Budget(0.6, 1e-4, 10), [], tmp_path, tmp_path, 1)
    with pytest.raises(processes.MeasureError, match=r"^process 2/3, before its first benchmark: the zygote ended"):
        forked.measure({"a": None}, None)
    assert len(started) == 2 and all(z.closed for z in started)


def test_children_get_the_parent_s_plugins_and_ini_overrides_and_nothing_else():
    args = ["perf", "-p", "tests.plugins.slowdown", "-pfoo", "-k", "relu", "--override-ini=a=b", "-o", "x=y",
            "--benchmark-compare", "--perf-processes", "5", "-x", "--junitxml", "j.xml"]
    assert passed_through(args) == ["-p", "tests.plugins.slowdown", "-pfoo", "--override-ini=a=b", "-o", "x=y"]


# --------------------------------------------------------------------------- end to end


@slow
@pytest.mark.parametrize(("launch", "how"), [("fork", "a zygote each"), ("fresh", "fresh")])
def test_a_run_in_processes_saves_their_statistics_readable_by_pytest_benchmark(tmp_path, launch, how):
    run = pytest_perf(*TINY_FAST, "--perf-processes", "2", "--perf-launch", launch, "--benchmark-autosave", "-rA",
                      storage_option(tmp_path))
    assert run.rc == 0, run.output
    assert f"perf: measuring 4 benchmarks in 2 processes ({how}), one after the other" in run.output
    assert "perf: process 1/2: 4 benchmarks in " in run.output and "perf: process 2/2: 4 benchmarks in " in run.output
    (saved,) = tmp_path.rglob("*.json")
    loaded = results.load_run(saved)
    for name in (node("relu", "numpy"), node("hidden", "numpy")):
        r = loaded.results[name]
        assert len(r.processes) == 2 and sum(p.rounds for p in r.processes) == len(r.samples)
        assert all(p.min <= p.median for p in r.processes)
    listing = subprocess.run([sys.executable, "-m", "pytest_benchmark", "compare", str(saved), "--columns=min,median,rounds"],
                             capture_output=True, text=True)
    assert listing.returncode == 0 and "test_stage[8x16x8x4-relu-numpy]" in listing.stdout, listing.stderr
    again = pytest_perf(*TINY_FAST, "--perf-processes", "2", "--benchmark-compare", "-rA", "--perf-threshold", "1000%",
                        storage_option(tmp_path))
    assert again.rc == 0, again.output
    assert "gate: saved baseline, processes: 2 of the baseline against 2 of this run" in again.section("perf")


CRASH = '''
import os
import kernels.numpy_ as numpy_

relu = numpy_.relu
calls = [0]

def crashing_relu(h, out=None):
    calls[0] += 1  # the second call of a process that measures: a zygote calls it once before it forks
    if os.environ.get("PERF_CHILD") == "1" and calls[0] >= 2:  # never the parent that checks
        os.write(2, b"the child is going down now\\n")
        os.{how}
    return relu(h, out=out)

numpy_.relu = crashing_relu
'''


@slow
@pytest.mark.parametrize(("launch", "how", "said"), [
    ("fresh", "_exit(3)", "process 1/2 exited 3 while measuring "),
    ("fresh", "kill(os.getpid(), 9)", "process 1/2 was killed by signal 9 while measuring "),
    ("fork", "_exit(3)", "process 1/2, while measuring "),  # then: the measuring child died (exit status 3)
    ("fork", "kill(os.getpid(), 9)", "the measuring child died (signal 9)"),
])
def test_a_child_that_fails_or_is_killed_is_one_line_naming_the_benchmark_and_nothing_is_saved(tmp_path, launch, how,
                                                                                                 said):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "perf_crash_child.py").write_text(CRASH.format(how=how))
    env = child_env(PYTHONPATH=f"{Path(__file__).resolve().parents[1]}:{plugins}")
    storage = tmp_path / "storage"
    run = pytest_perf(*TINY_FAST, "--perf-processes", "2", "--perf-launch", launch, "-p", "perf_crash_child",
                      "--benchmark-autosave", storage_option(storage), env=env)
    assert run.rc == 6, run.output
    (line,) = [line for line in run.lines() if "process 1/2" in line and ("exited" in line or "killed" in line
                                                                          or "died" in line)]
    assert said in line and "relu-numpy]" in line
    if launch == "fresh" and "exited" in said:
        assert "the child is going down now" in line
    if launch == "fork":
        assert "the measuring child died (" in line
    assert "Traceback" not in run.output
    assert not list(storage.rglob("*.json"))


def test_a_child_measures_in_itself(monkeypatch):
    monkeypatch.setenv(machine.CHILD_ENV, "1")
    assert processes.is_child()
    monkeypatch.delenv(machine.CHILD_ENV)
    assert not processes.is_child()


def test_the_saved_json_holds_per_process_statistics_beside_the_raw_samples(tmp_path):
    m = measured([[3.0, 1.0, 2.0], [5.0, 4.0]])
    assert m.samples == [3.0, 1.0, 2.0, 5.0, 4.0] and m.values() == [1.0, 4.0] and m.values("median") == [2.0, 4.5]
    assert [(p.rounds, p.min, p.median) for p in m.processes] == [(3, 1.0, 2.0), (2, 4.0, 4.5)]
    json.dumps([p.__dict__ for p in m.processes])
