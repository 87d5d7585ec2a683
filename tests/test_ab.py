"""The A/B command: its small functions on constructed data, then end to end on a temporary git
repository whose perf/ is a tiny fake suite (plain pytest-benchmark, busy loops)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from perf import ab, command, gate, machine, rounds
from perf.errors import UsageError
from perf.metric import Metric
from perf.rounds import BASE, HEAD

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--", "--benchmark-max-time=0.01", "--benchmark-min-rounds=5"]


# --------------------------------------------------------------------------- arguments


def test_parse_args_defaults_and_pytest_pass_through():
    opts = ab.parse_args(["--rounds", "5", "--perf-size", "seed", "--", "--perf-backend", "numpy,torch-cpu", "-k", "relu"])
    assert opts.rounds == 5 and opts.threshold == pytest.approx(0.05) and opts.alpha == 0.05
    assert opts.base is None and opts.head is None
    assert opts.pytest_args == ["--perf-size", "seed", "--perf-backend", "numpy,torch-cpu", "-k", "relu"]
    defaults = ab.parse_args([])
    assert defaults.rounds == ab.DEFAULT_ROUNDS and defaults.recheck_rounds == 2 * ab.DEFAULT_ROUNDS
    assert defaults.statistic == "min"
    assert ab.parse_args(["--rounds", "5"]).recheck_rounds == 10
    assert ab.parse_args(["--recheck-rounds", "0", "--statistic", "median"]).recheck_rounds == 0


def test_parse_args_one_side_args_and_threshold():
    opts = ab.parse_args(["--threshold", "5%", "--head-pytest-args=-p slowdown --slow 1.1", "--base", "main"])
    assert opts.threshold == pytest.approx(0.05) and opts.base == "main"
    assert opts.head_args == ["-p", "slowdown", "--slow", "1.1"] and opts.base_args == []


def test_help_lists_the_options_and_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        ab.parse_args(["--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert all(opt in out for opt in ("--base", "--head", "--rounds", "--threshold", "--head-pytest-args",
                                      "(default 5%; 1% for a counted --perf-metric)"))


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "lots"], "invalid threshold 'lots'"),
    (["--rounds", "2"], "--rounds 2: expected an integer >= 3"),
    (["--rounds", "many"], "invalid int value"),
    (["--recheck-rounds", "-1"], "--recheck-rounds -1: expected an integer >= 0"),
    (["--statistic", "mean"], "invalid choice: 'mean'"),
    (["--alpha", "0"], "--alpha 0.0"),
    (["--base=-x"], "expected a git revision"),
    (["--head-pytest-args=\"unclosed"], "--head-pytest-args"),
    (["--json", "/"], "--json '/': is a directory"),  # before any measuring
    (["--markdown", "/no/such/folder/ab.md"], "--markdown '/no/such/folder/ab.md': directory"),
])
def test_parse_args_errors_are_one_line(argv, message):
    with pytest.raises(UsageError, match=message) as info:
        ab.parse_args(argv)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- rounds, results, pairing


def test_round_orders_are_balanced_seeded_and_recorded():
    orders = rounds.round_orders(8, seed=0)
    assert orders == rounds.round_orders(8, seed=0)
    assert sorted(orders) == [(BASE, HEAD)] * 4 + [(HEAD, BASE)] * 4
    assert any(rounds.round_orders(8, seed=s) != orders for s in range(1, 5))
    odd = rounds.round_orders(5, seed=3)
    assert len(odd) == 5 and abs(odd.count((BASE, HEAD)) - odd.count((HEAD, BASE))) == 1


def write_benchmark_json(path: Path, benchmarks: dict[str, list[float] | None]) -> Path:
    def stats(data):
        return {"median": 0.0} if data is None else {"median": 0.0, "data": data}

    doc = {"machine_info": {}, "benchmarks": [{"fullname": name, "name": name.split("::")[-1], "stats": stats(data)}
                                              for name, data in benchmarks.items()]}
    path.write_text(json.dumps(doc))
    return path


def test_read_round_takes_the_minimum_or_the_median_of_raw_data(tmp_path):
    path = write_benchmark_json(tmp_path / "r.json", {"perf/t.py::a": [3.0, 1.5, 2.0], "perf/t.py::b": [4.0, 1.0, 2.0, 3.0],
                                                      "perf/t.py::disabled": None})
    assert rounds.read_round(path) == {"perf/t.py::a": 1.5, "perf/t.py::b": 1.0}
    assert rounds.read_round(path, "median") == {"perf/t.py::a": 2.0, "perf/t.py::b": 2.5}


def test_read_round_bad_file_is_an_ab_error(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UsageError, match="cannot read the results of a side"):
        rounds.read_round(tmp_path / "bad.json")
    with pytest.raises(UsageError):
        rounds.read_round(tmp_path / "absent.json")


def test_pair_rounds_pairs_by_index_and_finds_new_and_missing():
    base = [{"a": 1.0, "gone": 5.0}, {"a": 1.1, "gone": 5.1}, {"a": 0.9}]
    head = [{"a": 2.0, "added": 3.0}, {"a": 2.2}, {"a": 1.8, "added": 3.1}]
    paired, only_base, only_head = ab.pair_rounds(base, head)
    assert paired == {"a": ([1.0, 1.1, 0.9], [2.0, 2.2, 1.8])}
    assert only_base == {"gone": [5.0, 5.1]} and only_head == {"added": [3.0, 3.1]}
    # A benchmark both sides have but not in every round is paired where both have it.
    paired, _, _ = ab.pair_rounds([{"x": 1.0}, {}, {"x": 1.2}], [{"x": 2.0}, {"x": 9.0}, {}])
    assert paired == {"x": ([1.0], [2.0])}


def test_decide_holm_new_missing_and_exit_status():
    base = [{"slow": 1.0 + 0.01 * i, "same": 1.0 + 0.01 * i, "gone": 1.0} for i in range(6)]
    head = [{"slow": 2.0 + 0.03 * i, "same": 1.0 + 0.012 * i, "added": 1.0} for i in range(6)]
    rows = {c.name: c for c in ab.decide(base, head, 0.10)}
    assert rows["slow"].verdict == gate.REGRESSED and rows["slow"].p_adjusted is not None
    assert rows["same"].verdict == gate.UNCHANGED
    assert rows["gone"].verdict == gate.MISSING and rows["added"].verdict == gate.NEW
    assert ab.exit_status(list(rows.values())) == 1
    assert ab.exit_status([rows["same"], rows["gone"]]) == 0


def noisy_rounds(rng, rounds: int, shift: float, sd: float) -> tuple[list[float], list[float]]:
    """Per-round base and head values: a drifting level, log-normal noise of `sd` on each side
    (so the log ratios have sd * sqrt(2)), head `shift` times base."""
    level = np.exp(rng.normal(0, 0.3, rounds))
    return list(level * np.exp(rng.normal(0, sd, rounds))), list(shift * level * np.exp(rng.normal(0, sd, rounds)))


def as_rounds(values: dict[str, list[float]]) -> list[dict[str, float]]:
    return [dict(zip(values, column)) for column in zip(*values.values())]


def test_to_recheck_takes_the_undecided_paired_benchmarks_only():
    c = functools.partial(gate.Comparison, threshold=0.05, n_baseline=16, n_current=16)
    rows = [c("a", gate.INCONCLUSIVE, ratio=1.08, ci_low=0.98, ci_high=1.19),
            c("b", gate.UNCHANGED, ratio=1.0, ci_low=0.99, ci_high=1.01),
            c("wide", gate.UNCHANGED, ratio=1.03, ci_low=0.97, ci_high=1.09),  # a 5% regression not ruled out
            c("low", gate.UNCHANGED, ratio=0.98, ci_low=0.90, ci_high=1.04),  # only an improvement not ruled out
            c("c", gate.REGRESSED, ratio=1.2, ci_low=1.1, ci_high=1.3),
            c("d", gate.NEW, n_baseline=0), c("e", gate.MISSING, n_current=0),
            c("f", gate.INCONCLUSIVE, ratio=0.9, ci_low=0.8, ci_high=1.01)]
    assert ab.to_recheck(rows) == ["a", "wide", "f"]


def test_recheck_args_select_the_names_and_keep_the_options():
    args = ["perf", "--perf-size", "seed,compute", "-k", "not roofline", "perf/test_stages.py"]
    names = ["perf/test_stages.py::test_stage[seed-relu-numpy]"]
    assert ab.recheck_args(args, names) == ["--perf-size", "seed,compute", "-k", "not roofline", *names]


def test_decide_with_recheck_pools_the_rounds_of_the_rechecked_only():
    rng = np.random.default_rng(7)
    slow_b, slow_h = noisy_rounds(rng, 16 + 32, 1.10, 0.05)
    same_b, same_h = noisy_rounds(rng, 16, 1.0, 0.01)
    first = {BASE: as_rounds({"slow": slow_b[:16], "same": same_b}), HEAD: as_rounds({"slow": slow_h[:16], "same": same_h})}
    # The recheck measured `slow` alone (and, by accident, `same` too: not pooled, it was not rechecked).
    again = {BASE: as_rounds({"slow": slow_b[16:]}), HEAD: as_rounds({"slow": slow_h[16:]})}
    again[BASE][0]["stray"] = again[HEAD][0]["stray"] = 1.0
    rows = {c.name: c for c in ab.decide_with_recheck(first, again, ["slow"], 0.05)}
    assert set(rows) == {"slow", "same"}
    assert rows["slow"].n_baseline == rows["slow"].n_current == 48
    assert rows["slow"].note.startswith("measured again: 32 more rounds")
    assert rows["same"].n_baseline == 16 and "measured again" not in rows["same"].note
    del again[BASE][0]["stray"], again[HEAD][0]["stray"]
    alone = {c.name: c for c in ab.decide(first[BASE] + again[BASE], first[HEAD] + again[HEAD], 0.05)}
    assert rows["slow"].p_adjusted == alone["slow"].p_adjusted  # Holm once, over both benchmarks
    assert rows["slow"].verdict == gate.REGRESSED


def two_stage(rng, shift: float, sd: float, recheck: int, m: int = 6) -> list[gate.Comparison]:
    """The A/B decision, recheck included, on a simulated suite of m benchmarks, the first shifted."""
    pairs = [noisy_rounds(rng, ab.DEFAULT_ROUNDS + recheck, shift if i == 0 else 1.0, sd) for i in range(m)]
    cut = ab.DEFAULT_ROUNDS
    first = {side: as_rounds({f"b{i}": p[k][:cut] for i, p in enumerate(pairs)}) for k, side in enumerate((BASE, HEAD))}
    comps = ab.decide(first[BASE], first[HEAD], 0.05)
    names = ab.to_recheck(comps) if recheck else []
    if names:
        index = [int(n[1:]) for n in names]
        again = {side: as_rounds({f"b{i}": pairs[i][k][cut:] for i in index}) for k, side in enumerate((BASE, HEAD))}
        comps = ab.decide_with_recheck(first, again, names, 0.05)
    return comps


def test_recheck_keeps_the_suite_wide_false_alarm_rate_on_constructed_rounds():
    # Log-ratio spread 0.25 per round (a noisy microsecond stage on the 2-core VM, medians): the
    # first looks leave benchmarks undecided and get a second look; the chance of any false
    # alarm in a suite of 6 must stay within alpha (Holm's promise for one look).
    rng = np.random.default_rng(2026)
    suites = [two_stage(rng, 1.0, 0.25 / np.sqrt(2), 2 * ab.DEFAULT_ROUNDS) for _ in range(400)]
    rechecked = sum(any("measured again" in c.note for c in suite) for suite in suites)
    alarms = sum(any(c.verdict == gate.REGRESSED for c in suite) for suite in suites)
    assert rechecked > 200 and alarms / len(suites) <= 0.05


def test_recheck_raises_detection_of_a_10_percent_slowdown_on_constructed_rounds():
    # Log-ratio spread 0.08 per round: the torch-cpu matmul at `compute` on the 2-core VM.
    rng = np.random.default_rng(2027)
    sd = 0.08 / np.sqrt(2)
    once = [two_stage(rng, 1.10, sd, 0)[0].verdict for _ in range(200)]
    twice = [two_stage(rng, 1.10, sd, 2 * ab.DEFAULT_ROUNDS)[0].verdict for _ in range(200)]
    assert once.count(gate.REGRESSED) < 150 and twice.count(gate.REGRESSED) >= 180


def test_pytest_command_selects_perf_unless_paths_are_given(tmp_path):
    cmd = command.pytest_perf(["--perf-size", "seed"], json=tmp_path / "o.json", rootdir=tmp_path)
    assert cmd[:4] == [sys.executable, "-m", "pytest", "perf"]
    assert "-p" in cmd and "no:cacheprovider" in cmd and f"--benchmark-json={tmp_path / 'o.json'}" in cmd
    assert f"--rootdir={tmp_path}" in cmd and cmd[-2:] == ["--perf-size", "seed"]
    assert "perf" not in command.pytest_perf(["perf/test_step.py::test_x"], json=tmp_path / "o.json")[:4]
    assert command.pytest_perf(["x"], python="/env/bin/python")[0] == "/env/bin/python"


# --------------------------------------------------------------------------- end to end on a temporary repository

FAKE_SUITE = '''
    """A fake perf suite: plain pytest-benchmark on busy loops."""


    def spin(n):
        total = 0
        for i in range(n):
            total += i
        return total


    def test_steady(benchmark):
        benchmark(spin, 2000)


    def test_work(benchmark):
        benchmark(spin, {work})
    '''


def git(repo: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@example.com")
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def fake_suite_repo(repo: Path) -> Path:
    """A git repository in ``repo`` whose main holds c1 (the fake suite, perf/test_fake.py) and c2 (a README
    only, HEAD); the suite's path."""
    git(repo, "init", "-q", "-b", "main")
    (repo / "perf").mkdir()
    suite = repo / "perf" / "test_fake.py"
    suite.write_text(textwrap.dedent(FAKE_SUITE.format(work=2000)))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "c1: fake suite")
    (repo / "README").write_text("unrelated change\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "c2: readme")
    return suite


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """main: c1 (the fake suite), c2 (a README only, HEAD); branch slow: test_work 15x slower, and
    test_added, a benchmark base does not have."""
    repo = tmp_path_factory.mktemp("ab-repo")
    suite = fake_suite_repo(repo)
    git(repo, "checkout", "-q", "-b", "slow")
    added = "\n\ndef test_added(benchmark):\n    benchmark(spin, 100)\n"
    suite.write_text(textwrap.dedent(FAKE_SUITE.format(work=30000)) + added)
    git(repo, "commit", "-q", "-am", "c3: slower work")
    git(repo, "checkout", "-q", "main")
    return repo


def worktrees(repo: Path) -> list[str]:
    return [line for line in git(repo, "worktree", "list", "--porcelain").splitlines() if line.startswith("worktree ")]


def test_ab_flags_a_15x_slowdown_and_exits_1(repo, tmp_path, capsys):
    # A slowdown far beyond a generous threshold: the decision cannot hinge on this machine's noise.
    out_json, out_md = tmp_path / "ab.json", tmp_path / "ab.md"
    status = ab.main(["--repo", str(repo), "--base", "main~1", "--head", "slow", "--rounds", "4", "--threshold", "100%",
                      "--json", str(out_json), "--markdown", str(out_md), *FAST])
    captured = capsys.readouterr()
    assert status == 1, captured.out + captured.err
    regressed = [line for line in captured.out.splitlines() if line.endswith(" regressed")]
    assert len(regressed) == 1 and "perf/test_fake.py::test_work" in regressed[0]
    assert "round 4/4" in captured.err
    doc = json.loads(out_json.read_text())
    verdicts = {c["name"]: c["verdict"] for c in doc["comparisons"]}
    assert verdicts.pop("perf/test_fake.py::test_steady") != gate.REGRESSED  # unchanged code: never a false alarm
    assert verdicts == {"perf/test_fake.py::test_work": gate.REGRESSED, "perf/test_fake.py::test_added": gate.NEW}
    work = next(c for c in doc["comparisons"] if c["name"].endswith("test_work"))
    assert 5 < work["ratio"] < 40 and work["n_baseline"] == work["n_current"] == 4
    assert doc["meta"]["correction"] == "Holm over 2 comparisons" and len(doc["meta"]["order"]) == 4
    assert len(doc["rounds"][BASE]) == len(doc["rounds"][HEAD]) == 4
    assert "FAIL (1 regressed)" in out_md.read_text()
    assert len(worktrees(repo)) == 1  # the temporary base and head worktrees are gone


def test_ab_unchanged_working_tree_against_default_base_exits_0(repo, tmp_path, capsys):
    # Unchanged code with a threshold no noise here reaches: a pass that cannot hinge on timing.
    status = ab.main(["--repo", str(repo), "--rounds", "4", "--threshold", "100%", "--workdir", str(tmp_path / "w"), *FAST])
    captured = capsys.readouterr()
    assert status == 0, captured.out + captured.err
    assert captured.out.splitlines()[-1].startswith("PASS: 0 regressed")
    assert f"{git(repo, 'rev-parse', 'main~1')[:12]} (default: " in captured.out  # HEAD~1: there is no origin/main
    assert "working tree (HEAD" in captured.out
    assert len(list((tmp_path / "w").glob("round-0?-*.json"))) == 8
    assert len(worktrees(repo)) == 1


def test_ab_rechecks_the_inconclusive_benchmarks_alone(repo, tmp_path, capsys):
    # alpha = 1e-12: four rounds cannot make a 15x slowdown significant, so test_work is
    # INCONCLUSIVE after the first rounds whatever this machine does, and is measured again alone.
    work = tmp_path / "w"
    status = ab.main(["--repo", str(repo), "--base", "main~1", "--head", "slow", "--rounds", "4", "--recheck-rounds", "3",
                      "--threshold", "100%", "--alpha", "1e-12", "--workdir", str(work), "--json", str(tmp_path / "ab.json"),
                      *FAST])
    captured = capsys.readouterr()
    assert status in (0, 1), captured.out + captured.err
    assert "1 undecided: measuring them again, 3 rounds" in captured.err and "recheck 3/3" in captured.err
    doc = json.loads((tmp_path / "ab.json").read_text())
    rows = {c["name"].split("::")[1]: c for c in doc["comparisons"]}
    assert rows["test_work"]["n_baseline"] == rows["test_work"]["n_current"] == 7
    assert rows["test_work"]["note"].startswith("measured again: 3 more rounds")
    assert rows["test_steady"]["n_baseline"] == 4 and rows["test_added"]["verdict"] == gate.NEW
    assert doc["meta"]["recheck"].startswith("3 more rounds of the 1 undecided benchmark(s)")
    again = [json.loads(p.read_text()) for p in sorted(work.glob("recheck-0?-*.json"))]
    assert len(again) == 6 and all([b["name"] for b in d["benchmarks"]] == ["test_work"] for d in again)
    assert [list(r) for r in doc["recheck rounds"][HEAD]] == [["perf/test_fake.py::test_work"]] * 3
    assert len(worktrees(repo)) == 1


def test_ab_failing_pytest_on_one_side_names_it_and_exits_2(repo, capsys):
    status = ab.main(["--repo", str(repo), "--base", "main~1", "--rounds", "3", "--head-pytest-args=--no-such-option", *FAST])
    err = capsys.readouterr().err
    assert status == 2
    assert "perf.ab: error: pytest failed on head (working tree" in err and "no-such-option" in err
    assert len(worktrees(repo)) == 1


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "perf.ab", *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_cli_bad_base_rev_exits_2_with_one_line(repo):
    proc = run_cli("--repo", str(repo), "--base", "no-such-rev")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"perf.ab: error: unknown revision 'no-such-rev' in {repo}"]


