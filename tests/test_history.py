"""perf.trend and python -m perf.history on constructed storages: series in history order, -k, --since
and exit codes, text, Markdown, JSON and figures, damaged or bad input in one line, protected runs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perf import history, trend
from perf.results import load_run
from tests.damage import damaged_runs

MACHINE_ID = "Linux-CPython-3.11-64bit"
FINGERPRINT = {"cpu": "Test CPU 9000", "cpus": 2, "python": "3.11.7", "numpy": "2.4.6", "blas": ["openblas 0.3.31"],
               "threads": {"openblas": 1, "torch": 1}, "torch": "2.13.0"}
ROOT = Path(__file__).resolve().parents[1]


def benchmark(stage: str, backend: str, value: float, *, rng: np.random.Generator, processes: int = 3,
              metric: str = "time") -> dict:
    """One benchmark as pytest perf saves it, measured in ``processes`` processes (none: one process)."""
    mins = [value * math.exp(abs(rng.normal(0, 0.005))) for _ in range(max(processes, 1))]
    data = [x for m in mins for x in (m, m * 1.01)]
    info = {"stage": stage, "backend": backend, "size": "seed", "dtype": "float32", "metric": metric}
    if processes:
        info["processes"] = [{"rounds": 2, "min": m, "median": m * 1.005} for m in mins]
    return {"group": f"seed {stage}", "name": f"test_stage[seed-{stage}-{backend}]",
            "fullname": f"perf/test_stages.py::test_stage[seed-{stage}-{backend}]", "extra_info": info,
            "stats": {"median": sorted(data)[len(data) // 2], "iqr": 0.0, "data": data}}


def run_doc(benchmarks: list[dict], *, day: int, commit: str | None = None, fingerprint: dict | None = FINGERPRINT,
            metric: str = "time") -> dict:
    """A saved run: commit ``commit`` (default: one per day) made at 10:00 on ``day``, saved at 12:00."""
    commit_info = {"id": commit or f"{day:04x}" + "c0ffee" * 6, "time": f"2026-11-{day:02d}T10:00:00+00:00", "dirty": False}
    machine_info = {"perf_fingerprint": fingerprint} if fingerprint is not None else {}
    return {"machine_info": machine_info, "commit_info": commit_info, "datetime": f"2026-11-{day:02d}T12:00:00+00:00",
            "version": "5.3.1", "perf": {"metric": metric}, "benchmarks": benchmarks}


def save(storage: Path, number: int, doc: dict | bytes, machine_id: str = MACHINE_ID) -> Path:
    folder = storage / machine_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{number:04d}_run.json"
    path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
    return path


def storage_of(tmp_path: Path, levels: dict[tuple[str, str], list[float]], *, processes: int = 3, seed: int = 0) -> Path:
    """A storage of len(levels[...]) runs, run i holding each (stage, backend) at its i-th level (seconds)."""
    rng = np.random.default_rng(seed)
    storage = tmp_path / "storage"
    for i in range(len(next(iter(levels.values())))):
        benchmarks = [benchmark(stage, backend, lv[i] * math.exp(rng.normal(0, 0.005)), rng=rng, processes=processes)
                      for (stage, backend), lv in levels.items()]
        save(storage, i + 1, run_doc(benchmarks, day=i + 1))
    return storage


def slowed_at_8(tmp_path: Path, **kw) -> Path:
    """Ten runs: relu on numpy 50% slower from run 0008 on, relu on torch-cpu and hidden on numpy unchanged."""
    return storage_of(tmp_path, {("relu", "numpy"): [6e-6] * 7 + [9e-6] * 3, ("relu", "torch-cpu"): [9e-6] * 10,
                                 ("hidden", "numpy"): [1e-4] * 10}, **kw)


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = history.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str, *fragments: str) -> str:
    (line,) = err.strip().splitlines()
    assert line.startswith("python -m perf.history: error: ")
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


# --------------------------------------------------------------------------- gating


def test_a_step_after_since_that_is_a_regression_exits_1_and_one_before_it_0(tmp_path, capsys):
    storage = slowed_at_8(tmp_path)
    rc, out, _ = cli(capsys, storage, "--since", "7")
    assert rc == 1
    assert "0008 (after 0007): +" in out and "REGRESSION" in out
    assert "FAIL: 1 regression(s) after 0007: test_stage[seed-relu-numpy]" in out
    good, bad = (load_run(next(storage.rglob(f"000{n}_*.json"))).commit_id[:12] for n in (7, 8))
    assert out.endswith(f"  which commit: python -m perf.bisect --good {good} --bad {bad} -- "
                        "'perf/test_stages.py::test_stage[seed-relu-numpy]'\n")  # the commits either side of the step
    for after in ("0008", "10"):
        rc, out, _ = cli(capsys, storage, "--since", after)
        assert rc == 0 and "PASS" in out and "0008 (after 0007): +" in out and "which commit" not in out


def test_since_takes_a_commit_id_prefix(tmp_path, capsys):
    storage = slowed_at_8(tmp_path)
    seventh = load_run(next(storage.rglob("0007_*.json"))).commit_id
    assert cli(capsys, storage, "--since", seventh[:8])[0] == 1
    assert cli(capsys, storage, "--since", load_run(next(storage.rglob("0009_*.json"))).commit_id[:8].upper())[0] == 0


def test_without_since_nothing_is_gated_and_steps_are_still_shown(tmp_path, capsys):
    rc, out, _ = cli(capsys, slowed_at_8(tmp_path))
    assert rc == 0
    assert "0008 (after 0007): +" in out and "REGRESSION" not in out and "nothing gated" in out


def test_a_step_smaller_than_the_threshold_is_no_regression(tmp_path, capsys):
    storage = slowed_at_8(tmp_path)
    assert cli(capsys, storage, "--since", "7", "--threshold", "0.3")[0] == 1
    rc, out, _ = cli(capsys, storage, "--since", "7", "--threshold", "60%")
    assert rc == 0 and "0008 (after 0007)" not in out  # no step either: under the threshold
    assert "drift: +49" in out  # the drift still says how far it moved


def test_a_clear_change_smaller_than_the_threshold_is_reported_and_gated_only_with_a_lower_one(tmp_path, capsys):
    storage = storage_of(tmp_path, {("relu", "numpy"): [6e-6] * 10 + [6.18e-6] * 10})  # +3%, noise 0.5%
    rc, out, _ = cli(capsys, storage, "--since", "5")
    assert rc == 0 and "no step" in out and "drift: +3" in out
    rc, out, _ = cli(capsys, storage, "--since", "5", "--threshold", "2%")
    assert rc == 1 and "0011 (after 0010): +3" in out and "REGRESSION" in out


def test_an_improvement_is_no_regression(tmp_path, capsys):
    storage = storage_of(tmp_path, {("relu", "numpy"): [9e-6] * 7 + [6e-6] * 3})
    rc, out, _ = cli(capsys, storage, "--since", "1")
    assert rc == 0 and "0008 (after 0007): -3" in out


# --------------------------------------------------------------------------- what is shown


def test_text_shows_each_run_with_commit_value_and_spread_then_steps_and_drift(tmp_path, capsys):
    storage = slowed_at_8(tmp_path)
    _, out, _ = cli(capsys, storage, "-k", "relu-numpy")
    lines = out.splitlines()
    assert lines[0].startswith("1 benchmark(s), 10 saved run(s) (0001 .. 0010)")
    run8 = next(line for line in lines if line.strip().startswith("0008"))
    assert "0008c0ffee" in run8 and "µs" in run8 and "±" in run8
    assert any(line.strip().startswith("step at 0008 (after 0007): +") for line in lines)
    assert any(line.strip().startswith("drift: +") and "over 10 runs" in line for line in lines)


def test_json_holds_runs_steps_with_the_runs_on_either_side_and_drift(tmp_path, capsys):
    storage, out = slowed_at_8(tmp_path), tmp_path / "history.json"
    assert cli(capsys, storage, "--since", "7", "--json", out)[0] == 1
    doc = json.loads(out.read_text())
    assert doc["passed"] is False and doc["meta"]["since"] == "0007" and doc["meta"]["runs"] == 10
    by_name = {b["name"]: b for b in doc["benchmarks"]}
    relu = by_name["perf/test_stages.py::test_stage[seed-relu-numpy]"]
    assert [r["run"] for r in relu["runs"]] == [f"{i:04d}" for i in range(1, 11)]
    assert len(relu["runs"][0]["per_process"]) == 3 and relu["runs"][0]["spread"] > 0
    (step,) = relu["steps"]
    assert (step["first_run"], step["run_before"], step["regression"], step["new"]) == ("0008", "0007", True, True)
    assert step["low"] < step["ratio"] < step["high"] and step["ratio"] == pytest.approx(1.5, rel=0.03)
    assert relu["drift"]["runs"] == 10
    assert by_name["perf/test_stages.py::test_stage[seed-relu-torch-cpu]"]["steps"] == []


def test_markdown_has_the_outcome_a_row_per_benchmark_and_each_run(tmp_path, capsys):
    storage, out = slowed_at_8(tmp_path), tmp_path / "summary.md"
    cli(capsys, storage, "--since", "7", "--markdown", out)
    text = out.read_text()
    assert text.startswith("### Performance history: FAIL")
    row = next(line for line in text.splitlines() if line.startswith("| `test_stage[seed-relu-numpy]`"))
    assert "**0008 (after 0007): +" in row
    assert "| 0008 | 0008c0ffee |" in text


def test_figures_are_pngs_one_per_size_and_stage_with_backends_as_lines(tmp_path, capsys):
    from matplotlib.image import imread

    storage, folder = slowed_at_8(tmp_path), tmp_path / "figures"
    cli(capsys, storage, "--figures", folder)
    written = sorted(p.name for p in folder.iterdir())
    assert len(written) == 2 and all(name.startswith("history-test_cpu_9000-") for name in written)
    assert any("seed_relu_float32" in name for name in written)
    for path in folder.iterdir():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        height, width, _ = imread(path).shape
        assert width > 500 and height > 300


def test_window_keeps_each_benchmarks_last_runs(tmp_path, capsys):
    storage, out = slowed_at_8(tmp_path), tmp_path / "h.json"
    cli(capsys, storage, "--window", "4", "--json", out)
    for b in json.loads(out.read_text())["benchmarks"]:
        assert [r["run"] for r in b["runs"]] == ["0007", "0008", "0009", "0010"]


def test_runs_without_per_process_data_are_weighed_equally_and_say_so(tmp_path, capsys):
    storage = storage_of(tmp_path, {("relu", "numpy"): [6e-6] * 7 + [9e-6] * 3}, processes=0)
    rc, out, _ = cli(capsys, storage, "--since", "7")
    assert rc == 1 and "weighed equally" in out and "0008 (after 0007): +" in out


# --------------------------------------------------------------------------- -k


@pytest.mark.parametrize("expression, selected", [
    ("relu", {"relu-numpy", "relu-torch-cpu"}),
    ("relu and not torch", {"relu-numpy"}),
    ("RELU-NUMPY or hidden", {"relu-numpy", "hidden-numpy"}),
    ("not (relu and numpy) and not hidden", {"relu-torch-cpu"}),
    ("test_stage[seed-", {"relu-numpy", "relu-torch-cpu", "hidden-numpy"}),
])
def test_k_selects_benchmarks_by_a_keyword_expression(tmp_path, capsys, expression, selected):
    out = tmp_path / "h.json"
    cli(capsys, slowed_at_8(tmp_path), "-k", expression, "--json", out)
    names = {b["name"].split("[seed-")[1].rstrip("]") for b in json.loads(out.read_text())["benchmarks"]}
    assert names == selected


@pytest.mark.parametrize("expression, problem", [
    ("", "expected a word at the end"), ("relu and", "expected a word at the end"), ("(relu", "never closed"),
    ("relu)", "unexpected ')'"), ("or relu", "expected a word, got 'or'"), ("relu numpy", "unexpected 'numpy'"),
])
def test_a_malformed_k_is_one_line_exit_2(tmp_path, capsys, expression, problem):
    rc, _, err = cli(capsys, slowed_at_8(tmp_path), "-k", expression)
    assert rc == 2
    one_error_line(err, f"-k {expression!r}", problem, "and, or, not")


def test_a_k_that_selects_nothing_is_one_line_exit_2(tmp_path, capsys):
    rc, _, err = cli(capsys, slowed_at_8(tmp_path), "-k", "conv2d")
    assert rc == 2
    one_error_line(err, "-k 'conv2d' selects none")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("argv, fragments", [
    (["--since", "99"], ["--since 99: no saved run numbered 0099"]),
    (["--since", "deadbeef"], ["no saved run of a commit starting with deadbeef"]),
    (["--since", "last week"], ["--since 'last week': expected a saved run's number"]),
    (["--threshold", "10"], ["--threshold", "'10'"]),
    (["--threshold", "-5%"], ["--threshold"]),
    (["--window", "0"], ["--window", "expected an integer >= 1"]),
])
def test_bad_options_are_one_line_exit_2(tmp_path, capsys, argv, fragments):
    rc, _, err = cli(capsys, slowed_at_8(tmp_path), *argv)
    assert rc == 2
    one_error_line(err, *fragments)


def test_a_missing_or_unusable_storage_is_one_line_exit_2(tmp_path, capsys):
    rc, _, err = cli(capsys, tmp_path / "nowhere")
    assert rc == 2
    one_error_line(err, "no such folder")
    (tmp_path / "a-file").write_text("x")
    one_error_line(cli(capsys, tmp_path / "a-file")[2], "not a folder")
    one_error_line(cli(capsys, "elasticsearch+http://host/index")[2], "only file storage")
    storage = slowed_at_8(tmp_path)
    rc, _, err = cli(capsys, storage, "--json", tmp_path / "missing" / "h.json")
    assert rc == 2
    one_error_line(err, "--json", "does not exist")


def test_a_report_that_cannot_be_written_is_one_line_exit_2(tmp_path, capsys):
    full = Path("/dev/full")  # every write: no space left on the device
    if not full.exists():
        pytest.skip("no /dev/full here")
    rc, _, err = cli(capsys, slowed_at_8(tmp_path), "--markdown", full)
    assert rc == 2
    one_error_line(err, "/dev/full")


def test_an_empty_storage_has_nothing_to_show(tmp_path, capsys):
    (tmp_path / "empty" / MACHINE_ID).mkdir(parents=True)
    rc, out, _ = cli(capsys, tmp_path / "empty")
    assert rc == 0 and out.startswith("0 benchmark(s), 0 saved run(s)")


def good_doc() -> dict:
    return run_doc([benchmark("relu", "numpy", 6e-6, rng=np.random.default_rng(0))], day=1)


@pytest.mark.parametrize("name", [name for name, _, _ in damaged_runs(good_doc())])
def test_a_storage_of_damaged_runs_is_one_line_exit_2(tmp_path, capsys, name):
    ((data, why),) = [(d, w) for n, d, w in damaged_runs(good_doc()) if n == name]
    path = save(tmp_path / "storage", 1, data)
    rc, _, err = cli(capsys, tmp_path / "storage")
    assert rc == 2
    one_error_line(err, "no saved run in", str(path), why)


def test_a_damaged_run_among_good_ones_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    storage = slowed_at_8(tmp_path)
    save(storage, 11, b"{not json")
    rc, out, err = cli(capsys, storage, "--since", "7")
    assert rc == 1 and "10 saved run(s)" in out
    (warning,) = err.strip().splitlines()
    assert warning.startswith("warning: skipped a damaged saved run: ") and "0011_run.json" in warning
    assert "invalid JSON" in warning


def test_since_naming_a_damaged_run_is_its_field_in_one_line_exit_2(tmp_path, capsys):
    storage = slowed_at_8(tmp_path)
    ((data, why),) = [(d, w) for n, d, w in damaged_runs(good_doc()) if n == "samples strings"]
    path = save(storage, 11, data)
    rc, _, err = cli(capsys, storage, "--since", "11")
    assert rc == 2
    one_error_line(err.splitlines()[-1], str(path), why)


def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        history.main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert all(option in out for option in ("-k EXPR", "--since RUN", "--threshold", "--window N", "--markdown PATH",
                                            "--json PATH", "--figures DIR", "default 5%"))


def test_the_module_runs_and_fails_without_a_traceback(tmp_path):
    storage = slowed_at_8(tmp_path)
    for argv, rc in (([str(storage), "--since", "7"], 1), ([str(tmp_path / "nowhere")], 2)):
        proc = subprocess.run([sys.executable, "-m", "perf.history", *argv], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == rc and "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- series


def test_storage_as_a_file_url_and_every_machine_id_folder_are_read(tmp_path, capsys):
    rng = np.random.default_rng(0)
    storage = tmp_path / "storage"
    other = dict(FINGERPRINT, python="3.12.1")
    for day in range(1, 5):
        save(storage, day, run_doc([benchmark("relu", "numpy", 6e-6, rng=rng)], day=day))
        save(storage, day, run_doc([benchmark("relu", "numpy", 5e-6, rng=rng)], day=day, fingerprint=other),
             machine_id="Linux-CPython-3.12-64bit")
    save(storage, 5, run_doc([benchmark("relu", "numpy", 5e-6, rng=rng)], day=5, fingerprint=None))
    out = tmp_path / "h.json"
    assert cli(capsys, f"file://{storage}", "--json", out)[0] == 0
    machines = [(b["machine"], len(b["runs"])) for b in json.loads(out.read_text())["benchmarks"]]
    assert sorted(machines) == sorted([(trend.machine_of(load_run(p)), 4) for p in (
        next(storage.glob("*3.11*/0001_*")), next(storage.glob("*3.12*/0001_*")))] + [(trend.NO_FINGERPRINT, 1)])


def test_runs_are_ordered_by_commit_time_then_commit_then_save_time(tmp_path):
    rng = np.random.default_rng(0)
    docs = {1: run_doc([benchmark("relu", "numpy", 3e-6, rng=rng)], day=3),
            2: run_doc([benchmark("relu", "numpy", 1e-6, rng=rng)], day=1),
            3: run_doc([benchmark("relu", "numpy", 2e-6, rng=rng)], day=1, commit="ff" * 20),
            4: run_doc([benchmark("relu", "numpy", 4e-6, rng=rng)], day=2, commit="ff" * 20)}
    docs[3]["commit_info"]["time"] = docs[2]["commit_info"]["time"]
    docs[4]["commit_info"]["time"] = docs[2]["commit_info"]["time"]  # the same commit as run 3, saved a day later
    unversioned = run_doc([benchmark("relu", "numpy", 2.5e-6, rng=rng)], day=2)
    unversioned["commit_info"] = {"id": "unversioned"}
    unversioned["datetime"] = "2026-11-02T11:00:00"  # no zone: UTC
    docs[5] = unversioned
    paths = [save(tmp_path, n, doc) for n, doc in docs.items()]
    (series,) = trend.series([load_run(p) for p in paths])
    assert [p.label for p in series.points] == ["0002", "0003", "0004", "0005", "0001"]


def test_commits_of_one_commit_time_are_ordered_by_when_each_was_first_saved(tmp_path):
    # git's clock counts seconds: a rebase or a script makes many commits in one, and their ids would
    # order them at random.
    rng = np.random.default_rng(0)
    ids = ["ff" * 20, "00" * 20, "88" * 20]  # saved in this order
    docs = [run_doc([benchmark("relu", "numpy", 1e-6, rng=rng)], day=day, commit=commit)
            for day, commit in [(1, ids[0]), (2, ids[1]), (3, ids[2]), (4, ids[0])]]  # the first commit saved again
    for doc in docs:
        doc["commit_info"]["time"] = "2026-11-01T10:00:00+00:00"
    (series,) = trend.series([load_run(save(tmp_path, n, doc)) for n, doc in enumerate(docs, 1)])
    assert [p.label for p in series.points] == ["0001", "0004", "0002", "0003"]


def test_metrics_and_machines_form_separate_series(tmp_path):
    rng = np.random.default_rng(0)
    time_run = run_doc([benchmark("relu", "numpy", 6e-6, rng=rng)], day=1)
    counted = run_doc([benchmark("relu", "numpy", 1e4, rng=rng, metric="instructions", processes=0)], day=2,
                      metric="instructions")
    series = trend.series([load_run(save(tmp_path, 1, time_run)), load_run(save(tmp_path, 2, counted))])
    assert sorted(s.metric.value for s in series) == ["instructions", "time"]


def test_the_value_is_the_fastest_process_minimum_else_the_fastest_round_else_the_median(tmp_path):
    doc = run_doc([benchmark("relu", "numpy", 6e-6, rng=np.random.default_rng(0))], day=1)
    bench = doc["benchmarks"][0]
    bench["extra_info"]["processes"] = [{"rounds": 3, "min": 5e-6, "median": 6e-6}, {"rounds": 3, "min": 4e-6, "median": 7e-6}]
    bench["stats"]["data"] = [5e-6, 6e-6, 6.5e-6, 4e-6, 7e-6, 8e-6]
    (result,) = load_run(save(tmp_path, 1, doc)).results.values()
    assert trend.value_of(result) == 4e-6
    del bench["extra_info"]["processes"]
    bench["stats"]["data"] = [0.0, 4.5e-6, 5e-6, 6e-6, 7e-6, 8e-6]
    (result,) = load_run(save(tmp_path, 2, doc)).results.values()
    assert trend.value_of(result) == 4.5e-6  # zero is a clock too coarse, not a value
    bench["stats"]["data"] = []
    (result,) = load_run(save(tmp_path, 3, doc)).results.values()
    assert trend.value_of(result) == bench["stats"]["median"]


# --------------------------------------------------------------------------- protected runs


def test_protected_keeps_the_runs_either_side_of_each_step(tmp_path):
    storage = slowed_at_8(tmp_path)
    runs = [load_run(p) for p in trend.storage_files(storage)]
    assert {Path(s).name for s in history.protected(runs)} == {"0007_run.json", "0008_run.json"}
    flat = storage_of(tmp_path / "flat", {("relu", "numpy"): [6e-6] * 10})
    assert history.protected(load_run(p) for p in trend.storage_files(flat)) == set()
