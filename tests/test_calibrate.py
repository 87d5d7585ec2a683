"""The calibration report: its arithmetic and rendering on constructed results (measuring is
what `python -m perf.calibrate` does on a real machine, not a test)."""

from __future__ import annotations

import json

from perf import calibrate

META = {"machine": "test box", "started": "2026-12-03 09:00", "minutes": 75.0, "command": "python -m perf.calibrate",
        "commit": "abc1234567", "reps": 2, "copies": 2}


def row(name: str, verdict: str, ratio: float = 1.0, evidence: str = "saved processes") -> dict:
    return {"name": f"perf/test_stages.py::test_stage[{name}]", "verdict": verdict, "ratio": ratio, "evidence": evidence}


def run(kind: str, rc: int, rows: list[dict], wall: float = 120.0, at: str = "10:00") -> dict:
    return {"kind": kind, "name": kind, "rc": rc, "wall": wall, "rows": rows, "at": at, "confirmation": "",
            "confirmed": sum(r["evidence"].startswith("A/B") for r in rows)}


def results() -> dict:
    aa = [run("aa", 0, [row("seed-relu-numpy", "unchanged"), row("compute-hidden-numpy", "unchanged")], at="10:00"),
          run("aa", 1, [row("seed-relu-numpy", "regressed", 1.2, "A/B vs abc"), row("compute-hidden-numpy", "unchanged")],
              wall=300.0, at="11:05")]
    inject = [run("inject", 1, [row("seed-relu-numpy", "regressed", 1.5, "A/B vs abc"),
                                row("seed-relu-torch-cpu", "regressed", 1.48, "A/B vs abc"),
                                row("compute-grad_w1-numpy", "unchanged", 1.04)]) for _ in range(2)]
    real = [run("real", 1, [row("compute-relu_backward-numpy", "regressed", 1.2, "A/B vs abc")]),
            run("real", 0, [row("compute-relu_backward-numpy", "inconclusive", 1.07)])]
    return {"runs": [*aa, *inject, *real]}


def test_render_counts_failed_runs_flags_per_target_and_cost():
    text = "\n".join(calibrate.render(results(), META))
    assert "Machine: test box. Started 2026-12-03 09:00 UTC; 15 min of compare runs. Commit abc1234567." in text
    assert "| 2 | 1 | 1 | 4 | 1 | 10:00, 11:05 |" in text  # A/A: one failed run, one benchmark regressed
    assert "| relu +50% at seed | `seed-relu-numpy` | 2/2 | +50%, +50% |" in text
    assert "| relu +50% at seed | `seed-relu-torch-cpu` | 2/2 | +48%, +48% |" in text
    assert "| grad_w1 +10% at compute | `compute-grad_w1-numpy` | 0/2 | +4%, +4% |" in text
    assert "`compute-relu_backward-torch-cpu` | 0/2 | -, - |" in text  # not in these runs: never flagged
    assert "numpy at compute | `compute-relu_backward-numpy` | 1/2 | +20%, +7% |" in text
    assert "- unchanged code: 2.0 to 5.0 min (median 5.0) a run; benchmarks confirmed by an A/B per run: 0, 1" in text


def test_render_reads_the_summary_back_and_refuses_a_workdir_without_one(tmp_path, capsys):
    (tmp_path / "summary.json").write_text(json.dumps({**results(), "meta": META}))
    out = tmp_path / "gate.md"
    assert calibrate.main(["--render", "--workdir", str(tmp_path), "--out", str(out)]) == 0
    assert out.read_text().startswith("## Saved-baseline gate on the default selection")
    capsys.readouterr()
    assert calibrate.main(["--render", "--workdir", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--render: no calibration in" in err[0]

    (tmp_path / "a-file").write_text("")
    assert calibrate.main(["--render", "--workdir", str(tmp_path), "--out", str(tmp_path / "a-file" / "gate.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--out" in err[0] and "cannot write the report" in err[0]


def test_a_workdir_in_use_is_refused(tmp_path, capsys):
    (tmp_path / "something").write_text("")
    assert calibrate.main(["--workdir", str(tmp_path)]) == 2
    assert "not empty" in capsys.readouterr().err


def test_resume_refuses_a_workdir_without_a_stopped_calibration(tmp_path, capsys):
    assert calibrate.main(["--resume"]) == 2
    assert "--resume need --workdir" in capsys.readouterr().err
    assert calibrate.main(["--resume", "--workdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume: no calibration to go on with" in err[0]
    (tmp_path / "summary.json").write_text(json.dumps({"commits": {"base": "a", "real": "b"}, "runs": []}))
    assert calibrate.main(["--resume", "--workdir", str(tmp_path)]) == 2
    assert "the calibration's clone) is missing" in capsys.readouterr().err


def test_resume_keeps_finished_rounds_and_redoes_a_partial_one(tmp_path, monkeypatch):
    finished = [run(kind, 0, [], at="10:00") for kind in ("aa", "inject", "real", "aa")]  # a round and a part
    done = {"commits": {"base": "b", "real": "r"},
            "runs": [{**r, "name": f"{r['kind']}-{i // 3}"} for i, r in enumerate(finished)]}
    measured = []
    monkeypatch.setattr(calibrate, "prepare", lambda *a: (_ for _ in ()).throw(AssertionError("prepared again")))
    monkeypatch.setattr(calibrate, "compare", lambda work, name, commit, args, inject: measured.append((name, commit))
                        or {"name": name, "rc": 0, "wall": 1.0, "rows": [], "confirmed": 0, "at": "12:00"})
    res = calibrate.measure(tmp_path, tmp_path, 3, 2, [], {"started": "now"}, done)
    assert measured == [("aa-1", "b"), ("inject-1", "b"), ("real-1", "r"), ("aa-2", "b"), ("inject-2", "b"), ("real-2", "r")]
    assert [r["name"] for r in res["runs"]][:3] == ["aa-0", "inject-0", "real-0"] and len(res["runs"]) == 9
    assert json.loads((tmp_path / "summary.json").read_text())["runs"][3]["name"] == "aa-1"
