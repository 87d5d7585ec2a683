"""What pytest perf shows a person: the summary grid on constructed results, and the progress display."""

from __future__ import annotations

import io

from kernels.problem import STAGES
from perf import summary
from perf.gate import Comparison, Verdict
from perf.metric import Metric
from perf.progress import Progress
from perf.summary import Cell

SEED, COMPUTE = (64, 1000, 100, 10), (1024, 1024, 1024, 512)


def cells(size: str = "seed", shape=SEED, backends=("numpy", "torch-cpu"), metric: Metric = Metric.TIME,
          scale: float = 1e-6, out_forms: bool = True, verdicts: dict | None = None) -> list[Cell]:
    made = []
    for b in backends:
        for i, stage in enumerate((*STAGES, "train_step", "tutorial_step", "workspace_step")):
            for form in (stage, f"{stage}_out") if out_forms and stage in STAGES else (stage,):
                if form == "workspace_step" and not out_forms:
                    continue
                value = (i + 1) * scale * (1.1 if form.endswith("_out") else 1.0)
                made.append(Cell(size, shape, form, b, value, metric, share=0.5 if stage == "hidden" else None,
                                 in_cache=stage == "relu", verdict=(verdicts or {}).get((form, b))))
    return made


def test_one_grid_per_size_stages_by_backend_in_one_unit_within_120_columns():
    lines = summary.render([*cells(), *cells("compute", COMPUTE, scale=1e-3)], ["numpy", "torch-cpu"], None, {},
                           value_label="the fastest of 6 processes' minima")
    assert all(len(line) <= summary.WIDTH for line in lines)
    seed = lines.index("seed (64×1000×100×10), time per call in µs: the fastest of 6 processes' minima; % of the roofline")
    compute = next(i for i, line in enumerate(lines) if line.startswith("compute (1024×1024×1024×512), time per call in ms"))
    head = lines[seed + 1].split()
    assert head == ["numpy", "numpy", "out=", "torch-cpu", "torch-cpu", "out="]
    hidden = lines[seed + 2].split()
    assert hidden[:3] == ["hidden", "1.00", "50%"]  # 1 µs, 3 significant figures, its share of the roofline
    relu = lines[seed + 3].split()
    assert relu[:3] == ["relu", "2.00", "cache"]  # its data fits in the cache: no share of the memory's bandwidth
    step = next(line for line in lines[seed:compute] if line.startswith("step "))
    assert step.split()[1:3] == ["11.0", "13.0"]  # train_step beside the workspace step
    ratio = next(line for line in lines[seed:compute] if line.startswith("step/stages"))
    assert ratio.split()[1] == f"{11 / sum(range(1, 11)):.2f}x"
    assert any(line.startswith("step/tutorial") for line in lines[seed:compute])


def test_a_missing_backend_and_a_size_with_one_backend_and_no_out_forms():
    lines = summary.render([*cells(backends=("numpy",)), *cells("compute", COMPUTE, backends=("torch-cpu",), out_forms=False)],
                           ["numpy", "torch-cpu"], None, {})
    seed = next(i for i, line in enumerate(lines) if line.startswith("seed"))
    assert lines[seed + 1].split() == ["numpy", "numpy", "out="]
    compute = next(i for i, line in enumerate(lines) if line.startswith("compute"))
    assert lines[compute + 1].split() == ["torch-cpu"]


def test_counts_are_labelled_as_counts_with_no_time_unit_and_no_roofline():
    lines = summary.render(cells(metric=Metric.INSTRUCTIONS, scale=25_000), ["numpy", "torch-cpu"], None, {},
                           value_label="counted once")
    (header,) = [line for line in lines if line.startswith("seed")]
    assert header == "seed (64×1000×100×10), instructions per call in k: counted once"
    assert not any("µs" in line or " s " in line or "roofline" in line for line in lines)
    assert not any(line.startswith("step/stages") for line in lines)  # a ratio of counts is not a time's


