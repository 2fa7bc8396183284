"""DRAM bandwidth, shared: the part of the execution model (``hetc.schedule.tasks``) that is not a precedence.

A task streams through DRAM when it reads or writes bytes there: a compute on a device homed in DRAM (the CPU)
streams the bytes the cost model says it reads and writes (``hetc.target.node_bytes``: a view none, a Gather
its kept rows), a copy its bytes once per DRAM end. It asks for ``bytes / duration`` of DRAM's
bandwidth for its whole duration, as the simulator has it (``hetc.sim.engine``: when the asks exceed the
bandwidth, every DRAM user slows down by the same factor). The scheduler times its tasks by the same rule
(``SharedDram``, driven by ``hetc.schedule.tasks``), so the shares of the tasks running at any instant fit in
the bandwidth; a task DRAM slowed has its longer planned duration and keeps its own as ``Task.work_ns``, the
duration its instruction carries for the simulator (docs/scheduling.md, "DRAM").

Asks are counted in ``DRAM_UNITS`` shares of the bandwidth, rounded up, so that tasks sharing by shares
share no more than the bytes. A task asking for more than the whole bandwidth (a cost that does not charge
DRAM's bandwidth; the presets' costs do) is slowed like the others, even alone.
"""
from __future__ import annotations

import math
from typing import Callable, Hashable, Iterable

from hetc.schedule.artifact import Task
from hetc.schedule.problem import SchedulingProblem

DRAM_UNITS = 1000


def dram_ask(problem: SchedulingProblem, key: tuple, engine: str, duration: int) -> int:
    """A task's share of DRAM bandwidth in ``DRAM_UNITS`` (0: it does not stream through DRAM). ``key`` is
    the task's key (``hetc.schedule.tasks``: ("c", node) or ("x", value, dst memory))."""
    if key[0] == "c":
        return _share(problem, _compute_bytes(problem, key[1], engine), duration)
    value, dst = key[1], key[2]
    src = next(m for m in problem.dmas[engine].memories if m != dst)
    return _share(problem, _copy_bytes(problem, problem.values[value].nbytes, src, dst), duration)


def task_asks(problem: SchedulingProblem, tasks: Iterable[Task]) -> dict[int, int]:
    """``dram_ask`` of scheduled tasks (``hetc.schedule.artifact.Task``, by id) at their own durations
    (``Task.own_ns``), for re-timing a schedule by the same rule (``hetc.memory.retime.retime_shared``): a
    copy by the bytes it moves, a compute by its node's in ``problem``. Tasks asking nothing are left out."""
    node_index = {nid: i for i, nid in enumerate(problem.node_ids)}
    asks: dict[int, int] = {}
    for t in tasks:
        if t.kind == "compute":
            nbytes = _compute_bytes(problem, node_index[t.node], t.engine)
        else:
            nbytes = _copy_bytes(problem, t.bytes, t.src, t.dst)
        ask = _share(problem, nbytes, t.own_ns)
        if ask:
            asks[t.id] = ask
    return asks


def _compute_bytes(problem: SchedulingProblem, node: int, device: str) -> int:
    """The bytes a compute streams through DRAM: those it reads and writes, when its device computes in DRAM."""
    if problem.home(device) != problem.dram:
        return 0
    if problem.streamed_bytes:
        return problem.streamed_bytes[node]
    values = problem.values
    return sum(values[v].nbytes for v in (*problem.node_inputs[node], *problem.node_outputs[node])
               if not values[v].is_host)


def _copy_bytes(problem: SchedulingProblem, nbytes: int, src: str, dst: str) -> int:
    """A copy's bytes once per end of it in DRAM."""
    return nbytes * ((src == problem.dram) + (dst == problem.dram))


def _share(problem: SchedulingProblem, nbytes: int, duration: int) -> int:
    bandwidth = problem.dram_bandwidth
    if not bandwidth or duration <= 0 or nbytes <= 0:
        return 0
    return math.ceil(DRAM_UNITS * nbytes / (duration * bandwidth))


class SharedDram:
    """The DRAM users running at one time. When their asks exceed the bandwidth, every one of them slows by
    the same factor (the simulator's rule); a user joining or leaving changes the factor, and with it the end
    of every other. Ends are reported through ``push(time, key, version)``: only the latest version of a
    user's end stands (``current``)."""

    def __init__(self, push: Callable[[float, Hashable, int], None]) -> None:
        self.push = push
        self.running: dict[Hashable, list] = {}     # key -> [ask, ns of work left at full speed, as of when]
        self.version: dict[Hashable, int] = {}
        self.asked = 0
        self.speed = 1.0

    def join(self, key: Hashable, t: float, duration: int, ask: int) -> None:
        self.running[key] = [ask, float(duration), t]
        self.version[key] = self.version.get(key, 0) + 1
        self.asked += ask
        if not self._reshare(t):
            self.push(t + duration / self.speed, key, self.version[key])

    def leave(self, key: Hashable, t: float) -> None:
        self.asked -= self.running.pop(key)[0]
        self._reshare(t)

    def current(self, key: Hashable, version: int) -> bool:
        return key in self.running and self.version[key] == version

    def _reshare(self, t: float) -> bool:
        """Re-time every running user's end if the common speed changed (False: it did not)."""
        speed = 1.0 if self.asked <= DRAM_UNITS else DRAM_UNITS / self.asked
        if speed == self.speed:
            return False
        for key, user in self.running.items():
            user[1] = max(0.0, user[1] - (t - user[2]) * self.speed)
            user[2] = t
            self.version[key] += 1
            self.push(t + user[1] / speed, key, self.version[key])
        self.speed = speed
        return True
