"""The Python environment of a self-hosted GPU runner job (standard library only: runs before any install).

    python3 -m ci.gpu_setup [--venv DIR] [--require-cuda]

Creates the virtual environment DIR (default .venv) with access to the system's site-packages,
so that a CUDA build of torch installed on the runner is used as it is; installs the default
torch wheel (a CUDA build on Linux) only when none is importable; installs the project with
``pip install -e '.[dev]'``; puts DIR's scripts first on PATH for the following steps
($GITHUB_PATH). Exit status: 0, or 2 when a step fails or, with --require-cuda, torch sees no GPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from perf.cli import ERROR, PASS, Parser, run_main  # standard library only, like everything this imports

from . import github
from .proc import PROJECT_ROOT

PROG = "python3 -m ci.gpu_setup"

PROBE = "import torch, json; print(json.dumps([torch.__version__, torch.version.cuda, torch.cuda.is_available()]))"


def scripts_dir(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin")


def interpreter(venv: Path) -> Path:
    return scripts_dir(venv) / ("python.exe" if os.name == "nt" else "python")


def plan(venv: Path, torch_present: bool, project: Path = PROJECT_ROOT) -> list[list[str]]:
    """The pip commands to run once the environment exists: torch only when absent, then the project."""
    py = str(interpreter(venv))
    steps = [[py, "-m", "pip", "install", "--upgrade", "pip"]]
    if not torch_present:
        steps.append([py, "-m", "pip", "install", "torch"])
    steps.append([py, "-m", "pip", "install", "-e", f"{project}[dev]"])
    return steps


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog=PROG, description="Set up the GPU runner's environment.")
    p.add_argument("--venv", default=".venv", help="virtual environment directory (default .venv)")
    p.add_argument("--require-cuda", action="store_true", help="exit 2 unless torch sees a CUDA device")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None, run: Callable[..., subprocess.CompletedProcess] = subprocess.run) -> int:
    return run_main(PROG, lambda: setup(parse_args(argv), run))


def setup(opts: argparse.Namespace, run: Callable[..., subprocess.CompletedProcess]) -> int:
    venv = Path(opts.venv).resolve()

    def step(cmd: list[str], **kw) -> subprocess.CompletedProcess:
        print(f"$ {' '.join(cmd)}", flush=True)
        return run(cmd, **kw)

    if step([sys.executable, "-m", "venv", "--system-site-packages", str(venv)]).returncode:
        github.annotate("error", f"cannot create the virtual environment {venv} (python3-venv installed?)", title="GPU setup")
        return ERROR
    probe = step([str(interpreter(venv)), "-c", PROBE], capture_output=True, text=True)
    torch_present = probe.returncode == 0
    found = probe.stdout.strip() if torch_present else "none, installing the default wheel"
    print(f"torch on the runner: {found}", flush=True)
    for cmd in plan(venv, torch_present):
        if step(cmd).returncode:
            github.annotate("error", f"failed: {' '.join(cmd)}", title="GPU setup")
            return ERROR
    github.add_path(scripts_dir(venv))
    probe = step([str(interpreter(venv)), "-c", PROBE], capture_output=True, text=True)
    print(f"torch, CUDA, CUDA available: {probe.stdout.strip() or probe.stderr.strip()}", flush=True)
    if opts.require_cuda and "true" not in probe.stdout:
        github.annotate("error", "torch sees no CUDA device on this runner", title="GPU setup")
        return ERROR
    return PASS


if __name__ == "__main__":
    sys.exit(main())
