"""perf.report on constructed pytest-benchmark JSON: tables, merge, share of peak, crossover, metrics, figures, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kernels.problem import STAGES, Problem
from perf import forms, render, report
from perf.cases import OUT_FORMS, PROBES
from perf.report import figures
from perf.report.__main__ import main

SEED = (64, 1000, 100, 10)
# A sweep whose names sort differently from their sizes: the report must order by train_step FLOPs.
SWEEP = {"sweep-64": (64, 64, 64, 8), "sweep-1024": (1024, 1024, 1024, 64), "sweep-256": (256, 256, 256, 16)}
ROOT = Path(__file__).resolve().parents[1]


def bench(stage: str, backend: str, median: float, *, size: str = "seed", shape=SEED, dtype: str = "float32",
          device: str | None = None, iqr: float | None = None, **extra) -> dict:
    """One benchmark as the perf suite writes it; FLOPs and bytes from the kernels' model unless given."""
    device = device or ("cpu" if backend in ("numpy", "torch-cpu") else "cuda:0")
    p = Problem(*shape, dtype=dtype)
    flops, nbytes = extra.pop("flops", p.flops(stage)), extra.pop("bytes", p.bytes(stage))
    info = {"stage": stage, "backend": backend, "device": device, "dtype": dtype, "size": size,
            "shape": dict(zip(("N", "D_in", "H", "D_out"), shape)), "flops": flops, "bytes": nbytes, "median_s": median,
            "gflops": flops / median / 1e9, "gbps": nbytes / median / 1e9, "threads": {"openblas": 1, "torch": 1},
            "timer": "perf_counter"} | extra
    return {"group": f"{size} {stage}", "name": f"test[{size}-{stage}-{backend}]",
            "fullname": f"perf/test_x.py::test[{size}-{stage}-{backend}-{dtype}]", "extra_info": info,
            "stats": {"median": median, "iqr": median * 0.01 if iqr is None else iqr, "rounds": 10,
                      "data": [median] * 10}}


def peak(stage: str, backend: str, rate: float, *, dtype: str = "float32", device: str | None = None) -> dict:
    """A roofline probe: peak_matmul with ``rate`` GFLOP/s, or peak_copy with ``rate`` GB/s."""
    shape = (2048, 2048, 2048, 1) if stage == "peak_matmul" else (8192, 8192, 1, 1)
    b = bench(stage, backend, 0.01, size="peak2048" if stage == "peak_matmul" else "copy8192", shape=shape, dtype=dtype,
              device=device)
    b["extra_info"]["gflops" if stage == "peak_matmul" else "gbps"] = rate
    return b


def run(benchmarks: list[dict], *, cpu: str = "Test CPU 9000", gpus: list[str] | None = None,
        datetime: str = "2026-11-27T06:38:03.000000") -> dict:
    fingerprint = {"cpu": cpu, "cpus": 2, "python": "3.11.7", "numpy": "2.4.6", "blas": ["openblas 0.3.31 SkylakeX"],
                   "threads": {"openblas": 1, "openmp": 1, "torch": 1}, "torch": "2.13.0"}
    if gpus:
        fingerprint |= {"cuda": "12.4", "gpus": gpus, "gpu_driver": "550.54"}
    return {"machine_info": {"node": "test", "cpu": {"brand_raw": cpu, "count": 2}, "perf_fingerprint": fingerprint},
            "commit_info": {"id": "unversioned", "dirty": False}, "benchmarks": benchmarks, "datetime": datetime,
            "version": "5.3.1"}


def write(tmp_path: Path, name: str, data: object) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return str(path)


def tables_of(tmp_path: Path, *runs: dict, baseline: str = "numpy") -> tuple[report.Merged, list[report.Table]]:
    loaded = [report.load(write(tmp_path, f"run{i}.json", r), i) for i, r in enumerate(runs)]
    merged = report.merge(loaded)
    return merged, report.build_tables(merged, baseline)


def sweep_run(gpu_times: dict[str, float], cpu_times: dict[str, dict[str, float]]) -> dict:
    """train_step at each sweep size: torch-cuda's median and each CPU backend's, in seconds."""
    benchmarks = [bench("train_step", "torch-cuda", t, size=s, shape=SWEEP[s]) for s, t in gpu_times.items()]
    for backend, times in cpu_times.items():
        benchmarks += [bench("train_step", backend, t, size=s, shape=SWEEP[s]) for s, t in times.items()]
    return run(benchmarks, gpus=["NVIDIA Test GPU"])


