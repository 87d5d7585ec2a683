"""The saved-baseline gate's evidence: which saved runs make the baseline (one run, or runs of the same
code pooled), the roofline probes as the machine's state, when the baseline's commit can be measured,
and, end to end in a temporary repository, a regression committed after the baseline confirmed by an
A/B against the baseline's commit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from perf import baseline, confirm, machine, results
from perf.baseline import SavedGate, choose, pooled
from perf.errors import BaselineError
from perf.measured import Measured, ProcessResult
from perf.metric import Metric
from tests.test_perf_plugin import REPO, child_env, storage_option

slow = pytest.mark.slow
FP = {"cpu": "Xeon", "cpus": 2, "numpy": "2.4.6", "torch": "2.13.0", "threads": {"torch": 1}}
NAME = "perf/test_stages.py::test_stage[seed-relu-numpy]"
COPY = "perf/test_roofline.py::test_roofline[peak_copy-numpy]"


def run_doc(commit: str = "a" * 40, *, dirty: bool = False, metric: str = "time", fp: dict | None = None,
            sources: str = "", per_process: tuple[float, ...] = (1.0, 1.1, 1.05), stage: str = "relu",
            name: str = NAME) -> dict:
    data = [v for m in per_process for v in (m, m * 1.02)]
    procs = [{"rounds": 2, "min": m, "median": m * 1.01} for m in per_process]
    return {"commit_info": {"id": commit, "dirty": dirty}, "machine_info": {"perf_fingerprint": fp or FP},
            "perf": {"metric": metric, **({"sources": sources} if sources else {})},
            "benchmarks": [{"fullname": name, "stats": {"data": data},
                            "extra_info": {"stage": stage, "backend": "numpy", "metric": metric, "processes": procs}}]}


def storage(tmp_path: Path, docs: list[dict | bytes]) -> list[Path]:
    paths = []
    for i, doc in enumerate(docs, 1):
        path = tmp_path / f"{i:04d}_run.json"
        path.write_bytes(doc if isinstance(doc, bytes) else json.dumps(doc).encode())
        paths.append(path)
    return paths


def chosen(tmp_path: Path, docs: list, **kw) -> baseline.Choice:
    kw = {"fingerprint": FP, "metric": Metric.TIME, "history": 5, **kw}
    return choose(True, storage(tmp_path, docs), str(tmp_path), **kw)


# --------------------------------------------------------------------------- which runs make the baseline


def test_bare_compare_pools_the_newest_runs_of_the_newest_commit(tmp_path):
    c = chosen(tmp_path, [run_doc("b" * 40), run_doc(), run_doc(), run_doc()])
    assert [Path(r.source).name for r in c.runs] == ["0004_run.json", "0003_run.json", "0002_run.json"]
    assert not c.warnings
    assert len(pooled(c.runs).results[NAME].processes) == 9  # three runs of three processes each


def test_the_history_is_capped_and_can_span_commits_when_asked(tmp_path):
    docs = [run_doc("b" * 40), run_doc("c" * 40), run_doc(), run_doc()]
    assert len(chosen(tmp_path, docs, history=1).runs) == 1
    assert [Path(r.source).name for r in chosen(tmp_path, docs).runs] == ["0004_run.json", "0003_run.json"]
    across = chosen(tmp_path, docs, across_commits=True, history=3)
    assert [Path(r.source).name for r in across.runs] == ["0004_run.json", "0003_run.json", "0002_run.json"]


def test_dirty_runs_are_the_same_code_only_when_their_sources_are(tmp_path):
    docs = [run_doc(dirty=True, sources="s1"), run_doc(dirty=True, sources="s2"), run_doc(dirty=True, sources="s2")]
    assert [Path(r.source).name for r in chosen(tmp_path, docs).runs] == ["0003_run.json", "0002_run.json"]


def test_damaged_runs_other_metrics_and_machines_are_passed_over_with_a_warning(tmp_path):
    docs = [run_doc(), b"{not json", run_doc(metric="instructions"), run_doc(fp={**FP, "cpu": "Other"})]
    c = chosen(tmp_path, docs)
    assert [Path(r.source).name for r in c.runs] == ["0001_run.json"]
    assert any(w.startswith("skipped an unreadable saved run: ") and "0002_run.json" in w for w in c.warnings)
    assert any("passed over 2 newer saved run(s) not comparable with this one: 0004_run.json (another machine "
               "fingerprint), 0003_run.json (instructions)" in w for w in c.warnings)


def test_a_window_of_steps_pools_each_benchmark_s_runs_since_its_last_step(tmp_path):
    levels = [1.0, 1.01, 0.99, 1.0, 1.5, 1.51, 1.49, 1.5]  # a step at the fifth run
    docs = [run_doc(f"{i:040x}", per_process=(v, v * 1.01, v * 1.005)) for i, v in enumerate(levels)]
    c = chosen(tmp_path, docs, across_commits=True, history=50)
    base = baseline.since_last_step(c.runs, keep=5)
    assert len(base.results[NAME].processes) == 4 * 3  # the four runs at the new level, three processes each
    assert min(base.results[NAME].per_process()) >= 1.49
    assert len(pooled(c.runs[:5]).results[NAME].processes) == 15  # the same-code rule knows no steps


def test_a_named_baseline_stays_exactly_that_run(tmp_path):
    paths = storage(tmp_path, [run_doc(), run_doc(), run_doc()])
    c = choose("0002", [paths[1]], str(tmp_path), fingerprint=FP, metric=Metric.TIME, history=5)
    assert [Path(r.source).name for r in c.runs] == ["0002_run.json"]


def test_nothing_comparable_is_no_baseline(tmp_path):
    assert chosen(tmp_path, [run_doc(metric="cycles")]).newest is None


# --------------------------------------------------------------------------- the machine's state


def probe_gate(copy_time: float) -> SavedGate:
    doc = run_doc(per_process=(copy_time, copy_time * 1.01), stage="peak_copy", name=COPY)
    return SavedGate(results.parse_run(doc, "b.json"), 0.05, 0.05, processes=2)


def measured(value: float) -> Measured:
    return Measured([ProcessResult(COPY, (value, value * 1.01)), ProcessResult(COPY, (value * 1.02,))])


def test_a_slower_copy_probe_is_reported_as_the_machine_s_state():
    (line,) = probe_gate(0.010).probe_changes({COPY: measured(0.011)})
    assert line == "copy bandwidth of numpy -9% against the baseline: memory-bound results may read slow"
    assert probe_gate(0.010).probe_changes({COPY: measured(0.0101)}) == []  # within 5%: nothing to say
    assert "may read fast" in probe_gate(0.010).probe_changes({COPY: measured(0.008)})[0]


# --------------------------------------------------------------------------- can the baseline's commit be measured


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def repo_with_one_commit(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "a.txt").write_text("a")
    git(repo, "add", "a.txt")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    return repo, git(repo, "rev-parse", "HEAD")


def test_the_baseline_s_commit_measured_where_it_is_clean_and_present(tmp_path):
    repo, sha = repo_with_one_commit(tmp_path)
    assert confirm.unavailable(repo, sha, dirty=False) == ""
    assert "uncommitted changes" in confirm.unavailable(repo, sha, dirty=True)
    assert "records no commit" in confirm.unavailable(repo, "", dirty=False)
    missing = confirm.unavailable(repo, "0123456789" * 4, dirty=False)
    assert missing == "the baseline's commit 012345678901 is not in this repository"
    (tmp_path / "plain").mkdir()
    assert "is not a git repository" in confirm.unavailable(tmp_path / "plain", sha, dirty=False)


def test_the_baseline_s_plugins_are_read_from_its_saved_command():
    assert confirm.baseline_plugins("pytest perf -p tests.plugins.slowdown -k relu -o x=y") == \
        ["-p", "tests.plugins.slowdown", "-o", "x=y"]
    assert confirm.baseline_plugins(None) == [] and confirm.baseline_plugins("pytest 'unbalanced") == []


# --------------------------------------------------------------------------- end to end


RELU_SLOWER = ("def relu(h, out=None):\n    return np.maximum(h, 0, out=out)\n",
               "def relu(h, out=None):\n    for _ in range(6):  # a real change: the same work six times\n"
               "        np.maximum(h, 0, out=out)\n    return np.maximum(h, 0, out=out)\n")
TINY = ("--perf-size", "8,16,8,4", "--perf-backend", "numpy", "-k", "test_stage[ and (relu or hidden) and not backward",
        "--perf-processes", "2", "--benchmark-max-time=0.01", "-p", "no:cacheprovider")


def project_repo(tmp_path: Path) -> tuple[Path, str]:
    """This project's code in a repository of its own, one commit."""
    repo = tmp_path / "project"
    for part in ("kernels", "perf", "tests/plugins"):
        shutil.copytree(REPO / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("conftest.py", "pyproject.toml", "tests/__init__.py"):
        if (REPO / part).exists():
            shutil.copy(REPO / part, repo / part)
    git(repo.parent, "init", "-q", str(repo))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    return repo, git(repo, "rev-parse", "HEAD")


def pytest_in(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "perf", *args], cwd=repo, env=child_env(PYTHONPATH=str(repo)),
                          capture_output=True, text=True, timeout=900)


