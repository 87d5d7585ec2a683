"""The GPU, driver and CUDA versions of this machine, recorded with every GPU run.

    python -m ci.gpu_env [--out FILE] [--require-cuda]

Prints the record (``perf.machine.gpu_record``) as JSON (and writes it to --out), adds a table to
the job summary and sets the outputs gpu, driver and cuda. Exit status: 0, or 2 for an --out that
cannot be written or, with --require-cuda, when torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence

from perf import machine, paths, results
from perf.cli import ERROR, PASS, Parser, run_main

from . import github

PROG = "python -m ci.gpu_env"


def gpu_names(record: Mapping) -> str:
    return ", ".join(g.get("name", "?") for g in record.get("gpus") or []) or "none"


def markdown(record: Mapping, runner_class: str = "") -> str:
    rows = [
        ("runner class", runner_class or "-"),
        ("runner", record.get("runner")),
        ("GPU", gpu_names(record)),
        ("driver", record.get("driver")),
        ("CUDA (driver supports)", record.get("cuda_driver")),
        ("CUDA (torch built with)", record.get("cuda_runtime")),
        ("cuDNN", record.get("cudnn")),
        ("torch", record.get("torch")),
        ("python", record.get("python")),
        ("os", record.get("os")),
    ]
    lines = ["| Machine | |", "|:---|:---|"]
    lines += [f"| {k} | {'-' if v in (None, '') else str(v).replace('|', '/')} |" for k, v in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog=PROG, description="Record the GPU, driver and CUDA versions.")
    p.add_argument("--out", help="write the record as JSON here")
    p.add_argument("--require-cuda", action="store_true", help="exit 2 when torch sees no CUDA device")
    return p.parse_args(argv)


def run(opts: argparse.Namespace) -> int:
    paths.require_writable({"--out": opts.out})
    record = machine.gpu_record()
    print(json.dumps(record, indent=2))
    if opts.out:
        results.write_json(opts.out, record)
    github.append_summary("### GPU runner\n\n" + markdown(record))
    github.set_outputs(gpu=gpu_names(record), driver=record.get("driver") or "", cuda=record.get("cuda_runtime") or "")
    if opts.require_cuda and not record["cuda_available"]:
        github.annotate("error", f"torch {record['torch']} sees no CUDA device on this runner", title="GPU runner")
        return ERROR
    return PASS


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(PROG, lambda: run(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    sys.exit(main())
