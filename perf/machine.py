"""What this machine is and how benchmark processes run on it: threads, CPUs, GPUs, the
environment of child processes, and the fingerprint a baseline must share to be compared.

Everything in the suite that asks these questions asks here (the plugin, ``perf.ab``, ``ci``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

_limits = None  # keeps threadpoolctl's limits in force for the whole run
# Every BLAS/OpenMP pool's thread variable: set for libraries loaded later and for child processes.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS")
# Set by an outer pytest (this suite's own tests under xdist, say): inherited, they would turn a
# child session's benchmarks off or add options to it.
OUTER_PYTEST = ("PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_CURRENT_TEST",
                "PYTEST_XDIST_TESTRUNUID")
# Set in a benchmark process that must measure in itself and spawn no processes of its own: a
# child of --perf-processes, a side of an A/B round.
CHILD_ENV = "PERF_CHILD"
# Fingerprint fields that depend on the process (which libraries it has loaded, what it pinned):
# they are compared like every other field, but do not name the machine (``key``).
PER_PROCESS = ("threads", "blas", "code_path")
# Fingerprint fields of the software stack under the kernels: an upgrade changes them on the same hardware.
STACK = ("python", "numpy", "torch", "blas", "cuda", "gpu_driver", "code_path")
# Fingerprint fields added since runs were first saved: a saved run without one says nothing about it
# (it is not a difference), so that runs saved before still compare.
ADDED = ("code_path",)


def pin_threads(n: int, *, import_torch: bool = True) -> dict[str, int]:
    """Run torch and every BLAS/OpenMP pool with ``n`` threads; return the counts now in force.

    With more threads than free cores, spinning workers of torch and OpenBLAS fight over the
    cores and a short matmul can take a whole scheduler slice (docs/results/process-variation.md);
    one thread is the default. ``import_torch=False`` pins torch only where it is imported already
    (a numpy-only process under valgrind would spend long importing it: docs/results/counts.md).
    """
    global _limits
    os.environ.update(thread_env(n))  # for libraries loaded later and for child processes
    from threadpoolctl import threadpool_limits

    _limits = threadpool_limits(limits=n)
    torch = _torch(import_torch)
    if torch is not None:
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set, or parallel work already started
            pass
    return thread_counts(import_torch=import_torch)


def _torch(import_it: bool):
    """torch where it is imported already; else imported when ``import_it``; None without it."""
    torch = sys.modules.get("torch")
    if torch is None and import_it:
        try:
            import torch
        except ImportError:
            torch = None
    return torch


def thread_counts(*, import_torch: bool = True) -> dict[str, int]:
    from threadpoolctl import threadpool_info

    counts = {f"{pool['internal_api']}": pool["num_threads"] for pool in threadpool_info()}
    torch = _torch(import_torch)
    if torch is not None:
        counts["torch"] = torch.get_num_threads()
    return dict(sorted(counts.items()))


def cpus() -> list[int]:
    """The CPUs this process may run on (its affinity), or all of them where that cannot be asked."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def thread_env(threads: int) -> dict[str, str]:
    """Every BLAS/OpenMP pool's thread variable set to ``threads``."""
    return {name: str(threads) for name in THREAD_VARIABLES}