@slow
def test_a_regression_committed_after_the_baseline_is_confirmed_by_an_ab_against_its_commit(tmp_path):
    repo, base = project_repo(tmp_path)
    store = tmp_path / "storage"
    saved = pytest_in(repo, *TINY, "--benchmark-save=base", storage_option(store))
    assert saved.returncode == 0, saved.stdout + saved.stderr
    source = repo / "kernels" / "numpy_.py"
    assert RELU_SLOWER[0] in source.read_text()
    source.write_text(source.read_text().replace(*RELU_SLOWER))
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "relu: the same work six times")
    report = tmp_path / "gate.json"
    compared = pytest_in(repo, *TINY, "--benchmark-compare=0001", storage_option(store), f"--perf-report-json={report}")
    output = compared.stdout + compared.stderr
    assert compared.returncode == 1, output
    assert f"an A/B of them against the baseline's commit {base[:12]}" in output
    verdicts = results.load_verdicts(report)
    (relu,) = [r for r in verdicts.rows if r["name"].endswith("[8x16x8x4-relu-numpy]")]
    assert relu["verdict"] == "regressed" and relu["evidence"] == f"A/B vs {base[:10]}"
    assert verdicts.meta["confirmation"].startswith(f"A/B against the baseline's commit {base[:12]}: 16 rounds")


