"""hetc.memory: the lifetime-based memory planner (buffers, packing, aliasing, spills, verification)."""
from hetc.memory.artifact import Buffer, MemoryPlan, MemoryStats, Spill, TaskBuffers
from hetc.memory.packing import lower_bound, pack, pack_intervals
from hetc.memory.planner import plan_memory

__all__ = ["Buffer", "MemoryPlan", "MemoryStats", "Spill", "TaskBuffers", "pack_intervals", "pack", "lower_bound",
           "plan_memory"]