def child_env(threads: int | None = None, base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """The environment for a benchmark child process: an outer pytest's variables removed, every
    BLAS/OpenMP pool pinned to ``threads`` (when given), then ``extra``."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in OUTER_PYTEST}
    if threads is not None:
        env.update(thread_env(threads))
    env.update(extra)
    return env


def host_description() -> str:
    """This host in one line: name, platform, Python, CPUs."""
    return (f"{platform.node()}, {platform.platform()}, {platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} CPUs")


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
        info["code_path"] = code_path()
        return info
    info["torch"] = torch.__version__
    info["code_path"] = code_path()
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["gpu_driver"] = nvidia_driver()
    if torch.backends.mps.is_available():
        info["gpus"] = ["mps"]
    return info


def code_path() -> dict[str, str]:
    """The kernels this process's libraries dispatch to on this CPU: numpy's highest SIMD target (of those it
    was built to dispatch), torch's CPU capability (where torch is imported) and each BLAS with the core it
    chose. A process under valgrind sees a CPU without AVX-512 and takes other paths than the machine's."""
    path: dict[str, str] = {}
    try:
        from numpy._core import _multiarray_umath as umath
    except ImportError:  # numpy 1.x
        from numpy.core import _multiarray_umath as umath
    found = [f for f in umath.__cpu_dispatch__ if umath.__cpu_features__.get(f)]
    path["numpy"] = found[-1] if found else f"baseline {' '.join(umath.__cpu_baseline__) or 'none'}"
    torch = sys.modules.get("torch")
    if torch is not None:
        path["torch"] = torch.backends.cpu.get_cpu_capability()
    from threadpoolctl import threadpool_info

    for pool in threadpool_info():
        if pool["user_api"] == "blas":
            path[f"blas {pool['internal_api']}"] = pool.get("architecture") or pool.get("threading_layer") or "?"
    return dict(sorted(path.items()))


def last_level_cache() -> int:
    """Bytes of this CPU's last-level cache (0 where it cannot be read): data that fits there is not moved
    through memory, so a share of the memory bandwidth means little for it."""
    for index in (3, 2):
        try:
            text = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}/size").read_text().strip()
        except OSError:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:].upper(), 1)
        digits = text.rstrip("KkMm")
        if digits.isdigit():
            return int(digits) * scale
    return 0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def nvidia_smi(*args: str) -> str:
    """``nvidia-smi ARGS``'s output, or '' where there is no nvidia-smi or it fails."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return ""
    try:
        return subprocess.run([smi, *args], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def nvidia_driver() -> str | None:
    out = nvidia_smi("--query-gpu=driver_version", "--format=csv,noheader").strip()
    return out.splitlines()[0] if out else None


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


def gpu_record() -> dict:
    """What decides GPU timings besides the code: devices, driver, CUDA (driver and runtime), cuDNN, torch."""
    gpus = parse_gpu_csv(nvidia_smi(f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader"))
    record: dict = {
        "runner": os.environ.get("RUNNER_NAME") or platform.node(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "gpus": gpus,
        "driver": gpus[0]["driver"] if gpus else None,
        "cuda_driver": parse_cuda_version(nvidia_smi()),
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


def gpu_visible() -> bool:
    """A GPU that torch can use is present (CUDA or MPS): benchmark processes would share it."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available() or torch.backends.mps.is_available())


def differences(saved: Mapping, current: Mapping, ignore: tuple[str, ...] = ()) -> list[str]:
    """The one rule for "the same machine": every field equal (but ``ignore``, and the ``ADDED`` fields a
    saved run does not have). Human-readable differences, 'key: saved -> current'; [] when a baseline
    with ``saved`` may be compared with this run."""
    keys = sorted((set(saved) | set(current)) - set(ignore) - {k for k in ADDED if k not in saved})
    return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in keys if saved.get(k) != current.get(k)]


def same_hardware(saved: Mapping, current: Mapping) -> bool:
    """The same machine but for its software stack (``STACK``): the fields that are left are equal."""
    return not differences(saved, current, ignore=STACK)


def key(fp: Mapping) -> str:
    """A stable name for the machine of a fingerprint, for folders of baselines:
    '<first GPU, else CPU>-<12 hex digits of the hash of its fields but the per-process ones>'."""
    fields = {k: fp[k] for k in sorted(fp) if k not in PER_PROCESS}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]
    gpus = fields.get("gpus") or []
    name = str(gpus[0]) if gpus else str(fields.get("cpu") or "machine")
    slug = re.sub(r"[^a-z0-9._-]+", "_", name.lower()).strip("._-")[:40].strip("._-")
    return f"{slug or 'machine'}-{digest}"
