"""--perf-metric instructions|cycles through the suite: what is counted and what is skipped, the
gate on equal and nearly equal counts, the refusal to mix metrics, and one count end to end under
valgrind (skipped, with the reason, only where valgrind cannot run). The engine itself (client
requests, dump files) is tested in tests/test_callgrind.py."""

from __future__ import annotations

import json
import re

import pytest

import kernels
from perf import callgrind, counting, gate, results
from perf.baseline import SavedGate
from perf.cases import Case, probe_problem
from perf.metric import Metric
from tests.test_perf_plugin import assert_one_line_error, child_env, node, pytest_perf, storage_option

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


# --------------------------------------------------------------------------- what counting honours


ONE_RELU = ("-p", "no:cacheprovider", "--perf-metric", "instructions", "--perf-backend", "numpy", "--perf-size", "seed",
            "-k", "test_stage[seed-relu-numpy]", "-rA", "-v")


def counted_relu(path) -> float:
    return results.load_run(path).results[node("relu", "numpy", "seed")].samples[0]


@slow
@pytest.mark.skipif(NO_VALGRIND is not None, reason=f"valgrind cannot run here: {NO_VALGRIND}")
def test_a_plugin_s_pytest_configure_reaches_the_counted_code_and_the_gate_catches_it(tmp_path):
    saved = pytest_perf(*ONE_RELU, "-p", "tests.plugins.configured", "--benchmark-save=base", storage_option(tmp_path))
    assert saved.rc == 0, saved.output
    for form in ("where", "extra"):
        run = pytest_perf(*ONE_RELU, "-p", "tests.plugins.configured", "--benchmark-compare=0001", storage_option(tmp_path),
                          env=child_env(RELU_FORM=form))
        assert run.rc == 1, run.output  # caught: the hook ran in the counting zygote
        assert re.search(r"_ test_stage\[seed-relu-numpy\] _+\nREGRESSED by \+", run.output), run.output


@slow
@pytest.mark.skipif(NO_VALGRIND is not None, reason=f"valgrind cannot run here: {NO_VALGRIND}")
def test_the_environment_reaches_the_counted_code_and_the_code_path_is_recorded(tmp_path):
    plain = pytest_perf(*ONE_RELU, "--benchmark-save=plain", storage_option(tmp_path))
    assert plain.rc == 0, plain.output
    (first,) = tmp_path.rglob("*_plain.json")
    path = results.load_run(first).fingerprint["code_path"]
    assert set(path) >= {"numpy"} and not any(k == "torch" for k in path)  # a numpy zygote never imports torch
    features = "X86_V3 X86_V4 AVX512_ICL AVX512_SPR"  # numpy 2.4's dispatched targets (never its baseline)
    env = child_env(NPY_DISABLE_CPU_FEATURES=features)
    narrow = pytest_perf(*ONE_RELU, "--benchmark-save=narrow", storage_option(tmp_path), env=env)
    assert narrow.rc == 0, narrow.output
    (second,) = tmp_path.rglob("*_narrow.json")
    assert counted_relu(second) != counted_relu(first)  # another numpy path: other counts
    assert results.load_run(second).fingerprint["code_path"]["numpy"] != path["numpy"]
    refused = pytest_perf(*ONE_RELU, f"--benchmark-compare={first}", storage_option(tmp_path), env=env)
    assert refused.rc == 4 and "was counted on another code path (code_path:" in refused.output, refused.output


@slow
@pytest.mark.skipif(NO_VALGRIND is not None, reason=f"valgrind cannot run here: {NO_VALGRIND}")
def test_the_first_count_on_a_fresh_machine_builds_the_shim_in_an_empty_cache(tmp_path):
    run = pytest_perf(*ONE_RELU, storage_option(tmp_path / "s"), env=child_env(XDG_CACHE_HOME=str(tmp_path / "empty")))
    assert run.rc == 0, run.output
    assert list((tmp_path / "empty" / "relu-step-perf").glob("valgrind-shim-*.so"))


def test_the_zygote_s_environment_keeps_the_user_s_drops_the_session_s_and_is_padded():
    base = {"PATH": "/bin", "NPY_DISABLE_CPU_FEATURES": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MY_SETTING": "1",
            "PWD": "/home/x", "GITHUB_RUN_ID": "123", "TERM": "xterm", "PYTEST_XDIST_WORKER": "gw0", "OMP_NUM_THREADS": "8"}
    env = counting.zygote_env(base)
    assert {"NPY_DISABLE_CPU_FEATURES", "ATEN_CPU_CAPABILITY", "MY_SETTING", "PATH"} <= set(env)
    assert not {"PWD", "GITHUB_RUN_ID", "TERM", "PYTEST_XDIST_WORKER"} & set(env)
    assert env["OMP_NUM_THREADS"] == "1" and env["PYTHONHASHSEED"] == "0" and env["PYTHONPATH"].startswith("/dev/fd/4")
    size = sum(len(k) + len(v) + 2 for k, v in env.items())
    assert size % counting.ENV_PAD_TO == 0
    longer = counting.zygote_env({**base, "MY_SETTING": "1" * 300})
    assert sum(len(k) + len(v) + 2 for k, v in longer.items()) == size  # the same size, whatever the contents
