"""What the study scripts share (studies/common.py): a missing study is one line, the report goes where asked."""

from __future__ import annotations

import sys

import pytest

from perf.errors import UsageError
from studies import common


def test_load_names_the_folder_without_a_finished_study(tmp_path):
    with pytest.raises(UsageError, match="--render: no finished study in"):
        common.load(tmp_path)
    (tmp_path / "study.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="not an object"):
        common.load(tmp_path)
    (tmp_path / "study.json").write_text('{"meta": {}}')
    assert common.load(tmp_path) == {"meta": {}}


def test_publish_prints_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report.md"
    assert common.publish(["# title", "", "a line"], str(out)) == 0
    assert capsys.readouterr().out == "# title\n\na line\n"
    assert out.read_text() == "# title\n\na line\n"


def test_run_says_the_command_and_fails_in_one_line(tmp_path, capsys):
    proc, wall = common.run("study", [sys.executable, "-c", "print('fine')"], tmp_path, {"STUDY_X": "1"})
    assert proc.stdout == "fine\n" and wall >= 0
    assert capsys.readouterr().err.startswith("study: STUDY_X=1 ")
    with pytest.raises(UsageError, match="exited 3: broken"):
        common.run("study", [sys.executable, "-c", "import sys; print('broken'); sys.exit(3)"], tmp_path)
