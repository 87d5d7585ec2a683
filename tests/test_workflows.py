"""The GitHub Actions workflows and the ``ci`` commands they call.

The workflows are checked offline against GitHub's workflow JSON schema (check-jsonschema's
bundled ``vendor.github-workflows``), then for what the schema cannot see: every ``run:`` step is
one command from this repository, with arguments its parser accepts; the perf gate has the whole
history; the GPU jobs run on configurable runner classes and serialise their baseline writers.
The logic behind the steps (ci/) is tested below on constructed inputs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ci import ERROR, PASS, REGRESSION, baselines, github, gpu_baseline, gpu_env, gpu_setup, merge_report, pr_gate

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("tests.yml", "perf-gate.yml", "gpu.yml")
# What a run: step may call: this repository's commands, pip, pytest, ruff. Nothing else.
ALLOWED = ("python -m ci.", "python3 -m ci.", "python -m perf.", "python -m pip install ", "pytest ", "ruff check")
SHELL_LOGIC = ("&&", "||", ";", "|", "$(", "`", "<<", " if ", " for ", " then ", " do ")


def load(name: str) -> dict:
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load((WORKFLOWS / name).read_text())


def steps(doc: dict):
    for job_id, job in doc["jobs"].items():
        for step in job.get("steps", []):
            yield job_id, job, step


def run_lines(doc: dict) -> list[str]:
    return [line.strip() for _, _, s in steps(doc) if "run" in s for line in s["run"].splitlines() if line.strip()]


def uses(doc: dict, action: str) -> list[dict]:
    return [s for _, _, s in steps(doc) if s.get("uses", "").startswith(action + "@")]


# --------------------------------------------------------------------------- schema


def test_the_workflows_exist() -> None:
    assert sorted(p.name for p in WORKFLOWS.glob("*.yml")) == sorted(NAMES)


def test_every_workflow_matches_the_github_workflow_schema() -> None:
    files = [str(WORKFLOWS / n) for n in NAMES]
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", *files],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("on: push\njobs:\n  a:\n    steps:\n      - run: pytest\n")  # no runs-on
    proc = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "runs-on" in proc.stdout


# --------------------------------------------------------------------------- thin YAML


@pytest.mark.parametrize("name", NAMES)
def test_every_run_step_is_one_command_from_the_repository(name: str) -> None:
    for job_id, _, step in steps(load(name)):
        if "run" not in step:
            continue
        lines = [line for line in step["run"].splitlines() if line.strip()]
        assert len(lines) == 1, f"{name} job {job_id}: a run step with logic belongs in ci/: {step['run']!r}"
        line = lines[0].strip()
        assert line.startswith(ALLOWED), f"{name} job {job_id}: {line!r} is not a repository command, pip, pytest or ruff"
        assert not any(s in line for s in SHELL_LOGIC), f"{name} job {job_id}: shell logic in {line!r}"
        assert "${{" not in line, f"{name} job {job_id}: pass expressions through env:, not into the shell: {line!r}"


def _placeholders(doc: dict, job: dict, step: dict) -> dict[str, str]:
    """The step's environment, each expression replaced by its literal fallback (`|| 'default'`), else 'x'."""
    env = {**doc.get("env", {}), **job.get("env", {}), **step.get("env", {})}
    values = {}
    for name, value in env.items():
        fallback = re.search(r"\|\|\s*'([^']*)'\s*}}$", str(value))
        values[name] = str(value) if "${{" not in str(value) else fallback.group(1) if fallback else "x"
    return values