# --------------------------------------------------------------------------- tables


def test_stages_in_execution_order_with_the_steps_last(tmp_path):
    stages = ["tutorial_step", "train_step", *reversed(STAGES)]
    merged, tables = tables_of(tmp_path, run([bench(s, "numpy", 1e-3) for s in stages]))
    (table,) = tables
    assert table.stages == (*STAGES, "train_step", "tutorial_step")
    text = report.render_markdown(merged, tables, [])
    first_cells = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    assert [c for c in first_cells if c in stages] == [*STAGES, "train_step", "tutorial_step"]


def test_speedup_is_baseline_time_over_backend_time(tmp_path):
    data = run([bench("hidden", "numpy", 2e-3), bench("hidden", "torch-cpu", 1e-3), bench("relu", "torch-cpu", 5e-6),
                bench("hidden", "torch-cuda", 4e-5, device="cuda:0")], gpus=["NVIDIA Test GPU"])
    merged, (table,) = tables_of(tmp_path, data)
    assert table.backends == ("numpy", "torch-cpu", "torch-cuda")
    assert table.cell("hidden", "torch-cpu").speedup == pytest.approx(2.0)
    assert table.cell("hidden", "torch-cuda").speedup == pytest.approx(50.0)
    assert table.cell("relu", "torch-cpu").speedup is None  # no numpy relu to compare with
    text = report.render_markdown(merged, [table], [])
    assert "| hidden | 2.00 ms | 1.00 ms · 2.00x | 40.0 µs · 50.0x |" in text
    assert "| relu | — | 5.00 µs | — |" in text
    assert "NVIDIA Test GPU" in text

    _, (other,) = tables_of(tmp_path, data, baseline="torch-cpu")
    assert other.cell("hidden", "numpy").speedup == pytest.approx(0.5)


def test_share_of_peak_is_the_one_the_suite_recorded(tmp_path):
    # plugin.pytest_benchmark_update_json stores each stage's share of its own run's roofline probe:
    # shown as stored, never recomputed from the probes (which would give output 10%, not 12.3%).
    stages = [bench("hidden", "numpy", 2e-3, flops=1e8, peak_share=0.5),
              bench("relu", "numpy", 1e-4, bytes=1e6, peak_share=0.25),
              bench("train_step", "numpy", 1e-2, flops=2e8, peak_share=0.2),
              bench("output", "numpy", 1e-3, flops=1e7, peak_share=0.123),
              bench("loss", "numpy", 1e-5),                                    # none recorded, though numpy has peaks
              bench("hidden", "torch-cpu", 2e-3, flops=1e8),                  # torch-cpu has no peaks: no share
              bench("hidden", "numpy", 2e-3, flops=1e8, dtype="float64")]     # float32 peaks do not apply
    peaks = [peak("peak_matmul", "numpy", 100.0), peak("peak_copy", "numpy", 40.0)]
    merged, tables = tables_of(tmp_path, run(stages + peaks))
    f32, f64 = tables
    assert (f32.dtype, f64.dtype) == ("float32", "float64")
    assert f32.cell("hidden", "numpy").share == pytest.approx(0.5)
    assert f32.cell("relu", "numpy").share == pytest.approx(0.25)
    assert f32.cell("train_step", "numpy").share == pytest.approx(0.2)
    assert f32.cell("output", "numpy").share == pytest.approx(0.123)
    assert f32.cell("loss", "numpy").share is None
    assert f32.cell("hidden", "torch-cpu").share is None
    assert f64.cell("hidden", "numpy").share is None
    assert all(s not in PROBES for t in tables for s in t.stages)
    text = report.render_markdown(merged, tables, [])
    assert "| hidden | 2.00 ms · 50% peak | 2.00 ms · 1.00x |" in text
    assert "| output | 1.00 ms · 12% peak | — |" in text
    assert "| loss | 10.0 µs | — |" in text
    assert "| numpy | cpu | float32 | 100 GFLOP/s | 40 GB/s |" in text


def test_sizes_ordered_by_train_step_flops_not_by_name(tmp_path):
    data = run([bench("hidden", "numpy", 1e-3, size=s, shape=shape) for s, shape in SWEEP.items()])
    _, tables = tables_of(tmp_path, data)
    assert [t.size for t in tables] == ["sweep-64", "sweep-256", "sweep-1024"]
    assert tables[0].step_flops == Problem(*SWEEP["sweep-64"]).flops("train_step")


