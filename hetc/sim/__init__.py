"""hetc.sim: the discrete-event simulator that runs a bundle, timing-only or on real bytes."""
from hetc.sim.prepared import PreparedSimulation
from hetc.sim.result import SimEvent, SimResult, SyncEdge
from hetc.sim.simulate import random_inputs, simulate

__all__ = ["simulate", "PreparedSimulation", "random_inputs", "SimResult", "SimEvent", "SyncEdge"]