@slow
def test_a_baseline_from_a_dirty_tree_is_confirmed_as_processes_and_says_why(tmp_path):
    repo, _ = project_repo(tmp_path)
    (repo / "untracked-change.txt").write_text("dirty")
    git(repo, "add", "untracked-change.txt")
    store = tmp_path / "storage"
    assert pytest_in(repo, *TINY, "--benchmark-save=base", storage_option(store)).returncode == 0
    source = repo / "kernels" / "numpy_.py"
    source.write_text(source.read_text().replace(*RELU_SLOWER))
    report = tmp_path / "gate.json"
    compared = pytest_in(repo, *TINY, "--benchmark-compare=0001", storage_option(store), f"--perf-report-json={report}")
    assert compared.returncode in (0, 1), compared.stdout + compared.stderr
    meta = results.load_verdicts(report).meta
    assert meta["confirmation"] == ("measured again in more processes: the baseline was saved from a working tree "
                                    "with uncommitted changes: its code is in no commit")


def test_a_stack_change_is_let_through_only_on_the_same_hardware():
    run = results.parse_run(run_doc(fp={**FP, "numpy": "2.2.6"}), "b.json")
    warning = baseline.check_comparable(run, FP, Metric.TIME, allow_foreign=False, stack_change=True)
    assert warning.startswith("Stack change (--perf-stack-change): the baseline b.json ran on this hardware") \
        and "numpy: '2.2.6' -> '2.4.6'" in warning
    other = results.parse_run(run_doc(fp={**FP, "numpy": "2.2.6", "cpu": "Elsewhere"}), "c.json")
    with pytest.raises(BaselineError, match="was recorded on a different machine"):
        baseline.check_comparable(other, FP, Metric.TIME, allow_foreign=False, stack_change=True)
    assert machine.same_hardware({**FP, "torch": "2.14.1"}, FP) and not machine.same_hardware({**FP, "cpus": 4}, FP)


def test_the_window_study_counts_a_pooled_baseline_by_processes_or_by_runs(tmp_path):
    from studies import window_study

    docs = [run_doc(f"{i:040x}", per_process=(v, v * 1.01, v * 1.02)) for i, v in enumerate([1.0, 1.1, 1.2])]
    runs = chosen(tmp_path, docs, across_commits=True, history=50).runs[::-1]  # oldest first, as a history
    assert window_study.baseline_of("code", runs, keep=5)[NAME] == [runs[-1]]
    assert window_study.baseline_of("commits", runs, keep=2)[NAME] == [runs[-1], runs[-2]]
    pooled_runs = window_study.baseline_of("commits", runs, keep=5)[NAME]
    assert sorted(window_study.values_of(pooled_runs, NAME, "runs")) == pytest.approx([1.0, 1.1, 1.2])
    assert len(window_study.values_of(pooled_runs, NAME, "processes")) == 9
    assert len(window_study.values_of(pooled_runs[:1], NAME, "runs")) == 3  # one run: its processes
