"""``simulate(bundle, inputs)``: run a bundle's programs on the modelled machine.

``simulate`` runs a ``PreparedSimulation`` (``hetc.sim.prepared``), which it keeps for the next call: one at a
time (the memories of a large model are hundreds of MB: VGG-19's constants image alone is 548 MiB), for the
same bundle object and the same precision, race detection, contention and kernel. Bundles are immutable, so
the identity of the object is the key; the kept simulation holds the bundle, which keeps that identity
valid. A call made while another thread runs the kept simulation prepares its own.
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
             kernel: KernelFn | None = None) -> SimResult:
    """Simulate ``bundle``. Functional mode runs every kernel and DMA on real bytes and returns the outputs
    (``inputs=None`` uses ``random_inputs(bundle, seed=0)``); timing-only mode skips the data.
    ``stats["wall_s"]`` is this call's wall time, the preparation included when it was not kept from a
    previous call (``stats["prepare_s"]``)."""
    t0 = time.perf_counter()
    if functional and inputs is not None:
        check_inputs(bundle, inputs)   # check the inputs before spending time on the preparation
    key = (id(bundle), precision, detect_races, contention, kernel)
    with _kept_lock:
        prepared = _kept.pop()[1] if _kept and _kept[0][0] == key and _kept[0][1].bundle is bundle else None
    prepare_s = 0.0
    if prepared is None:
        prepared = PreparedSimulation(bundle, precision=precision, detect_races=detect_races,
                                      contention=contention, kernel=kernel)
        prepare_s = prepared.prepare_s
    result = prepared.run(inputs, functional=functional)
    with _kept_lock:
        _kept[:] = [(key, prepared)]
    result.stats["prepare_s"] += prepare_s
    result.stats["wall_s"] = time.perf_counter() - t0
    return result


def forget_prepared() -> None:
    """Drop the simulation ``simulate`` kept (and the memory it holds)."""
    with _kept_lock:
        _kept.clear()
