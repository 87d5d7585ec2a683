"""``python -m kernels.train`` end to end, through ``kernels.train.main``."""

from __future__ import annotations

import math
import re

import pytest

import kernels
from kernels import reference
from kernels.train import main

LOSS_LINE = re.compile(r"^step\s+(\d+)\s+loss (\S+)$")


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("name", ("numpy", "torch-cpu"))
def test_train_learns(name: str, dtype: str, capsys: pytest.CaptureFixture[str]) -> None:
    """500 steps at the seed size: a loss line every 100 steps, falling 100-fold, then the time per step."""
    assert main(["--backend", name, "--size", "seed", "--dtype", dtype, "--steps", "500"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    lines = captured.out.splitlines()
    assert name in lines[0] and "seed" in lines[0] and dtype in lines[0], lines[0]
    losses = [(int(m[1]), float(m[2])) for m in map(LOSS_LINE.match, lines) if m]
    assert [step for step, _ in losses] == [100, 200, 300, 400, 500], captured.out
    first, last = losses[0][1], losses[-1][1]
    assert last < 1e-2 * first, f"{name} {dtype}: loss went from {first} to {last}"
    assert "ms per step" in lines[-1] and len(lines) == 1 + len(losses) + 1, captured.out


def test_train_prints_last_step(capsys: pytest.CaptureFixture[str]) -> None:
    """A step count that is not a multiple of --every still reports the final loss."""
    assert main(["--steps", "7", "--every", "3"]) == 0
    steps = [int(m[1]) for m in map(LOSS_LINE.match, capsys.readouterr().out.splitlines()) if m]
    assert steps == [3, 6, 7]


def absent_cuda() -> list[str]:
    return [] if "torch-cuda" in kernels.available_backends() else [["--backend", "torch-cuda"]]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--backend", "nope"], ("nope", "numpy", "torch-cpu")),
        (["--backend", "torch-cpu:1"], ("torch-cpu:1",)),
        (["--size", "huge"], ("huge", "seed", "N,D_in,H,D_out")),
        (["--size", "1,2,3"], ("1,2,3", "N,D_in,H,D_out")),
        (["--size", "0,1,2,3"], ("N", "positive integer")),
        (["--lr", "nan"], ("learning rate", "finite")),
        (["--lr", "inf"], ("learning rate", "finite")),
        (["--dtype", "float64", "--backend", "numpyy"], ("numpyy",)),
        *[(argv, ("torch-cuda", "not available")) for argv in absent_cuda()],
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_input_exits_2(argv: list[str], words: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    """Exit code 2, nothing on stdout, one 'error: ...' line on stderr naming what was wrong."""
    assert main([*argv, "--steps", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith("\n") and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("error: "), captured.err
    missing = [word for word in words if word not in captured.err]
    assert not missing, f"{captured.err!r} does not mention {missing}"


def test_malformed_size_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--size=--1,2,3,4", "--steps", "1"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_default_lr_is_stable_at_odd_size() -> None:
    """An explicit size trains with the learning rate parse_problem picks for it: the loss stays finite and falls."""
    problem = kernels.parse_problem("7,13,5,3", "float64")
    losses, _, _ = reference.train(**problem.inputs(), lr=problem.lr, steps=100)
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < losses[0], f"lr {problem.lr:g}: the loss went from {losses[0]:g} to {losses[-1]:g}"


@pytest.mark.parametrize("argv", (["--steps", "0"], ["--every", "-1"], ["--dtype", "float16"]))
def test_bad_option_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """argparse's own checks: SystemExit(2) and a usage message on stderr."""
    with pytest.raises(SystemExit) as excinfo:
        main(argv)
    assert excinfo.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_a_size_beyond_memory_exits_2_before_allocating(capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    """Refused on the estimate, with one line giving both sizes: no input of that size is ever drawn."""
    def draw(problem):
        raise AssertionError(f"inputs drawn for {problem.name}")

    monkeypatch.setattr(kernels.Problem, "inputs", draw)
    huge = "1000000000,1000000000,1000000000,1000000000"
    assert main(["--size", huge, "--steps", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("error: size 1000000000x1000000000x1000000000x1000000000 needs about "), captured.err
    assert "PiB on cpu" in captured.err and "free; choose a smaller size" in captured.err