def test_cli_outside_a_git_repository_exits_2(tmp_path):
    proc = run_cli("--repo", str(tmp_path))
    assert proc.returncode == 2 and proc.stderr.startswith("perf.ab: error: not a git repository")
    assert "Traceback" not in proc.stderr
    proc = run_cli("--rounds", "1")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="a duet needs two CPUs")
def test_ab_duet_runs_both_sides_at_once_on_disjoint_cpus_and_flags_the_slowdown(repo, tmp_path, capsys):
    status = ab.main(["--repo", str(repo), "--base", "main~1", "--head", "slow", "--rounds", "4", "--threshold", "100%",
                      "--mode", "duet", "--json", str(tmp_path / "ab.json"), *FAST])
    captured = capsys.readouterr()
    assert status == 1, captured.out + captured.err
    assert "on CPUs [0]" in captured.err and "on CPUs [1]" in captured.err
    verdicts = {c["name"]: c["verdict"] for c in json.loads((tmp_path / "ab.json").read_text())["comparisons"]}
    assert verdicts["perf/test_fake.py::test_work"] == gate.REGRESSED
    assert verdicts["perf/test_fake.py::test_steady"] != gate.REGRESSED
    assert "duet" in captured.out


def test_auto_mode_is_duet_with_two_cpus_and_no_gpu(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(machine, "gpu_visible", lambda: False)
    assert rounds.resolve_mode("auto") == "duet" and rounds.resolve_mode("sequential") == "sequential"
    monkeypatch.setattr(machine, "gpu_visible", lambda: True)
    assert rounds.resolve_mode("auto") == "sequential"
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    monkeypatch.setattr(machine, "gpu_visible", lambda: False)
    assert rounds.resolve_mode("auto") == "sequential"


def test_cpu_halves_are_disjoint_and_need_two_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4})
    first, second = rounds.cpu_halves()
    assert first == {0, 1} and second == {2, 3}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3})
    with pytest.raises(UsageError, match="--mode duet needs at least 2 CPUs"):
        rounds.cpu_halves()


