"""One design point: derive its target, build (one CP-SAT worker), simulate timing-only, make its row.

A point never raises for a user error: a bad target, an unschedulable model or a failed validation is the
row's ``status`` and ``error``, so one bad point never stops a sweep. Anything else is a bug in hetc and is
recorded as well, with its type, so that hundreds of points are not lost to it.
"""
from __future__ import annotations

import resource
import time
import warnings
from typing import Any

import onnx

from hetc.errors import HetcError
from hetc.pipeline import BuildOptions, build
from hetc.sim import simulate
from hetc.sweep.derive import derive_target
from hetc.sweep.spec import Point

OK, FAILED = "ok", "failed"


def area_proxy(target: Any) -> dict[str, float]:
    """What a point costs in silicon, roughly: on-chip SRAM bytes and peak compute (GOP/s summed over
    devices at their fastest dtype, proportional to MACs)."""
    sram = sum(m.size for m in target.memories.values() if m.kind != "dram")
    gops = sum(max(d.peak.values()) for d in target.devices.values())
    return {"sram_bytes": float(sram), "peak_gops": float(gops)}


def run_point(point: Point, key: str, model_bytes: bytes, base_target: str, files: dict[str, str],
              time_limit_s: float | None, seed: int) -> dict[str, Any]:
    """The row of one point (see docs/sweep.md for the columns)."""
    row: dict[str, Any] = {"key": key, "model": point.model, "scheduler": point.scheduler, **point.axes}
    t0, cpu0 = time.perf_counter(), cpu_seconds()
    try:
        target = derive_target(base_target, point.axes, files)
        row.update(area_proxy(target))
        model = onnx.load_model_from_string(model_bytes) if isinstance(model_bytes, bytes) else model_bytes
        model.graph.name = model.graph.name or point.model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # an idle accelerator is a finding of the sweep, not noise
            result = build(model, BuildOptions(target=target, scheduler=point.scheduler, time_limit_s=time_limit_s,
                                               seed=seed, num_workers=1, validate=point.validate,
                                               input_seed=seed))
        compile_s = time.perf_counter() - t0
        sim = result.sim if result.sim is not None else simulate(result.bundle, None, functional=False)
        row.update(_measures(result, sim))
        row["compile_s"] = round(compile_s, 4)
        if result.validation is not None:
            row["validated"] = bool(result.validation.passed)
            if not result.validation.passed:
                raise HetcError(f"validation failed: max abs err {result.validation.max_abs_err:.3g}")
        row["status"], row["error"] = OK, ""
    except HetcError as exc:
        row["status"], row["error"] = FAILED, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - a bug in hetc: recorded with its type, the sweep goes on
        row["status"], row["error"] = FAILED, f"internal {type(exc).__name__}: {exc}"
    row["wall_s"] = round(time.perf_counter() - t0, 4)
    row["cpu_s"] = round(cpu_seconds() - cpu0, 4)
    return row


def cpu_seconds() -> float:
    """CPU time of this thread and of the child processes it waited for (CP-SAT solves in a forked child):
    what a point costs whatever else the machine runs, unlike its wall time."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.thread_time() + children.ru_utime + children.ru_stime


def _measures(result: Any, sim: Any) -> dict[str, Any]:
    summary = result.summary
    makespan = sim.makespan_ns
    busy: dict[str, float] = {}
    dma_bytes = 0
    for ev in sim.events:
        if ev.kind == "compute":
            busy[ev.engine] = busy.get(ev.engine, 0.0) + (ev.end_ns - ev.start_ns)
        elif ev.kind == "dma":
            dma_bytes += int(ev.args.get("bytes", 0))
    out: dict[str, Any] = {
        "makespan_planned_us": summary["makespan_us"],
        "makespan_sim_us": round(makespan / 1000, 4),
        "lower_bound_us": summary["lower_bound_us"],
        "gap": summary["gap"],
        "solver_status": summary["solver"]["status"],
        "spilled_bytes": sum(m["spilled_bytes"] for m in summary["memory"].values()),
        "dma_bytes": dma_bytes,
    }
    for device in result.target.devices:
        out[f"util_{device}"] = round(busy.get(device, 0.0) / makespan, 4) if makespan else 0.0
    for memory, m in summary["memory"].items():
        out[f"peak_{memory}_bytes"] = m["peak_bytes"]
    return out


def model_bytes_of(path: Any) -> bytes:
    """The model file's bytes (what goes through the object store once)."""
    with open(path, "rb") as f:
        return f.read()


__all__ = ["run_point", "area_proxy", "model_bytes_of", "OK", "FAILED"]