def test_with_a_baseline_each_cell_carries_its_change_and_mark_and_the_verdict_comes_last():
    regressed = Comparison("perf/test_stages.py::test_stage[seed-relu-numpy]", Verdict.REGRESSED, 0.05,
                           baseline_value=2e-6, current_value=3e-6, ratio=1.5, ci_low=1.4, ci_high=1.6,
                           evidence="A/B vs abc")
    same = Comparison("perf/test_stages.py::test_stage[seed-hidden-numpy]", Verdict.UNCHANGED, 0.05, ratio=1.01)
    gone = Comparison("perf/test_stages.py::test_stage[seed-gone-numpy]", Verdict.MISSING, 0.05)
    grid = cells(verdicts={("relu", "numpy"): regressed, ("hidden", "numpy"): same})
    meta = {"mode": "saved baseline", "evidence": "processes: 6 of the baseline against 6 of this run",
            "baseline": "0001_base.json", "confirmation": "A/B against the baseline's commit abc: 16 rounds (duet)"}
    lines = summary.render(grid, ["numpy", "torch-cpu"], [regressed, same, gone], meta, not_selected=47)
    assert all(len(line) <= summary.WIDTH for line in lines)
    relu = next(line for line in lines if line.startswith("relu"))
    assert "+50.0% R" in relu
    assert any(line.strip().startswith("R  +50.0% [+40.0%, +60.0%]")
               and line.endswith("test_stage[seed-relu-numpy]  (A/B)") for line in lines)  # the confirmation names the commit
    assert any("1 unchanged; 47 benchmark(s) of the baseline not selected in this run; 1 benchmark(s) of the baseline "
               "missing now" in line for line in lines)
    assert lines[-1] == "FAIL: 1 regressed, 0 improved, 1 unchanged, 0 inconclusive, 0 new, 1 missing (3 benchmarks)"


def test_a_long_gate_line_closes_up_its_columns_rather_than_lose_its_end():
    name = "test_stage_out[4096x1000x4096x1000-relu_backward-torch-cpu-float64]"
    long = Comparison(f"perf/test_stages.py::{name}", Verdict.INCONCLUSIVE, 0.05, baseline_value=841e-6,
                      current_value=746e-6, ratio=0.893, ci_low=0.806, ci_high=0.99, evidence="A/B vs e6b09de650")
    (line,) = [line for line in summary.gate_lines([long], {}, Metric.TIME, 0) if "test_stage_out" in line]
    assert len(line) <= summary.WIDTH and line.endswith(f"{name}  (A/B)")


def test_every_regression_is_listed_largest_first_and_other_verdicts_only_up_to_a_few():
    def row(i: int, verdict: Verdict, ratio: float) -> Comparison:
        return Comparison(f"perf/test_stages.py::test_stage[seed-s{i:02d}-numpy]", verdict, 0.05, baseline_value=1e-6,
                          current_value=ratio * 1e-6, ratio=ratio, ci_low=ratio - 0.01, ci_high=ratio + 0.01)
    regressed = [row(i, Verdict.REGRESSED, 1.1 + i / 100) for i in range(12)]
    improved = [row(20 + i, Verdict.IMPROVED, 0.9 - i / 100) for i in range(20)]
    lines = summary.gate_lines([*improved, *regressed], {"mode": "saved baseline"}, Metric.TIME, 0)
    listed = [line for line in lines if "test_stage[" in line]
    assert [line.split()[0] for line in listed] == ["R"] * 12 + ["I"] * summary.LISTED
    assert "seed-s11-numpy" in listed[0] and "seed-s00-numpy" in listed[11]  # the largest regression first
    assert "seed-s39-numpy" in listed[12]  # the largest improvement first
    assert f"... and {20 - summary.LISTED} more improved (-v lists every benchmark)" in "\n".join(lines)


def test_the_progress_display_draws_on_a_terminal_and_only_logs_elsewhere():
    logged: list[str] = []
    quiet = Progress(10, "measuring", logged.append, live=False)
    quiet.step("process 1/6: seed-relu-numpy")
    quiet.finished("process 1/6: 96 benchmarks in 12.0 s")
    quiet.close()
    assert not quiet.live and logged == ["process 1/6: 96 benchmarks in 12.0 s"]
    screen = io.StringIO()
    live = Progress(2, "measuring", logged.append, live=True, stream=screen)
    live.step("process 1/2: seed-relu-numpy")
    live.finished("not logged: the bar said it")
    live.step("process 2/2: seed-relu-numpy")
    live.close()
    assert live.live is False and logged == ["process 1/6: 96 benchmarks in 12.0 s"]
    assert "measuring: 0/2" in screen.getvalue() and "elapsed" in screen.getvalue()  # drawn, then cleared
