"""The logic behind the workflow steps (ci/), on constructed inputs: the baseline store, the GPU
job with a stand-in for ``pytest perf``, the pull-request gate's decisions, the merged report.

Every way a job can be handed something broken (a damaged baseline, a folder that is a file, an
unreadable report) must end with exit status 2, one line saying what, and outcome.json and the
job summary written as far as the job got: never a traceback, never exit 1, which means
"regression". Nothing here depends on a timing.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ci import baselines, github, gpu_baseline, gpu_env, gpu_setup, merge_report, pr_gate
from perf import machine, results
from perf.cli import ERROR, INTERRUPTED, PASS, REGRESSION
from perf.errors import UsageError
from tests.damage import damaged_runs

ROOT = Path(__file__).resolve().parent.parent
FP = {"cpu": "Xeon", "cpus": 16, "python": "3.12.1", "numpy": "2.1", "torch": "2.13.0", "cuda": "12.8",
      "gpus": ["NVIDIA H100 80GB HBM3"], "gpu_driver": "570.1", "threads": {"torch": 1}, "blas": ["openblas 0.3"]}
KEY = machine.key(FP)
CLASS = "self-hosted,linux,gpu"


def run_doc(label: str = "run", fingerprint: dict | None = None, benchmarks: int = 2, data=(1.0, 1.1)) -> dict:
    """A pytest-benchmark run as the perf plugin saves it (only what results.load_run reads)."""
    return {"machine_info": {"perf_fingerprint": fingerprint or FP}, "label": label, "datetime": "2026-12-01T00:00:00",
            "commit_info": {"id": "0123456789abcdef", "dirty": False},
            "benchmarks": [{"fullname": f"perf/test_stages.py::t[{i}]", "stats": {"data": list(data), "median": 1.05}}
                           for i in range(benchmarks)]}


def save_run(store: baselines.Store, key: str, doc: dict | bytes, name: str = "c0ffee") -> Path:
    folder = store.runs_dir(key)
    folder.mkdir(parents=True, exist_ok=True)
    return results.save_new(folder, name, doc if isinstance(doc, bytes) else json.dumps(doc).encode())


def verdicts(regressed: list[str], passed: bool | None = None) -> dict:
    """A verdict report as the gate writes it (perf.results.verdict_report's shape)."""
    rows = [{"name": n, "verdict": "regressed"} for n in regressed] + [{"name": "z", "verdict": "unchanged"}]
    line = f"FAIL: {len(regressed)} regressed" if regressed else "PASS: 0 regressed"
    return {"meta": {}, "summary": {"passed": not regressed if passed is None else passed, "counts": {}, "total": len(rows),
                                    "line": line}, "comparisons": rows}


def old_layout(store: baselines.Store, key: str, names: list[str], current: str | bytes | None,
               broken: str = "") -> Path:
    """The store as ci wrote it before the storage: snapshots/<name>/baseline.json + meta.json, a 'current' pointer."""
    kd = store.key_dir(key)
    for name in names:
        (kd / "snapshots" / name).mkdir(parents=True)
        text = "{not json" if name == broken else json.dumps(run_doc(name))
        (kd / "snapshots" / name / "baseline.json").write_text(text)
        (kd / "snapshots" / name / "meta.json").write_text(json.dumps({"commit": name}))
    (kd / "fingerprint.json").write_text(json.dumps(FP))
    if current is not None:
        (kd / "current").write_bytes(current if isinstance(current, bytes) else f"{current}\n".encode())
    return kd


def labels_of(paths) -> list[str]:
    return [json.loads(Path(p).read_text())["label"] for p in paths]


# --------------------------------------------------------------------------- ci.github


def test_summary_outputs_and_annotations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    github.append_summary("# one")
    github.append_summary("two\n")
    assert summary.read_text() == "# one\ntwo\n"
    github.set_outputs(outputs, status="pass", lines="a\nb")
    text = outputs.read_text()
    assert text.startswith("status=pass\nlines<<EOF_") and "\na\nb\nEOF_" in text
    assert github.annotation("error", "50% slower\nsee", title="a:b,c") == "::error title=a%3Ab%2Cc::50%25 slower%0Asee"
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    github.annotate("warning", "w")
    assert capsys.readouterr().err == "::warning::w\n"
    assert [github.truthy(v) for v in ("true", "True", "1", "", None, "false")] == [True, True, True, False, False, False]


# --------------------------------------------------------------------------- ci.baselines


def test_runner_classes_are_label_sets() -> None:
    assert baselines.class_slug("self-hosted, linux, gpu") == "gpu-linux-self-hosted"
    assert baselines.class_slug('["gpu","Linux","self-hosted"]') == "gpu-linux-self-hosted"
    assert baselines.class_slug(["self-hosted", "a100 80/gb"]) == "a100_80_gb-self-hosted"
    for bad in (" , ", "[1", '["a"'):
        with pytest.raises(baselines.StoreError):
            baselines.class_slug(bad)


def test_baselines_are_keyed_by_the_machine_fingerprint() -> None:
    assert re.fullmatch(r"nvidia_h100_80gb_hbm3-[0-9a-f]{12}", KEY)
    assert KEY == "nvidia_h100_80gb_hbm3-10864ad734c8", "the folder names of existing stores must stay valid"
    assert machine.key({**FP, "threads": {"torch": 8}, "blas": []}) == KEY  # per-process fields
    assert machine.key({**FP, "gpu_driver": "575.2"}) != KEY
    assert machine.key({**FP, "gpus": []}).startswith("xeon-")


def test_where_baselines_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(baselines.ROOT_VARIABLE, raising=False)
    assert baselines.root() == Path("~/.relu-perf-baselines").expanduser()
    assert baselines.root(env={baselines.ROOT_VARIABLE: "/srv/b"}) == Path("/srv/b")
    assert baselines.root("/x", env={baselines.ROOT_VARIABLE: "/srv/b"}) == Path("/x")
    store = baselines.Store("/srv/b", CLASS)
    assert store.key_dir("k-1") == Path("/srv/b/gpu-linux-self-hosted/k-1")
    assert store.runs_dir("k-1") == Path("/srv/b/gpu-linux-self-hosted/k-1") / baselines.machine_id()
    assert re.fullmatch(r"\w+-\w+-\d+\.\d+-\d+bit", baselines.machine_id())  # pytest-benchmark's folder
    with pytest.raises(baselines.StoreError):
        store.key_dir("../escape")


def test_the_newest_saved_run_is_the_baseline_and_pruning_keeps_a_short_history(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    assert store.newest(KEY) is None and store.saved(KEY) == []
    keep = 5
    for i in range(keep + 2):
        save_run(store, KEY, run_doc(f"run{i}"))
        assert store.newest(KEY).source.endswith(f"{i + 1:04d}_c0ffee.json")
    removed = store.prune(KEY, keep)
    assert [p.name[:4] for p in removed] == ["0001", "0002"] and not any(p.exists() for p in removed)
    assert labels_of(store.saved(KEY)) == [f"run{i}" for i in range(2, keep + 2)]
    assert labels_of([store.newest(KEY).source]) == [f"run{keep + 1}"]


def test_pruning_never_drops_a_run_a_step_points_at(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    for i in range(8):
        save_run(store, KEY, run_doc(f"run{i}"))
    saved = store.saved(KEY)
    removed = store.prune(KEY, 3, protect={str(saved[1])})
    assert [p.name[:4] for p in removed] == ["0001", "0003", "0004", "0005"]
    assert [p.name[:4] for p in store.saved(KEY)] == ["0002", "0006", "0007", "0008"]
    assert baselines.KEEP >= 100


def test_a_damaged_newest_run_is_an_error_not_passed_over(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    save_run(store, KEY, run_doc("good"))
    bad = save_run(store, KEY, b'"a string"')
    with pytest.raises(results.ResultsError, match=re.escape(str(bad))):
        store.newest(KEY)


def test_what_a_killed_save_leaves_is_tidied_under_the_lock(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    kept = save_run(store, KEY, run_doc("kept"))
    partial = store.runs_dir(KEY) / (baselines.PARTIAL + "killed.tmp")  # results.save_new's temporary file, after SIGKILL
    partial.write_text('{"benchmarks": [')
    assert store.saved(KEY) == [kept]  # never mistaken for a saved run
    store.tidy(KEY)
    assert not partial.exists() and store.saved(KEY) == [kept]


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    with store.lock():
        with pytest.raises(baselines.LockBusyError, match="another save"):
            with store.lock(timeout=0):
                pass
    with store.lock(timeout=0):
        pass


def test_reset_forgets_a_baseline(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    other = machine.key({**FP, "cuda": "13.0"})
    save_run(store, KEY, run_doc("a"))
    save_run(store, other, run_doc("b"))
    assert store.reset(KEY) == [KEY]
    assert store.newest(KEY) is None and store.newest(other) is not None
    assert store.reset() == [other] and store.keys() == []


def test_the_earlier_layout_is_migrated_once_in_order(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    names = [f"2026010{i}T000000Z-c{i}-x" for i in range(1, 9)]
    # 8 snapshots; the last one was written by a save cut before it swapped the pointer: never in force
    kd = old_layout(store, KEY, names, current=names[-2])
    assert store.old_layout(KEY)
    assert store.migrate(KEY) == baselines.MIGRATED
    assert labels_of(store.saved(KEY)) == names[-1 - baselines.MIGRATED:-1]
    assert [p.name for p in store.saved(KEY)][0] == f"0001_{names[2]}.json"
    assert sorted(p.name for p in kd.iterdir()) == [baselines.machine_id()]  # current, fingerprint.json, snapshots: gone
    assert store.migrate(KEY) == 0 and len(store.saved(KEY)) == baselines.MIGRATED


def test_a_migration_cut_short_is_finished_without_duplicates(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    names = ["20260101T000000Z-a-x", "20260102T000000Z-b-x"]
    old_layout(store, KEY, names, current=names[-1])
    save_run(store, KEY, run_doc(names[0]), name=names[0])  # moved before the cut
    assert store.migrate(KEY) == 2
    assert labels_of(store.saved(KEY)) == names


@pytest.mark.parametrize("damage", ["pointer not UTF-8", "baseline in force not JSON"])
def test_a_damaged_earlier_layout_is_an_error_that_names_it(tmp_path: Path, damage: str) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    names = ["20260101T000000Z-a-x", "20260102T000000Z-b-x"]
    if damage == "pointer not UTF-8":
        old_layout(store, KEY, names, current=b"\xff\xfe\n")
        where = "current"
    else:
        old_layout(store, KEY, names, current=names[-1], broken=names[-1])
        where = "baseline.json"
    with pytest.raises(baselines.StoreError, match=where) as info:
        store.migrate(KEY)
    assert "\n" not in str(info.value) and "reset" in str(info.value)
    assert store.old_layout(KEY) and store.saved(KEY) == []  # nothing half done


# --------------------------------------------------------------------------- ci.gpu_baseline


@pytest.mark.parametrize("env, mode", [
    ({"GITHUB_EVENT_NAME": "push", "GITHUB_REF_NAME": "main"}, "save"),
    ({"GITHUB_EVENT_NAME": "push", "GITHUB_REF_NAME": "trunk", "DEFAULT_BRANCH": "trunk"}, "save"),
    ({"GITHUB_EVENT_NAME": "push", "GITHUB_REF_NAME": "feature"}, "compare"),
    ({"GITHUB_EVENT_NAME": "pull_request", "GITHUB_REF_NAME": "12/merge"}, "compare"),
    ({"GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_REF_NAME": "main", "SAVE_BASELINE": "true"}, "save"),
    ({"GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_REF_NAME": "main", "SAVE_BASELINE": "false"}, "compare"),
    ({"GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_REF_NAME": "x", "SAVE_BASELINE": ""}, "compare"),
    ({}, "compare"),
])
def test_auto_saves_on_the_default_branch_and_compares_elsewhere(env: dict, mode: str) -> None:
    assert gpu_baseline.resolve_mode("auto", env) == mode
    assert gpu_baseline.resolve_mode("save", env) == "save"


def test_a_baseline_is_saved_by_hand_from_the_default_branch_only() -> None:
    with pytest.raises(UsageError, match="default branch"):
        gpu_baseline.resolve_mode("auto", {"GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_REF_NAME": "x",
                                           "SAVE_BASELINE": "true"})


def test_gpu_baseline_arguments() -> None:
    opts = gpu_baseline.parse_args(["compare", f"--runner-class={CLASS}", "--pytest-args", "-k 'a or b'", "--", "-x"])
    assert opts.pytest == ["-k", "a or b", "-x"]
    for bad in (["save"], ["compare", "--runner-class=g", "--threads=0"], ["bogus"],
                ["compare", "--runner-class=g", "--pytest-args=-k 'a"]):
        with pytest.raises(UsageError):
            gpu_baseline.parse_args(bad)


def test_the_pytest_commands(tmp_path: Path) -> None:
    storage, baseline = tmp_path / "store", tmp_path / "store" / "m" / "0003_abc.json"
    cmd = gpu_baseline.pytest_command(tmp_path, ["--perf-backend", "torch-cuda"], 1, storage, compare=baseline)
    assert cmd[1:4] == ["-m", "pytest", "perf"] and "--perf-threads=1" in cmd and cmd[-2:] == ["--perf-backend", "torch-cuda"]
    assert f"--benchmark-storage=file://{storage.resolve()}" in cmd and f"--benchmark-compare={baseline}" in cmd
    assert f"--perf-report-json={tmp_path / 'gate.json'}" in cmd
    assert not any("allow-foreign" in a or a.startswith("--benchmark-save") for a in cmd)  # the plugin's rule, not waived
    cmd = gpu_baseline.pytest_command(tmp_path, ["--perf-threads", "2"], 1, storage, save="abc")
    assert "--benchmark-save=abc" in cmd and "--benchmark-save-data" in cmd
    assert "--perf-threads=1" not in cmd and not any(a.startswith("--benchmark-compare") for a in cmd)
    probe = gpu_baseline.probe_command(["-k", "relu"], 1)
    assert probe[3:] == ["perf", "-q", "-p", "no:cacheprovider", "--collect-only", "-p", "ci.probe", "--perf-threads=1",
                         "-k", "relu"]


class FakePytest:
    """Stands in for ``pytest perf``: does what the perf plugin would (current.json, the save into the
    storage, gate.json against the named baseline) and returns an exit status."""

    def __init__(self) -> None:
        self.fingerprint, self.rc, self.regressed, self.benchmarks, self.calls = dict(FP), 0, False, 2, []
        self.data, self.save_anyway, self.report = (1.0, 1.1), False, None

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        if self.rc == "interrupt":
            raise KeyboardInterrupt
        opt = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in cmd if a.startswith("--") and "=" in a}
        out = Path(opt["--benchmark-json"]).parent
        doc = run_doc(f"call{len(self.calls)}", self.fingerprint, self.benchmarks, self.data)
        if self.benchmarks:  # pytest-benchmark writes nothing when no benchmark ran
            (out / "current.json").write_text(json.dumps(doc))
        if "--benchmark-save" in opt and self.benchmarks and (self.rc == 0 or self.save_anyway):
            folder = Path(opt["--benchmark-storage"].removeprefix("file://")) / baselines.machine_id()
            folder.mkdir(parents=True, exist_ok=True)
            results.save_new(folder, opt["--benchmark-save"], json.dumps(doc).encode())
        if "--benchmark-compare" in opt:
            self.compared = opt["--benchmark-compare"]
            report = self.report if self.report is not None else json.dumps(verdicts(["t[0]"] if self.regressed else []))
            Path(opt["--perf-report-json"]).write_text(report)
            Path(opt["--perf-report-md"]).write_text("### Performance comparison: a table\n")
        return self.rc, ["last line of pytest"]


@pytest.fixture
def gpu_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """ci.gpu_baseline in a fake job: a stand-in pytest, a fake GPU, the Actions files in tmp_path."""
    fake = FakePytest()
    monkeypatch.setattr(gpu_baseline, "run_tee", fake)
    record = {"gpus": [{"name": "NVIDIA H100", "driver": "570.1"}], "driver": "570.1", "cuda_runtime": "12.8",
              "cuda_available": True, "torch": "2.13.0"}
    probed = []
    monkeypatch.setattr(gpu_baseline, "read_machine", lambda opts: probed.append(opts) or (dict(record), dict(FP)))
    for var in ("GITHUB_EVENT_NAME", "GITHUB_REF_NAME", "DEFAULT_BRANCH", "SAVE_BASELINE", "PERF_ACCEPT_REGRESSION",
                "GITHUB_ACTIONS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GITHUB_SHA", "0123456789abcdef0123")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "outputs"))

    def job(mode: str, *extra: str, root: Path | None = None, out: Path | None = None) -> tuple[int, dict]:
        o = out or job.out
        code = gpu_baseline.main([mode, f"--runner-class={CLASS}", f"--root={root or job.root}", f"--out={o}", *extra,
                                  "--", "--perf-backend", "torch-cuda"])
        outcome = o / "outcome.json"
        return code, json.loads(outcome.read_text()) if outcome.is_file() else {}

    job.fake, job.probed, job.root, job.out, job.tmp = fake, probed, tmp_path / "baselines", tmp_path / "out", tmp_path
    job.store = baselines.Store(job.root, CLASS)
    job.summary = lambda: (tmp_path / "summary.md").read_text() if (tmp_path / "summary.md").exists() else ""
    return job


def test_gpu_job_without_a_baseline_runs_and_gates_nothing(gpu_job) -> None:
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (PASS, "no-baseline")
    assert "push to the default branch saves one" in outcome["message"]
    assert "no baseline yet" in gpu_job.summary()
    assert not any(a.startswith("--benchmark-compare") for a in gpu_job.fake.calls[-1])
    assert json.loads((gpu_job.out / "environment.json").read_text())["key"] == KEY


def test_gpu_job_saves_into_the_storage_then_compares_against_the_newest_run(gpu_job) -> None:
    code, outcome = gpu_job("save")
    assert (code, outcome["status"]) == (PASS, "saved")
    (saved,) = gpu_job.store.saved(KEY)
    assert saved.parent == gpu_job.root / "gpu-linux-self-hosted" / KEY / baselines.machine_id()
    assert saved.name == "0001_0123456789ab.json" and outcome["baseline"] == str(saved)
    assert f"--benchmark-storage=file://{gpu_job.store.key_dir(KEY).resolve()}" in gpu_job.fake.calls[-1]
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (PASS, "pass")
    assert gpu_job.fake.compared == str(saved) and outcome["baseline"] == str(saved)
    summary = gpu_job.summary()
    assert "| GPU | NVIDIA H100 |" in summary and "| driver | 570.1 |" in summary
    assert "| CUDA (torch built with) | 12.8 |" in summary and "Performance comparison: a table" in summary
    assert "status=pass" in (gpu_job.tmp / "outputs").read_text()


def test_gpu_job_keeps_the_newest_runs_only(gpu_job) -> None:
    for _ in range(5 + 2):
        assert gpu_job("save", "--keep", "5")[0] == PASS
    assert [p.name[:4] for p in gpu_job.store.saved(KEY)] == [f"{i:04d}" for i in range(3, 5 + 3)]
    gpu_job("compare")
    assert gpu_job.fake.compared == str(gpu_job.store.saved(KEY)[-1])


def test_gpu_job_regression_fails_unless_accepted(gpu_job, monkeypatch) -> None:
    gpu_job("save")
    gpu_job.fake.rc, gpu_job.fake.regressed = 1, True
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (REGRESSION, "regression")
    assert "FAIL: 1 regressed" in gpu_job.summary()
    monkeypatch.setenv("PERF_ACCEPT_REGRESSION", "true")
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (PASS, "accepted")


@pytest.mark.parametrize("rc, regressed, report", [
    (7, False, None),     # a test failed that is not a regression
    (4, False, None),     # the plugin refused the baseline or an argument
    (6, False, None),     # the report could not be written
    (1, False, None),     # exit 1 with a passing report: they disagree
    (0, True, None),      # exit 0 with a regression in the report
    (1, True, "{oops"),   # issue 10: an unreadable report after the run
    (1, True, '{"summary": {}}'),
])
def test_gpu_job_failure_that_is_no_regression_is_an_error(gpu_job, capsys, rc, regressed, report) -> None:
    gpu_job("save")
    gpu_job.fake.rc, gpu_job.fake.regressed, gpu_job.fake.report = rc, regressed, report
    capsys.readouterr()
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (ERROR, "error"), outcome
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_gpu_job_does_not_gate_on_a_baseline_from_another_setup(gpu_job) -> None:
    gpu_job.fake.fingerprint = {**FP, "threads": {"torch": 4}}  # same machine key, other threads
    gpu_job("save")
    gpu_job.fake.fingerprint, gpu_job.fake.regressed = dict(FP), True  # it would regress, if compared
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (PASS, "foreign-baseline")
    assert "threads" in outcome["message"] and "not gated" in outcome["message"]
    assert not any(a.startswith(("--benchmark-compare", "--perf-allow")) for a in gpu_job.fake.calls[-1])


@pytest.mark.parametrize("failure", ["pytest failed", "a failed run saved anyway", "no benchmark ran",
                                     "no raw samples", "cancelled"])
def test_gpu_job_saves_only_a_complete_run(gpu_job, failure: str) -> None:
    gpu_job("save")
    before = gpu_job.store.saved(KEY)
    fake = gpu_job.fake
    if failure == "pytest failed":
        fake.rc = 7
    elif failure == "a failed run saved anyway":  # e.g. --perf-save-failed in the pytest arguments
        fake.rc, fake.save_anyway = 7, True
    elif failure == "no benchmark ran":
        fake.benchmarks = 0
    elif failure == "no raw samples":
        fake.data = ()
    else:
        fake.rc = "interrupt"
    code, outcome = gpu_job("save")
    if failure == "cancelled":
        assert code == INTERRUPTED
    else:
        assert (code, outcome["status"]) == (ERROR, "error") and "nothing saved" in outcome["message"]
    assert gpu_job.store.saved(KEY) == before


def test_gpu_job_requires_a_gpu(gpu_job, monkeypatch) -> None:
    cpu_only = {"gpus": [], "cuda_available": False, "torch": "2.13.0+cpu"}
    monkeypatch.setattr(gpu_baseline, "read_machine", lambda opts: (cpu_only, FP))
    code, outcome = gpu_job("compare", "--require-cuda")
    assert (code, outcome["status"]) == (ERROR, "error") and "no CUDA device" in outcome["message"]
    assert gpu_job.fake.calls == []


def test_gpu_job_moves_an_earlier_store_into_the_storage(gpu_job) -> None:
    names = ["20260101T000000Z-a-x", "20260102T000000Z-b-x"]
    old_layout(gpu_job.store, KEY, names, current=names[-1])
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (PASS, "pass")
    assert labels_of([gpu_job.fake.compared]) == [names[-1]] and not gpu_job.store.old_layout(KEY)


# Issue 10: a damaged store or an unusable folder is exit 2, one line, outcome.json and the job summary
# written as far as the job got; before, each was a traceback (exit 1, "regression") and no outcome.json.


@pytest.mark.parametrize("damage", ["newest saved run not JSON", "newest saved run a list", "old pointer not UTF-8",
                                    "old baseline in force not JSON"])
def test_gpu_job_on_a_damaged_baseline_is_an_error_before_measuring(gpu_job, capsys, damage: str) -> None:
    if damage.startswith("newest"):
        save_run(gpu_job.store, KEY, run_doc("good"))
        save_run(gpu_job.store, KEY, b"{not json" if damage.endswith("not JSON") else b"[1, 2]")
    elif damage == "old pointer not UTF-8":
        old_layout(gpu_job.store, KEY, ["20260101T000000Z-a-x"], current=b"\xff\xfe")
    else:
        old_layout(gpu_job.store, KEY, ["20260101T000000Z-a-x"], current="20260101T000000Z-a-x",
                   broken="20260101T000000Z-a-x")
    capsys.readouterr()
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (ERROR, "error")
    assert "\n" not in outcome["message"] and gpu_job.fake.calls == []  # nothing measured ungated
    assert len(capsys.readouterr().err.strip().splitlines()) == 1 and "error: fail" in gpu_job.summary()


@pytest.mark.parametrize("name", [n for n, _, _ in damaged_runs(run_doc("good"))])
def test_gpu_job_on_every_kind_of_damaged_newest_run_is_one_line_naming_it(gpu_job, capsys, name: str) -> None:
    ((data, why),) = [(d, w) for n, d, w in damaged_runs(run_doc("good")) if n == name]
    save_run(gpu_job.store, KEY, run_doc("good"))
    path = save_run(gpu_job.store, KEY, data)
    capsys.readouterr()
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (ERROR, "error") and gpu_job.fake.calls == []
    assert str(path) in outcome["message"] and why in outcome["message"] and "\n" not in outcome["message"]
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("mode", ["save", "compare"])
def test_gpu_job_with_a_root_under_a_file_is_an_error_before_measuring(gpu_job, capsys, mode: str) -> None:
    (gpu_job.tmp / "file").write_text("x")
    capsys.readouterr()
    code, outcome = gpu_job(mode, root=gpu_job.tmp / "file" / "root")
    assert (code, outcome["status"]) == (ERROR, "error") and "is a file" in outcome["message"]
    assert gpu_job.probed == [] and gpu_job.fake.calls == []
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["an existing file", "under a file"])
def test_gpu_job_with_an_unusable_out_is_an_error_before_measuring(gpu_job, capsys, where: str) -> None:
    (gpu_job.tmp / "file").write_text("x")
    out = gpu_job.tmp / "file" if where == "an existing file" else gpu_job.tmp / "file" / "out"
    capsys.readouterr()
    code, outcome = gpu_job("compare", out=out)
    assert (code, outcome) == (ERROR, {}) and gpu_job.probed == [] and gpu_job.fake.calls == []
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "--out" in err and "error: fail" in gpu_job.summary()


def test_gpu_baseline_reset_and_list(gpu_job, capsys) -> None:
    gpu_job("save")
    capsys.readouterr()
    assert gpu_baseline.main(["list", f"--root={gpu_job.root}"]) == PASS
    (row,) = json.loads(capsys.readouterr().out)
    assert row["class"] == "gpu-linux-self-hosted" and row["gpus"] == FP["gpus"] and row["saved runs"] == 1
    assert row["commit"] == "0123456789" and row["key"] == KEY
    assert gpu_baseline.main(["reset", f"--runner-class={CLASS}", f"--root={gpu_job.root}"]) == PASS
    assert gpu_job.store.keys() == []
    assert gpu_baseline.main(["save", f"--root={gpu_job.root}"]) == ERROR  # no runner class


@pytest.mark.parametrize("meta", ["[1, 2]", '"a string"', "{not json"])
def test_gpu_baseline_list_of_an_earlier_store_reads_no_meta(gpu_job, capsys, meta: str) -> None:
    kd = old_layout(gpu_job.store, KEY, ["20260101T000000Z-a-x"], current="20260101T000000Z-a-x")
    (kd / "snapshots" / "20260101T000000Z-a-x" / "meta.json").write_text(meta)  # issue 10: it crashed list
    assert gpu_baseline.main(["list", f"--root={gpu_job.root}"]) == PASS
    (row,) = json.loads(capsys.readouterr().out)
    assert "earlier layout" in row["note"]


def test_gpu_baseline_list_names_an_unreadable_baseline(gpu_job, capsys) -> None:
    gpu_job("save")
    bad = save_run(gpu_job.store, KEY, b'"a string"')
    capsys.readouterr()
    assert gpu_baseline.main(["list", f"--root={gpu_job.root}"]) == ERROR
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)
    assert row["baseline"] == str(bad)
    (err,) = captured.err.strip().splitlines()
    assert str(bad) in err
    (gpu_job.tmp / "file").write_text("x")
    assert gpu_baseline.main(["list", f"--root={gpu_job.tmp / 'file'}"]) == ERROR


@pytest.mark.slow
def test_the_probe_reads_the_fingerprint_the_plugin_compares_and_rejects_bad_arguments() -> None:
    import argparse

    opts = argparse.Namespace(pytest=["--perf-backend", "numpy", "--perf-size", "seed"], threads=1)
    record, fingerprint = gpu_baseline.read_machine(opts)
    assert fingerprint["threads"]["openblas"] == 1 and fingerprint["cpu"] == machine.cpu_model()
    assert {"gpus", "driver", "cuda_available"} <= set(record)
    opts.pytest = ["--perf-size", "nonsense"]
    with pytest.raises(UsageError, match=r"status 4: .*--perf-size='nonsense'") as info:
        gpu_baseline.read_machine(opts)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_gpu_baseline_end_to_end_with_the_real_suite_on_cpu(tmp_path: Path) -> None:
    """save, then compare, through real ``pytest perf`` runs (numpy, two small stages): the probe, the
    plugin's save into the storage and its gate against the newest run. The wiring, not the verdict."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PYTEST_", "PERF_"))}
    base = [sys.executable, "-m", "ci.gpu_baseline"]
    args = [f"--runner-class={CLASS}", f"--root={tmp_path / 'b'}", f"--out={tmp_path / 'out'}", "--",
            "--perf-backend", "numpy", "--perf-size", "seed", "-k", "relu and not backward and not stage_out",
            "--benchmark-max-time=0.02"]
    saved = subprocess.run([*base, "save", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert saved.returncode == 0, saved.stdout[-3000:] + saved.stderr[-3000:]
    (run,) = baselines.Store(tmp_path / "b", CLASS).saved(json.loads((tmp_path / "out" / "outcome.json").read_text())["key"])
    compared = subprocess.run([*base, "compare", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    outcome = json.loads((tmp_path / "out" / "outcome.json").read_text())
    assert (compared.returncode, outcome["status"]) in ((0, "pass"), (1, "regression")), compared.stdout[-3000:]
    assert outcome["baseline"] == str(run)
    gate = results.load_verdicts(tmp_path / "out" / "gate.json")
    assert {r["name"] for r in gate.rows} == {"perf/test_stages.py::test_stage[seed-relu-numpy]",
                                              "perf/test_stages.py::test_stage[seed-grad_h_relu-numpy]"}


# --------------------------------------------------------------------------- ci.pr_gate


def test_pr_gate_arguments() -> None:
    opts = pr_gate.parse_args(["--rounds=3", "--pytest-args", "--perf-size seed -k 'relu or mm'", "--", "--x"])
    assert opts.pytest == ["--perf-size", "seed", "-k", "relu or mm", "--x"] and opts.rounds == 3
    for bad in (["--rounds=0"], ["--threads=0"], ["--bogus"], ["--confirm-rounds=2"], ["--pytest-args", "-k 'a"]):
        with pytest.raises(UsageError):
            pr_gate.parse_args(bad)


def _report(regressed: list[str], passed: bool | None = None) -> results.VerdictReport:
    doc = verdicts(regressed, passed)
    return results.VerdictReport(doc["meta"], doc["summary"]["passed"], {}, doc["summary"]["line"], tuple(doc["comparisons"]))


@pytest.mark.parametrize("rc, report, accept, expected", [
    (0, _report([]), False, ("pass", PASS)),
    (1, _report(["a", "b"]), False, ("regression", REGRESSION)),
    (1, _report(["a"]), True, ("accepted", PASS)),
    (1, _report([]), False, ("error", ERROR)),            # exit 1 and no regression: something else broke
    (0, _report(["a"]), False, ("error", ERROR)),         # exit 0 and a regression: they disagree
    (1, _report(["a"], passed=True), False, ("error", ERROR)),
    (1, None, False, ("error", ERROR)),                   # no report
    (2, None, False, ("error", ERROR)),
])
def test_only_a_regression_the_ab_reports_fails(rc, report, accept, expected) -> None:
    assert pr_gate.decide(rc, report, accept)[:2] == expected


def test_pr_gate_base_is_the_merge_base(tmp_path: Path) -> None:
    genv = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@e", "GIT_CONFIG_GLOBAL": os.devnull}

    def git(*a: str) -> str:
        proc = subprocess.run(["git", "-C", str(tmp_path), *a], check=True, capture_output=True, text=True, env=genv)
        return proc.stdout.strip()

    git("init", "-q", "-b", "main")
    git("commit", "-q", "--allow-empty", "-m", "base")
    fork = git("rev-parse", "HEAD")
    git("checkout", "-q", "-b", "pr")
    git("commit", "-q", "--allow-empty", "-m", "head")
    git("checkout", "-q", "main")
    git("commit", "-q", "--allow-empty", "-m", "main moved on")
    git("checkout", "-q", "pr")
    assert pr_gate.resolve_base(tmp_path, None, "main", None) == fork
    assert pr_gate.resolve_base(tmp_path, "main", None, None) == git("rev-parse", "main")
    assert pr_gate.resolve_base(tmp_path, None, None, None) is None
    with pytest.raises(UsageError, match="not found"):
        pr_gate.resolve_base(tmp_path, None, "develop", None)
    with pytest.raises(UsageError, match="unknown base"):
        pr_gate.resolve_base(tmp_path, "nope", None, None)
    cmd = pr_gate.ab_command(tmp_path, fork, None, 4, "10%", 0, Path("o"), ["--perf-size", "seed"])
    assert cmd[1:3] == ["-m", "perf.ab"] and f"--base={fork}" in cmd and cmd[-3:] == ["--", "--perf-size", "seed"]
    assert f"--json={Path('o') / 'ab.json'}" in cmd and f"--workdir={Path('o') / 'rounds'}" in cmd


@pytest.fixture
def pr_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """ci.pr_gate with a stand-in perf.ab that writes ``job.report`` and exits ``job.rc``."""
    calls = []

    def fake_ab(cmd, **kwargs):
        calls.append(cmd)
        out = Path(next(a for a in cmd if a.startswith("--json=")).split("=", 1)[1])
        if job.report is not None:
            out.write_text(job.report)
            out.with_suffix(".md").write_text("### A/B verdicts\n")
        return job.rc, ["perf.ab: last line"]

    monkeypatch.setattr(pr_gate, "run_tee", fake_ab)
    for var in ("GITHUB_ACTIONS", "PERF_ACCEPT_REGRESSION", "GITHUB_BASE_REF"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "outputs"))

    def job(*extra: str, out: Path | None = None) -> tuple[int, dict]:
        o = out or tmp_path / "out"
        code = pr_gate.main([f"--repo={ROOT}", "--base=HEAD", f"--out={o}", *extra])
        return code, json.loads((o / "outcome.json").read_text()) if (o / "outcome.json").is_file() else {}

    job.calls, job.tmp, job.rc, job.report = calls, tmp_path, 0, json.dumps(verdicts([]))
    job.summary = lambda: (tmp_path / "summary.md").read_text() if (tmp_path / "summary.md").exists() else ""
    return job


def test_pr_gate_one_ab_decides(pr_job) -> None:
    code, outcome = pr_job()
    assert (code, outcome["status"], len(pr_job.calls)) == (PASS, "pass", 1)
    pr_job.rc, pr_job.report = 1, json.dumps(verdicts(["perf/x.py::t"]))
    code, outcome = pr_job()
    assert (code, outcome["status"], outcome["regressed"]) == (REGRESSION, "regression", ["perf/x.py::t"])
    assert len(pr_job.calls) == 2, "no second, confirming A/B: perf.ab rechecks what it could not decide"
    assert "1 regression(s): fail" in pr_job.summary() and "status=regression" in (pr_job.tmp / "outputs").read_text()
    code, outcome = pr_job("--accept-regression")
    assert (code, outcome["status"]) == (PASS, "accepted")


@pytest.mark.parametrize("report", [None, "{oops", "[1]", '{"summary": {"passed": false}}'])
def test_pr_gate_without_a_readable_report_is_an_error(pr_job, capsys, report) -> None:
    pr_job.rc, pr_job.report = 1, report
    capsys.readouterr()
    code, outcome = pr_job()
    assert (code, outcome["status"]) == (ERROR, "error") and outcome["regressed"] == []
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["an existing file", "under a file"])
def test_pr_gate_with_an_unusable_out_is_an_error_before_the_ab(pr_job, capsys, where: str) -> None:
    (pr_job.tmp / "file").write_text("x")
    out = pr_job.tmp / "file" if where == "an existing file" else pr_job.tmp / "file" / "out"
    capsys.readouterr()
    code, outcome = pr_job(out=out)
    assert (code, outcome, pr_job.calls) == (ERROR, {}, [])
    (err,) = capsys.readouterr().err.strip().splitlines()
    assert "--out" in err and "error, nothing decided" in pr_job.summary()


# --------------------------------------------------------------------------- ci.merge_report


def _class_result(top: Path, job: int, runner_class: str, status: str, gpu: str) -> Path:
    d = top / f"gpu-results-{job}"
    d.mkdir(parents=True)
    (d / "outcome.json").write_text(json.dumps({"runner_class": runner_class, "mode": "compare", "status": status,
                                                "message": "compared"}))
    (d / "environment.json").write_text(json.dumps({"gpus": [{"name": gpu}], "driver": "570", "cuda_runtime": "12.8"}))
    (d / "gate.json").write_text(json.dumps(verdicts(["t"] if status == "regression" else [])))
    (d / "gate.md").write_text(f"### Performance comparison: {gpu}\n")
    (d / "current.json").write_text(json.dumps({**run_doc(), "gpu": gpu}))
    return d


def test_merge_report_combines_every_runner_class(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    _class_result(tmp_path / "in", 0, "gpu-linux-self-hosted", "pass", "NVIDIA L4")
    _class_result(tmp_path / "in", 1, "h100-linux-self-hosted", "regression", "NVIDIA H100")
    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0)

    out = tmp_path / "report"
    assert merge_report.main([str(tmp_path / "in"), f"--out={out}"], run=run) == PASS
    assert calls == [merge_report.report_command("perf.report", [out / "results" / "gpu-linux-self-hosted.json",
                                                                 out / "results" / "h100-linux-self-hosted.json"], out)]
    assert json.loads((out / "results" / "h100-linux-self-hosted.json").read_text())["gpu"] == "NVIDIA H100"
    md = (out / "summary.md").read_text()
    assert md.index("`gpu-linux-self-hosted` | NVIDIA L4") < md.index("`h100-linux-self-hosted` | NVIDIA H100")
    assert "**regression**" in md and "FAIL: 1 regressed" in md and "Performance comparison: NVIDIA H100" in md
    assert (tmp_path / "summary.md").read_text() == md
    assert [c["class"] for c in json.loads((out / "classes.json").read_text())] == ["gpu-linux-self-hosted",
                                                                                     "h100-linux-self-hosted"]
    assert merge_report.main([str(tmp_path / "in"), f"--out={out}"], run=lambda c, **k: subprocess.CompletedProcess(c, 2)) \
        == ERROR
    assert merge_report.main([str(tmp_path / "empty"), f"--out={out}", "--report-module="]) == ERROR


@pytest.mark.parametrize("damaged, text", [("outcome.json", "[1]"), ("gate.json", '{"summary": "x"}'),
                                           ("current.json", "{not json"), ("environment.json", b"\xff")])
def test_merge_report_names_an_unreadable_file_and_reports_the_rest(tmp_path: Path, monkeypatch, damaged, text) -> None:
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    _class_result(tmp_path / "in", 0, "gpu-linux-self-hosted", "pass", "NVIDIA L4")
    bad = _class_result(tmp_path / "in", 1, "h100-linux-self-hosted", "pass", "NVIDIA H100") / damaged
    bad.write_bytes(text if isinstance(text, bytes) else text.encode())
    out = tmp_path / "report"
    assert merge_report.main([str(tmp_path / "in"), f"--out={out}", "--report-module="]) == ERROR
    md = (out / "summary.md").read_text()
    assert "NVIDIA L4 | 570" in md and "**unreadable**" in md and str(bad) in md


# --------------------------------------------------------------------------- ci.gpu_setup, ci.gpu_env


def test_gpu_setup_uses_the_runners_torch_or_installs_the_default_wheel(tmp_path: Path, monkeypatch) -> None:
    venv = tmp_path / "venv"
    present = gpu_setup.plan(venv, torch_present=True)
    assert not any(c[-1] == "torch" for c in present) and present[-1][-2:] == ["-e", f"{gpu_setup.PROJECT_ROOT}[dev]"]
    absent = gpu_setup.plan(venv, torch_present=False)
    assert [str(gpu_setup.interpreter(venv)), "-m", "pip", "install", "torch"] in absent
    assert not any("index-url" in " ".join(c) for c in absent), "the default (CUDA) wheel on GPU runners"

    calls = []

    def run(cmd, **kwargs):
        calls.append(cmd)
        probe = cmd[-2:-1] == ["-c"]
        return subprocess.CompletedProcess(cmd, 0, stdout='["2.13.0", "12.8", true]' if probe else "", stderr="")

    monkeypatch.setenv("GITHUB_PATH", str(tmp_path / "path"))
    assert gpu_setup.main([f"--venv={venv}", "--require-cuda"], run=run) == PASS
    assert calls[0][1:4] == ["-m", "venv", "--system-site-packages"]
    assert (tmp_path / "path").read_text() == f"{gpu_setup.scripts_dir(venv)}\n"
    no_gpu = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 0, stdout='["2.13.0", null, false]', stderr="")  # noqa: E731
    assert gpu_setup.main([f"--venv={venv}", "--require-cuda"], run=no_gpu) == ERROR
    assert gpu_setup.main(["--bogus"], run=run) == ERROR


def test_gpu_setup_runs_before_anything_is_installed() -> None:
    """python -S: no site-packages (no numpy, torch, pytest), as the system Python of a fresh runner."""
    proc = subprocess.run([sys.executable, "-S", "-c", "import ci.gpu_setup"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_gpu_env_reads_nvidia_smi(tmp_path: Path, monkeypatch, capsys) -> None:
    rows = machine.parse_gpu_csv("NVIDIA H100 80GB HBM3, 570.86.15, 81559 MiB, 00000000:18:00.0\n"
                                 "NVIDIA H100 80GB HBM3, 570.86.15, 81559 MiB, 00000000:2A:00.0\n")
    assert [r["name"] for r in rows] == ["NVIDIA H100 80GB HBM3"] * 2 and rows[0]["driver"] == "570.86.15"
    assert machine.parse_cuda_version("| NVIDIA-SMI 570.86.15    Driver Version: 570.86.15    CUDA Version: 12.8  |") \
        == "12.8"
    assert machine.parse_cuda_version("") is None
    md = gpu_env.markdown({"gpus": rows, "driver": "570.86.15", "cuda_runtime": "12.8"}, "gpu-linux-self-hosted")
    assert "| GPU | NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3 |" in md and "| cuDNN | - |" in md
    record = {"gpus": rows, "driver": "570.86.15", "cuda_runtime": "12.8", "cuda_available": True, "torch": "2.13.0"}
    monkeypatch.setattr(machine, "gpu_record", lambda: dict(record))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "outputs"))
    assert gpu_env.main([f"--out={tmp_path / 'env.json'}", "--require-cuda"]) == PASS
    assert json.loads((tmp_path / "env.json").read_text())["driver"] == "570.86.15"
    (tmp_path / "file").write_text("x")
    capsys.readouterr()
    assert gpu_env.main([f"--out={tmp_path / 'file' / 'env.json'}"]) == ERROR
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- a stack change on the same hardware

UPGRADED = {**FP, "torch": "2.14.1", "cuda": "13.0"}


def test_a_pull_request_on_a_new_stack_is_compared_with_the_previous_stack_and_reported(gpu_job, monkeypatch) -> None:
    assert gpu_job("save")[0] == PASS
    old = gpu_job.store.saved(KEY)[-1]
    record = {"gpus": [{"name": "NVIDIA H100"}], "driver": "570.1", "cuda_runtime": "13.0", "cuda_available": True}
    monkeypatch.setattr(gpu_baseline, "read_machine", lambda opts: (dict(record), dict(UPGRADED)))
    gpu_job.fake.fingerprint = dict(UPGRADED)
    code, outcome = gpu_job("compare")
    assert code == PASS and outcome["status"] == "stack-change" and outcome["key"] == machine.key(UPGRADED)
    assert gpu_job.fake.compared == str(old) and "--perf-stack-change" in gpu_job.fake.calls[-1]
    assert "reported, not gated" in outcome["message"] and "stack change" in gpu_job.summary()
    gpu_job.fake.regressed, gpu_job.fake.rc = True, 1
    assert gpu_job("compare")[0] == PASS  # reported, not gated: the variable is off
    code, outcome = gpu_job("compare", "--fail-on-stack-change")
    assert code == REGRESSION and outcome["status"] == "stack-change"


def test_the_first_save_of_a_new_stack_reports_what_the_upgrade_changed(gpu_job, monkeypatch) -> None:
    assert gpu_job("save")[0] == PASS
    monkeypatch.setattr(gpu_baseline, "read_machine", lambda opts: ({"cuda_available": True}, dict(UPGRADED)))
    gpu_job.fake.fingerprint, gpu_job.fake.data = dict(UPGRADED), (2.0, 2.2)  # twice as slow
    code, outcome = gpu_job("save")
    assert code == PASS and outcome["status"] == "saved" and "stack change from " in outcome["message"]
    report = results.load_verdicts(gpu_job.out / "stack-change.json")
    assert report.meta["stack differences"].startswith("cuda: '12.8' -> '13.0'; torch: '2.13.0' -> '2.14.1'")
    assert "Stack change" in gpu_job.summary() and (gpu_job.out / "history.md").is_file()
    assert gpu_job("save")[0] == PASS
    assert "stack change" not in json.loads((gpu_job.out / "outcome.json").read_text())["message"]
