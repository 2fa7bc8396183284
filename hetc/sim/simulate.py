"""``simulate(bundle, inputs)``: run a bundle's programs on the modelled machine.

``simulate`` runs a ``PreparedSimulation`` (``hetc.sim.prepared``) and keeps it for the next call: one at a
time (the memories of a large model are hundreds of MB: VGG-19's constants image alone is 548 MiB), reused
for the same precision, race detection, contention and kernel and a bundle whose simulated parts are the
same objects (``_simulated_parts``: programs, constants image and the manifest's machine, inputs, outputs,
opset and planned makespan). Bundles are immutable, so identity is the key, and the kept simulation holds
its bundle, which keeps those objects alive: a bundle that differs only in its summary, report or extra
files (``Bundle.with_summary``...) reuses the simulation, any other is prepared anew. A call made while
another thread runs the kept simulation prepares its own.
"""
from __future__ import annotations

import threading
import time

import numpy as np

from hetc.codegen.bundle import Bundle
from hetc.sim.functional import KernelFn
from hetc.sim.prepared import PreparedSimulation, check_inputs, random_inputs
from hetc.sim.result import SimResult

_kept: list[tuple[tuple, PreparedSimulation]] = []   # at most one (key, prepared simulation)
_kept_lock = threading.Lock()

__all__ = ["simulate", "random_inputs", "forget_prepared"]


def simulate(bundle: Bundle, inputs: dict[str, np.ndarray] | None = None, functional: bool = True,
             precision: str = "fp32", detect_races: bool = True, contention: bool = True,
             kernel: KernelFn | None = None, probes: frozenset[str] | set[str] = frozenset(),
             gates_off: frozenset[str] | set[str] = frozenset()) -> SimResult:
    """Simulate ``bundle``. Functional mode runs every kernel and DMA on real bytes and returns the outputs
    (``inputs=None`` uses ``random_inputs(bundle, seed=0)``) and the intermediate values named in ``probes``
    as the computes read or wrote them (``SimResult.probes``); timing-only mode skips the data, and times the
    worst case, or the run in which the gates named in ``gates_off`` turned their predicated instructions off.
    ``stats["wall_s"]`` is this call's wall time, the preparation included when it was not kept from a
    previous call (``stats["prepare_s"]``)."""
    t0 = time.perf_counter()
    if functional and inputs is not None:
        check_inputs(bundle, inputs)   # check the inputs before spending time on the preparation
    key = (_simulated_parts(bundle), precision, detect_races, contention, kernel)
    with _kept_lock:
        prepared = _kept.pop()[1] if _kept and _kept[0][0] == key else None
    prepare_s = 0.0
    if prepared is None:
        prepared = PreparedSimulation(bundle, precision=precision, detect_races=detect_races,
                                      contention=contention, kernel=kernel)
        prepare_s = prepared.prepare_s
    result = prepared.run(inputs, functional=functional, probes=frozenset(probes), gates_off=frozenset(gates_off))
    with _kept_lock:
        _kept[:] = [(key, prepared)]
    result.stats["prepare_s"] += prepare_s
    result.stats["wall_s"] = time.perf_counter() - t0
    return result


def _simulated_parts(bundle: Bundle) -> tuple:
    """The identities of everything a simulation reads from ``bundle``."""
    manifest = bundle.manifest
    return (id(bundle.programs), id(bundle.constants), id(manifest["machine"]), id(manifest["inputs"]),
            id(manifest["outputs"]), id(manifest["opset"]), manifest.get("planned_makespan_ns"))


def forget_prepared() -> None:
    """Drop the simulation ``simulate`` kept (and the memory it holds)."""
    with _kept_lock:
        _kept.clear()
