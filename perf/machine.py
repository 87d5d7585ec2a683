"""Thread pinning and the machine fingerprint: what decides performance, and nothing that drifts."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

_limits = None  # keeps threadpoolctl's limits in force for the whole run
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def pin_threads(n: int) -> dict[str, int]:
    """Run torch and every BLAS/OpenMP pool with ``n`` threads; return the counts now in force.

    With more threads than free cores, spinning workers of torch and OpenBLAS fight over the
    cores and a 0.1 ms matmul can take a whole scheduler slice; one thread is the default.
    """
    global _limits
    for name in THREAD_VARIABLES:
        os.environ[name] = str(n)  # for libraries loaded later and for child processes
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=n)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or parallel work already started
            pass
    return thread_counts()


def thread_counts() -> dict[str, int]:
    from threadpoolctl import threadpool_info

    counts = {f"{pool['internal_api']}": pool["num_threads"] for pool in threadpool_info()}
    try:
        import torch

        counts["torch"] = torch.get_num_threads()
    except ImportError:
        pass
    return dict(sorted(counts.items()))


def fingerprint() -> dict[str, object]:
    """What a baseline must share with this run to be comparable: hardware, libraries, threads."""
    import numpy
    from threadpoolctl import threadpool_info

    info: dict[str, object] = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "blas": sorted(
            f"{p['internal_api']} {p.get('version') or '?'} {p.get('architecture') or ''}".strip()
            for p in threadpool_info() if p["user_api"] == "blas"
        ),
        "threads": thread_counts(),
    }
    try:
        import torch
    except ImportError:
        info["torch"] = None
        return info
    info["torch"] = torch.__version__
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["gpu_driver"] = nvidia_driver()
    if torch.backends.mps.is_available():
        info["gpus"] = ["mps"]
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_driver() -> str | None:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip().splitlines()[0] if out.strip() else None


def differences(saved: dict, current: dict) -> list[str]:
    """Human-readable differences between two fingerprints, 'key: saved -> current'."""
    keys = sorted(set(saved) | set(current))
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]
