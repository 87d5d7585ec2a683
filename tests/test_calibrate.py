"""The calibration report: its arithmetic and rendering on constructed results (measuring is
what `python -m perf.calibrate` does on a real machine, not a test)."""

from __future__ import annotations

import json
import statistics

import pytest

from perf import calibrate

META = {"machine": "test box", "started": "2026-11-27 09:00", "minutes": 12.0, "command": "python -m perf.calibrate",
        "reps": 1, "rounds": 16, "sequential": False, "statistic": "min", "recheck_rounds": 32}


def row(name: str, verdict: str) -> dict:
    return {"name": f"perf/test_stages.py::test_stage[{name}]", "verdict": verdict}


def results() -> dict[str, list]:
    det = [row("seed-relu-numpy", "regressed"), row("seed-relu-torch-cpu", "unchanged"),
           row("compute-grad_w1-numpy", "regressed"), row("compute-grad_w1-torch-cpu", "regressed"),
           row("seed-loss-numpy", "unchanged")]
    naive = [{"name": r["name"], "ratio": 1.2} for r in det]
    return {"ab_aa": [row("seed-hidden-numpy", "unchanged"), row("seed-relu-numpy", "regressed")],
            "ab_aa_naive": [{"name": "x", "ratio": 1.05}, {"name": "y", "ratio": 1.11}],
            "ab_det": det, "ab_det_naive": naive, "sb_aa": [], "sb_aa_naive": [], "sb_det": [], "sb_det_naive": [],
            "aa_runs": [{"wall": 180.0, "recheck": "32 more rounds of the 1 undecided benchmark(s), order seed 1"}],
            "det_runs": [{"wall": 90.0, "recheck": "none needed"}]}


def test_winsorized_sd_pulls_the_ends_in():
    values = [0.0, 0.01, -0.01, 0.02, -0.02, 0.0, 0.01, -0.01, 3.0, -3.0]  # 10 values: the 2 at each end pulled in
    expected = statistics.stdev([0.0, 0.01, -0.01, 0.01, -0.01, 0.0, 0.01, -0.01, 0.01, -0.01])
    assert calibrate.winsorized_sd(values) == pytest.approx(expected)
    assert calibrate.winsorized_sd(values) < statistics.stdev(values) / 50


def test_render_counts_flags_per_mode_backend_and_recheck(tmp_path):
    text = "\n".join(calibrate.render(results(), META, tmp_path))
    assert "Machine: test box. Started 2026-11-27 09:00 UTC, took 12 min." in text
    assert "per-process min, recheck 32 rounds" in text
    assert "| 1/2 (50.0%) | 1/2 (50.0%) |" in text  # A/A: one flagged by the gate, one past 10% plainly
    assert "| relu +25% at seed (microseconds) | A/B | 1/2 (50.0%) | numpy 1/1, torch-cpu 0/1 | 2/2 (100.0%) |" in text
    assert "| grad_w1 +10% at compute | A/B | 2/2 (100.0%) | numpy 1/1, torch-cpu 1/1 |" in text
    assert "3.0 to 3.0 min per run, recheck included (needed in 1 of 1 runs)" in text
    assert "(recheck needed in 0 of 1 runs)" in text


def test_render_reads_the_summary_back_and_refuses_a_workdir_without_one(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({"meta": META, "results": results()}))
    out = tmp_path / "gate.md"
    assert calibrate.main(["--render", "--workdir", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text().startswith("# The gate, measured")
    capsys.readouterr()
    assert calibrate.main(["--render", "--workdir", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--render: no calibration summary in" in err[0]