def test_counts_are_judged_by_the_count_rule_not_a_test_on_identical_rounds():
    # Each side's rounds agree to the instruction; a 1.3% shift (what other code moves in memory)
    # is not a regression, +3% is, and equal counts are unchanged.
    base = [{"a": 24_000.0, "b": 24_000.0, "c": 50_000.0}] * 3
    head = [{"a": 24_000.0 * 1.013, "b": 24_000.0 * 1.03, "c": 50_000.0}] * 3
    verdicts = {c.name: c.verdict for c in ab.decide(base, head, 0.01, metric=Metric.INSTRUCTIONS)}
    assert verdicts == {"a": gate.INCONCLUSIVE, "b": gate.REGRESSED, "c": gate.UNCHANGED}


# --------------------------------------------------------------------------- two environments


def another_python(tmp_path: Path) -> Path:
    """A Python of another environment holding this one's packages (a venv whose .pth names them); skips where
    none can be made."""
    import site
    import sysconfig

    env = tmp_path / "env"
    base = getattr(sys, "_base_executable", sys.executable)
    made = subprocess.run([base, "-m", "venv", "--without-pip", str(env)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"no second environment can be made here: {made.stderr.strip()[-200:]}")
    python = env / "bin" / "python"
    inner = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           capture_output=True, text=True).stdout.strip()
    ours = [p for p in {sysconfig.get_paths()["purelib"], *site.getsitepackages()} if Path(p).is_dir()]
    Path(inner, "this-environment.pth").write_text("\n".join(ours) + "\n")
    return python