def test_tutorial_step_is_set_against_train_step(tmp_path):
    merged, tables = tables_of(tmp_path, run([bench("train_step", "numpy", 1e-3), bench("tutorial_step", "numpy", 1.5e-3)]))
    assert "time ratio (> 1: the tutorial's code is slower): numpy 1.50x." in report.render_markdown(merged, tables, [])


def test_noisy_cells_are_marked(tmp_path):
    merged, tables = tables_of(tmp_path, run([bench("relu", "numpy", 1e-5, iqr=3e-6)]))
    assert "| relu | 10.0 µs † |" in report.render_markdown(merged, tables, [])


@pytest.mark.parametrize(("seconds", "text"), [(0.000139768, "140 µs"), (4e-3, "4.00 ms"), (1.05, "1.05 s"),
                                               (5e-7, "500 ns"), (9.996e-4, "1.00 ms"), (12.3e-6, "12.3 µs")])
def test_times_in_the_suite_s_one_format(seconds, text):
    assert render.format_time(seconds) == text


# --------------------------------------------------------------------------- merge


def test_merge_keeps_the_later_file_and_says_so(tmp_path):
    cpu = run([bench("hidden", "numpy", 2e-3), bench("relu", "numpy", 4e-6), bench("hidden", "torch-cpu", 1e-3)],
              cpu="Laptop CPU")
    gpu = run([bench("hidden", "numpy", 3e-3), bench("hidden", "torch-cuda", 1e-4)], cpu="Server CPU",
              gpus=["NVIDIA Test GPU"])
    merged, (table,) = tables_of(tmp_path, cpu, gpu)
    assert table.backends == ("numpy", "torch-cpu", "torch-cuda")
    kept = table.cell("hidden", "numpy").result
    assert (kept.median, Path(kept.source.path).name) == (3e-3, "run1.json")
    assert Path(table.cell("relu", "numpy").result.source.path).name == "run0.json"   # only in the first file
    assert table.cell("hidden", "torch-cpu").speedup == pytest.approx(3.0)             # against the kept numpy time
    assert [(old.median, new.median) for old, new in merged.replaced] == [(2e-3, 3e-3)]
    text = report.render_markdown(merged, [table], [])
    assert "run1.json` replaces `" in text and "run0.json` for numpy @ seed (1 result)" in text
    assert "Laptop CPU" in text and "Server CPU (2 CPUs) + NVIDIA Test GPU" in text
    assert "| torch-cuda | cuda:0 (NVIDIA Test GPU) |" in text
    assert merged.notes == []


def test_merge_notes_a_size_name_that_means_two_shapes(tmp_path):
    other = run([bench("relu", "torch-cpu", 1e-5, shape=(8, 8, 8, 8))])
    merged, _ = tables_of(tmp_path, run([bench("relu", "numpy", 1e-5)]), other)
    (note,) = merged.notes
    assert "size 'seed' is 64×1000×100×10 in" in note and "but 8×8×8×8 in" in note


# --------------------------------------------------------------------------- crossover


def test_crossover_at_the_smallest_size_from_which_the_gpu_stays_faster(tmp_path):
    data = sweep_run({"sweep-64": 1e-3, "sweep-256": 1.1e-3, "sweep-1024": 2e-3},
                     {"numpy": {"sweep-64": 1e-4, "sweep-256": 1e-3, "sweep-1024": 9e-3},
                      "torch-cpu": {"sweep-64": 2e-4, "sweep-256": 9e-4, "sweep-1024": 8e-3}})
    _, tables = tables_of(tmp_path, data)
    (x,) = report.crossovers(tables)
    assert (x.backend, x.at.size, x.at.cpu_backend, x.below.size) == ("torch-cuda", "sweep-1024", "torch-cpu", "sweep-256")
    assert (x.at.gpu, x.at.cpu) == (2e-3, 8e-3)
    lines = report.crossover_lines([x], tables)
    assert any("torch-cuda overtakes the fastest CPU backend from sweep-1024" in line and "4.00x" in line for line in lines)


def test_crossover_ignores_an_early_win_that_does_not_last(tmp_path):
    data = sweep_run({"sweep-64": 1e-4, "sweep-256": 2e-3, "sweep-1024": 1e-3},
                     {"numpy": {"sweep-64": 2e-4, "sweep-256": 1e-3, "sweep-1024": 9e-3}})
    (x,) = report.crossovers(tables_of(tmp_path, data)[1])
    assert (x.at.size, x.below.size) == ("sweep-1024", "sweep-256")


