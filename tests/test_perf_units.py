"""The perf layer's helpers, in process and fast: size parsing, option settings, the round plan,
case binding (restored state, validation, ids), timers, run-to-run drift floors, fingerprints.

No test here reads a clock to decide anything: timing belongs in the benchmarks.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np
import pytest
from scipy import stats

import kernels
import kernels.numpy_ as numpy_kernels
import kernels.torch_ as torch_kernels
from kernels import check
from kernels.problem import PRESETS, SWEEPS, Problem
from perf import drift, machine, measure, results, timers
from perf.cases import OUT_FORMS, PROBES, STEPS, Case, base_stage, bind, roofline_probe
from perf.options import parse_sizes, settings

TINY = Problem(8, 16, 8, 4)  # N, D_in, H, D_out
BACKENDS = ("numpy", "torch-cpu")
MUTATING = ("sgd_update", "sgd_update_out", "train_step", "tutorial_step", "workspace_step")


# --------------------------------------------------------------------------- parse_sizes


def shapes(text: str, dtype: str = "float32") -> list[tuple[str, tuple[int, int, int, int], str]]:
    return [(p.name, p.shape, p.dtype) for p in parse_sizes(text, dtype)]


@pytest.mark.parametrize("name", list(PRESETS))
def test_parse_sizes_takes_every_preset_by_name(name):
    assert parse_sizes(name) == [PRESETS[name]]


def test_parse_sizes_expands_a_sweep_to_its_presets_in_order():
    assert [p.name for p in parse_sizes("sweep")] == list(SWEEPS["sweep"])
    assert parse_sizes("sweep") == [PRESETS[name] for name in SWEEPS["sweep"]]


@pytest.mark.parametrize("text", ["64,1000,100,10", "64x1000x100x10", " 64 , 1000 , 100 , 10 "])
def test_parse_sizes_reads_an_explicit_size_as_n_din_h_dout(text):
    (p,) = parse_sizes(text)
    assert (p.N, p.D_in, p.H, p.D_out) == (64, 1000, 100, 10)
    assert p.name == "64x1000x100x10"


def test_parse_sizes_reads_presets_and_explicit_sizes_mixed_in_order():
    assert shapes("seed,8,16,8,4,compute") == [
        ("seed", (64, 1000, 100, 10), "float32"),
        ("8x16x8x4", (8, 16, 8, 4), "float32"),
        ("compute", (1024, 1024, 1024, 512), "float32"),
    ]
    assert shapes("8x16x8x4") == [("8x16x8x4", (8, 16, 8, 4), "float32")]
    assert shapes("1,2,3,4,5,6,7,8") == [("1x2x3x4", (1, 2, 3, 4), "float32"), ("5x6x7x8", (5, 6, 7, 8), "float32")]
    assert shapes("seed;compute") == shapes("seed compute") == shapes("seed,compute")


def test_parse_sizes_gives_every_size_the_dtype_asked_for():
    assert {dtype for *_, dtype in shapes("seed,8,16,8,4,sweep", "float64")} == {"float64"}


@pytest.mark.parametrize("text, message", [
    ("seed,1,2", r"incomplete size '1,2': an explicit size is four integers N,D_in,H,D_out"),
    ("1,2,3", r"incomplete size '1,2,3'"),
    ("64,1000,100,seed", r"incomplete size '64,1000,100'"),
    ("1,2,3,4,5", r"incomplete size '5'"),
    ("0,1,2,3", r"size '0,1,2,3': N must be a positive integer, got 0"),
    ("8,-16,8,4", r"D_in must be a positive integer, got -16"),
    ("8x16x8", r"unknown size '8x16x8'; valid: a preset \(seed, compute"),
    ("junk", r"unknown size 'junk'; valid: a preset .* a sweep \(sweep\) or N,D_in,H,D_out"),
    ("", r"no size named; valid: presets \(seed"),
    (" , ; ", r"no size named"),
])
def test_parse_sizes_refuses_bad_sizes_with_one_line_saying_what_is_valid(text, message):
    with pytest.raises(kernels.KernelError, match=message) as info:
        parse_sizes(text)
    assert "\n" not in str(info.value)


def test_parse_sizes_names_each_problem_once():
    names = [p.name for p in parse_sizes("seed,sweep")]
    assert names == list(SWEEPS["sweep"])


# --------------------------------------------------------------------------- settings


class OptionsConfig:
    """Just what perf.options.settings reads: command-line values and ini values."""

    def __init__(self, ini: dict | None = None, **options):
        self.options = options
        self.ini = ini or {}

    def getoption(self, key):
        return self.options.get(key)

    def getini(self, key):
        if key == "perf_thresholds":
            return self.ini.get(key, [])
        if key == "perf_allow_foreign_baseline":
            return self.ini.get(key, False)
        return self.ini.get(key)


def test_settings_take_the_command_line_over_the_ini_over_the_default():
    s = settings(OptionsConfig(ini={"perf_size": "seed", "perf_threshold": "7%"}, perf_size="8,16,8,4"))
    assert [p.name for p in s.sizes] == ["8x16x8x4"]
    assert s.threshold == pytest.approx(0.07)
    assert s.backends == () and s.dtypes == ("float32",) and s.timer == "auto"
    assert s.threads == 1 and not s.allow_foreign_baseline


def test_settings_read_per_benchmark_thresholds_from_the_ini():
    s = settings(OptionsConfig(ini={"perf_thresholds": ["seed-relu-* = 25%", "seed train_step = 0.3"]}))
    assert s.thresholds == (("seed-relu-*", 0.25), ("seed train_step", 0.3))


@pytest.mark.parametrize("where, config, message", [
    ("option", OptionsConfig(perf_threads="0"), "--perf-threads='0': expected a positive integer or 'auto'"),
    ("ini", OptionsConfig(ini={"perf_timer": "fast"}),
     "ini option perf_timer='fast': unknown timer; valid: auto, sync, events"),
    ("ini lines", OptionsConfig(ini={"perf_thresholds": ["relu"]}),
     "ini option perf_thresholds line 'relu': expected 'PATTERN = "),
])
def test_settings_errors_say_where_the_bad_value_came_from(where, config, message):
    with pytest.raises(pytest.UsageError) as info:
        settings(config)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_settings_read_perf_history_as_a_positive_integer():
    assert settings(OptionsConfig()).history == 5
    assert settings(OptionsConfig(ini={"perf_history": "12"})).history == 12
    assert settings(OptionsConfig(ini={"perf_history": " 1 "})).history == 1


@pytest.mark.parametrize("value", ("abc", "1.5", "0", "-1", "\u00b2", "5 runs"))
def test_a_bad_perf_history_is_a_one_line_error_naming_the_key(value):
    with pytest.raises(pytest.UsageError) as info:
        settings(OptionsConfig(ini={"perf_history": value}))
    assert str(info.value) == f"ini option perf_history={value!r}: expected a positive integer, the number of saved runs " \
                              "(default 5)"


@pytest.mark.parametrize("value, expected", [("true", True), ("Yes", True), ("on", True), ("1", True), ("false", False),
                                             ("off", False), ("0", False), (True, True), (False, False)])
def test_the_foreign_baseline_flag_reads_the_ini_as_pytest_does(value, expected):
    assert settings(OptionsConfig(ini={"perf_allow_foreign_baseline": value})).allow_foreign_baseline is expected
    assert settings(OptionsConfig(ini={"perf_allow_foreign_baseline": value}, perf_allow_foreign_baseline=True)) \
        .allow_foreign_baseline is True


class RaisingIniConfig(OptionsConfig):
    """pytest's own reading of a bool ini value: a ValueError (pytest 8) or a UsageError (pytest 9) without the key."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def getini(self, key):
        if key == "perf_allow_foreign_baseline":
            raise self.error
        return super().getini(key)