@pytest.mark.parametrize("name", NAMES)
def test_ci_commands_in_the_workflows_take_their_arguments(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    doc = load(name)
    for _, job, step in steps(doc):
        line = step.get("run", "").strip()
        match = re.match(r"python3? -m (ci\.\w+)(.*)", line)
        if not match:
            continue
        for var, value in _placeholders(doc, job, step).items():
            monkeypatch.setenv(var, value)
        argv = shlex.split(os.path.expandvars(match.group(2)))
        importlib.import_module(match.group(1)).parse_args(argv)  # raises on an unknown option or value


def test_perf_options_named_in_the_workflows_exist() -> None:
    from perf.options import FLAGS, OPTIONS

    text = "".join((WORKFLOWS / n).read_text() for n in NAMES)
    named = set(re.findall(r"--perf-[a-z-]+", text))
    assert named, "the workflows pin --perf-threads and choose backends and sizes"
    assert named <= set(OPTIONS) | set(FLAGS) | {f"--{o}" for o in (*OPTIONS, *FLAGS)}


def test_hosted_jobs_install_the_cpu_torch_wheel_before_the_project() -> None:
    for name in NAMES:
        doc = load(name)
        for job_id, job in doc["jobs"].items():
            runs = [s.get("run", "") for s in job.get("steps", [])]
            installs = [i for i, r in enumerate(runs) if r.startswith("python -m pip install -e")]
            if not installs or "self-hosted" in str(job.get("runs-on")) or "matrix.runner" in str(job.get("runs-on")):
                continue
            torch = [i for i, r in enumerate(runs) if "torch --index-url https://download.pytorch.org/whl/cpu" in r]
            assert torch and torch[0] < installs[0], f"{name} job {job_id}: CPU torch wheel first"


def test_threads_are_pinned_in_every_workflow() -> None:
    for name in NAMES:
        env = load(name).get("env", {})
        assert all(env.get(v) == "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")), name


@pytest.mark.parametrize("name", NAMES)
def test_permissions_concurrency_and_pinned_actions(name: str) -> None:
    doc = load(name)
    assert doc["permissions"] == {"contents": "read"}
    assert "concurrency" in doc or any("concurrency" in job for job in doc["jobs"].values())
    for _, _, step in steps(doc):
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w.-]+@v\d+", step["uses"]), step["uses"]


