"""The Makefile behind the README's two commands: what it would run, never a real install (make -n, make -q)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INDEX = "https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The Makefile and pyproject.toml alone, in a scratch folder."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def make(project: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", *args], cwd=project, capture_output=True, text=True, timeout=60)


def planned(project: Path, *args: str) -> list[str]:
    proc = make(project, "-n", *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_a_fresh_checkout_creates_the_environment_with_torch_pinned_first_then_runs_the_readme_command(project):
    lines = planned(project, "test", "GPU=")
    assert lines[0] == "test -x .venv/bin/python || python3 -m venv .venv"
    torch, = [i for i, line in enumerate(lines) if "pip install" in line and "torch==" in line]
    project_install, = [i for i, line in enumerate(lines) if "pip install -q -e '.[dev]'" in line]
    assert torch < project_install < lines.index("touch .venv/.installed")
    assert lines[-1] == f'PATH="{project}/.venv/bin:$PATH" VIRTUAL_ENV="{project}/.venv" pytest -n auto tests perf'
    assert planned(project, "perf", "GPU=", "ARGS=--benchmark-autosave")[-1].endswith(" pytest perf --benchmark-autosave")


@pytest.mark.parametrize("gpu, index_used", [("", True), ("visible", False)], ids=("no GPU", "GPU"))
def test_the_cpu_index_is_used_only_where_no_gpu_is_visible_and_only_when_given(project, gpu, index_used):
    (torch,) = [line for line in planned(project, "venv", f"GPU={gpu}", f"TORCH_CPU_INDEX={INDEX}") if "torch==" in line]
    assert (f"--index-url {INDEX}" in torch) is index_used
    (torch,) = [line for line in planned(project, "venv", f"GPU={gpu}") if "torch==" in line]
    assert "--index-url" not in torch  # never tried unless asked for: it may be unreachable


def test_the_environment_is_updated_only_when_pyproject_changes(project):
    (project / ".venv").mkdir()
    stamp = project / ".venv" / ".installed"
    stamp.touch()
    now = stamp.stat().st_mtime
    os.utime(project / "pyproject.toml", (now - 60, now - 60))
    assert make(project, "-q", "venv").returncode == 0, "up to date: nothing to install"
    assert planned(project, "test")[-1].endswith("pytest -n auto tests perf") and len(planned(project, "test")) == 1
    os.utime(project / "pyproject.toml", (now + 60, now + 60))
    assert make(project, "-q", "venv").returncode == 1, "pyproject.toml changed: the environment is updated"

