"""The GitHub Actions workflows and the ``ci`` commands they call.

The workflows are checked offline against GitHub's workflow JSON schema (check-jsonschema's
bundled ``vendor.github-workflows``), then for what the schema cannot see: every ``run:`` step is
one command from this repository, with arguments its parser accepts; the perf gate has the whole
history; the GPU jobs run on configurable runner classes and serialise their baseline writers.
The logic behind the steps (ci/) is tested in tests/test_ci.py, on constructed inputs.
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

from ci import merge_report, pr_gate

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
NAMES = ("tests.yml", "perf-gate.yml", "gpu.yml")
# What a run: step may call: this repository's commands, pip, pytest, ruff. Nothing else.
ALLOWED = ("python -m ci.", "python3 -m ci.", "python -m perf.", "python -m pip install ", "pytest ", "ruff check",
           "sudo apt-get update ", "sudo apt-get install ")  # system packages: valgrind for the counted gate
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
        assert line.startswith(ALLOWED), f"{name} job {job_id}: {line!r} is not a repository command, pip, apt, pytest or ruff"
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
    job = doc["jobs"]["ab"]
    assert job["runs-on"] == "ubuntu-latest"
    assert all(c["with"]["fetch-depth"] == 0 for c in uses(doc, "actions/checkout"))
    (gate,) = [s for s in job["steps"] if "ci.pr_gate" in s.get("run", "")]
    for var, value in _placeholders(doc, job, gate).items():
        monkeypatch.setenv(var, value)
    opts = pr_gate.parse_args(shlex.split(os.path.expandvars(gate["run"].split("ci.pr_gate", 1)[1])))
    assert opts.threads == 1 and "--perf-threads" in gate["env"]["PYTEST_ARGS"]
    assert "github.base_ref" in gate["env"]["BASE_REF"]
    assert "perf-regression-accepted" in gate["env"]["PERF_ACCEPT_REGRESSION"]
    upload = next(u for u in uses(doc, "actions/upload-artifact") if u["with"]["path"] == opts.out)
    assert upload["if"] == "always()"
    assert doc["concurrency"]["cancel-in-progress"] is True


def test_perf_gate_offers_the_same_gate_on_instruction_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    doc = load("perf-gate.yml")
    job = doc["jobs"]["counts"]
    assert "vars.PERF_GATE_COUNTS" in job["if"] and "inputs.counts" in job["if"]
    assert doc["on"]["workflow_dispatch"]["inputs"]["counts"]["type"] == "boolean"
    assert any("apt-get install" in s.get("run", "") and "valgrind" in s["run"] for s in job["steps"])
    (gate,) = [s for s in job["steps"] if "ci.pr_gate" in s.get("run", "")]
    for var, value in _placeholders(doc, job, gate).items():
        monkeypatch.setenv(var, value)
    opts = pr_gate.parse_args(shlex.split(os.path.expandvars(gate["run"].split("ci.pr_gate", 1)[1])))
    assert "--perf-metric" in opts.pytest and opts.pytest[opts.pytest.index("--perf-metric") + 1] == "instructions"
    assert opts.rounds is None  # perf.ab's defaults for a counted metric: 3 rounds, 1%


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


# --------------------------------------------------------------------------- the commands


def test_the_commands_answer_help() -> None:
    def helped(module: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)

    for module in ("ci.pr_gate", "ci.gpu_baseline", "ci.merge_report", "ci.gpu_setup", "ci.gpu_env"):
        proc = helped(module)
        assert proc.returncode == 0 and "usage:" in proc.stdout, module
