"""The pull request, played locally through the command the perf-gate workflow runs (ci.pr_gate -> perf.ab).

A temporary git repository holds a tiny fake project: ``perf/test_fake.py`` times a busy loop
with pytest-benchmark's plain ``benchmark`` fixture (the real kernels are too heavy to A/B in a
test). The base commit is on ``main`` (and ``origin/main``, as after actions/checkout with
fetch-depth: 0); the pull request's head is checked out, as in the workflow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

FAKE_BENCHMARKS = '''\
"""Two benchmarks of a busy loop; SLOWDOWN multiplies the work of one of them."""

SLOWDOWN = {slowdown}


def busy(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


def test_steady(benchmark):
    benchmark(busy, 3000)


def test_stage(benchmark):
    benchmark(busy, 3000 * SLOWDOWN)
'''
# Few, short rounds: a 5x slowdown is far past any noise, and the whole play stays in seconds.
FAST = ["--benchmark-max-time=0.02", "--benchmark-min-rounds=15", "--benchmark-disable-gc"]
GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def pull_request(tmp_path: Path, head_files: dict[str, str]) -> Path:
    """A repository whose main (and origin/main) is the base, with the PR's head checked out."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    base = commit(repo, {"perf/test_fake.py": FAKE_BENCHMARKS.format(slowdown=1), "README.md": "fake\n"}, "base")
    git(repo, "update-ref", "refs/remotes/origin/main", base)
    git(repo, "checkout", "-q", "-b", "pr")
    commit(repo, head_files, "head")
    return repo


def play(repo: Path, out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict]:
    """Run the gate as the workflow does, from the project root, on ``repo``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PYTEST_", "PERF_"))}
    summary = out.parent / "summary.md"
    env.update(GITHUB_BASE_REF="main", GITHUB_STEP_SUMMARY=str(summary), GITHUB_OUTPUT=str(out.parent / "outputs"))
    cmd = [sys.executable, "-m", "ci.pr_gate", f"--repo={repo}", "--rounds=5", "--threshold=50%", f"--out={out}",
           *extra, "--", *FAST]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    outcome = json.loads((out / "outcome.json").read_text()) if (out / "outcome.json").exists() else {}
    return proc, outcome


@pytest.mark.slow
def test_a_slowed_stage_fails_the_gate(tmp_path: Path) -> None:
    repo = pull_request(tmp_path, {"perf/test_fake.py": FAKE_BENCHMARKS.format(slowdown=5)})
    proc, outcome = play(repo, tmp_path / "results")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 1, log
    assert outcome["status"] == "regression", log
    assert outcome["regressed"] == ["perf/test_fake.py::test_stage"], log
    verdicts = {c["name"]: c["verdict"] for c in json.loads((tmp_path / "results" / "ab.json").read_text())["comparisons"]}
    assert verdicts["perf/test_fake.py::test_stage"] == "regressed"
    assert verdicts["perf/test_fake.py::test_steady"] != "regressed"
    assert not (tmp_path / "results" / "confirm.json").exists()  # one A/B decides: it rechecks what it could not
    summary = (tmp_path / "summary.md").read_text()
    assert "1 regression(s): fail" in summary and "| `perf/test_fake.py::test_stage` |" in summary
    assert "status=regression" in (tmp_path / "outputs").read_text()
    assert list((tmp_path / "results" / "rounds").glob("round-*-base.json"))


@pytest.mark.slow
def test_an_unchanged_head_passes(tmp_path: Path) -> None:
    repo = pull_request(tmp_path, {"README.md": "fake, documented\n"})
    proc, outcome = play(repo, tmp_path / "results")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert outcome["status"] == "pass", log
    assert "## Performance gate:" in (tmp_path / "summary.md").read_text()


def test_an_accepted_regression_passes(tmp_path: Path) -> None:
    repo = pull_request(tmp_path, {"perf/test_fake.py": FAKE_BENCHMARKS.format(slowdown=5)})
    proc, outcome = play(repo, tmp_path / "results", "--accept-regression")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert outcome["status"] == "accepted" and outcome["regressed"] == ["perf/test_fake.py::test_stage"], log
    assert "accepted by the `perf-regression-accepted` label" in (tmp_path / "summary.md").read_text()


def test_a_shallow_clone_is_an_error_that_says_so(tmp_path: Path) -> None:
    repo = pull_request(tmp_path, {"README.md": "x\n"})
    shallow = tmp_path / "shallow"
    git(tmp_path, "clone", "-q", "--depth=1", "--branch=pr", f"file://{repo}", str(shallow))
    proc, outcome = play(shallow, tmp_path / "results")
    assert proc.returncode == 2
    assert outcome["status"] == "error" and "fetch-depth: 0" in outcome["error"]
    assert "fetch-depth: 0" in (tmp_path / "summary.md").read_text()


def test_a_head_whose_benchmarks_break_is_an_error_not_a_pass(tmp_path: Path) -> None:
    broken = textwrap.dedent("""\
        def test_stage(benchmark):
            raise RuntimeError("kernel broke")
    """)
    repo = pull_request(tmp_path, {"perf/test_fake.py": broken})
    proc, outcome = play(repo, tmp_path / "results", "--rounds=3")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert outcome["status"] == "error" and "pytest failed on head" in outcome["error"]
