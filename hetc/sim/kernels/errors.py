"""The one error a kernel raises: it names the op, the device and what to do instead."""
from __future__ import annotations

from hetc.errors import SimulationError


class KernelError(SimulationError):
    """A kernel cannot run this node: no kernel for the op on that device kind, an attribute value the
    kernel does not implement, or a subgraph that captures outer-scope values. Reaching it in a simulation
    means the schedule placed a node where it cannot run, so it is reported like any bundle inconsistency."""
