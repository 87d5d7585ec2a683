"""The pytest plugin behind ``pytest perf``, end to end: whole sessions in a subprocess at a tiny
size, with benchmark storage in pytest's temporary directory (never the repository's .benchmarks).
A run that several tests read is made once per session, even under xdist (``run_once``).

Nothing here passes or fails on a timing. Baselines are built from a real saved run whose
samples are then scaled (x0.01: the current run must be REGRESSED; x100: IMPROVED), and
where unchanged benchmarks are compared the threshold is far beyond any run-to-run noise.
The hooks that need no session are called in process, on constructed data.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

import kernels
from kernels.problem import SWEEPS, Problem
from perf import machine, plugin, results, session
from perf.baseline import check_comparable
from perf.cases import OUT_FORMS, PROBES, base_stage
from perf.errors import BaselineError
from perf.metric import Metric
from perf.options import settings

REPO = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"  # -p modules: perf_wrong_relu, perf_interrupt_second
TINY = "8x16x8x4"  # N, D_in, H, D_out
# One process: what is measured in several is tested in tests/test_processes.py.
FAST = ("-p", "no:cacheprovider", "--perf-size", "8,16,8,4", "--benchmark-max-time=0.001", "--benchmark-min-rounds=5",
        "--perf-processes", "1")
CPU = ("--perf-backend", "numpy,torch-cpu", "--perf-threads", "1")
NO_ROOFLINE = ("-k", "not roofline")  # its probes are fixed-size (a 2048^3 matmul): seconds, not milliseconds
HUGE = ("--perf-threshold", "1000%")  # unchanged code never moves 11x: no verdict here depends on noise
ABSENT = [name for name in kernels.known_backends() if name not in kernels.available_backends()]

slow = pytest.mark.slow


# --------------------------------------------------------------------------- running pytest perf


@dataclass
class Run:
    rc: int
    output: str  # stdout then stderr

    def outcomes(self) -> dict[str, list[str]]:
        """-rA's short summary: outcome -> node ids."""
        found: dict[str, list[str]] = {}
        for match in re.finditer(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S*?)(perf/\S+::\S+)", self.output, re.M):
            found.setdefault(match.group(1), []).append(match.group(3))  # relative to the rootdir, whatever the cwd
        return found

    def lines(self) -> list[str]:
        return [line for line in self.output.splitlines() if line.strip()]

    def section(self, title: str) -> str:
        """The text after the '=== title ===' separator, up to the next '===' separator."""
        match = re.search(rf"^=+ {re.escape(title)} =+$\n(.*?)(?=^=+ )", self.output, re.M | re.S)
        assert match, f"no '{title}' section in:\n{self.output}"
        return match.group(1)


def child_env(**extra: str) -> dict[str, str]:
    """This environment, less what pytest and xdist set for this process (PYTEST_XDIST_WORKER would
    disable the child's benchmarks)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "FORCE_COLOR"}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), str(PLUGINS)]), PYTHONDONTWRITEBYTECODE="1", COLUMNS="250",
               PY_COLORS="0")
    env.update(extra)
    return env


def pytest_perf(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> Run:
    """``python -m pytest perf ARGS``; with no --benchmark-storage, a scratch one (pytest-benchmark
    creates its storage folder in every session, so the repository's .benchmarks is never named)."""
    perf = "perf" if cwd == REPO else str(REPO / "perf")
    with tempfile.TemporaryDirectory(prefix="perf-scratch-") as scratch:
        if not any(a.startswith("--benchmark-storage") for a in args):
            args = (*args, storage_option(Path(scratch)))
        proc = subprocess.run([sys.executable, "-m", "pytest", perf, *args], cwd=cwd, env=env or child_env(),
                              capture_output=True, text=True, timeout=300)
    return Run(proc.returncode, proc.stdout + proc.stderr)


def storage_option(storage: Path) -> str:
    return f"--benchmark-storage=file://{storage}"


def node(stage: str, backend: str, size: str = TINY) -> str:
    if stage in PROBES:
        return f"perf/test_roofline.py::test_roofline[{stage}-{backend}]"
    if stage == "train_step":
        return f"perf/test_step.py::test_step[{size}-{backend}]"
    if stage in ("tutorial_step", "workspace_step", "graph_step"):
        return f"perf/test_step.py::test_{stage}[{size}-{backend}]"
    if stage in OUT_FORMS:
        return f"perf/test_stages.py::test_stage_out[{size}-{base_stage(stage)}-{backend}]"
    return f"perf/test_stages.py::test_stage[{size}-{stage}-{backend}]"


STEPS = (*kernels.STAGES, *OUT_FORMS, "train_step", "tutorial_step", "workspace_step", "graph_step")
ON_CPU = tuple(stage for stage in STEPS if stage != "graph_step")  # graph_step needs CUDA: skipped on the CPU
CPU_NODES = {node(stage, backend) for stage in ON_CPU for backend in ("numpy", "torch-cpu")}
GRAPH_SKIPS = 2  # graph_step of numpy and of torch-cpu, skipped with the reason when run


def saved_files(storage: Path) -> dict[str, bytes]:
    return {str(p.relative_to(storage)): p.read_bytes() for p in sorted(storage.rglob("*")) if p.is_file()}


def the_saved_run(storage: Path) -> Path:
    (path,) = sorted(storage.rglob("*.json"))
    return path


def copy_storage(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_saved_run(storage: Path, edit) -> None:
    path = the_saved_run(storage)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=4))


