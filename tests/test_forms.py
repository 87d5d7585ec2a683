"""perf.forms on constructed results: the step's forms side by side, their shares of the roofline (as recorded),
the step against its stages and against its matmul floor, issue 14's targets judged where they are set.
No benchmark runs here."""

from __future__ import annotations

import pytest

from kernels.problem import MATMUL_STAGES, STAGES, Problem
from perf import forms
from perf.cases import OUT_FORMS
from perf.forms import Check, RunEntry
from perf.results import parse_run

SHAPE = (2, 3, 4, 5)  # N, D_in, H, D_out: the five matmuls are 48 + 80 + 80 + 80 + 48 = 336 FLOPs
P = Problem(*SHAPE, name="tiny")
STEP_FLOPS = P.flops("train_step")  # 336 and the elementwise work


def m(stage: str, median: float, backend: str = "numpy", dtype: str = "float32", size: str = "tiny",
      share: float | None = None, **kw) -> RunEntry:
    """A result with the kernels' own FLOP model, as the perf layer records it, and the share the plugin stored."""
    return RunEntry(stage, backend, dtype, size, median, kw.pop("flops", P.flops(stage)), kw.pop("shape", SHAPE), share)


def test_the_matmul_floor_counts_the_five_matmuls_only():
    assert forms.matmul_flops(SHAPE) == 336 == sum(P.flops(s) for s in MATMUL_STAGES)
    assert STEP_FLOPS > 336  # the step's own count has the elementwise work too


def test_the_floor_uses_the_peak_rate_read_back_from_the_recorded_share():
    # Achieved: STEP_FLOPS per 1 µs; at a share of 0.5 the peak is twice that, so the 336 matmul FLOPs take
    # 336 / (2 * STEP_FLOPS / 1e-6) seconds.
    step = m("train_step", 1e-6, share=0.5)
    assert forms.matmul_floor(step) == pytest.approx(336 * 1e-6 / (2 * STEP_FLOPS))
    for missing in (m("train_step", 1e-6), m("train_step", 1e-6, share=0.5, shape=None),
                    m("train_step", 1e-6, share=0.5, flops=None)):
        assert forms.matmul_floor(missing) is None


def test_each_form_of_the_step_gets_its_recorded_share_and_its_ratio_to_the_matmul_floor():
    # Every form of one run was set against the same peak, 1 GFLOP/s: share = (STEP_FLOPS / median) / 1e9, and the
    # floor of every form is the 336 matmul FLOPs at 1 GFLOP/s, 336 ns, whatever its time.
    def form(stage: str, ns: float) -> RunEntry:
        return m(stage, ns * 1e-9, share=STEP_FLOPS / ns)

    results = [form("graph_step", 400), form("tutorial_step", 1000), form("train_step", 800), form("workspace_step", 672),
               m("peak_matmul", 1.0, size="peak2048", shape=None)]
    (row,) = forms.step_forms(results)
    assert (row.size, row.backend, row.dtype) == ("tiny", "numpy", "float32")
    assert [f.name for f in row.forms] == ["tutorial_step", "train_step", "workspace_step", "graph_step"]
    assert row.matmul_floor == pytest.approx(336e-9)
    workspace = row.form("workspace_step")
    assert workspace.over_floor == pytest.approx(2.0) and workspace.share == pytest.approx(STEP_FLOPS / 672)
    assert row.form("graph_step").over_floor == pytest.approx(400 / 336)
    assert row.form("nothing") is None
    assert row.stage_sum is None and row.out_stage_sum is None  # no stage measured: no sums, no ratios
    assert row.train_over_stages is None and row.workspace_over_out_stages is None


def test_each_step_is_held_against_the_sum_of_the_stages_it_calls():
    results = [m(s, 10e-9) for s in STAGES] + [m(s, 5e-9) for s in OUT_FORMS]
    results += [m("train_step", 110e-9), m("workspace_step", 52.5e-9)]
    (row,) = forms.step_forms(results)
    assert row.stage_sum == pytest.approx(100e-9) and row.out_stage_sum == pytest.approx(50e-9)
    assert row.train_over_stages == pytest.approx(1.10)
    assert row.workspace_over_out_stages == pytest.approx(1.05)
    assert row.matmul_floor is None and row.form("train_step").share is None  # nothing recorded: no roofline
    one_missing = [r for r in results if r.stage != "loss_out"]
    (row,) = forms.step_forms(one_missing)
    assert row.out_stage_sum is None and row.workspace_over_out_stages is None
    assert row.train_over_stages == pytest.approx(1.10)


