"""perf.forms on constructed results: the step's forms side by side, their shares of the roofline,
the step against its stages and against its matmul floor. No benchmark runs here."""

from __future__ import annotations

import pytest

from kernels.problem import MATMUL_STAGES, STAGES, Problem
from perf import forms
from perf.cases import OUT_FORMS
from perf.forms import Measured, Peaks

SHAPE = (2, 3, 4, 5)  # N, D_in, H, D_out: the five matmuls are 48 + 80 + 80 + 80 + 48 = 336 FLOPs
P = Problem(*SHAPE, name="tiny")


def m(stage: str, median_s: float, backend: str = "numpy", dtype: str = "float32", size: str = "tiny", **kw) -> Measured:
    """A result with the kernels' own FLOP and byte model, as the perf layer records it."""
    flops = kw.pop("flops", P.flops(stage) if stage not in forms.PROBES else None)
    nbytes = kw.pop("bytes", P.bytes(stage) if stage not in forms.PROBES else None)
    return Measured(stage, backend, dtype, size, median_s, flops, nbytes, kw.pop("shape", SHAPE))


def probes(backend: str = "numpy", gflops: float = 1.0, gbps: float = 10.0, dtype: str = "float32") -> list[Measured]:
    """peak_matmul and peak_copy results that give these rates: 1e9 FLOPs in 1/gflops s, 1e9 bytes in 1/gbps s."""
    return [Measured("peak_matmul", backend, dtype, "peak2048", 1 / gflops, 1e9, None, None),
            Measured("peak_copy", backend, dtype, "copy8192", 1 / gbps, 0, 1e9, None)]


def test_the_matmul_floor_counts_the_five_matmuls_only():
    assert forms.matmul_flops(SHAPE) == 336 == sum(P.flops(s) for s in MATMUL_STAGES)
    assert P.flops("train_step") > 336  # the step's own count has the elementwise work too


def test_peaks_are_per_backend_and_dtype_and_the_fastest_of_repeated_probes():
    results = [*probes("numpy", 2.0, 20.0), *probes("numpy", 4.0, 10.0), *probes("torch-cpu", 3.0, 30.0, "float64"),
               m("relu", 1e-6)]
    assert forms.peaks_of(results) == {("numpy", "float32"): Peaks(4.0, 20.0), ("torch-cpu", "float64"): Peaks(3.0, 30.0)}
    assert forms.peaks_of([m("relu", 1e-6)]) == {}


def test_each_form_of_the_step_gets_its_share_and_its_ratio_to_the_matmul_floor():
    step_flops = P.flops("train_step")
    results = [*probes(gflops=1.0), m("graph_step", 400e-9), m("tutorial_step", 1000e-9), m("train_step", 800e-9),
               m("workspace_step", 672e-9)]
    (row,) = forms.step_forms(results, forms.peaks_of(results))
    assert (row.size, row.backend, row.dtype) == ("tiny", "numpy", "float32")
    assert [f.name for f in row.forms] == ["tutorial_step", "train_step", "workspace_step", "graph_step"]
    assert row.matmul_floor_s == pytest.approx(336e-9)
    workspace = row.form("workspace_step")
    assert workspace.over_floor == pytest.approx(2.0)
    assert workspace.share == pytest.approx(step_flops / 672e-9 / 1e9)
    assert row.form("graph_step").over_floor == pytest.approx(400 / 336)
    assert row.form("nothing") is None
    assert row.stage_sum_s is None and row.out_stage_sum_s is None  # no stage measured: no sums, no ratios
    assert row.train_over_stages is None and row.workspace_over_out_stages is None


def test_each_step_is_held_against_the_sum_of_the_stages_it_calls():
    results = [m(s, 10e-9) for s in STAGES] + [m(s, 5e-9) for s in OUT_FORMS]
    results += [m("train_step", 110e-9), m("workspace_step", 52.5e-9)]
    (row,) = forms.step_forms(results, {})
    assert row.stage_sum_s == pytest.approx(100e-9) and row.out_stage_sum_s == pytest.approx(50e-9)
    assert row.train_over_stages == pytest.approx(1.10)
    assert row.workspace_over_out_stages == pytest.approx(1.05)
    assert row.matmul_floor_s is None and row.form("train_step").share is None  # no probes, no roofline
    one_missing = [r for r in results if r.stage != "loss_out"]
    (row,) = forms.step_forms(one_missing, {})
    assert row.out_stage_sum_s is None and row.workspace_over_out_stages is None
    assert row.train_over_stages == pytest.approx(1.10)