def scale(bench: dict, factor: float) -> None:
    bench["stats"]["data"] = [x * factor for x in bench["stats"]["data"]]
    bench["stats"]["median"] *= factor


@pytest.fixture(scope="session")
def shared(tmp_path_factory) -> Path:
    """A folder every xdist worker of this session sees (a worker's basetemp is one level below)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once(shared: Path, name: str, make: Callable[[Path], dict]) -> dict:
    """``make(folder)``, run once per session by whichever xdist worker asks first; the others wait
    and read its result, so a run that several tests look at is not repeated on each worker."""
    result = shared / f"{name}.json"
    with open(shared / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not result.exists():
            folder = shared / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            result.write_text(json.dumps(make(folder)))
    return json.loads(result.read_text())


def run_once(shared: Path, name: str, make: Callable[[Path], Run]) -> Run:
    return Run(**once(shared, name, lambda folder: make(folder).__dict__))


def assert_one_line_error(run: Run, *fragments: str) -> str:
    assert run.rc == 4, run.output
    (line,) = run.lines()
    assert line.startswith("ERROR: "), run.output
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert "Traceback" not in run.output
    return line


# --------------------------------------------------------------------------- 1. option errors


OPTION_ERRORS = [
    (["--perf-backend", "foo"], "ERROR: --perf-backend='foo': unknown backend 'foo'; valid: numpy, torch-cpu, torch-cuda"),
    (["--perf-size", "0,1,2,3"], "ERROR: --perf-size='0,1,2,3': size '0,1,2,3': N must be a positive integer, got 0"),
    (["--perf-size", "seed,1,2"], "ERROR: --perf-size='seed,1,2': incomplete size '1,2': an explicit size is four integers "
                                  "N,D_in,H,D_out"),
    (["--perf-dtype", "float16"], "ERROR: --perf-dtype='float16': unknown dtype 'float16'; valid: float32, float64"),
    (["--perf-threads", "0"], "ERROR: --perf-threads='0': expected a positive integer or 'auto'"),
    (["--perf-threads", "x"], "ERROR: --perf-threads='x': expected a positive integer or 'auto'"),
    (["--perf-threshold", "10"], "ERROR: --perf-threshold='10': ambiguous threshold '10': write '10%' for a percentage"),
    (["--perf-timer", "fast"], "ERROR: --perf-timer='fast': unknown timer; valid: auto, sync, events"),
    (["-o", "perf_backend=foo"], "ERROR: ini option perf_backend='foo': unknown backend 'foo'; valid: numpy, torch-cpu"),
    (["-o", "perf_history=1.5"], "ERROR: ini option perf_history='1.5': expected a positive integer"),
    (["-o", "perf_allow_foreign_baseline=maybe"],
     "ERROR: ini option perf_allow_foreign_baseline: invalid truth value 'maybe'; expected true or false"),
    (["--perf-report-json=/nonexistent/dir/v.json"], "ERROR: --perf-report-json='/nonexistent/dir/v.json': directory "
                                                     "'/nonexistent/dir' does not exist"),
]


@slow
@pytest.mark.parametrize("args, message", OPTION_ERRORS, ids=[" ".join(a) for a, _ in OPTION_ERRORS])
def test_a_bad_option_is_one_line_naming_it_where_it_came_from_and_what_is_valid(args, message):
    assert_one_line_error(pytest_perf("--co", "-q", "-p", "no:cacheprovider", *args), message)


@slow
@pytest.mark.skipif("torch-cuda" not in ABSENT, reason="CUDA is available here")
def test_asking_for_absent_cuda_by_name_is_an_error_that_says_why():
    line = assert_one_line_error(pytest_perf("--co", "-q", "-p", "no:cacheprovider", "--perf-backend", "torch-cuda"),
                                 "ERROR: --perf-backend='torch-cuda': torch-cuda: CUDA is not available (")
    assert re.search(r"\((torch was built without CUDA|no CUDA device is visible); torch \S+\)$", line), line


# --------------------------------------------------------------------------- 2. selection and ids


@slow
def test_ids_cover_every_size_stage_backend_and_dtype_asked_for():
    # The command line wins over a bad ini value (-o): no error.
    run = pytest_perf("--co", "-q", "-p", "no:cacheprovider", "--perf-size", "8,16,8,4,sweep",
                      "--perf-dtype", "float32,float64", "-o", "perf_timer=junk", "--perf-timer", "auto")
    assert run.rc == 0, run.output
    collected = {line for line in run.lines() if "::" in line}
    sizes = [TINY, *SWEEPS["sweep"]]
    expected = set()
    for suffix in ("", "-float64"):
        for backend in kernels.known_backends():
            expected |= {node(probe, backend + suffix) for probe in PROBES}
            expected |= {node(stage, backend + suffix, size) for stage in STEPS for size in sizes}
    assert collected == expected
    assert "perf/test_stages.py::test_stage[n2048-relu-torch-mps-float64]" in collected
    assert "perf/test_step.py::test_tutorial_step[8x16x8x4-numpy]" in collected
    assert "perf/test_stages.py::test_stage_out[seed-relu-torch-cpu-float64]" in collected
    assert "perf/test_step.py::test_workspace_step[gpu-numpy]" in collected
    assert "perf/test_step.py::test_graph_step[n2048-torch-cuda-float64]" in collected


@pytest.fixture
def wrong_relu(shared) -> Run:
    """Every backend (absent ones too) with numpy's relu broken, --perf-threads 1 against an
    environment asking for 2 threads."""
    env = child_env(OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", MKL_NUM_THREADS="2")
    return run_once(shared, "wrong_relu", lambda folder: pytest_perf(
        *FAST, "--perf-threads", "1", "-p", "perf_wrong_relu", "-k", "relu or step", "-rA", env=env))


SELECTED = {n for n in CPU_NODES if "relu" in n or "step" in n}  # what -k "relu or step" runs of numpy and torch-cpu


@slow
@pytest.mark.skipif(not ABSENT, reason="every backend is present here")
def test_absent_backends_are_skipped_with_the_reason(wrong_relu):
    for name in ABSENT:
        with pytest.raises(kernels.DeviceUnavailableError) as info:
            kernels.backend(name)
        # relu, grad_h_relu, relu_backward, each also in its out= form; the four forms of the step
        for file, count in (("test_stages.py", 6), ("test_step.py", 4)):
            line = f"SKIPPED [{count}] perf/{file}: {info.value}"
            assert line in wrong_relu.output, f"{line!r} not in:\n{wrong_relu.output}"
    assert re.search(rf"^=+ 4 failed, {len(SELECTED) - 4} passed, {len(ABSENT) * 10 + GRAPH_SKIPS} skipped, "
                     r"\d+ deselected", wrong_relu.output, re.M), wrong_relu.output


@slow
def test_threads_are_pinned_as_asked_for_torch_and_the_blas_pools(wrong_relu):
    (header,) = [line for line in wrong_relu.lines() if line.startswith("perf: ")]
    threads = ast.literal_eval(re.search(r"threads (\{[^}]*\})", header).group(1))
    assert threads.get("torch") == 1 and len(threads) >= 2, header  # torch and at least one BLAS/OpenMP pool
    assert set(threads.values()) == {1}, header


@slow
def test_a_wrong_kernel_fails_its_benchmarks_before_timing_and_the_others_pass(wrong_relu):
    assert wrong_relu.rc == session.EXIT_CHECK_FAILED, wrong_relu.output  # a failed check: not a regression (1)
    # Both steps and the out= form compose numpy's relu.
    wrong = {node(stage, "numpy") for stage in ("relu", "relu_out", "train_step", "workspace_step")}
    outcomes = wrong_relu.outcomes()
    assert set(outcomes["FAILED"]) == wrong
    assert set(outcomes["PASSED"]) == SELECTED - wrong
    assert f"\n{TINY}-relu-numpy: numpy computes relu wrongly: error " in wrong_relu.output
    assert f"\n{TINY}-relu-numpy: numpy computes relu_out wrongly: error " in wrong_relu.output
    assert f"\n{TINY}-numpy: numpy computes train_step wrongly: loss: error " in wrong_relu.output
    assert f"\n{TINY}-numpy: numpy computes workspace_step wrongly: loss: error " in wrong_relu.output
    assert "Traceback" not in wrong_relu.output


# --------------------------------------------------------------------------- 3-9. save, then compare


@pytest.fixture
def saved(shared) -> SimpleNamespace:
    """The first run on this machine: --benchmark-compare finds nothing, --benchmark-autosave saves it."""

    def first_run(folder: Path) -> Run:
        return pytest_perf(*FAST, *CPU, *NO_ROOFLINE, "-rA", "-v", "--benchmark-autosave", "--benchmark-compare",
                           storage_option(folder / "storage"))

    run = run_once(shared, "saved", first_run)
    assert run.rc == 0, run.output
    storage = shared / "saved" / "storage"
    path = the_saved_run(storage)
    return SimpleNamespace(storage=storage, run=run, path=path, data=json.loads(path.read_text()))


@pytest.fixture
def constructed(saved, shared) -> Path:
    """The saved run with numpy's hidden 100x faster (-> REGRESSED), its grad_w1 100x slower
    (-> IMPROVED), its loss deleted (-> NEW) and a benchmark this suite lacks (-> MISSING)."""

    def edit(data):
        by_name = {b["fullname"]: b for b in data["benchmarks"]}
        scale(by_name[node("hidden", "numpy")], 0.01)
        scale(by_name[node("grad_w1", "numpy")], 100)
        data["benchmarks"].remove(by_name[node("loss", "numpy")])
        gone = json.loads(json.dumps(by_name[node("relu", "numpy")]))
        gone["fullname"] = node("removed_stage", "numpy")
        gone["name"] = gone["fullname"].partition("::")[2]
        data["benchmarks"].append(gone)

    def construct(folder: Path) -> dict:
        edit_saved_run(copy_storage(saved.storage, folder / "storage"), edit)
        return {}

    once(shared, "constructed", construct)
    return shared / "constructed" / "storage"


@pytest.fixture
def compared(constructed, shared) -> SimpleNamespace:
    out = shared / "compared"

    def compare(folder: Path) -> Run:
        return pytest_perf(*FAST, *CPU, *NO_ROOFLINE, *HUGE, "-rA", "-v", "--benchmark-compare", storage_option(constructed),
                           f"--junitxml={folder / 'junit.xml'}", f"--perf-report-json={folder / 'gate.json'}",
                           f"--perf-report-md={folder / 'gate.md'}")

    run = run_once(shared, "compared", compare)
    return SimpleNamespace(run=run, junit=out / "junit.xml", json=out / "gate.json", md=out / "gate.md")


@slow
def test_compare_without_a_baseline_passes_and_says_how_to_save_one(saved):
    gate = saved.run.section("perf gate")
    assert "No baseline to compare with in" in gate and "nothing was gated" in gate
    assert "--benchmark-autosave" in gate
    assert set(saved.run.outcomes()["PASSED"]) == CPU_NODES
    assert "Traceback" not in saved.run.output


@slow
def test_saved_benchmarks_carry_what_was_measured_and_how(saved):
    benchmarks = {b["fullname"]: b for b in saved.data["benchmarks"]}
    assert set(benchmarks) == CPU_NODES
    problem = Problem(8, 16, 8, 4)
    for name, bench in benchmarks.items():
        info = bench["extra_info"]
        assert {"stage", "backend", "device", "dtype", "size", "shape", "flops", "bytes", "gflops", "gbps", "threads",
                "timer"} <= set(info), name
        assert name == node(info["stage"], info["backend"])
        assert (info["device"], info["dtype"], info["size"], info["timer"]) == ("cpu", "float32", TINY, "perf_counter")
        assert info["shape"] == {"N": 8, "D_in": 16, "H": 8, "D_out": 4}
        assert (info["flops"], info["bytes"]) == (problem.flops(info["stage"]), problem.bytes(info["stage"]))
        assert info["gbps"] == pytest.approx(info["bytes"] / info["median_s"] / 1e9)
        assert info["gflops"] == pytest.approx(info["flops"] / info["median_s"] / 1e9)
        assert info["threads"].get("torch") == 1 and set(info["threads"].values()) == {1}
        assert "peak_share" not in info  # no roofline probe ran in this session
        data = bench["stats"]["data"]  # the raw samples the gate needs (--benchmark-save-data, the project default)
        assert len(data) == bench["stats"]["rounds"] >= 5 and all(x > 0 for x in data)


@slow
def test_saved_run_records_the_settings_it_ran_with(saved):
    perf = saved.data["perf"]
    assert (perf["backends"], perf["sizes"], perf["dtypes"], perf["timer"]) == (["numpy", "torch-cpu"], [TINY], ["float32"],
                                                                                 "auto")
    assert set(perf["threads"].values()) == {1} and "--perf-size" in perf["command"]


@slow
def test_saved_machine_info_has_the_fingerprint_and_no_momentary_clock(saved):
    info = saved.data["machine_info"]
    fingerprint = info["perf_fingerprint"]
    assert fingerprint["cpu"] == machine.cpu_model()
    assert {"cpus", "python", "numpy", "blas", "threads", "torch"} <= set(fingerprint)
    assert fingerprint["threads"].get("torch") == 1 and set(fingerprint["threads"].values()) == {1}
    assert "hz_actual" not in info.get("cpu", {}) and "hz_actual_friendly" not in info.get("cpu", {})
    assert [p.name for p in saved.storage.rglob("*") if p.is_file()] == [saved.path.name]  # no .partial- left


@slow
def test_a_saved_run_is_as_readable_as_any_file_written_there(saved, tmp_path):
    probe = tmp_path / "umask-probe"
    probe.write_text("")
    mode = probe.stat().st_mode & 0o777  # what the umask gives a new file
    if mode == 0o600:
        pytest.skip("the umask makes every new file owner-only here")
    assert oct(saved.path.stat().st_mode & 0o777) == oct(mode)


@slow
def test_a_constructed_regression_fails_that_test_only(compared):
    run = compared.run
    assert run.rc == 1, run.output
    regressed = node("hidden", "numpy")
    outcomes = run.outcomes()
    assert outcomes["FAILED"] == [regressed]
    assert set(outcomes["PASSED"]) == CPU_NODES - {regressed}
    # The reason, on one line right under the test's header in FAILURES, with no traceback.
    failures = run.section("FAILURES").strip().splitlines()
    assert re.fullmatch(r"_+ test_stage\[8x16x8x4-hidden-numpy\] _+", failures[0])
    assert re.fullmatch(r"REGRESSED by \+[\d.]+% \(interval \+[\d.]+% \.\. \+[\d.]+%\), "
                        r"median .* [nµm]?s -> .* [nµm]?s, threshold 1000%, p=\S+", failures[1])
    assert len(failures[1]) <= 120
    assert len(failures) == 2
    assert "Traceback" not in run.output and "PerformanceRegression" not in run.output


@slow
def test_junit_xml_shows_the_regression_as_the_one_failure(compared):
    suite = ET.parse(compared.junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == (str(len(CPU_NODES) + GRAPH_SKIPS), "1", "0")
    failed = [case.get("name") for case in suite.iter("testcase") if case.find("failure") is not None]
    assert failed == ["test_stage[8x16x8x4-hidden-numpy]"]


def gate_rows(run: Run) -> dict[str, str]:
    """benchmark -> verdict, from the table in the 'perf gate' section."""
    rows = {}
    for line in run.section("perf gate").splitlines():
        match = re.match(r"(perf/\S+::\S+)\s.*\s(regressed|improved|unchanged|inconclusive|new|missing)$", line)
        if match:
            rows[match.group(1)] = match.group(2)
    return rows


@slow
def test_the_gate_table_lists_regressed_improved_new_and_missing(compared):
    rows = gate_rows(compared.run)
    assert rows.pop(node("hidden", "numpy")) == "regressed"
    assert rows.pop(node("grad_w1", "numpy")) == "improved"
    # NEW and MISSING are listed as such, never passed off as unchanged.
    assert rows.pop(node("loss", "numpy")) == "new"
    assert rows.pop(node("removed_stage", "numpy")) == "missing"
    assert set(rows) == CPU_NODES - {node(s, "numpy") for s in ("hidden", "grad_w1", "loss")}
    assert set(rows.values()) <= {"unchanged", "inconclusive"}
    gate = compared.run.section("perf gate")
    assert re.search(rf"^FAIL: 1 regressed, 1 improved, \d+ unchanged, \d+ inconclusive, 1 new, 1 missing "
                     rf"\({len(CPU_NODES) + 1} benchmarks\)$", gate, re.M), gate
    assert f"{node('loss', 'numpy')}: not in the baseline" in gate
    assert f"{node('removed_stage', 'numpy')}: in the baseline, not measured now" in gate


@slow
def test_the_verdicts_are_written_as_json_and_markdown(compared):
    report = json.loads(compared.json.read_text())
    verdicts = {c["name"]: c["verdict"] for c in report["comparisons"]}
    assert verdicts == gate_rows(compared.run)
    assert report["summary"]["passed"] is False and report["summary"]["counts"]["regressed"] == 1
    markdown = compared.md.read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    assert len(rows) == len(verdicts) == len(CPU_NODES) + 1
    for name, verdict in verdicts.items():
        (row,) = [r for r in rows if r.startswith(f"| `{name}` |")]
        assert row.endswith(f"| **{verdict}** |" if verdict in ("regressed", "improved") else f"| {verdict} |")
    assert "FAIL (1 regressed)" in markdown


@pytest.fixture
def compared_with_compare_fail(constructed, shared) -> Run:
    # Only the two constructed benchmarks: at 10% an unchanged one could regress on noise.
    return run_once(shared, "compare_fail", lambda folder: pytest_perf(
        *FAST, "--perf-backend", "numpy", "-k", "(hidden or grad_w1) and not stage_out", "-rA", "-v", "--benchmark-compare",
        "--benchmark-compare-fail=median:10%", storage_option(constructed)))


@slow
def test_compare_fail_sets_the_gate_s_threshold_and_fails_the_test_not_the_session(compared_with_compare_fail):
    run = compared_with_compare_fail
    assert run.rc == 1, run.output
    assert run.outcomes()["FAILED"] == [node("hidden", "numpy")]
    assert run.outcomes()["PASSED"] == [node("grad_w1", "numpy")]
    assert "threshold: 10% from --benchmark-compare-fail" in run.section("perf gate")
    for text in ("Traceback", "PerformanceRegression", "Performance has regressed"):
        assert text not in run.output


@slow
def test_bonferroni_counts_only_the_benchmarks_compared_in_this_run(compared_with_compare_fail):
    assert "control: Bonferroni over 2 compared benchmarks" in compared_with_compare_fail.section("perf gate")


@slow
def test_an_unchanged_run_passes_and_a_second_save_adds_a_file(saved, tmp_path):
    storage = copy_storage(saved.storage, tmp_path / "storage")
    before = saved_files(storage)
    run = pytest_perf(*FAST, *CPU, *NO_ROOFLINE, *HUGE, "-rA", "-v", "--benchmark-compare", "--benchmark-autosave",
                      storage_option(storage))
    assert run.rc == 0, run.output
    assert set(run.outcomes()["PASSED"]) == CPU_NODES
    assert re.search(r"^PASS: 0 regressed, ", run.section("perf gate"), re.M)
    after = saved_files(storage)
    (first,) = before
    assert after[first] == before[first]  # byte for byte
    assert [Path(name).name[:5] for name in after] == ["0001_", "0002_"]
    assert not list(storage.rglob(".partial-*"))


@slow
def test_an_interrupted_run_saves_nothing_and_says_so(saved, tmp_path):
    storage = copy_storage(saved.storage, tmp_path / "storage")
    before = saved_files(storage)
    run = pytest_perf(*FAST, *CPU, *NO_ROOFLINE, "-p", "perf_interrupt_second", "--benchmark-autosave",
                      storage_option(storage))
    assert run.rc == pytest.ExitCode.INTERRUPTED, run.output
    assert "KeyboardInterrupt" in run.output
    assert "perf: warning: not saving benchmark data: the run was interrupted" in run.output
    assert saved_files(storage) == before
    assert not list(storage.rglob(".partial-*"))


@slow
def test_a_run_stopped_by_maxfail_is_not_saved_either(tmp_path):
    run = pytest_perf(*FAST, "--perf-backend", "numpy", *NO_ROOFLINE, "-p", "perf_wrong_relu", "-x", "--benchmark-autosave",
                      storage_option(tmp_path))
    assert run.rc == session.EXIT_CHECK_FAILED and "stopping after 1 failures" in run.output, run.output
    assert saved_files(tmp_path) == {}


# --------------------------------------------------------------------------- 7. foreign baselines


@slow
def test_a_baseline_from_another_cpu_is_refused_with_one_line_and_passed_over_by_bare_compare(saved, tmp_path):
    storage = copy_storage(saved.storage, tmp_path / "storage")
    edit_saved_run(storage, lambda data: data["machine_info"]["perf_fingerprint"].update(cpu="Another CPU 9000"))
    (path,) = storage.rglob("*.json")
    run = pytest_perf(*FAST, *CPU, "-k", "relu", f"--benchmark-compare={path}", storage_option(storage))
    assert_one_line_error(run, "ERROR: the baseline ", f" was recorded on a different machine (cpu: 'Another CPU 9000' -> "
                               f"{machine.cpu_model()!r}); ", "--perf-allow-foreign-baseline", "--benchmark-autosave")
    bare = pytest_perf(*FAST, *CPU, "-k", "relu", "--benchmark-compare", storage_option(storage))
    assert bare.rc == 0, bare.output
    assert f"perf: warning: passed over 1 newer saved run(s) not comparable with this one: {path.name} (another machine " \
           "fingerprint)" in bare.output
    assert "No baseline to compare with" in bare.output


@slow
def test_a_foreign_baseline_is_compared_when_allowed(saved, tmp_path):
    # The storage lies outside the working directory: pytest-benchmark's own 'machine_info is
    # different' warning would fail formatting its path (an INTERNALERROR); the plugin says it in
    # one line instead.
    storage = copy_storage(saved.storage, tmp_path / "storage")
    edit_saved_run(storage, lambda data: data["machine_info"]["perf_fingerprint"].update(threads={"torch": 4}))
    run = pytest_perf(*FAST, *CPU, *HUGE, "-k", "relu", "-rA", "-v", "--benchmark-compare", "--perf-allow-foreign-baseline",
                      storage_option(storage))
    assert run.rc == 0, run.output
    relu = {n for n in CPU_NODES if "relu" in n}
    assert set(run.outcomes()["PASSED"]) == relu
    rows = gate_rows(run)
    assert {n for n, verdict in rows.items() if verdict != "missing"} == relu  # the deselected ones are listed as missing
    assert re.search(r"Comparing anyway \(--perf-allow-foreign-baseline\): the baseline \S+ was recorded on a different "
                     r"machine \(threads:", run.output)
    assert "Benchmark machine_info is different" not in run.output


def perf_config(allow_foreign: bool = False) -> SimpleNamespace:
    def getoption(key):
        return True if key == "perf_allow_foreign_baseline" and allow_foreign else None

    s = settings(SimpleNamespace(getoption=getoption, getini=lambda key: [] if key == "perf_thresholds" else None))
    config = SimpleNamespace(invocation_params=SimpleNamespace(args=("perf",)), rootpath=Path(__file__).resolve().parents[1])
    config.stash = {plugin.SESSION: session.PerfSession(s, machine.thread_counts(), config)}
    return config


def check_baseline(saved_fingerprint: dict | None, allow_foreign: bool = False, metric: Metric = Metric.TIME) -> str:
    doc = {"machine_info": {} if saved_fingerprint is None else {"perf_fingerprint": saved_fingerprint},
           "benchmarks": [], "perf": {"metric": metric.value}}
    return check_comparable(results.parse_run(doc, "B.json"), machine.fingerprint(), Metric.TIME, allow_foreign)


def test_a_baseline_with_other_thread_counts_is_refused():
    other = {**machine.fingerprint(), "threads": {"openblas": 4, "torch": 4}}
    with pytest.raises(BaselineError) as info:
        check_baseline(other)
    message = str(info.value)
    assert message.startswith("the baseline B.json was recorded on a different machine "
                              "(threads: {'openblas': 4, 'torch': 4} -> {")
    assert "cpu:" not in message and "--perf-allow-foreign-baseline" in message and "\n" not in message


def test_a_baseline_without_a_fingerprint_is_refused():
    with pytest.raises(BaselineError, match=r"^the baseline B.json has no machine fingerprint; .*-allow-foreign-baseline$"):
        check_baseline(None)


def test_the_same_fingerprint_or_the_flag_lets_the_baseline_through():
    assert check_baseline(machine.fingerprint()) == ""
    warning = check_baseline(None, allow_foreign=True)
    assert warning == "Comparing anyway (--perf-allow-foreign-baseline): the baseline B.json has no machine fingerprint."
    assert "cpu: 'elsewhere'" in check_baseline({**machine.fingerprint(), "cpu": "elsewhere"}, allow_foreign=True)


def test_a_baseline_of_another_metric_is_refused_even_with_the_flag():
    with pytest.raises(BaselineError, match=r"holds instructions and this run measures time"):
        check_baseline(machine.fingerprint(), allow_foreign=True, metric=Metric.INSTRUCTIONS)


def test_pytest_benchmark_sees_the_same_machine_info_once_the_suite_accepted_the_baseline():
    current, saved = {"node": "here", "perf_fingerprint": {}}, {"machine_info": {"node": "elsewhere"}}
    plugin.pytest_benchmark_compare_machine_info(perf_config(), None, current, saved)
    assert saved["machine_info"] is current


def test_machine_info_loses_the_momentary_clock_and_gains_the_fingerprint():
    info = {"cpu": {"brand_raw": "X", "hz_actual": [2.1e9, 0], "hz_actual_friendly": "2.1 GHz", "hz_advertised": [2.5e9, 0]}}
    plugin.pytest_benchmark_update_machine_info(perf_config(), info)
    assert info["cpu"] == {"brand_raw": "X", "hz_advertised": [2.5e9, 0]}
    assert info["perf_fingerprint"] == machine.fingerprint()


# --------------------------------------------------------------------------- 8. atomic saves, in process


def test_saves_are_numbered_and_never_replace_an_existing_file(tmp_path, monkeypatch):
    results.save_new(tmp_path, "first", b'{"benchmarks": [1]}')
    results.save_new(tmp_path, "second", b'{"benchmarks": [2]}')
    files = saved_files(tmp_path)
    assert list(files) == ["0001_first.json", "0002_second.json"]
    # A writer that ignores the lock took 0003 under this very name meanwhile: the link fails, 0004 is taken.
    (tmp_path / "0003_first.json").write_bytes(b"theirs")
    monkeypatch.setattr(results, "saved_files", lambda folder: [tmp_path / "0001_first.json", tmp_path / "0002_second.json"])
    path = results.save_new(tmp_path, "first", b"3")
    assert path.name == "0004_first.json" and saved_files(tmp_path) == {**files, "0003_first.json": b"theirs",
                                                                           "0004_first.json": b"3"}


def test_a_save_that_fails_midway_leaves_nothing_behind(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(results.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        results.save_new(tmp_path, "run", b"{}")
    assert saved_files(tmp_path) == {}


def test_a_report_through_a_link_or_onto_a_device_is_written_there_never_replacing_either(tmp_path):
    (tmp_path / "reports").mkdir()
    to_file = tmp_path / "latest.json"
    to_file.symlink_to(tmp_path / "reports" / "r.json")
    results.write_json(to_file, {"a": 1})
    assert to_file.is_symlink() and json.loads((tmp_path / "reports" / "r.json").read_text()) == {"a": 1}
    to_device = tmp_path / "null.json"
    to_device.symlink_to(os.devnull)
    results.write_json(to_device, {"a": 1})
    assert to_device.is_symlink() and Path(os.devnull).is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "null.json", "reports"]  # no temporary left


# --------------------------------------------------------------------------- 9. roofline shares, in process


def extra(stage: str, backend: str = "numpy", dtype: str = "float32", **rates) -> dict:
    return {"extra_info": {"stage": stage, "backend": backend, "dtype": dtype, "gflops": 0.0, "gbps": 0.0, **rates}}


def test_each_stage_gets_its_share_of_the_roofline_measured_in_the_same_run():
    benchmarks = [
        extra("hidden", gflops=5.0, gbps=2.0), extra("relu", gflops=0.1, gbps=4.0), extra("train_step", gflops=20.0),
        extra("tutorial_step", gflops=10.0), extra("peak_matmul", gflops=50.0, gbps=1.0), extra("peak_copy", gbps=16.0),
        extra("relu", backend="torch-cpu", gbps=8.0),  # no probe of torch-cpu in this run
        extra("relu", dtype="float64", gbps=8.0),  # nor of float64
        {"name": "not a perf benchmark"},
    ]
    plugin.pytest_benchmark_update_json(perf_config(), [], {"benchmarks": benchmarks})
    info = [b.get("extra_info", {}) for b in benchmarks]
    assert info[0]["peak_share"] == pytest.approx(0.1) and info[0]["peak"] == "50 GFLOP/s (peak_matmul)"
    assert info[1]["peak_share"] == pytest.approx(0.25) and info[1]["peak"] == "16 GB/s (peak_copy)"
    assert info[2]["peak_share"] == pytest.approx(0.4) and info[3]["peak_share"] == pytest.approx(0.2)
    for i in (4, 5, 6, 7, 8):
        assert "peak_share" not in info[i]
    assert benchmarks[8] == {"name": "not a perf benchmark"}


# --------------------------------------------------------------------------- 11. xdist


@slow
def test_under_xdist_every_benchmark_runs_once_as_a_smoke_test():
    run = pytest_perf("-p", "no:cacheprovider", "--perf-size", "8,16,8,4", "-n", "2", "-rA")
    assert run.rc == 0, run.output
    available = kernels.available_backends()
    expected = [node(stage, backend) for backend in available for stage in (*STEPS, *PROBES)
                if stage != "graph_step" or backend.startswith("torch-cuda")]  # skipped elsewhere
    assert sorted(run.outcomes()["PASSED"]) == sorted(expected)
    assert "Benchmarks are automatically disabled because xdist plugin is active" in run.output
