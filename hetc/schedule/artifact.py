"""The Schedule artifact: which engine runs each task, and when.

Two kinds of task share one record type so that every consumer (memory planner, codegen, simulator,
reports) walks a single list:

* ``compute``: node ``node`` (its ``op``) runs on device ``engine``; operands are in that device's home memory.
* ``transfer``: DMA engine ``engine`` copies value ``value`` (``bytes`` bytes) from memory ``src`` to ``dst``.

Times are integer nanoseconds; ``end_ns`` is exclusive. ``deps`` lists the ids of tasks that must end before
this one starts (data dependencies only: producer -> transfer -> consumer). Engine order is implied by start
times: tasks of one engine never overlap.

Alias nodes (``hetc.ir.tiles``: Region, Assemble) have no task and no placement: ``aliases`` says which memory
each one's output lives in (``hetc.schedule.tasks`` states the rules).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from hetc.ir import Graph
    from hetc.target import Target


@dataclass(frozen=True)
class Task:
    id: int
    kind: str                   # "compute" | "transfer"
    engine: str                 # device name (compute) or DMA engine name (transfer)
    start_ns: int
    end_ns: int
    deps: tuple[int, ...] = ()
    node: int | None = None     # compute: node id
    op: str | None = None       # compute: op type
    value: str | None = None    # transfer: value name
    src: str | None = None      # transfer: source memory
    dst: str | None = None      # transfer: destination memory
    bytes: int = 0              # transfer: bytes moved
    when: str | None = None     # the gate the task is predicated on (hetc.ir.predicates); None: it always runs
    # ns it takes alone, when DRAM's bandwidth shared with other tasks made it last longer (hetc.schedule.dram)
    work_ns: int | None = None

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def own_ns(self) -> int:
        """What the task takes with DRAM to itself (its kernel's or its DMA's own time); ``duration_ns`` includes
        the slowdown sharing DRAM caused. A program instruction carries this one: the simulator shares DRAM
        itself."""
        return self.duration_ns if self.work_ns is None else self.work_ns

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.id, "kind": self.kind, "engine": self.engine,
                             "start_us": self.start_ns / 1000, "end_us": self.end_ns / 1000,
                             "start_ns": self.start_ns, "end_ns": self.end_ns, "deps": list(self.deps)}
        if self.kind == "compute":
            d.update(node=self.node, op=self.op)
        else:
            d.update(value=self.value, src=self.src, dst=self.dst, bytes=self.bytes)
        if self.when is not None:
            d["when"] = self.when
        if self.work_ns is not None:
            d["work_ns"] = self.work_ns
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Task":
        return cls(id=d["id"], kind=d["kind"], engine=d["engine"], start_ns=d["start_ns"], end_ns=d["end_ns"],
                   deps=tuple(d.get("deps", ())), node=d.get("node"), op=d.get("op"), value=d.get("value"),
                   src=d.get("src"), dst=d.get("dst"), bytes=d.get("bytes", 0),
                   when=d.get("when"), work_ns=d.get("work_ns"))


@dataclass(frozen=True)
class SolverStats:
    strategy: str               # "cpsat" | "heft" | "greedy" | "single:<device>"
    status: str                 # "OPTIMAL" | "FEASIBLE" | "HEURISTIC" | "HINT" (CP-SAT found nothing better)
    objective_ns: int           # the makespan the strategy achieved
    best_bound_ns: int          # the lower bound it can prove (>= the analytic bound)
    wall_s: float = 0.0         # run to run; 0 when unknown (a bundle loaded without its build-info.json)
    tick_ns: int = 1            # CP-SAT time unit
    details: dict[str, Any] = field(default_factory=dict)  # windows, workers, seed, HEFT makespan...

    @property
    def gap(self) -> float:
        """(makespan - bound) / makespan; 0 when proven optimal."""
        if self.objective_ns <= 0:
            return 0.0
        return max(0.0, (self.objective_ns - self.best_bound_ns) / self.objective_ns)

    def shipped(self, makespan_ns: int) -> "SolverStats":
        """These statistics for the schedule that ships when memory planning re-timed the solver's to
        ``makespan_ns``: the objective is that makespan and the gap is recomputed against the same bound; the
        status stays unless it claimed optimality the re-timed schedule no longer has; the solver's own
        status, objective and gap are kept apart in ``details['solver_own']``."""
        if makespan_ns == self.objective_ns:
            return self
        own = self.details.get("solver_own") or {"status": self.status, "objective_ns": self.objective_ns,
                                                 "gap": round(self.gap, 6)}
        status = "FEASIBLE" if self.status == "OPTIMAL" and makespan_ns > self.best_bound_ns else self.status
        return replace(self, status=status, objective_ns=makespan_ns, details={**self.details, "solver_own": own})


@dataclass(frozen=True)
class Schedule:
    tasks: tuple[Task, ...]
    placement: dict[int, str]   # node id -> device
    stats: SolverStats
    lower_bound_ns: int         # analytic bound, raised to the solver's proven bound when stronger
    # alias node id (hetc.ir.tiles: Region, Assemble; not tasks) -> the memory its output lives in
    aliases: dict[int, str] = field(default_factory=dict)

    @property
    def makespan_ns(self) -> int:
        makespan = self.__dict__.get("_makespan_cache")   # (the memory planner asks after each of its repairs)
        if makespan is None:
            makespan = max((t.end_ns for t in self.tasks), default=0)
            object.__setattr__(self, "_makespan_cache", makespan)
        return makespan

    @property
    def gap(self) -> float:
        m = self.makespan_ns
        return 0.0 if m <= 0 else max(0.0, (m - self.lower_bound_ns) / m)

    def task(self, task_id: int) -> Task:
        return self.by_id()[task_id]

    def by_id(self) -> dict[int, Task]:
        """Task id -> task (built once per schedule; do not modify it)."""
        by_id = self.__dict__.get("_by_id_cache")
        if by_id is None:
            by_id = {t.id: t for t in self.tasks}
            object.__setattr__(self, "_by_id_cache", by_id)
        return by_id

    def engine_tasks(self) -> dict[str, list[Task]]:
        """Tasks of each engine, in start order (the program order of that engine)."""
        lanes: dict[str, list[Task]] = {}
        for t in in_program_order(self.tasks):
            lanes.setdefault(t.engine, []).append(t)
        return lanes

    def utilisation(self) -> dict[str, float]:
        """Busy fraction of the makespan, per engine that has tasks."""
        m = self.makespan_ns or 1
        return {e: sum(t.duration_ns for t in ts) / m for e, ts in self.engine_tasks().items()}

    def verify(self, graph: Graph, target: Target) -> None:
        """Raise ScheduleInvariantError listing every broken invariant: precedence (+ sync), one task at a
        time per engine, capability, inputs resident via a transfer chain, outputs in DRAM, alias nodes (no
        task; their memory; readers and transfers of their outputs wait for what makes them available)."""
        from hetc.schedule.verify import verify_schedule
        verify_schedule(self, graph, target)

    def with_tasks(self, tasks: tuple[Task, ...]) -> "Schedule":
        return replace(self, tasks=tasks)

    # ------------------------------------------------------------------ JSON (schedule.json)
    def to_json(self) -> dict[str, Any]:
        return {
            "makespan_us": self.makespan_ns / 1000,
            "lower_bound_us": self.lower_bound_ns / 1000,
            "lower_bound_ns": self.lower_bound_ns,
            "gap": self.gap,
            "placement": {str(k): v for k, v in sorted(self.placement.items())},
            "solver": {**asdict(self.stats), "gap": self.stats.gap},
            "tasks": [t.to_json() for t in self.tasks],
            "aliases": [{"node": n, "memory": m} for n, m in sorted(self.aliases.items())],
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Schedule":
        s = dict(d["solver"])
        s.pop("gap", None)
        return cls(tasks=tuple(Task.from_json(t) for t in d["tasks"]),
                   placement={int(k): v for k, v in d["placement"].items()},
                   stats=SolverStats(**s), lower_bound_ns=d["lower_bound_ns"],
                   aliases={int(a["node"]): a["memory"] for a in d.get("aliases", ())})

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1, sort_keys=False)


def in_program_order(tasks: Iterable[Task]) -> list[Task]:
    """``tasks`` as their engines run them: by planned start, ties by end (a zero-length task first), then id.
    An engine's program is its tasks in this order (``Schedule.engine_tasks``; re-timing keeps it)."""
    return sorted(tasks, key=attrgetter("start_ns", "end_ns", "id"))
