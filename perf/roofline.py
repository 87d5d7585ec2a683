"""Each benchmark's share of the roofline measured in the same run: matmuls and whole steps of the
peak matmul rate (``peak_matmul``), the rest of the copy bandwidth (``peak_copy``)."""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence

from .cases import PROBES, roofline_probe


def add_shares(infos: Sequence[MutableMapping], cache_bytes: int = 0) -> None:
    """Set ``peak_share`` and ``peak`` in each benchmark's extra_info (``infos``, one run's) that has a probe
    of its backend and dtype in the same run; ``in_cache`` where a memory-bound benchmark's data fits in
    half of ``cache_bytes`` (the last-level cache, shared with whatever else runs): the copy probe measures
    memory, so such a benchmark's share can pass 100% and says little."""
    peaks = {(e["stage"], e["backend"], e["dtype"]): e for e in infos if e.get("stage") in PROBES}
    for info in infos:
        stage = info.get("stage")
        if stage is None or stage in PROBES:
            continue
        probe = roofline_probe(stage)
        matmul = probe == "peak_matmul"
        peak = peaks.get((probe, info["backend"], info["dtype"]))
        if peak:
            key = "gflops" if matmul else "gbps"
            info["peak_share"] = info[key] / peak[key]
            info["peak"] = f"{peak[key]:.4g} {'GFLOP/s' if matmul else 'GB/s'} ({peak['stage']})"
            if not matmul and 0 < info.get("bytes", 0) <= cache_bytes / 2:
                info["in_cache"] = True