@pytest.mark.parametrize("error", (ValueError("invalid truth value 'maybe'"),
                                   pytest.UsageError("invalid truth value 'maybe'")), ids=("pytest 8", "pytest 9"))
def test_a_bad_foreign_baseline_flag_names_the_key_and_what_is_accepted(error):
    with pytest.raises(pytest.UsageError) as info:
        settings(RaisingIniConfig(error))
    assert str(info.value) == "ini option perf_allow_foreign_baseline: invalid truth value 'maybe'; " \
                              "expected true or false (or yes/no, on/off, 1/0)"
    with pytest.raises(pytest.UsageError, match=r"^ini option perf_allow_foreign_baseline='maybe': expected true or false"):
        settings(OptionsConfig(ini={"perf_allow_foreign_baseline": "maybe"}))


@pytest.mark.parametrize("option", ("perf_report_json", "perf_report_md"))
def test_report_paths_are_checked_at_start_and_nothing_is_created(option, tmp_path):
    flag = "--" + option.replace("_", "-")
    cases = {
        str(tmp_path / "missing" / "v.json"): f"directory {str(tmp_path / 'missing')!r} does not exist",
        str(tmp_path): "is a directory; give a file path",
        str(tmp_path / "file.txt" / "v.json"): f"{str(tmp_path / 'file.txt')!r} is not a directory",
        "x" * 5000: "cannot be checked: File name too long",
    }
    (tmp_path / "file.txt").write_text("")
    for path, why in cases.items():
        with pytest.raises(pytest.UsageError) as info:
            settings(OptionsConfig(**{option: path}))
        assert str(info.value).startswith(f"{flag}={path!r}: {why}") and "\n" not in str(info.value), str(info.value)
    with pytest.raises(pytest.UsageError, match=f"^ini option {option}="):
        settings(OptionsConfig(ini={option: str(tmp_path)}))
    good = tmp_path / "report.out"
    assert getattr(settings(OptionsConfig(**{option: str(good)})), option.removeprefix("perf_")) == str(good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # nothing created, not even the good one


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_report_in_a_read_only_directory_is_refused(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(pytest.UsageError, match=r"is not writable here$"):
            settings(OptionsConfig(perf_report_json=str(folder / "v.json")))
    finally:
        folder.chmod(0o700)


@pytest.mark.parametrize("option, value", [("perf_backend", "numpy,numpy"), ("perf_dtype", "float32,float32"),
                                           ("perf_size", "8,16,8,4,8x16x8x4")])
def test_settings_name_each_backend_dtype_and_size_once(option, value):
    s = settings(OptionsConfig(**{option: value}))
    for chosen in (s.backends, s.dtypes, s.sizes):
        assert len(set(chosen)) == len(chosen)


# --------------------------------------------------------------------------- the round plan


def test_plan_loops_a_fast_call_until_a_round_lasts_min_round_s_then_fills_max_time():
    # 3 us a call: 34 calls make a round of >= 100 us; 10 ms / (34 * 3 us) = 98.04 -> 99 rounds.
    assert measure.plan(3e-6, min_round_s=1e-4, max_time_s=0.01, min_rounds=5, can_loop=True) == (99, 34)


def test_plan_runs_at_least_min_rounds_of_a_slow_call():
    assert measure.plan(2.0, min_round_s=1e-4, max_time_s=1.0, min_rounds=5, can_loop=True) == (5, 1)
    assert measure.plan(0.03, min_round_s=1e-4, max_time_s=0.1, min_rounds=7, can_loop=True) == (7, 1)


def test_plan_caps_rounds_at_max_rounds():
    assert measure.plan(3e-6, min_round_s=1e-4, max_time_s=10.0, min_rounds=5, can_loop=True) == (measure.MAX_ROUNDS, 34)
    assert measure.plan(1e-3, min_round_s=1e-4, max_time_s=1.0, min_rounds=5000, can_loop=True)[0] == measure.MAX_ROUNDS


def test_plan_times_one_call_a_round_when_the_call_cannot_loop():
    # A call that mutates its inputs is restored by setup before every round: one call a round.
    assert measure.plan(2**-18, min_round_s=2**-13, max_time_s=2**-9, min_rounds=5, can_loop=False) == (2**9, 1)
    assert measure.plan(2**-18, min_round_s=2**-13, max_time_s=2**-9, min_rounds=5, can_loop=True) == (2**4, 2**5)


def test_plan_survives_a_call_too_fast_to_measure():
    assert measure.plan(0.0, min_round_s=1e-4, max_time_s=1.0, min_rounds=5, can_loop=True) == (measure.MAX_ROUNDS, 1)


# --------------------------------------------------------------------------- cases


def host(bound, arrays) -> list[np.ndarray]:
    return [bound.backend.to_numpy(a).copy() for a in arrays]


def weights(stage: str, args: tuple) -> tuple:
    """The arrays a mutating call updates: (w1, w2), in the order its setup passes them."""
    return (args[0], args[2]) if base_stage(stage) == "sgd_update" else args


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stage", MUTATING)
def test_setup_restores_the_weights_before_every_call(stage, backend):
    bound = bind(Case(stage, backend, TINY))
    assert bound.setup is not None and bound.args == ()
    values = check.intermediates(TINY)
    originals = [values["w1"], values["w2"]]
    after = []
    for _ in range(2):
        args, kwargs = bound.setup()
        assert kwargs == {}
        before = host(bound, weights(stage, args))
        for got, want in zip(before, originals):
            np.testing.assert_array_equal(got, want, err_msg=f"{stage} on {backend}: setup did not restore the weights")
        bound.target(*args)
        after.append(host(bound, weights(stage, args)))
        assert not any(np.array_equal(a, w) for a, w in zip(after[-1], originals)), f"{stage} on {backend} updated nothing"
    for first, second in zip(*after):
        np.testing.assert_array_equal(first, second, err_msg=f"{stage} on {backend}: two calls from setup differ")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stage", [*kernels.STAGES, *OUT_FORMS, "train_step", "tutorial_step", "workspace_step"])
def test_check_passes_every_stage_and_step_of_the_cpu_backends(stage, backend):
    assert bind(Case(stage, backend, TINY)).check() is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stage", [s for s in OUT_FORMS if s != "sgd_update_out"])
def test_an_out_form_times_its_stage_writing_into_one_buffer_it_does_not_allocate(stage, backend):
    bound = bind(Case(stage, backend, TINY))
    out = bound.target.keywords["out"]
    assert bound.setup is None and bound.target.func is getattr(bound.backend.raw, base_stage(stage))
    assert bound.check() is None
    first = bound.target(*bound.args)
    assert first is out and bound.target(*bound.args) is out, f"{stage} on {backend}: the result is not its out= buffer"
    assert ("scratch" in bound.target.keywords) == (base_stage(stage) in ("loss", "relu_backward"))


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_workspace_step_returns_its_own_loss_buffer_every_round(backend):
    bound = bind(Case("workspace_step", backend, TINY))
    args, _ = bound.setup()
    first = bound.target(*args)
    args, _ = bound.setup()
    assert bound.target(*args) is first


@pytest.mark.parametrize("backend", BACKENDS)
def test_graph_step_skips_with_the_reason_where_there_is_no_cuda(backend):
    with pytest.raises(pytest.skip.Exception) as info:
        bind(Case("graph_step", backend, TINY))
    assert str(info.value) == kernels.backend(backend).graph_unavailable() != ""
    assert "CUDA" in str(info.value) and "\n" not in str(info.value)


def eager_capture(captured: list):
    """A stand-in for torch_.capture on the CPU: records the function and "replays" it by calling it."""
    def capture(device, fn):
        captured.append(fn)
        return fn

    return capture


def test_graph_step_is_wired_to_the_workspace_step_and_its_check_runs(monkeypatch):
    # No GPU here: capture is replaced by an eager stand-in, so what is tested is the binding:
    # the captured function is the workspace step on the arrays setup restores, and the check runs.
    captured = []
    monkeypatch.setattr(torch_kernels, "capture_unavailable", lambda device: "")
    monkeypatch.setattr(torch_kernels, "capture", eager_capture(captured))
    bound = bind(Case("graph_step", "torch-cpu", TINY))
    (fn,) = captured
    assert fn.func.__name__ == "workspace_step" and fn.args[0] is torch_kernels
    assert bound.check() is None
    assert_restores_and_steps(bound, "graph_step", "torch-cpu")
    monkeypatch.setattr(torch_kernels, "relu", lambda h, out=None: torch_kernels.torch.abs(h, out=out))
    assert "loss" in bind(Case("graph_step", "torch-cpu", TINY)).check()


def assert_restores_and_steps(bound, stage: str, backend: str) -> None:
    values = check.intermediates(TINY)
    for _ in range(2):
        args, _ = bound.setup()
        w1, _ = args
        np.testing.assert_array_equal(bound.backend.to_numpy(w1), values["w1"], err_msg=f"{stage} on {backend}")
        bound.target(*args)
        assert not np.array_equal(bound.backend.to_numpy(w1), values["w1"]), f"{stage} on {backend} updated nothing"


@pytest.mark.parametrize("stage, probe", [
    ("hidden", "peak_matmul"), ("grad_w1_out", "peak_matmul"), ("relu", "peak_copy"), ("sgd_update_out", "peak_copy"),
    ("loss_out", "peak_copy"), *[(step, "peak_matmul") for step in STEPS], ("peak_copy", None), ("nonsense", None),
])
def test_each_benchmark_has_its_roofline_probe(stage, probe):
    assert roofline_probe(stage) == probe


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("probe", PROBES)
def test_check_passes_the_roofline_probes_at_a_small_size(probe, backend):
    assert bind(Case(probe, backend, Problem(8, 16, 8, 1))).check() is None


def test_check_reports_a_wrong_kernel(monkeypatch):
    monkeypatch.setattr(numpy_kernels, "relu", lambda h, out=None: np.abs(h, out=out))
    why = bind(Case("relu", "numpy", TINY)).check()
    assert why is not None and "exceeds" in why and "float32" in why
    assert "loss" in bind(Case("train_step", "numpy", TINY)).check()
    assert "loss" in bind(Case("workspace_step", "numpy", TINY)).check()
    assert "exceeds" in bind(Case("relu_out", "numpy", TINY)).check()
    assert bind(Case("tutorial_step", "numpy", TINY)).check() is None  # the tutorial's code has its own relu


def test_check_reports_an_out_form_that_leaves_its_buffer_unwritten(monkeypatch):
    monkeypatch.setattr(numpy_kernels, "relu", lambda h, out=None: np.maximum(h, 0))
    assert bind(Case("relu", "numpy", TINY)).check() is None
    assert bind(Case("relu_out", "numpy", TINY)).check() == "its out= form did not return the out= buffer"
    monkeypatch.setattr(numpy_kernels, "relu", lambda h, out=None: out)  # returns the buffer, writes nothing
    assert "exceeds" in bind(Case("relu_out", "numpy", TINY)).check()


@pytest.mark.parametrize("case, id_, group", [
    (Case("relu", "numpy", PRESETS["seed"]), "seed-relu-numpy", "seed relu"),
    (Case("hidden", "torch-cpu", TINY), "8x16x8x4-hidden-torch-cpu", "8x16x8x4 hidden"),
    (Case("relu", "numpy", PRESETS["seed"].with_dtype("float64")), "seed-relu-numpy-float64", "seed relu float64"),
    (Case("train_step", "numpy", PRESETS["compute"]), "compute-numpy", "compute train_step"),
    (Case("tutorial_step", "torch-cuda:1", PRESETS["seed"]), "seed-torch-cuda:1", "seed train_step"),
    (Case("train_step", "numpy", TINY.with_dtype("float64")), "8x16x8x4-numpy-float64", "8x16x8x4 train_step float64"),
    (Case("peak_matmul", "numpy", Problem(2048, 2048, 2048, 1, name="peak2048")), "peak_matmul-numpy", "roofline peak_matmul"),
    (Case("peak_copy", "torch-cpu", Problem(8, 8, 1, 1, dtype="float64")), "peak_copy-torch-cpu-float64",
     "roofline peak_copy float64"),
    # The new forms: an out= form has its stage's id and group (under test_stage_out), every step form train_step's.
    (Case("relu_out", "numpy", PRESETS["seed"]), "seed-relu-numpy", "seed relu"),
    (Case("sgd_update_out", "torch-cpu", TINY.with_dtype("float64")), "8x16x8x4-sgd_update-torch-cpu-float64",
     "8x16x8x4 sgd_update float64"),
    (Case("workspace_step", "numpy", PRESETS["compute"]), "compute-numpy", "compute train_step"),
    (Case("graph_step", "torch-cuda", PRESETS["gpu"]), "gpu-torch-cuda", "gpu train_step"),
])
def test_case_id_and_group(case, id_, group):
    assert (case.id, case.group) == (id_, group)


# --------------------------------------------------------------------------- timers


def test_sync_timer_synchronises_before_it_reads_the_clock(monkeypatch):
    calls = []
    monkeypatch.setattr(timers, "perf_counter", lambda: calls.append("clock") or 42.0)
    timer = timers.sync_timer(lambda: calls.append("synchronize"))
    assert timer() == 42.0
    assert timer() == 42.0
    assert calls == ["synchronize", "clock", "synchronize", "clock"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["auto", "sync", "events"])
def test_the_cpu_always_uses_perf_counter(backend, mode):
    assert timers.timer_for(kernels.backend(backend), mode) is time.perf_counter


def fake_device(device_name: str, log: list) -> SimpleNamespace:
    return SimpleNamespace(name=f"fake-{device_name}", device_name=device_name, device=device_name,
                           synchronize=lambda: log.append("synchronize"))


@pytest.mark.parametrize("mode", ["auto", "sync"])
def test_an_accelerator_gets_a_timer_that_synchronises_its_device(monkeypatch, mode):
    log = []
    monkeypatch.setattr(timers, "perf_counter", lambda: log.append("clock") or 1.0)
    timers.timer_for(fake_device("mps", log), mode)()
    assert log == ["synchronize", "clock"]


def test_cuda_events_on_a_device_without_cuda_is_refused_with_one_line():
    with pytest.raises(ValueError, match=r"--perf-timer=events needs a CUDA device, fake-mps runs on mps"):
        timers.timer_for(fake_device("mps", []), "events")


# --------------------------------------------------------------------------- run-to-run drift


def floor(spread: float, pooled: float, k: int, df: int, tests: int = 1, alpha: float = 0.05) -> float:
    t = stats.t.ppf(1 - alpha / (2 * tests), df)
    return math.exp(t * max(spread, pooled) * math.sqrt(1 + 1 / k)) - 1


def around(level: float, *relative: float) -> list[float]:
    return [level * math.exp(r) for r in relative]


def test_drift_floors_need_three_saved_runs():
    assert drift.drift_floors({}, alpha=0.05, tests=1) == {}
    assert drift.drift_floors({"a": [1.0, 2.0], "b": [3.0]}, alpha=0.05, tests=1) == {}
    assert set(drift.drift_floors({"a": [1.0, 2.0], "b": [1.0, 1.1, 1.2]}, alpha=0.05, tests=1)) == {"b"}


def test_drift_floor_is_the_prediction_bound_of_the_log_medians():
    medians = {"a": around(1e-3, -0.1, 0.0, 0.1), "b": around(5e-6, -0.1, 0.0, 0.1)}
    s = statistics.stdev([-0.1, 0.0, 0.1])
    floors = drift.drift_floors(medians, alpha=0.05, tests=4)
    assert floors["a"] == pytest.approx(floor(s, s, 3, 4, tests=4))
    assert floors["b"] == pytest.approx(floors["a"])  # relative: the level does not matter


def test_a_larger_spread_gives_a_larger_floor():
    calm = drift.drift_floors({"x": around(1.0, -0.02, 0.0, 0.02, 0.01)}, alpha=0.05, tests=1)["x"]
    wild = drift.drift_floors({"x": around(1.0, -0.3, 0.0, 0.3, 0.1)}, alpha=0.05, tests=1)["x"]
    assert wild > calm > 0
    stricter = drift.drift_floors({"x": around(1.0, -0.02, 0.0, 0.02, 0.01)}, alpha=0.05, tests=20)["x"]
    assert stricter > calm  # Bonferroni over more compared benchmarks: a wider bound for each


def test_the_pooled_spread_is_used_where_a_benchmark_s_own_is_smaller():
    medians = {"steady": [2e-6] * 4, "a": around(1.0, -0.2, 0.0, 0.2, 0.0), "b": around(1.0, -0.1, 0.1, 0.0, 0.05)}
    logs = {k: [math.log(v) for v in vs] for k, vs in medians.items()}
    df = sum(len(v) - 1 for v in logs.values())
    pooled = math.sqrt(sum(statistics.variance(v) * (len(v) - 1) for v in logs.values()) / df)
    floors = drift.drift_floors(medians, alpha=0.05, tests=1)
    assert statistics.stdev(logs["b"]) < pooled < statistics.stdev(logs["a"])
    assert floors["steady"] == pytest.approx(floor(0.0, pooled, 4, df))
    assert floors["steady"] > 0
    assert floors["b"] == pytest.approx(floors["steady"])  # its own spread is below the pooled one too
    assert floors["a"] == pytest.approx(floor(statistics.stdev(logs["a"]), pooled, 4, df))
    assert floors["a"] > floors["steady"]


def test_run_medians_read_saved_runs():
    docs = [{"benchmarks": [{"fullname": "t[a]", "stats": {"median": 2.0}}, {"fullname": "t[b]", "stats": {"median": 0}}]},
            {"benchmarks": [{"fullname": "t[a]", "stats": {"median": 3.0}}]}, {"benchmarks": []}]
    runs = [results.parse_run(doc, f"run{i}") for i, doc in enumerate(docs)]
    assert drift.run_medians(runs) == {"t[a]": [2.0, 3.0]}


# --------------------------------------------------------------------------- fingerprints


def test_differences_name_each_key_that_changed():
    saved = {"cpu": "A", "threads": {"torch": 4}, "numpy": "2.0", "gone": 1}
    current = {"cpu": "B", "threads": {"torch": 1}, "numpy": "2.0", "new": 2}
    assert machine.differences(saved, current) == [
        "cpu: 'A' -> 'B'", "gone: 1 -> None", "new: None -> 2", "threads: {'torch': 4} -> {'torch': 1}"]
    assert machine.differences(current, dict(current)) == []


def test_fingerprint_holds_what_decides_performance_and_nothing_that_drifts():
    fp = machine.fingerprint()
    assert {"cpu", "cpus", "python", "numpy", "blas", "threads", "torch"} <= set(fp)
    assert fp["cpu"] == machine.cpu_model() and fp["cpus"] >= 1
    assert fp["threads"] == machine.thread_counts() and "torch" in fp["threads"]
    assert not any("hz" in key or "time" in key for key in fp)
    assert fp == machine.fingerprint()  # stable within a run


def test_events_timer_on_a_non_cuda_accelerator_is_a_one_line_usage_error(monkeypatch):
    import perf.options as options

    devices = {"torch-mps": "mps", "numpy": "cpu"}
    monkeypatch.setattr(options.kernels, "backend", lambda name, dtype="float32": SimpleNamespace(device_name=devices[name]))
    given = {"perf_backend": "numpy,torch-mps", "perf_timer": "events"}
    config = SimpleNamespace(getoption=given.get, getini=lambda key: [] if key == "perf_thresholds" else None)
    with pytest.raises(pytest.UsageError, match=r"^--perf-timer='events': CUDA events time CUDA devices only, not torch-mps;"):
        options.settings(config)
