"""--perf-metric instructions|cycles through the suite: what is counted and what is skipped, the
gate on equal and nearly equal counts, the refusal to mix metrics, and one count end to end under
valgrind (skipped, with the reason, only where valgrind cannot run). The engine itself (client
requests, dump files) is tested in tests/test_callgrind.py."""

from __future__ import annotations

import json

import pytest

import kernels
from perf import callgrind, counting, gate, results
from perf.baseline import SavedGate
from perf.cases import Case, probe_problem
from perf.metric import Metric
from tests.test_perf_plugin import assert_one_line_error, node, pytest_perf, storage_option

COUNT_NOISE = Metric.INSTRUCTIONS.defaults.noise

slow = pytest.mark.slow
NO_VALGRIND = callgrind.valgrind_problem()


# --------------------------------------------------------------------------- the gate on counts


def test_equal_counts_are_unchanged():
    c = gate.compare_counts("n", [43_210.0], [43_210.0], 0.01, COUNT_NOISE)
    assert c.verdict == gate.UNCHANGED and c.ratio == 1.0 and c.ci_low == c.ci_high == 1.0


def test_a_three_percent_change_is_seen_and_a_change_within_the_noise_is_not():
    assert gate.compare_counts("n", [43_210.0], [43_210.0 * 1.03], 0.01, COUNT_NOISE).verdict == gate.REGRESSED
    assert gate.compare_counts("n", [43_210.0], [43_210.0 * 0.97], 0.01, COUNT_NOISE).verdict == gate.IMPROVED
    assert gate.compare_counts("n", [43_210.0], [43_210.0 * 1.004], 0.01, COUNT_NOISE).verdict == gate.UNCHANGED


def test_a_change_inside_the_counts_own_spread_is_not_a_regression():
    # The processes of one side disagree by 4%: a 3% change cannot be told from that.
    c = gate.compare_counts("n", [100.0, 104.0], [105.0, 106.0], 0.01, COUNT_NOISE)
    assert c.verdict == gate.INCONCLUSIVE and "spread by 4%" in c.note


def test_a_saved_count_is_judged_with_the_count_rule():
    doc = {"perf": {"metric": "instructions"},
           "benchmarks": [{"fullname": "a", "stats": {"data": [1000.0]}, "extra_info": {"metric": "instructions"}}]}
    g = SavedGate(results.parse_run(doc, "b.json"), 0.01, 0.05)
    assert g.judge_processes("a", [1000.0], [1000.0]).verdict == gate.UNCHANGED
    assert g.judge_processes("a", [1030.0], [1030.0]).verdict == gate.REGRESSED
    assert g.meta({})["evidence"].startswith("counts per call: 1 process(es) of the baseline against 1 of this run")


# --------------------------------------------------------------------------- what is counted


@pytest.mark.parametrize(("case", "why"), [
    (Case("peak_matmul", "numpy", probe_problem("peak_matmul", True, "float32")), "a roofline probe measures a rate of time"),
    (Case("hidden", "numpy", kernels.PRESETS["compute"]), "would take too long to count under callgrind"),
])
def test_probes_and_costly_sizes_are_skipped_with_the_reason(case, why):
    assert why in counting.cannot_count(case, kernels.backend("numpy"))


def test_every_stage_and_step_at_seed_is_counted():
    b = kernels.backend("numpy")
    for stage in (*kernels.STAGES, "train_step", "workspace_step"):
        assert counting.cannot_count(Case(stage, "numpy", kernels.PRESETS["seed"]), b) == "", stage


def test_a_gpu_backend_is_skipped_with_the_reason():
    gpu = type("FakeBackend", (), {"device_name": "cuda:0"})()
    why = counting.cannot_count(Case("relu", "torch-cuda", kernels.PRESETS["seed"]), gpu)
    assert "counting under callgrind is for CPU backends" in why


def test_without_valgrind_counting_is_one_line_saying_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no valgrind on it
    assert "apt-get install valgrind" in callgrind.valgrind_problem()


# --------------------------------------------------------------------------- end to end


RELU = ("-p", "no:cacheprovider", "--perf-metric", "instructions", "--perf-backend", "numpy", "--perf-size", "seed",
        "-k", "relu and not backward and not stage_out and not grad", "-rA")


@slow
@pytest.mark.skipif(NO_VALGRIND is not None, reason=f"valgrind cannot run here: {NO_VALGRIND}")
def test_a_stage_is_counted_saved_and_compared_unchanged(tmp_path):
    saved = pytest_perf(*RELU, "--benchmark-autosave", storage_option(tmp_path))
    assert saved.rc == 0, saved.output
    assert "counting 1 benchmarks under valgrind, 1 fresh process(es) each, one zygote per backend" in saved.output
    assert "numpy: 1 benchmarks counted 1 time(s) each, a fresh process each, in " in saved.output
    (path,) = tmp_path.rglob("*.json")
    run = results.load_run(path)
    assert run.metric is Metric.INSTRUCTIONS
    r = run.results[node("relu", "numpy", "seed")]
    assert r.metric is Metric.INSTRUCTIONS and len(r.samples) == 1
    info = json.loads(path.read_text())["benchmarks"][0]["extra_info"]
    assert {"instructions", "branches", "mispredicts", "l1_misses", "ll_misses", "cycles"} <= set(info)
    assert info["instructions"] == r.samples[0] > 1000 and info["cycles"] >= info["instructions"]
    again = pytest_perf(*RELU, "--benchmark-compare", storage_option(tmp_path))
    assert again.rc == 0, again.output
    assert "gate: saved baseline, counts per call: 1 process(es) of the baseline against 1" in again.section("perf")
    timed = pytest_perf(*RELU[:2], "--perf-backend", "numpy", "--perf-size", "seed", "-k", "relu", "--perf-processes", "1",
                        f"--benchmark-compare={path}", storage_option(tmp_path))
    assert_one_line_error(timed, "holds instructions and this run measures time")
    bare = pytest_perf(*RELU[:2], "--perf-backend", "numpy", "--perf-size", "seed", "-k", "relu", "--perf-processes", "1",
                       "--benchmark-compare", storage_option(tmp_path))
    assert bare.rc == 0 and f"passed over 1 newer saved run(s) not comparable with this one: {path.name} (instructions)" \
        in bare.output, bare.output


def test_the_cycle_estimate_is_judged_against_its_own_larger_noise():
    # Simulated cache misses weigh 10 and 100: the estimate moved up to 21% between fresh processes.
    assert Metric.CYCLES.defaults.noise > Metric.INSTRUCTIONS.defaults.noise == COUNT_NOISE
    doc = {"perf": {"metric": "cycles"},
           "benchmarks": [{"fullname": "a", "stats": {"data": [1000.0]}, "extra_info": {"metric": "cycles"}}]}
    g = SavedGate(results.parse_run(doc, "b.json"), 0.01, 0.05)
    assert g.judge_processes("a", [1150.0], [1150.0]).verdict != gate.REGRESSED
    assert g.judge_processes("a", [1600.0], [1600.0]).verdict == gate.REGRESSED
