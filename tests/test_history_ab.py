"""python -m perf.history --confirm end to end: saved runs constructed on the commits of a temporary git
repository whose perf/ is a tiny fake suite (tests/test_ab.py's), and the A/B of each step's two commits
measuring that suite for real."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from perf import history
from tests.test_ab import FAKE_SUITE, fake_suite_repo, git
from tests.test_history import benchmark, cli, one_error_line, run_doc, save

slow = pytest.mark.slow
WORK = "perf/test_fake.py::test_work"
# 30%: far past what one noisy A/B of the same code shows, far under the 15x slowdown of c3 and the
# constructed +50% steps.
THRESHOLD = "30%"
A_B = ["--rounds", "3", "--", "--benchmark-max-time=0.01", "--benchmark-min-rounds=5"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> dict[str, str]:
    """c1 (the fake suite), c2 (a README only), c3 (test_work 15x slower): {name: full commit id}, and "path"."""
    repo = tmp_path_factory.mktemp("history-ab-repo")
    suite = fake_suite_repo(repo)
    c1, c2 = git(repo, "rev-parse", "HEAD~1"), git(repo, "rev-parse", "HEAD")
    suite.write_text(textwrap.dedent(FAKE_SUITE.format(work=30000)))
    git(repo, "commit", "-q", "-am", "c3: slower work")
    return {"c1": c1, "c2": c2, "c3": git(repo, "rev-parse", "HEAD"), "path": str(repo)}


def stepped_storage(tmp_path: Path, before: str, after: str) -> Path:
    """Nine saved runs of test_work: six of commit ``before``, then three of ``after`` 50% slower."""
    rng = np.random.default_rng(0)
    storage = tmp_path / "storage"
    for i in range(9):
        work = benchmark("work", "fake", 1e-4 * (1.5 if i >= 6 else 1.0), rng=rng)
        work.update(name="test_work", fullname=WORK)
        save(storage, i + 1, run_doc([work], day=i + 1, commit=after if i >= 6 else before))
    return storage


@slow
def test_a_step_the_a_b_of_its_commits_finds_again_fails(repo, tmp_path, capsys):
    storage = stepped_storage(tmp_path, repo["c2"], repo["c3"])
    rc, out, err = cli(capsys, storage, "--since", "0006", "--threshold", THRESHOLD, "--confirm", "--repo", repo["path"],
                       "--json", tmp_path / "h.json", *A_B)
    assert rc == 1, out + err
    assert f"confirmed by an A/B of {repo['c2'][:10]} -> {repo['c3'][:10]}: regressed +" in out
    assert "FAIL: 1 regression(s) after 0006: test_work +50.0% at 0007" in out
    (step,) = json.loads((tmp_path / "h.json").read_text())["benchmarks"][0]["steps"]
    assert step["regression"] and step["confirmation"]["stands"]
    assert step["confirmation"]["comparison"]["verdict"] == "regressed" and step["confirmation"]["comparison"]["ratio"] > 5


@slow
def test_a_step_the_a_b_of_its_commits_does_not_find_passes_and_says_so(repo, tmp_path, capsys):
    storage = stepped_storage(tmp_path, repo["c1"], repo["c2"])  # c2 changed a README only: the step is the machine's
    rc, out, err = cli(capsys, storage, "--since", "0006", "--threshold", THRESHOLD, "--confirm", "--repo", repo["path"],
                       *A_B)
    assert rc == 0, out + err
    assert f"not confirmed by an A/B of {repo['c1'][:10]} -> {repo['c2'][:10]}: unchanged" in out
    assert "PASS: no regression after 0006 (1 not confirmed by an A/B of their commits)" in out


def test_a_step_within_one_commit_cannot_be_confirmed_and_still_fails(repo, tmp_path, capsys):
    storage = stepped_storage(tmp_path, repo["c2"], repo["c2"])
    rc, out, _ = cli(capsys, storage, "--since", "0006", "--confirm", "--repo", repo["path"], *A_B)
    assert rc == 1
    assert f"not confirmable by an A/B: both runs are of commit {repo['c2'][:10]}: the step is not in the code" in out


def test_a_step_of_a_commit_the_repository_lacks_cannot_be_confirmed(repo, tmp_path, capsys):
    storage = stepped_storage(tmp_path, repo["c2"], "ab" * 20)
    rc, out, _ = cli(capsys, storage, "--since", "0006", "--confirm", "--repo", repo["path"])
    assert rc == 1
    assert "not confirmable by an A/B: run 0007's commit abababababab is not in this repository" in out


@pytest.mark.parametrize("argv, fragments", [
    (["--confirm"], ["--confirm measures the regressions after --since RUN: give --since"]),
    (["--since", "0006", "--rounds", "3"], ["--rounds and arguments after -- are for the A/B of --confirm"]),
    (["--since", "0006", "--", "-k", "relu"], ["arguments after --"]),
    (["--since", "0006", "--confirm", "--rounds", "2"], ["--rounds 2: expected an integer >= 3"]),
])
def test_bad_confirm_options_are_one_line_exit_2(repo, tmp_path, capsys, argv, fragments):
    rc, _, err = cli(capsys, stepped_storage(tmp_path, repo["c2"], repo["c3"]), "--repo", repo["path"], *argv)
    assert rc == 2
    one_error_line(err, *fragments)


def test_confirm_outside_a_git_repository_is_one_line_exit_2(repo, tmp_path, capsys):
    rc, _, err = cli(capsys, stepped_storage(tmp_path, repo["c2"], repo["c3"]), "--since", "0006", "--confirm",
                     "--repo", tmp_path)
    assert rc == 2
    one_error_line(err)


def test_without_confirm_nothing_is_measured_and_the_step_fails(repo, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(history.history_ab, "confirm", lambda *a, **k: pytest.fail("measured without --confirm"))
    rc, out, _ = cli(capsys, stepped_storage(tmp_path, repo["c1"], repo["c2"]), "--since", "0006")
    assert rc == 1 and "confirmed" not in out
