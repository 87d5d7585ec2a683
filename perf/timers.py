"""Clocks for pytest-benchmark that are right on every device.

pytest-benchmark reads its timer once before and once after each round. On an accelerator
the host clock alone would stop while kernels are still queued, so these timers wait for the
device first: per round, not per call, so back-to-back launches within a round overlap as
they do in real use.
"""

from __future__ import annotations

import time
from collections.abc import Callable

perf_counter = time.perf_counter


def timer_for(backend, mode: str) -> Callable[[], float]:
    """The timer for ``backend``: perf_counter on the CPU; sync or CUDA events on a device."""
    if backend.device_name == "cpu":
        return perf_counter
    if mode == "events":
        if not backend.device_name.startswith("cuda"):
            raise ValueError(f"--perf-timer=events needs a CUDA device, {backend.name} runs on {backend.device_name}")
        return cuda_events_timer(backend.device)
    return sync_timer(backend.synchronize)


def sync_timer(synchronize: Callable[[], None]) -> Callable[[], float]:
    def device_sync_perf_counter() -> float:
        synchronize()
        return perf_counter()

    return device_sync_perf_counter


def cuda_events_timer(device) -> Callable[[], float]:
    """Seconds on the GPU's own clock: an event recorded on the current stream, then waited for.

    Event intervals are single-precision milliseconds, so each reading adds the interval since
    the previous event to a float64 total rather than measuring from a distant origin.
    """
    import torch

    def record():
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(device))
        event.synchronize()
        return event

    state = {"last": record(), "total": 0.0}

    def cuda_events() -> float:
        event = record()
        state["total"] += state["last"].elapsed_time(event) / 1e3
        state["last"] = event
        return state["total"]

    return cuda_events