def make_recipe(target: str) -> list[str]:
    """The command lines of a Makefile target's recipe."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:[^\n]*\n((?:\t[^\n]*\n)+)", text, re.M)
    assert match, f"no recipe for {target} in the Makefile"
    return [line.strip() for line in match.group(1).splitlines()]


def test_tests_workflow_runs_lint_and_the_readme_test_command_on_every_supported_python() -> None:
    doc = load("tests.yml")
    assert {"push", "pull_request"} <= set(doc["on"])
    lines = run_lines(doc)
    assert "ruff check ." in lines
    command = "pytest -n auto tests perf"
    assert command in lines
    assert command in (ROOT / "README.md").read_text(), "the README's test command"
    assert make_recipe("test")[-1].endswith(f" {command}"), "make test runs the README's test command"
    ci_run = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "make test" in ci_run and "make lint" in ci_run, ".ci/run runs the test command through make, and the linter"
    assert make_recipe("lint") == ['$(IN_VENV) ruff check .']
    minimum = re.search(r'requires-python\s*=\s*">=(\d+\.\d+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    versions = doc["jobs"]["test"]["strategy"]["matrix"]["python-version"]
    assert minimum in versions and len(versions) >= 3


def test_perf_gate_runs_the_ab_on_pull_requests_with_the_whole_history(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = load("perf-gate.yml")
    assert "pull_request" in doc["on"]
    (job,) = doc["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    (checkout,) = uses(doc, "actions/checkout")
    assert checkout["with"]["fetch-depth"] == 0
    (gate,) = [s for s in job["steps"] if "ci.pr_gate" in s.get("run", "")]
    for var, value in _placeholders(doc, job, gate).items():
        monkeypatch.setenv(var, value)
    opts = pr_gate.parse_args(shlex.split(os.path.expandvars(gate["run"].split("ci.pr_gate", 1)[1])))
    assert opts.threads == 1 and "--perf-threads" in gate["env"]["PYTEST_ARGS"]
    assert "github.base_ref" in gate["env"]["BASE_REF"]
    assert "perf-regression-accepted" in gate["env"]["PERF_ACCEPT_REGRESSION"]
    (upload,) = uses(doc, "actions/upload-artifact")
    assert upload["if"] == "always()" and upload["with"]["path"] == opts.out
    assert doc["concurrency"]["cancel-in-progress"] is True


def test_gpu_jobs_run_on_configurable_runner_classes() -> None:
    doc = load("gpu.yml")
    job = doc["jobs"]["bench"]
    assert job["runs-on"] == "${{ matrix.runner }}"
    matrix = job["strategy"]["matrix"]["runner"]
    assert "vars.GPU_RUNNER_CLASSES" in matrix
    default = re.search(r"'(\[.*\])'", matrix).group(1)
    assert json.loads(default) == [["self-hosted", "linux", "gpu"]]
    assert job["strategy"]["fail-fast"] is False
    assert doc["on"]["push"]["branches"] == ["main"] and "pull_request" in doc["on"]
    inputs = doc["on"]["workflow_dispatch"]["inputs"]
    assert {"backends", "sizes", "save-baseline"} <= set(inputs)
    assert "inputs.backends" in job["env"]["PERF_BACKENDS"] and "inputs.sizes" in job["env"]["PERF_SIZES"]
    assert "head.repo.full_name == github.repository" in job["if"], "fork pull requests must not reach self-hosted runners"
    bench = [s for s in job["steps"] if "ci.gpu_baseline" in s.get("run", "")]
    assert len(bench) == 1 and " auto " in bench[0]["run"] and "--require-cuda" in bench[0]["run"]


def test_gpu_baseline_writers_are_serialised_per_runner_class() -> None:
    job = load("gpu.yml")["jobs"]["bench"]
    group, cancel = job["concurrency"]["group"], job["concurrency"]["cancel-in-progress"]
    assert "gpu-baseline-" in group and "join(matrix.runner" in group
    # a writer is never cancelled midway; only pull-request runs (which write nothing) cancel each other
    assert cancel == "${{ github.event_name == 'pull_request' }}"


def test_gpu_report_merges_every_runner_class() -> None:
    doc = load("gpu.yml")
    report = doc["jobs"]["report"]
    assert report["needs"] == "bench" and report["if"].startswith("always()")
    (upload,) = [s for s in doc["jobs"]["bench"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact")]
    (download,) = uses(doc, "actions/download-artifact")
    assert upload["with"]["name"].startswith(download["with"]["pattern"].rstrip("*"))
    (merge,) = [s for s in report["steps"] if "ci.merge_report" in s.get("run", "")]
    assert merge_report.parse_args(shlex.split(merge["run"].split("ci.merge_report", 1)[1])).dirs == [
        Path(download["with"]["path"])]


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


FP = {"cpu": "Xeon", "cpus": 16, "python": "3.12.1", "numpy": "2.1", "torch": "2.13.0", "cuda": "12.8",
      "gpus": ["NVIDIA H100 80GB HBM3"], "gpu_driver": "570.1", "threads": {"torch": 1}, "blas": ["openblas 0.3"]}


def test_runner_classes_are_label_sets() -> None:
    assert baselines.class_slug("self-hosted, linux, gpu") == "gpu-linux-self-hosted"
    assert baselines.class_slug('["gpu","Linux","self-hosted"]') == "gpu-linux-self-hosted"
    assert baselines.class_slug(["self-hosted", "a100 80/gb"]) == "a100_80_gb-self-hosted"
    with pytest.raises(baselines.BaselineError):
        baselines.class_slug(" , ")


def test_baselines_are_keyed_by_the_machine_fingerprint() -> None:
    key = baselines.fingerprint_key(FP)
    assert re.fullmatch(r"nvidia_h100_80gb_hbm3-[0-9a-f]{12}", key)
    assert baselines.fingerprint_key({**FP, "threads": {"torch": 8}, "blas": []}) == key  # per-process fields
    assert baselines.fingerprint_key({**FP, "gpu_driver": "575.2"}) != key
    assert baselines.fingerprint_key({**FP, "gpus": []}).startswith("xeon-")


def test_where_baselines_live(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(baselines.ROOT_VARIABLE, raising=False)
    assert baselines.root() == Path("~/.relu-perf-baselines").expanduser()
    assert baselines.root(env={baselines.ROOT_VARIABLE: "/srv/b"}) == Path("/srv/b")
    assert baselines.root("/x", env={baselines.ROOT_VARIABLE: "/srv/b"}) == Path("/x")
    store = baselines.Store("/srv/b", "self-hosted,linux,gpu")
    assert store.key_dir("k-1") == Path("/srv/b/gpu-linux-self-hosted/k-1")
    with pytest.raises(baselines.BaselineError):
        store.key_dir("../escape")


def _run_file(tmp_path: Path, label: str) -> Path:
    path = tmp_path / f"{label}.json"
    path.write_text(json.dumps({"label": label, "benchmarks": [{"fullname": "b", "stats": {"data": [1.0]}}]}))
    return path


def test_a_save_replaces_the_baseline_and_keeps_a_short_history(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    key = baselines.fingerprint_key(FP)
    assert store.current(key) is None
    for i in range(baselines.KEEP + 2):
        snap = store.save(key, FP, _run_file(tmp_path, f"run{i}"), {"commit": f"c{i}"})
        assert store.current(key) == snap
        assert json.loads(snap.baseline.read_text())["label"] == f"run{i}"
    assert snap.meta()["commit"] == f"c{baselines.KEEP + 1}"
    history = store.history(key)
    assert [json.loads(s.baseline.read_text())["label"] for s in history] == [f"run{i}" for i in range(2, baselines.KEEP + 2)]
    assert json.loads((store.key_dir(key) / "fingerprint.json").read_text())["gpu_driver"] == "570.1"
    (row,) = store.describe()
    assert row["current"] == snap.name and row["snapshots"] == baselines.KEEP and row["commit"] == "c6"


@pytest.mark.parametrize("where", ["copying the results", "swapping the pointer"])
def test_an_interrupted_save_leaves_the_previous_baseline_in_force(tmp_path: Path, monkeypatch, where: str) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    key = baselines.fingerprint_key(FP)
    old = store.save(key, FP, _run_file(tmp_path, "old"), {})
    real_copy, real_write = baselines.copy_file, baselines.write_atomic

    def copy(src, dest):
        real_copy(src, dest)
        if where == "copying the results":
            Path(dest).write_text('{"benchmarks": [')  # half-written, then the job is cancelled
            raise KeyboardInterrupt

    def write(path, text):
        if where == "swapping the pointer" and Path(path).name == baselines.POINTER:
            Path(str(path) + ".tmp-partial").write_text(text[:3])
            raise KeyboardInterrupt
        real_write(path, text)

    monkeypatch.setattr(baselines, "copy_file", copy)
    monkeypatch.setattr(baselines, "write_atomic", write)
    with pytest.raises(KeyboardInterrupt):
        store.save(key, FP, _run_file(tmp_path, "new"), {})
    assert store.current(key) == old
    assert json.loads(store.current(key).baseline.read_text())["label"] == "old"
    monkeypatch.setattr(baselines, "copy_file", real_copy)
    monkeypatch.setattr(baselines, "write_atomic", real_write)
    newest = store.save(key, FP, _run_file(tmp_path, "next"), {})  # the next save works, and tidies up
    assert store.current(key) == newest
    assert not list(newest.path.parent.glob(baselines.PARTIAL + "*"))


def test_a_killed_save_leaves_only_a_partial_directory(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    key = baselines.fingerprint_key(FP)
    old = store.save(key, FP, _run_file(tmp_path, "old"), {})
    partial = old.path.parent / (baselines.PARTIAL + "killed")  # what SIGKILL midway leaves
    partial.mkdir()
    (partial / baselines.BASELINE_FILE).write_text("{")
    assert store.current(key) == old and store.history(key) == [old]
    store.save(key, FP, _run_file(tmp_path, "new"), {})
    assert not partial.exists()


def test_one_writer_at_a_time(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    with store.lock():
        with pytest.raises(baselines.BaselineError, match="another save"):
            with store.lock(timeout=0):
                pass
    with store.lock(timeout=0):
        pass


def test_reset_forgets_a_baseline(tmp_path: Path) -> None:
    store = baselines.Store(tmp_path / "root", "gpu")
    key, other = baselines.fingerprint_key(FP), baselines.fingerprint_key({**FP, "cuda": "13.0"})
    store.save(key, FP, _run_file(tmp_path, "a"), {})
    store.save(other, FP, _run_file(tmp_path, "b"), {})
    assert store.reset(key) == [key]
    assert store.current(key) is None and store.current(other) is not None
    assert store.reset() == [other] and store.keys() == []


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
    with pytest.raises(gpu_baseline.UsageError, match="default branch"):
        gpu_baseline.resolve_mode("auto", {"GITHUB_EVENT_NAME": "workflow_dispatch", "GITHUB_REF_NAME": "x",
                                           "SAVE_BASELINE": "true"})


def test_the_pytest_command(tmp_path: Path) -> None:
    cmd = gpu_baseline.pytest_command(tmp_path, ["--perf-backend", "torch-cuda"], 1, tmp_path / "baseline.json")
    assert cmd[1:4] == ["-m", "pytest", "perf"] and "--perf-threads=1" in cmd and cmd[-2:] == ["--perf-backend", "torch-cuda"]
    assert f"--benchmark-compare={tmp_path / 'baseline.json'}" in cmd and "--perf-allow-foreign-baseline" in cmd
    assert f"--perf-report-json={tmp_path / 'gate.json'}" in cmd
    cmd = gpu_baseline.pytest_command(tmp_path, ["--perf-threads", "2"], 1, None)
    assert "--perf-threads=1" not in cmd and not any(a.startswith("--benchmark-compare") for a in cmd)


class FakeRun:
    """Stands in for ``pytest perf``: writes what the plugin would, returns an exit status."""

    def __init__(self, fingerprint: dict) -> None:
        self.fingerprint, self.rc, self.regressed, self.benchmarks, self.calls = fingerprint, 0, False, 2, []

    def __call__(self, cmd, **kwargs):
        self.calls.append(cmd)
        if self.rc == "interrupt":
            raise KeyboardInterrupt
        out = Path(next(a for a in cmd if a.startswith("--benchmark-json=")).split("=", 1)[1]).parent
        doc = {"machine_info": {"perf_fingerprint": self.fingerprint}, "tag": len(self.calls),
               "benchmarks": [{"fullname": f"perf/test_stages.py::t[{i}]", "stats": {"data": [1.0, 1.1]}}
                              for i in range(self.benchmarks)]}
        (out / "current.json").write_text(json.dumps(doc))
        if any(a.startswith("--benchmark-compare=") for a in cmd):
            line = "FAIL: 1 regressed" if self.regressed else "PASS: 0 regressed"
            (out / "gate.json").write_text(json.dumps({"summary": {"passed": not self.regressed, "line": line}}))
            (out / "gate.md").write_text(f"### Performance comparison: {line}\n")
        return self.rc, ["last line of pytest"]


@pytest.fixture
def gpu_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """ci.gpu_baseline in a fake job: a fake pytest, a fake GPU, the Actions files in tmp_path."""
    fake = FakeRun(dict(FP))
    monkeypatch.setattr(gpu_baseline, "run_tee", fake)
    machine = {"gpus": [{"name": "NVIDIA H100", "driver": "570.1"}], "driver": "570.1", "cuda_runtime": "12.8",
               "cuda_available": True, "torch": "2.13.0"}
    monkeypatch.setattr(gpu_baseline, "probe", lambda threads: (dict(machine), dict(FP)))
    for var in ("GITHUB_EVENT_NAME", "GITHUB_REF_NAME", "DEFAULT_BRANCH", "SAVE_BASELINE", "PERF_ACCEPT_REGRESSION"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "summary.md"))
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "outputs"))
    root, out = tmp_path / "baselines", tmp_path / "out"

    def job(mode: str, *extra: str) -> tuple[int, dict]:
        code = gpu_baseline.main([mode, "--runner-class=self-hosted,linux,gpu", f"--root={root}", f"--out={out}", *extra,
                                  "--", "--perf-backend", "torch-cuda"])
        return code, json.loads((out / "outcome.json").read_text())

    job.fake, job.root, job.out, job.tmp = fake, root, out, tmp_path
    job.store = baselines.Store(root, "self-hosted,linux,gpu")
    return job


def test_gpu_job_without_a_baseline_runs_and_gates_nothing(gpu_job) -> None:
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (PASS, "no-baseline")
    assert "push to the default branch saves one" in outcome["message"]
    assert "no baseline yet" in (gpu_job.tmp / "summary.md").read_text()
    assert json.loads((gpu_job.out / "environment.json").read_text())["key"] == baselines.fingerprint_key(FP)


def test_gpu_job_saves_then_compares_against_its_baseline(gpu_job) -> None:
    code, outcome = gpu_job("save")
    assert (code, outcome["status"]) == (PASS, "saved")
    key = baselines.fingerprint_key(FP)
    saved = gpu_job.store.current(key)
    assert json.loads(saved.baseline.read_text())["tag"] == 1
    assert json.loads((saved.path / "environment.json").read_text())["driver"] == "570.1"
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (PASS, "pass")
    assert json.loads((gpu_job.out / "baseline.json").read_text())["tag"] == 1
    assert [p.name.split("_", 1)[0] for p in (gpu_job.out / "history").iterdir()] == ["0001"]
    summary = (gpu_job.tmp / "summary.md").read_text()
    assert "| GPU | NVIDIA H100 |" in summary and "| driver | 570.1 |" in summary
    assert "| CUDA (torch built with) | 12.8 |" in summary
    assert "status=pass" in (gpu_job.tmp / "outputs").read_text()


def test_gpu_job_regression_fails_unless_accepted(gpu_job, monkeypatch) -> None:
    gpu_job("save")
    gpu_job.fake.rc, gpu_job.fake.regressed = 1, True
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (REGRESSION, "regression")
    assert "FAIL: 1 regressed" in (gpu_job.tmp / "summary.md").read_text()
    monkeypatch.setenv("PERF_ACCEPT_REGRESSION", "true")
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (PASS, "accepted")


def test_gpu_job_failure_that_is_no_regression_is_an_error(gpu_job) -> None:
    gpu_job("save")
    gpu_job.fake.rc = 1
    assert gpu_job("compare")[0] == ERROR
    gpu_job.fake.rc = 4
    assert gpu_job("compare")[0] == ERROR


def test_gpu_job_does_not_gate_on_a_baseline_from_another_setup(gpu_job) -> None:
    gpu_job("save")
    gpu_job.fake.fingerprint = {**FP, "threads": {"torch": 4}}
    gpu_job.fake.rc, gpu_job.fake.regressed = 1, True
    code, outcome = gpu_job("compare")
    assert (code, outcome["status"]) == (PASS, "foreign-baseline")
    assert "threads" in outcome["message"]


@pytest.mark.parametrize("failure", ["pytest failed", "no benchmark ran", "cancelled"])
def test_gpu_job_saves_only_a_complete_run(gpu_job, failure: str) -> None:
    gpu_job("save")
    before = gpu_job.store.current(baselines.fingerprint_key(FP))
    if failure == "pytest failed":
        gpu_job.fake.rc = 1
    elif failure == "no benchmark ran":
        gpu_job.fake.benchmarks = 0
    else:
        gpu_job.fake.rc = "interrupt"
    if failure == "cancelled":
        with pytest.raises(KeyboardInterrupt):
            gpu_job("save")
    else:
        code, outcome = gpu_job("save")
        assert (code, outcome["status"]) == (ERROR, "error")
    assert gpu_job.store.current(baselines.fingerprint_key(FP)) == before


def test_gpu_job_requires_a_gpu(gpu_job, monkeypatch) -> None:
    cpu_only = {"gpus": [], "cuda_available": False, "torch": "2.13.0+cpu"}
    monkeypatch.setattr(gpu_baseline, "probe", lambda threads: (cpu_only, FP))
    code, outcome = gpu_job("compare", "--require-cuda")
    assert (code, outcome["status"]) == (ERROR, "error") and "no CUDA device" in outcome["message"]
    assert gpu_job.fake.calls == []


def test_gpu_baseline_reset_and_list(gpu_job, capsys) -> None:
    gpu_job("save")
    capsys.readouterr()
    assert gpu_baseline.main(["list", f"--root={gpu_job.root}"]) == PASS
    (row,) = json.loads(capsys.readouterr().out)
    assert row["class"] == "gpu-linux-self-hosted" and row["gpus"] == FP["gpus"]
    assert gpu_baseline.main(["reset", "--runner-class=self-hosted,linux,gpu", f"--root={gpu_job.root}"]) == PASS
    assert gpu_job.store.keys() == []
    assert gpu_baseline.main(["save", f"--root={gpu_job.root}"]) == ERROR  # no runner class


@pytest.mark.slow
def test_gpu_baseline_end_to_end_with_the_real_suite_on_cpu(tmp_path: Path) -> None:
    """save, then compare, through real ``pytest perf`` runs (numpy, two small stages): the wiring, not the verdict."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PYTEST_", "PERF_"))}
    base = [sys.executable, "-m", "ci.gpu_baseline"]
    args = ["--runner-class=self-hosted,linux,gpu", f"--root={tmp_path / 'b'}", f"--out={tmp_path / 'out'}", "--",
            "--perf-backend", "numpy", "--perf-size", "seed", "-k", "relu and not backward", "--benchmark-max-time=0.02"]
    saved = subprocess.run([*base, "save", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert saved.returncode == 0, saved.stdout[-3000:] + saved.stderr[-3000:]
    compared = subprocess.run([*base, "compare", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    outcome = json.loads((tmp_path / "out" / "outcome.json").read_text())
    assert (compared.returncode, outcome["status"]) in ((0, "pass"), (1, "regression")), compared.stdout[-3000:]
    gate = json.loads((tmp_path / "out" / "gate.json").read_text())
    assert {c["name"] for c in gate["comparisons"]} == {"perf/test_stages.py::test_stage[seed-relu-numpy]",
                                                        "perf/test_stages.py::test_stage[seed-grad_h_relu-numpy]"}


# --------------------------------------------------------------------------- ci.pr_gate


def test_pr_gate_arguments() -> None:
    opts = pr_gate.parse_args(["--rounds=3", "--pytest-args", "--perf-size seed -k 'relu or mm'", "--", "--x"])
    assert opts.pytest == ["--perf-size", "seed", "-k", "relu or mm", "--x"] and opts.confirm_rounds == 3
    assert pr_gate.parse_args(["--confirm-rounds=0"]).confirm_rounds == 0
    with pytest.raises(pr_gate.GateError):
        pr_gate.parse_args(["--rounds=0"])
    with pytest.raises(pr_gate.GateError):
        pr_gate.parse_args(["--bogus"])


def _doc(*names: str) -> dict:
    return {"comparisons": [{"name": n, "verdict": "regressed"} for n in names] + [{"name": "z", "verdict": "unchanged"}]}


@pytest.mark.parametrize("first_rc, first, confirm_rc, confirm, accept, expected", [
    (0, _doc(), None, None, False, ("pass", PASS)),
    (1, _doc("a", "b"), None, None, False, ("regression", REGRESSION)),
    (1, _doc("a", "b"), 1, _doc("b"), False, ("regression", REGRESSION)),
    (1, _doc("a"), 0, _doc(), False, ("unconfirmed", PASS)),
    (1, _doc("a"), 1, _doc("a"), True, ("accepted", PASS)),
    (1, _doc("a"), 2, None, False, ("error", ERROR)),
    (1, _doc(), None, None, False, ("error", ERROR)),  # exit 1 and no regression: something else broke
    (2, None, None, None, False, ("error", ERROR)),
])
def test_only_a_confirmed_regression_fails(first_rc, first, confirm_rc, confirm, accept, expected) -> None:
    assert pr_gate.decide(first_rc, first, confirm_rc, confirm, accept) == expected


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
    with pytest.raises(pr_gate.GateError, match="not found"):
        pr_gate.resolve_base(tmp_path, None, "develop", None)
    cmd = pr_gate.ab_command(tmp_path, fork, None, 4, "10%", 0, Path("a.json"), Path("a.md"), Path("r"),
                             ["--perf-size", "seed"])
    assert cmd[1:3] == ["-m", "perf.ab"] and f"--base={fork}" in cmd and cmd[-3:] == ["--", "--perf-size", "seed"]


# --------------------------------------------------------------------------- ci.merge_report


def _class_result(top: Path, job: int, runner_class: str, status: str, gpu: str) -> None:
    d = top / f"gpu-results-{job}"
    d.mkdir(parents=True)
    (d / "outcome.json").write_text(json.dumps({"runner_class": runner_class, "mode": "compare", "status": status,
                                                "message": "compared"}))
    (d / "environment.json").write_text(json.dumps({"gpus": [{"name": gpu}], "driver": "570", "cuda_runtime": "12.8"}))
    (d / "gate.json").write_text(json.dumps({"summary": {"line": f"{status}: 1 regressed"}}))
    (d / "gate.md").write_text(f"### Performance comparison: {gpu}\n")
    (d / "current.json").write_text(json.dumps({"benchmarks": [], "gpu": gpu}))


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
    assert "**regression**" in md and "Performance comparison: NVIDIA H100" in md
    assert (tmp_path / "summary.md").read_text() == md
    assert [c["class"] for c in json.loads((out / "classes.json").read_text())] == ["gpu-linux-self-hosted",
                                                                                     "h100-linux-self-hosted"]
    assert merge_report.main([str(tmp_path / "in"), f"--out={out}"], run=lambda c, **k: subprocess.CompletedProcess(c, 2)) \
        == ERROR
    assert merge_report.main([str(tmp_path / "empty"), f"--out={out}", "--report-module="]) == ERROR


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


def test_gpu_env_reads_nvidia_smi() -> None:
    rows = gpu_env.parse_gpu_csv("NVIDIA H100 80GB HBM3, 570.86.15, 81559 MiB, 00000000:18:00.0\n"
                                 "NVIDIA H100 80GB HBM3, 570.86.15, 81559 MiB, 00000000:2A:00.0\n")
    assert [r["name"] for r in rows] == ["NVIDIA H100 80GB HBM3"] * 2 and rows[0]["driver"] == "570.86.15"
    assert gpu_env.parse_cuda_version("| NVIDIA-SMI 570.86.15    Driver Version: 570.86.15    CUDA Version: 12.8  |") == "12.8"
    assert gpu_env.parse_cuda_version("") is None
    md = gpu_env.markdown({"gpus": rows, "driver": "570.86.15", "cuda_runtime": "12.8"}, "gpu-linux-self-hosted")
    assert "| GPU | NVIDIA H100 80GB HBM3, NVIDIA H100 80GB HBM3 |" in md and "| cuDNN | - |" in md


def test_the_commands_answer_help() -> None:
    def helped(module: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)

    for module in ("ci.pr_gate", "ci.gpu_baseline", "ci.merge_report", "ci.gpu_setup", "ci.gpu_env"):
        proc = helped(module)
        assert proc.returncode == 0 and "usage:" in proc.stdout, module