@pytest.mark.slow
def test_an_environment_ab_measures_this_checkout_in_two_pythons_and_names_their_stacks(tmp_path):
    python = another_python(tmp_path)
    report = tmp_path / "ab.json"
    proc = subprocess.run([sys.executable, "-m", "perf.ab", "--base-env", str(python), "--rounds", "3",
                           "--recheck-rounds", "0", "--json", str(report), "--", "--perf-size", "8,16,8,4",
                           "--perf-backend", "numpy", "-k", "test_stage[ and relu", "--benchmark-max-time=0.002"],
                          cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    assert f"perf.ab: base: {python}: {python}" in proc.stderr  # built nothing: an existing environment
    doc = json.loads(report.read_text())
    assert doc["meta"]["title"] == "Performance A/B of two environments"
    assert doc["meta"]["base"].startswith(str(python)) and doc["meta"]["head"].startswith("current")
    assert doc["meta"]["stack differences"] == "no difference in the fingerprint"  # the same packages on both sides
    assert doc["meta"]["summary"].startswith(f"{python} -> current:")
    assert {c["name"].rpartition("[")[2] for c in doc["comparisons"]} >= {"8x16x8x4-relu-numpy]"}


def test_an_environment_ab_takes_no_base_revision():
    opts = ab.parse_args(["--base", "HEAD~1", "--base-env", "numpy==2.2.6"])
    with pytest.raises(UsageError, match="--base takes no part"):
        ab.run(opts)
