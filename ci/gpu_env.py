"""The GPU, driver and CUDA versions of this machine, recorded with every GPU run.

    python -m ci.gpu_env [--out FILE] [--require-cuda]

Prints the record as JSON (and writes it to --out), adds a table to the job summary and sets the
outputs gpu, driver and cuda. Exit status: 0, or 2 with --require-cuda when torch sees no CUDA device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence

from . import ERROR, PASS, github

SMI_FIELDS = ("name", "driver_version", "memory.total", "pci.bus_id")


def parse_gpu_csv(text: str) -> list[dict[str, str]]:
    """Rows of ``nvidia-smi --query-gpu=name,driver_version,memory.total,pci.bus_id --format=csv,noheader``."""
    rows = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == len(SMI_FIELDS):
            rows.append(dict(zip(("name", "driver", "memory", "bus_id"), cells)))
    return rows


def parse_cuda_version(text: str) -> str | None:
    """The highest CUDA version the driver supports, from the header of plain ``nvidia-smi``."""
    match = re.search(r"CUDA Version:\s*([0-9.]+)", text)
    return match.group(1) if match else None


def _smi(*args: str) -> str:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ""
    try:
        return subprocess.run([smi, *args], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def collect() -> dict:
    """What decides GPU timings besides the code: devices, driver, CUDA (driver and runtime), torch."""
    gpus = parse_gpu_csv(_smi(f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader"))
    record: dict = {
        "runner": os.environ.get("RUNNER_NAME") or platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpus": gpus,
        "driver": gpus[0]["driver"] if gpus else None,
        "cuda_driver": parse_cuda_version(_smi()),
        "torch": None,
        "cuda_runtime": None,
        "cudnn": None,
        "cuda_available": False,
    }
    try:
        import torch
    except ImportError:
        return record
    record["torch"] = torch.__version__
    record["cuda_runtime"] = torch.version.cuda
    if torch.cuda.is_available():
        record["cuda_available"] = True
        record["cudnn"] = torch.backends.cudnn.version()
        if not gpus:  # no nvidia-smi (e.g. in a container): the names torch sees
            record["gpus"] = [{"name": torch.cuda.get_device_name(i)} for i in range(torch.cuda.device_count())]
    return record


def gpu_names(record: dict) -> str:
    return ", ".join(g.get("name", "?") for g in record.get("gpus") or []) or "none"


def markdown(record: dict, runner_class: str = "") -> str:
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
    p = argparse.ArgumentParser(prog="python -m ci.gpu_env", description="Record the GPU, driver and CUDA versions.")
    p.add_argument("--out", help="write the record as JSON here")
    p.add_argument("--require-cuda", action="store_true", help="exit 2 when torch sees no CUDA device")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    record = collect()
    text = json.dumps(record, indent=2)
    print(text)
    if opts.out:
        with open(opts.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    github.append_summary("### GPU runner\n\n" + markdown(record))
    github.set_outputs(gpu=gpu_names(record), driver=record.get("driver") or "", cuda=record.get("cuda_runtime") or "")
    if opts.require_cuda and not record["cuda_available"]:
        github.annotate("error", f"torch {record['torch']} sees no CUDA device on this runner", title="GPU runner")
        return ERROR
    return PASS


if __name__ == "__main__":
    sys.exit(main())
