"""hetc.schedule: partition the graph over the devices and time every compute and transfer task."""
from hetc.schedule.api import STRATEGIES, check_strategy, default_time_limit, schedule, schedule_placement, solve
from hetc.schedule.artifact import Schedule, SolverStats, Task
from hetc.schedule.bound import lower_bound
from hetc.schedule.placement import (IdleAcceleratorsWarning, idle_accelerators_warning,
                                      placement_rows)
from hetc.schedule.problem import SchedulingProblem, build_problem
from hetc.schedule.verify import ScheduleInvariantError

__all__ = ["schedule", "solve", "schedule_placement", "check_strategy", "STRATEGIES", "default_time_limit", "Schedule", "SolverStats", "Task",
           "lower_bound", "placement_rows", "idle_accelerators_warning", "IdleAcceleratorsWarning", "SchedulingProblem", "build_problem", "ScheduleInvariantError"]
