"""Plain-data views of a target: JSON for tools (``hetc targets show --json``) and a short text summary."""
from __future__ import annotations

from typing import Any

from hetc.target.target import Target


def target_to_json(target: Target) -> dict[str, Any]:
    """Every field of ``target`` as JSON-ready data (sizes in bytes, bandwidths in GB/s, times in ns)."""
    return {
        "name": target.name,
        "description": target.description,
        "sync_ns": target.sync_ns,
        "priority": list(target.priority),
        "dram": target.dram,
        "staging": target.staging or target.dram,
        "memories": {m.name: {"kind": m.kind, "size": m.size, "bandwidth": m.bandwidth, "alignment": m.alignment}
                     for m in target.memories.values()},
        "devices": {d.name: {"kind": d.kind, "memory": d.memory, "launch_ns": d.launch_ns, "peak": dict(d.peak),
                             "efficiency": dict(d.efficiency),
                             "ops": None if d.ops is None else sorted(d.ops),
                             "dtypes": None if d.dtypes is None else sorted(d.dtypes),
                             "limits": dict(d.limits)}
                    for d in target.devices.values()},
        "dma": [{"name": e.name, "memories": list(e.memories), "bandwidth": e.bandwidth, "latency_ns": e.latency_ns}
                for e in target.dmas.values()],
    }


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def describe_target(target: Target) -> str:
    """A few lines a person reads: memories, devices with their fp32 peak and op count, DMA engines."""
    lines = [f"{target.name}: {target.description}"]
    for m in target.memories.values():
        lines.append(f"  memory {m.name:<12} {m.kind:<5} {_size(m.size):>10}  {m.bandwidth:g} GB/s")
    for d in target.devices.values():
        ops = "every op" if d.ops is None else f"{len(d.ops)} ops"
        peaks = ", ".join(f"{k} {v:g}" for k, v in d.peak.items())
        lines.append(f"  device {d.name:<12} {d.kind:<5} home {d.memory}, launch {d.launch_ns:g} ns, {ops}, "
                     f"peak GOP/s: {peaks}")
    for e in target.dmas.values():
        lines.append(f"  dma    {e.name:<12} {e.memories[0]} <-> {e.memories[1]}, {e.bandwidth:g} GB/s, "
                     f"{e.latency_ns:g} ns latency")
    lines.append(f"  sync {target.sync_ns:g} ns; two-hop routes stage in {target.staging or target.dram}")
    return "\n".join(lines)