def test_sizes_backends_and_dtypes_are_kept_apart_each_against_its_own_run_s_peak():
    results = [m("train_step", 672e-9, share=0.5), m("train_step", 672e-9, backend="torch-cpu", share=0.25),
               m("train_step", 672e-9, dtype="float64", share=1.0), m("train_step", 1e-3, size="other", shape=(8, 8, 8, 8)),
               m("relu", 1e-9, size="stages only")]
    rows = {(r.size, r.backend, r.dtype): r for r in forms.step_forms(results)}
    assert set(rows) == {("tiny", "numpy", "float32"), ("tiny", "torch-cpu", "float32"), ("tiny", "numpy", "float64"),
                         ("other", "numpy", "float32")}
    over = STEP_FLOPS / 336  # the step's FLOPs over its matmuls': the ratio at a share of 1
    assert rows["tiny", "numpy", "float32"].form("train_step").over_floor == pytest.approx(2 * over)
    assert rows["tiny", "torch-cpu", "float32"].form("train_step").over_floor == pytest.approx(4 * over)
    assert rows["tiny", "numpy", "float64"].form("train_step").over_floor == pytest.approx(over)
    assert rows["other", "numpy", "float32"].matmul_floor is None  # no share recorded


def test_every_stage_gets_its_recorded_share_of_its_own_roofline():
    results = [m("relu_out", 1e-6, share=0.4), m("grad_w1", 48e-9, share=1.0), m("hidden_out", 96e-9, share=0.5),
               m("relu", 1e-6, backend="torch-cpu"), m("train_step", 1e-6, share=0.3),
               m("peak_copy", 1.0, size="copy8192", shape=None)]
    shares = {(s.backend, s.stage): s for s in forms.stage_shares(results)}
    assert set(shares) == {("numpy", "relu_out"), ("numpy", "grad_w1"), ("numpy", "hidden_out"), ("torch-cpu", "relu")}
    assert (shares["numpy", "relu_out"].probe, shares["numpy", "relu_out"].share) == ("peak_copy", 0.4)
    assert (shares["numpy", "grad_w1"].probe, shares["numpy", "grad_w1"].share) == ("peak_matmul", 1.0)
    assert shares["numpy", "hidden_out"].probe == "peak_matmul"
    assert shares["torch-cpu", "relu"].share is None  # none recorded: no share


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(("target", "value", "met"), [
    (forms.WORKSPACE_OVER_OUT_STAGES, 1.05, True), (forms.WORKSPACE_OVER_OUT_STAGES, 1.0501, False),
    (forms.OUT_STAGE_COPY_SHARE, 0.50, True), (forms.OUT_STAGE_COPY_SHARE, 0.4999, False),
    (forms.STEP_OVER_MATMUL_FLOOR, 1.15, True), (forms.STEP_OVER_MATMUL_FLOOR, 1.16, False),
])
def test_targets_hold_at_their_threshold_and_fail_past_it(target, value, met):
    assert target.met(value) is met


def targets_run(size: str, backend: str = "numpy", workspace: float = 105.0, out_share: float = 0.6,
                floor_share: float = 1.0) -> list[RunEntry]:
    """Every out= form 10 s (their sum 100 s), the workspace step ``workspace`` s; the steps at ``floor_share`` of peak."""
    results = [m(s, 10.0, backend, size=size, share=out_share) for s in OUT_FORMS]
    return results + [m(step, value, backend, size=size, share=floor_share)
                      for step, value in (("workspace_step", workspace), ("train_step", 120.0), ("tutorial_step", 200.0))]


def judged(results: list[RunEntry], targets=forms.ISSUE_14_TARGETS) -> list[Check]:
    return forms.checks(forms.step_forms(results), forms.stage_shares(results), targets)