def test_crossover_absent_or_from_the_smallest_size(tmp_path):
    slower = sweep_run({s: 1.0 for s in SWEEP}, {"numpy": {s: 1e-3 for s in SWEEP}})
    (never,) = report.crossovers(tables_of(tmp_path, slower)[1])
    assert never.at is None and len(never.races) == 3
    faster = sweep_run({s: 1e-6 for s in SWEEP}, {"numpy": {s: 1e-3 for s in SWEEP}})
    (always,) = report.crossovers(tables_of(tmp_path, faster)[1])
    assert (always.at.size, always.below) == ("sweep-64", None)
    cpu_only = run([bench("train_step", "numpy", 1e-3)])
    assert report.crossovers(tables_of(tmp_path, cpu_only)[1]) == []


# --------------------------------------------------------------------------- the command


def full_run() -> tuple[dict, dict]:
    """A CPU run and a GPU run over three sweep sizes, with peaks, tutorial steps and stages."""
    cpu, gpu = [], []
    for i, (size, shape) in enumerate(sorted(SWEEP.items(), key=lambda kv: kv[1])):
        scale = 100.0**i  # the CPU's time grows with the work; the GPU's stays launch-bound until sweep-1024
        for j, stage in enumerate((*STAGES, "train_step", "tutorial_step")):
            t = scale * 1e-5 * (1 + j % 4)
            cpu.append(bench(stage, "numpy", t, size=size, shape=shape))
            cpu.append(bench(stage, "torch-cpu", 1.2 * t, size=size, shape=shape))
            gpu.append(bench(stage, "torch-cuda", 2e-3 * (1 + j % 4) * (1 + scale / 1000), size=size, shape=shape))
    cpu += [peak("peak_matmul", "numpy", 90.0), peak("peak_copy", "numpy", 12.0)]
    gpu += [peak("peak_matmul", "torch-cuda", 50000.0), peak("peak_copy", "torch-cuda", 2000.0)]
    return run(cpu, cpu="Test CPU 9000"), run(gpu, cpu="Test Xeon", gpus=["NVIDIA Test GPU"], datetime="2026-11-28T10:00:00")


def test_command_writes_report_and_readable_figures(tmp_path, capsys):
    cpu, gpu = full_run()
    out = tmp_path / "out"
    rc = main([write(tmp_path, "cpu.json", cpu), write(tmp_path, "gpu.json", gpu), "--out", str(out)])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert (out / "report.md").read_text(encoding="utf-8") == captured.out
    expected = ["stages-sweep-64.png", "stages-sweep-256.png", "stages-sweep-1024.png", "step-vs-size.png"]
    assert sorted(p.name for p in out.glob("*.png")) == sorted(expected)
    for name in expected:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, name
        assert f"![{name[:-4]}]({name})" in captured.out
    assert "torch-cuda overtakes the fastest CPU backend from sweep-1024" in captured.out
    assert "## sweep-64:" in captured.out and captured.out.index("## sweep-64:") < captured.out.index("## sweep-1024:")


ERROR = "python -m perf.report: error: "


def damaged(edit) -> dict:
    """A run as the suite writes it, with one field damaged by ``edit``."""
    data = run([bench("relu", "numpy", 1e-5), bench("hidden", "numpy", 1e-3)])
    edit(data)
    return data


