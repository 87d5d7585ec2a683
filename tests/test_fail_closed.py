"""Fail closed (issue 10), through the command lines a user runs: a damaged or missing baseline named
to --benchmark-compare or given to perf.report, a save that fails, two saves at once. Each ends in
one line and its own exit status (4: usage, 2: perf.report's error, 6: environment), never a
traceback, an INTERNALERROR, a pass or exit 1, and the run's own output is still written."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from perf import pb
from tests.damage import damaged_runs
from tests.test_perf_plugin import FAST, REPO, Run, child_env, pytest_perf, storage_option

ONE_BACKEND = (*FAST, "--perf-backend", "numpy", "-k", "test_stage[")  # ten stages of the tiny size: seconds
MACHINE = pb.machine_id()  # pytest-benchmark's folder of this machine's runs in the storage


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> dict:
    """A run this suite saved, to damage."""
    storage = tmp_path_factory.mktemp("good")
    run = pytest_perf(*ONE_BACKEND, "--benchmark-save=good", storage_option(storage))
    assert run.rc == 0, run.output
    (path,) = storage.rglob("*.json")
    return json.loads(path.read_text())


def corpus() -> list[str]:
    return [name for name, _, _ in damaged_runs({"benchmarks": [{"fullname": "t", "stats": {"data": [1.0]}}]})]


def damaged(good: dict, name: str) -> tuple[bytes, str]:
    ((data, why),) = [(data, why) for n, data, why in damaged_runs(good) if n == name]
    return data, why


def store_with(tmp_path: Path, files: dict[str, bytes]) -> Path:
    folder = tmp_path / "storage" / MACHINE
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return tmp_path / "storage"


def assert_one_line(run: Run, rc: int, *fragments: str) -> str:
    assert run.rc == rc, run.output
    assert "Traceback" not in run.output and "INTERNALERROR" not in run.output, run.output
    (line,) = run.lines()
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


@pytest.mark.parametrize("name", corpus())
@pytest.mark.parametrize("named_by", ["path", "number"])
def test_a_damaged_baseline_named_to_compare_is_a_usage_error_naming_file_and_field(good, tmp_path, name, named_by):
    data, why = damaged(good, name)
    storage = store_with(tmp_path, {"0001_base.json": data})
    path = storage / MACHINE / "0001_base.json"
    run = pytest_perf(*ONE_BACKEND, storage_option(storage), f"--benchmark-compare={path if named_by == 'path' else '0001'}")
    assert_one_line(run, 4, "ERROR: --benchmark-compare=", str(path), why)


@pytest.mark.parametrize("name", corpus())
def test_a_damaged_run_given_to_the_report_is_one_line_exit_2(good, tmp_path, name):
    data, why = damaged(good, name)
    path = tmp_path / "run.json"
    path.write_bytes(data)
    proc = subprocess.run([sys.executable, "-m", "perf.report", str(path), "--out", str(tmp_path / "out")], cwd=REPO,
                          env=child_env(), capture_output=True, text=True, timeout=120)
    assert_one_line(Run(proc.returncode, proc.stdout + proc.stderr), 2, str(path), why)
    assert not (tmp_path / "out").exists()


def test_a_baseline_number_that_does_not_exist_is_a_usage_error(good, tmp_path):
    storage = store_with(tmp_path, {"0001_base.json": json.dumps(good).encode()})
    run = pytest_perf(*ONE_BACKEND, storage_option(storage), "--benchmark-compare=0007")
    assert_one_line(run, 4, "--benchmark-compare=0007: no saved run matches it")


def test_bare_compare_skips_a_damaged_newest_run_naming_it_and_gates_on_the_one_before(good, tmp_path):
    storage = store_with(tmp_path, {"0001_base.json": json.dumps(good).encode(), "0002_base.json": b"{not json"})
    run = pytest_perf(*ONE_BACKEND, "--perf-threshold", "1000%", storage_option(storage), "--benchmark-compare", "-v")
    assert run.rc == 0, run.output
    assert f"skipped an unreadable saved run: {storage / MACHINE / '0002_base.json'}: not pytest-benchmark JSON" \
        in run.output
    assert f"baseline: {storage / MACHINE / '0001_base.json'}" in run.section("perf gate")


def test_a_save_that_fails_is_one_line_exit_6_with_the_results_and_reports_written(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    out = {"json": tmp_path / "v.json", "md": tmp_path / "v.md", "junit": tmp_path / "j.xml"}
    run = pytest_perf(*ONE_BACKEND, "-rA", "--benchmark-autosave", "--benchmark-compare",
                      storage_option(tmp_path / "a-file" / "storage"), f"--perf-report-json={out['json']}",
                      f"--perf-report-md={out['md']}", f"--junitxml={out['junit']}")
    assert run.rc == 6, run.output
    assert "Traceback" not in run.output and "INTERNALERROR" not in run.output
    assert len(run.outcomes()["PASSED"]) == 10 and "nothing was gated" in run.section("perf")
    errors = [line for line in run.lines() if line.startswith("perf: error:")]
    assert errors == [f"perf: error: the run could not be saved in {tmp_path / 'a-file' / 'storage'}/"
                      f"{errors[0].rsplit('/', 1)[-1].split(':')[0]}: Not a directory"], run.output
    assert all(p.stat().st_size > 0 for p in out.values())
    assert json.loads(out["json"].read_text())["meta"]["baseline"] == "none"


def test_two_saves_at_once_both_land_under_their_own_numbers(tmp_path):
    """os.fsync slowed to 1.5 s (tests/plugins/slow_fsync.py): the second run starts saving while the first is."""
    cmd = [sys.executable, "-m", "pytest", "perf", *ONE_BACKEND, "-p", "slow_fsync", "--benchmark-save=same",
           storage_option(tmp_path / "storage")]
    first = subprocess.Popen(cmd, cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.3)
    second = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    out_first, _ = first.communicate(timeout=300)
    assert (first.returncode, second.returncode) == (0, 0), out_first + second.stdout + second.stderr
    saved = sorted(p.name for p in tmp_path.rglob("*.json"))
    assert saved == ["0001_same.json", "0002_same.json"]
    runs = [json.loads(p.read_text()) for p in sorted(tmp_path.rglob("*.json"))]
    assert all(len(r["benchmarks"]) == 10 for r in runs) and runs[0]["datetime"] != runs[1]["datetime"]


@pytest.mark.parametrize("where", ["a directory", "under a file"])
def test_an_unusable_report_path_is_refused_before_anything_is_measured(tmp_path, where):
    (tmp_path / "a-file").write_text("x")
    target = tmp_path if where == "a directory" else tmp_path / "a-file" / "v.json"
    run = pytest_perf(*ONE_BACKEND, f"--perf-report-json={target}")
    assert_one_line(run, 4, f"--perf-report-json='{target}'")