def test_sizes_backends_and_dtypes_are_kept_apart_and_the_peaks_of_each_backend_used():
    results = [*probes("numpy", 1.0), *probes("torch-cpu", 2.0), *probes("numpy", 0.5, dtype="float64"),
               m("train_step", 672e-9), m("train_step", 672e-9, backend="torch-cpu"),
               m("train_step", 672e-9, dtype="float64"), m("train_step", 1e-3, size="other", shape=(8, 8, 8, 8)),
               m("relu", 1e-9, size="stages only")]
    rows = {(r.size, r.backend, r.dtype): r for r in forms.step_forms(results, forms.peaks_of(results))}
    assert set(rows) == {("tiny", "numpy", "float32"), ("tiny", "torch-cpu", "float32"), ("tiny", "numpy", "float64"),
                         ("other", "numpy", "float32")}
    assert rows["tiny", "numpy", "float32"].form("train_step").over_floor == pytest.approx(2.0)
    assert rows["tiny", "torch-cpu", "float32"].form("train_step").over_floor == pytest.approx(4.0)
    assert rows["tiny", "numpy", "float64"].form("train_step").over_floor == pytest.approx(1.0)
    assert rows["other", "numpy", "float32"].matmul_floor_s == pytest.approx(forms.matmul_flops((8, 8, 8, 8)) / 1e9)


def test_a_step_without_a_shape_has_no_floor():
    results = [*probes(), m("train_step", 1e-6, shape=None)]
    (row,) = forms.step_forms(results, forms.peaks_of(results))
    assert row.matmul_floor_s is None and row.form("train_step").over_floor is None
    assert row.form("train_step").share is not None  # the recorded FLOPs still give the share


def test_every_stage_gets_its_share_of_its_own_roofline():
    results = [*probes(gflops=1.0, gbps=10.0), m("relu_out", 1e-6), m("grad_w1", 48e-9), m("hidden_out", 96e-9),
               m("relu", 1e-6, backend="torch-cpu"), m("train_step", 1e-6)]
    shares = {(s.backend, s.stage): s for s in forms.stage_shares(results, forms.peaks_of(results))}
    assert set(shares) == {("numpy", "relu_out"), ("numpy", "grad_w1"), ("numpy", "hidden_out"), ("torch-cpu", "relu")}
    relu = shares["numpy", "relu_out"]
    assert (relu.probe, relu.share) == ("peak_copy", pytest.approx(P.bytes("relu") / 1e-6 / 1e9 / 10.0))
    assert (shares["numpy", "grad_w1"].probe, shares["numpy", "grad_w1"].share) == ("peak_matmul", pytest.approx(1.0))
    assert shares["numpy", "hidden_out"].share == pytest.approx(0.5)
    assert shares["torch-cpu", "relu"].share is None  # no probe of torch-cpu in these results


def test_results_are_read_from_a_pytest_benchmark_document():
    data = {"benchmarks": [
        {"stats": {"median": 2e-6}, "extra_info": {"stage": "relu_out", "backend": "numpy", "dtype": "float32",
                                                     "size": "seed", "flops": 6400, "bytes": 51200,
                                                     "shape": {"N": 64, "D_in": 1000, "H": 100, "D_out": 10}}},
        {"stats": {"median": 1e-3}, "extra_info": {"stage": "peak_copy", "backend": "numpy", "dtype": "float32",
                                                     "size": "copy8192", "flops": 0, "bytes": 10}},
        {"stats": {"median": 1e-3}, "extra_info": {}},            # not a perf benchmark
        {"stats": {}, "extra_info": {"stage": "relu", "backend": "numpy"}},   # no median
    ]}
    first, probe = forms.from_benchmarks(data)
    assert first == Measured("relu_out", "numpy", "float32", "seed", 2e-6, 6400, 51200, (64, 1000, 100, 10))
    assert probe.shape is None and probe.bytes == 10
    assert forms.from_benchmarks({}) == []