@pytest.mark.parametrize(("name", "content", "message"), [
    (None, None, "no such file"),
    ("bad.json", "{not json", "not pytest-benchmark JSON (invalid JSON at line 1"),
    ("truncated.json", json.dumps(run([bench("relu", "numpy", 1e-5)]))[:300], "not pytest-benchmark JSON (invalid JSON"),
    ("list.json", [1, 2], "not pytest-benchmark JSON: the top level is a list"),
    ("other.json", {"results": []}, "benchmarks: missing or not a list: not pytest-benchmark JSON"),
    ("empty.json", {"benchmarks": []}, "holds no benchmarks"),
    ("plain.json", {"benchmarks": [{"fullname": "t.py::test_x", "stats": {"median": 1.0}, "extra_info": {}}]},
     "none of its 1 benchmarks has the extra_info this suite writes (stage, backend, device, dtype, size)"),
    ("nostats.json", {"benchmarks": [{"fullname": "t.py::x", "extra_info": {"stage": "relu"}, "stats": {}}]},
     "benchmarks[0] (t.py::x).stats: neither raw data nor a median"),
    ("noname.json", damaged(lambda d: d["benchmarks"][1].pop("fullname")), "benchmarks[1].fullname: missing"),
    ("median.json", damaged(lambda d: d["benchmarks"][1]["stats"].update(median="fast", data=[])),
     "benchmarks[1] (perf/test_x.py::test[seed-hidden-numpy-float32]).stats.median: expected a finite number, got 'fast'"),
    ("data.json", damaged(lambda d: d["benchmarks"][0]["stats"]["data"].insert(3, None)), "stats.data[3]: expected a finite"),
    ("info.json", damaged(lambda d: d["benchmarks"][0].update(extra_info=["relu"])),
     "benchmarks[0] (perf/test_x.py::test[seed-relu-numpy-float32]).extra_info: expected an object, got a list"),
    ("stage.json", damaged(lambda d: d["benchmarks"][1]["extra_info"].update(stage=7)),
     "benchmarks[1] (perf/test_x.py::test[seed-hidden-numpy-float32]).extra_info.stage: expected a non-empty string, got 7"),
    ("flops.json", damaged(lambda d: d["benchmarks"][0]["extra_info"].update(flops="lots")),
     ".extra_info.flops: expected a number >= 0, got 'lots'"),
    ("share.json", damaged(lambda d: d["benchmarks"][0]["extra_info"].update(peak_share=-0.5)),
     ".extra_info.peak_share: expected a number >= 0, got -0.5"),
    ("shape.json", damaged(lambda d: d["benchmarks"][0]["extra_info"]["shape"].update(N="64")), ".extra_info.shape: expected"),
    ("metric.json", damaged(lambda d: d["benchmarks"][0]["extra_info"].update(metric="joules")),
     ".extra_info.metric: unknown metric 'joules'; known: time, instructions, cycles"),
])
def test_bad_or_damaged_input_exits_2_with_one_line(tmp_path, capsys, name, content, message):
    path = str(tmp_path / "missing.json") if name is None else write(tmp_path, name, content)
    assert main([path, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{ERROR}{path}: ") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "out").exists()


def test_unknown_baseline_backend_and_bad_usage_exit_2(tmp_path, capsys):
    good = write(tmp_path, "good.json", run([bench("relu", "numpy", 1e-5)]))
    assert main([good, "--baseline-backend", "nmupy", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{ERROR}--baseline-backend 'nmupy'") and err.count("\n") == 1
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith(ERROR) and "required: RESULTS.json" in err and err.count("\n") == 1


def test_benchmarks_not_written_by_the_suite_are_skipped_with_a_note(tmp_path, capsys):
    data = run([bench("relu", "numpy", 1e-5), {"fullname": "t.py::test_other", "stats": {"median": 1.0, "data": [1.0]}}])
    assert main([write(tmp_path, "mixed.json", data), "--out", str(tmp_path / "out")]) == 0
    captured = capsys.readouterr()
    assert "mixed.json: skipped 1 of 2 benchmarks without extra_info stage, backend, device, dtype, size" in captured.err
    assert "| relu | 10.0 µs |" in captured.out and "- note: " in captured.out


def test_module_runs_without_torch_and_fails_without_traceback(tmp_path):
    code = ("import sys, runpy; sys.argv = ['perf.report', sys.argv[1]]\n"
            "try:\n    runpy.run_module('perf.report', run_name='__main__')\n"
            "finally:\n    assert 'torch' not in sys.modules, 'perf.report imported torch'")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "nope.json")], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"{ERROR}{tmp_path / 'nope.json'}: no such file\n"


# --------------------------------------------------------------------------- metrics


def test_counted_results_get_tables_of_their_own_never_mixed_with_times(tmp_path, capsys):
    timed = run([bench("hidden", "numpy", 2e-3, peak_share=0.5), bench("hidden", "torch-cpu", 1e-3),
                 bench("train_step", "numpy", 1e-2), bench("train_step", "torch-cuda", 1e-3),
                 bench("relu", "numpy", 5e4, metric="cycles")], gpus=["NVIDIA Test GPU"])   # one benchmark says so itself
    counted = run([bench("hidden", "numpy", 3.1e6, peak_share=0.9), bench("hidden", "torch-cpu", 6.2e6),
                   bench("train_step", "numpy", 9e7)])
    counted["perf"] = {"metric": "instructions"}   # the run's metric, as the plugin writes it
    merged, tables = tables_of(tmp_path, timed, counted)
    assert merged.replaced == []   # the same benchmark counted does not replace its time
    assert [(t.size, str(t.metric)) for t in tables] == [("seed", "time"), ("seed", "instructions"), ("seed", "cycles")]
    time, instructions, cycles = tables
    assert time.cell("hidden", "numpy").result.median == 2e-3 and time.cell("hidden", "numpy").share == 0.5
    assert instructions.cell("hidden", "torch-cpu").speedup == pytest.approx(0.5)
    assert instructions.cell("hidden", "numpy").share is None   # a share of a rate per second means nothing for a count
    assert [x.races[0].cpu for x in report.crossovers(tables)] == [1e-2]   # times only
    text = report.render_markdown(merged, tables, report.crossovers(tables))
    assert "## seed, instructions per call: N×D_in×H×D_out = 64×1000×100×10" in text
    assert "| hidden | 3.10 M | 6.20 M · 0.50x |" in text and "| train_step | 90.0 M | — |" in text
    assert "## seed, cycles per call:" in text and "| relu | 50.0 k |" in text
    assert "| hidden | 2.00 ms · 50% peak | 1.00 ms · 2.00x | — |" in text
    assert "instructions ratio (> 1" not in text and "Tables of cycles and instructions: median count per call" in text

    paths = [write(tmp_path, "timed.json", timed), write(tmp_path, "counted.json", counted)]
    assert main([*paths, "--out", str(tmp_path / "out")]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == [
        "stages-seed-cycles.png", "stages-seed-instructions.png", "stages-seed.png", "step-vs-size.png"]


@pytest.mark.parametrize(("ratio", "text"), [(0.0052, "0.0052x"), (0.8, "0.80x"), (2, "2.00x"), (45.5, "45.5x"),
                                             (150.2, "150x")])
def test_format_speedup(ratio, text):
    assert report.format_speedup(ratio) == text


@pytest.mark.parametrize(("share", "text"), [(0.5, "50%"), (0.034, "3.4%"), (0.00001, "<0.01%")])
def test_format_share(share, text):
    assert report.format_share(share) == text


# --------------------------------------------------------------------------- forms of the step (issue 14)


def forms_benchmarks(backend: str, *, stage_s: float = 10e-6, out_s: float = 9e-6, tutorial_s: float = 150e-6,
                     train_s: float = 105e-6, workspace_s: float = 94e-6, graph_s: float | None = None, size: str = "seed",
                     shape=SEED, peak: float = 1000.0, copy_share: float = 0.6, **extra) -> list[dict]:
    """Every stage, every out= form and the forms of the step of one backend at one size, with the shares the plugin
    records: each step's GFLOP/s over the run's ``peak`` GFLOP/s; each out= form ``copy_share`` of peak_copy."""
    device = "cuda:0" if backend == "torch-cuda" else "cpu"
    out = [bench(s, backend, stage_s, size=size, shape=shape, device=device, **extra) for s in STAGES]
    out += [bench(s, backend, out_s, size=size, shape=shape, device=device, peak_share=copy_share, **extra)
            for s in OUT_FORMS]
    steps = {"tutorial_step": tutorial_s, "train_step": train_s, "workspace_step": workspace_s}
    if graph_s is not None:
        steps["graph_step"] = graph_s
    step_flops = Problem(*shape).flops("train_step")
    out += [bench(s, backend, t, size=size, shape=shape, device=device, peak_share=step_flops / t / 1e9 / peak, **extra)
            for s, t in steps.items()]
    return out


def forms_section(text: str, size: str = "seed") -> list[str]:
    """The lines of one size's forms table."""
    lines = text.splitlines()
    start = lines.index(f"### Forms of the step at {size} (float32)")
    end = next(i for i in range(start + 4, len(lines)) if not lines[i].startswith("|"))
    return lines[start:end]


def test_forms_of_the_step_side_by_side_with_the_targets_marked(tmp_path):
    data = run(forms_benchmarks("numpy") + forms_benchmarks("torch-cpu", train_s=120e-6, workspace_s=99e-6))
    merged, tables = tables_of(tmp_path, data)
    (table,) = tables
    # The stages, then their out= forms as a block of their own, then the forms of the step.
    assert table.stages == (*STAGES, *OUT_FORMS, "train_step", "tutorial_step", "workspace_step")
    text = report.render_markdown(merged, tables, [])
    section = forms_section(text)
    assert "| form | numpy | torch-cpu |" in section
    labels = [line.split(" | ")[0].removeprefix("| ") for line in section if line.startswith("| ") and "---" not in line]
    assert labels[1:5] == ["tutorial_step (the tutorial's code)", "train_step (allocating)",
                           "workspace_step (out= stages, one workspace)", "matmul floor (five matmuls at peak_matmul)"]
    share = [report.format_share(Problem(*SEED).flops("train_step") / t / 1e12) for t in (94e-6, 99e-6)]
    assert (f"| workspace_step (out= stages, one workspace) | 94.0 µs · {share[0]} peak | 99.0 µs · {share[1]} peak |"
            in section)
    # Issue 6's target everywhere; issue 14's at seed: 94 / 90 and 99 / 90.
    assert "| train_step / sum of its stages (≤ 1.10x) | 1.05x ✓ | 1.20x ✗ |" in section
    assert "| workspace_step / sum of its stages' out= forms (≤ 1.05x at seed, compute) | 1.04x ✓ | 1.10x ✗ |" in section
    # The floor: the five matmuls at the run's peak (1000 GFLOP/s, read back from the recorded shares).
    floor = forms.matmul_flops(SEED) / 1e12
    shown = render.format_time(floor)
    assert f"| matmul floor (five matmuls at peak_matmul) | {shown} | {shown} |" in section
    over = f"{105e-6 / floor:.2f}x | {120e-6 / floor:.2f}x"
    assert f"| train_step / matmul floor (≤ 1.15x at compute) | {over} |" in section   # not marked: not at compute
    assert any(line.startswith("| tutorial_step / matmul floor | ") for line in section)
    assert "| relu_out: share of peak_copy (≥ 50% at gpu) | 60% | 60% |" in section   # not marked: not at gpu
    assert not any(line.startswith(("| hidden_out", "| relu |")) for line in section)   # matmuls: no copy share
    assert "graph_step" not in "\n".join(section)   # a GPU-less run: no graph row
    assert ("- **missed**: workspace_step / sum of its stages' out= forms ≤ 1.05x at seed, compute (numpy, torch-cpu): "
            "seed numpy 1.04x ✓; seed torch-cpu 1.10x ✗; not measured: compute numpy, compute torch-cpu.") in text
    assert ("- **not measured**: elementwise out= form, share of peak_copy ≥ 50% at gpu (numpy, torch-cpu).") in text
    assert text.index("### Forms of the step at seed") < text.index("## Kernel targets (issue 14)")


def test_targets_at_compute_and_at_the_memory_bound_size_are_marked_there(tmp_path):
    compute = (1024, 1024, 1024, 512)
    floor = forms.matmul_flops(compute) / 1e12   # at the default peak, 1000 GFLOP/s
    benchmarks = [b for backend, over in (("numpy", 1.1), ("torch-cpu", 1.3))
                  for b in forms_benchmarks(backend, size="compute", shape=compute, tutorial_s=over * floor,
                                            train_s=over * floor, workspace_s=over * floor)]
    memory_bound = {"numpy": 0.6, "torch-cpu": 0.3}
    benchmarks += [bench(s, b, 1e-3, size="gpu", shape=(4096, 4096, 4096, 1024), peak_share=share)
                   for b, share in memory_bound.items() for s in forms.ELEMENTWISE_OUT_FORMS]
    merged, tables = tables_of(tmp_path, run(benchmarks))
    text = report.render_markdown(merged, tables, [])
    section = forms_section(text, "compute")
    assert "| train_step / matmul floor (≤ 1.15x at compute) | 1.10x ✓ | 1.30x ✗ |" in section
    assert "| workspace_step / matmul floor (≤ 1.15x at compute) | 1.10x ✓ | 1.30x ✗ |" in section
    assert any(line.startswith("| tutorial_step / matmul floor | 1.10x | 1.30x |") for line in section)  # no target
    gpu = forms_section(text, "gpu")
    assert "| relu_out: share of peak_copy (≥ 50% at gpu) | 60% ✓ | 30% ✗ |" in gpu
    assert not any(line.startswith(("| train_step", "| matmul floor")) for line in gpu)   # no step at that size
    assert ("- **missed**: step / its matmul floor ≤ 1.15x at compute (numpy, torch-cpu): compute numpy: train_step "
            "1.10x ✓, workspace_step 1.10x ✓; compute torch-cpu: train_step 1.30x ✗, workspace_step 1.30x ✗.") in text
    assert ("- **missed**: elementwise out= form, share of peak_copy ≥ 50% at gpu (numpy, torch-cpu): "
            "gpu numpy: relu_out 60% ✓") in text
    workspace = next(line for line in text.splitlines() if "workspace_step / sum of its stages' out= forms ≤" in line)
    assert workspace.startswith("- **missed**: ") and workspace.endswith("; not measured: seed numpy, seed torch-cpu.")


def test_results_without_the_new_forms_render_as_before(tmp_path):
    data = run([bench(s, "numpy", 10e-6) for s in STAGES] + [bench("train_step", "numpy", 105e-6),
                                                              bench("tutorial_step", "numpy", 150e-6)])
    merged, tables = tables_of(tmp_path, data)
    text = report.render_markdown(merged, tables, [])
    assert "Forms of the step" not in text and "Kernel targets" not in text and "✓" not in text
    assert "train_step against the sum of its stages' medians (target: at most 1.10x): numpy 1.05x." in text


def test_the_cuda_graph_gets_its_row_where_a_backend_has_it_and_no_cpu_target(tmp_path):
    data = run(forms_benchmarks("numpy") + forms_benchmarks("torch-cuda", workspace_s=200e-6, graph_s=50e-6),
               gpus=["NVIDIA Test GPU"])
    merged, tables = tables_of(tmp_path, data)
    section = forms_section(report.render_markdown(merged, tables, []))
    assert any(line.startswith("| graph_step (CUDA graph of the workspace step) | — | 50.0 µs · ") for line in section)
    # Issue 14's targets are set for the CPU backends: torch-cuda's ratios are shown, not judged.
    assert "| workspace_step / sum of its stages' out= forms (≤ 1.05x at seed, compute) | 1.04x ✓ | 2.22x |" in section


def test_counted_results_get_no_forms_table(tmp_path):
    counted = run(forms_benchmarks("numpy", stage_s=1e4, out_s=9e3, train_s=1.05e5, workspace_s=9.4e4))
    counted["perf"] = {"metric": "instructions"}
    merged, tables = tables_of(tmp_path, counted)
    (table,) = tables
    assert table.stages == (*STAGES, *OUT_FORMS, "train_step", "tutorial_step", "workspace_step")
    text = report.render_markdown(merged, tables, [])
    assert "| workspace_step | 94.0 k |" in text   # the forms' counts side by side in the stage table
    assert "Forms of the step" not in text and "Kernel targets" not in text
    assert "train_step against the sum of its stages' medians (target: at most 1.10x): numpy 1.05x." in text


def test_each_form_of_the_step_has_its_own_line_and_label_in_the_step_figure(tmp_path, monkeypatch):
    made = []
    new_figure = figures._new_figure
    monkeypatch.setattr(figures, "_new_figure", lambda *a: made.append(new_figure(*a)) or made[-1])
    benchmarks = []
    for size, shape in SWEEP.items():
        benchmarks += forms_benchmarks("numpy", size=size, shape=shape, train_s=1e-3)
        benchmarks += forms_benchmarks("torch-cuda", size=size, shape=shape, graph_s=5e-5)  # faster: overtakes the CPU
    merged, tables = tables_of(tmp_path, run(benchmarks, gpus=["NVIDIA Test GPU"]))
    figures.write_figures(tables, report.crossovers(tables), tmp_path)
    step = made[-1].axes[0]
    lines = {line.get_label(): line for line in step.get_lines() if not line.get_label().startswith("_")}
    assert set(lines) == {"numpy", "numpy, tutorial's code", "numpy, workspace_step",
                          "torch-cuda\n(NVIDIA Test GPU)", "torch-cuda, tutorial's code", "torch-cuda, workspace_step",
                          "torch-cuda, graph_step (CUDA graph)"}
    styles = {label.split(", ")[-1]: (str(line.get_linestyle()), line.get_marker()) for label, line in lines.items()
              if label.startswith("torch-cuda")}
    assert len(set(styles.values())) == 4   # train_step, the tutorial's code, workspace_step, graph_step: each its own
    stage_texts = [t.get_text() for t in made[0].axes[0].texts]
    assert stage_texts == ["whole step", "out= forms"]