def test_the_workspace_target_is_judged_at_seed_and_compute_on_the_cpu_backends_only():
    results = (targets_run("seed", workspace=105.0) + targets_run("compute", "torch-cpu", workspace=106.0)
               + targets_run("n256", workspace=200.0) + targets_run("seed", "torch-cuda", workspace=200.0))
    found = [(c.size, c.backend, c.subject, c.value, c.met) for c in judged(results, [forms.WORKSPACE_OVER_OUT_STAGES])]
    assert found == [("seed", "numpy", "workspace_step", pytest.approx(1.05), True),
                     ("compute", "torch-cpu", "workspace_step", pytest.approx(1.06), False)]
    assert forms.unmeasured(forms.WORKSPACE_OVER_OUT_STAGES, judged(results)) == [("seed", "torch-cpu"),
                                                                                   ("compute", "numpy")]


def test_the_floor_target_judges_the_suite_s_steps_at_compute_not_the_tutorial_s_code():
    over = STEP_FLOPS / 336  # at a share of 1: the floor ratio is the step's FLOPs over its matmuls'
    results = targets_run("compute", floor_share=over / 1.1) + targets_run("seed", floor_share=0.01)
    found = {(c.size, c.subject): c for c in judged(results, [forms.STEP_OVER_MATMUL_FLOOR])}
    assert set(found) == {("compute", "workspace_step"), ("compute", "train_step")}
    assert found["compute", "train_step"].value == pytest.approx(1.1) and found["compute", "train_step"].met
    slow = judged(targets_run("compute", floor_share=over / 1.2), [forms.STEP_OVER_MATMUL_FLOOR])
    assert [(c.value, c.met) for c in slow] == [(pytest.approx(1.2), False)] * 2


def test_the_copy_share_target_judges_the_elementwise_out_forms_at_the_memory_bound_size():
    results = targets_run("gpu", out_share=0.6) + [m("relu_backward_out", 1.0, "torch-cpu", size="gpu", share=0.3),
                                                    m("relu", 1.0, size="gpu", share=0.1), m("relu_out", 1.0, size="seed",
                                                                                              share=0.1)]
    found = judged(results, [forms.OUT_STAGE_COPY_SHARE])
    assert {c.subject for c in found if c.backend == "numpy"} == set(forms.ELEMENTWISE_OUT_FORMS)
    assert not {"hidden_out", "relu"} & {c.subject for c in found}   # matmuls and allocating stages are not held to it
    assert all(c.met for c in found if c.backend == "numpy")
    assert [(c.backend, c.subject, c.met) for c in found if not c.met] == [("torch-cpu", "relu_backward_out", False)]
    assert forms.unmeasured(forms.OUT_STAGE_COPY_SHARE, found) == [("gpu", "torch-cpu")]  # one of its five out= forms


def test_a_run_without_the_new_forms_has_nothing_to_judge():
    results = [m(s, 10e-9, share=0.5) for s in STAGES] + [m("train_step", 1e-7, share=0.5), m("tutorial_step", 1e-7)]
    assert judged(results) == []
    assert forms.unmeasured(forms.STEP_OVER_MATMUL_FLOOR, []) == [("compute", "numpy"), ("compute", "torch-cpu")]


# --------------------------------------------------------------------------- from a run


def test_results_are_read_from_a_run_through_the_results_layer():
    info = {"stage": "relu_out", "backend": "numpy", "dtype": "float32", "size": "seed", "flops": 6400, "bytes": 51200,
            "shape": {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}, "peak_share": 0.25}
    doc = {"benchmarks": [
        {"fullname": "a", "stats": {"median": 2e-6}, "extra_info": info},
        {"fullname": "b", "stats": {"median": 1e-3}, "extra_info": {"stage": "peak_copy", "backend": "numpy",
                                                                    "dtype": "float32", "size": "copy8192", "bytes": 10}},
        {"fullname": "c", "stats": {"median": 1e-3}, "extra_info": {}},                               # not the suite's
        {"fullname": "d", "stats": {"median": 9e4}, "extra_info": info | {"metric": "instructions"}},  # counted, not timed
    ]}
    first, probe = forms.from_run(parse_run(doc, "run.json"))
    assert first == RunEntry("relu_out", "numpy", "float32", "seed", 2e-6, 6400, (64, 1000, 100, 10), 0.25)
    assert (probe.stage, probe.shape, probe.peak_share) == ("peak_copy", None, None)
    assert forms.from_run(parse_run({"benchmarks": []}, "empty.json")) == []
