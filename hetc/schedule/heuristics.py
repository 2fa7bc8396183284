"""The list-scheduling strategies: HEFT, greedy (ONNX-Runtime-style) and single-device."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from hetc.errors import ScheduleError
from hetc.schedule.expected import expected_makespan, gate_scenarios
from hetc.schedule.listsched import ListScheduler, priority_order, upward_rank
from hetc.schedule.problem import SchedulingProblem
from hetc.schedule.tasks import Plan, makespan_of, time_plan


def heft(problem: SchedulingProblem) -> Plan:
    """HEFT, or the whole graph on one device when that is shorter: HEFT's greedy choices can lose to
    keeping everything on the CPU (transfers it did not foresee), and a baseline should never do that."""
    return heft_timed(problem)[0]


def heft_timed(problem: SchedulingProblem) -> tuple[Plan, int]:
    """``heft`` and its makespan. Beside HEFT itself, two runs the timing may find faster than HEFT's trials
    do: one with the devices homed in DRAM (the CPU) kept off every node another device can run, as a CPU
    node shares DRAM's bandwidth with the accelerators' weight copies (``hetc.schedule.dram``); one with each
    DMA engine that streams DRAM at its share of the bandwidth (``_dram_shared``). With predicated tasks the
    fastest on average ships (``hetc.schedule.expected``; the worst case breaks ties), as the build weighs
    such plans."""
    scenarios = gate_scenarios(problem) if problem.gates else None

    def timed(plan: Plan) -> tuple[float, int]:
        specs, times = time_plan(problem, plan)
        span = makespan_of(times)
        return (expected_makespan(problem, plan, scenarios, specs) if scenarios else span), span

    best = heft_list(problem)
    best_score = timed(best)
    variants = [v for v in (_accelerators_first(problem), _dram_shared(problem)) if v is not None]
    for variant in variants:
        plan = heft_list(variant)
        score = timed(plan)
        if score < best_score:
            best, best_score = plan, score
    for device in problem.devices:
        if all(device in problem.durations[i] for i in problem.compute_nodes):
            if scenarios is None and sum(problem.durations[i][device] for i in problem.compute_nodes) >= best_score[1]:
                continue   # its compute alone, one task after the other, takes longer: no need to schedule it
            plan = fixed_placement(problem, [device] * problem.n)
            score = timed(plan)
            if score < best_score:
                best, best_score = plan, score
    return best, best_score[1]


def _accelerators_first(problem: SchedulingProblem) -> SchedulingProblem | None:
    """``problem`` with the devices homed in DRAM removed from the candidates of every node another device can
    run; None when that changes nothing."""
    def kept(durations: dict[str, int]) -> dict[str, int]:
        away = {d: ns for d, ns in durations.items() if problem.home(d) != problem.dram}
        return away or durations
    durations = tuple(kept(durs) for durs in problem.durations)
    if durations == problem.durations:
        return None
    return replace(problem, durations=durations, _memo={})


def _dram_shared(problem: SchedulingProblem) -> SchedulingProblem | None:
    """``problem`` with each DMA engine that reads or writes DRAM at its share of DRAM's bandwidth when all of
    them stream at once; None when they fit in it together (or DRAM's bandwidth is not known)."""
    if problem.dram_bandwidth is None:
        return None
    streaming = [name for name, e in problem.dmas.items() if problem.dram in e.memories]
    asked = sum(problem.dmas[name].bandwidth for name in streaming)
    if asked <= problem.dram_bandwidth:
        return None
    share = problem.dram_bandwidth / asked
    dmas = {name: replace(e, bandwidth=e.bandwidth * share) if name in streaming else e
            for name, e in problem.dmas.items()}
    return replace(problem, dmas=dmas, _memo={})


def heft_list(problem: SchedulingProblem) -> Plan:
    """Upward rank order; each node on the device where it finishes earliest (insertion-based).

    Ties go to the device that comes first in the target's priority order."""
    scheduler = ListScheduler(problem)
    for node in priority_order(problem, upward_rank(problem)):
        heft_step(scheduler, node)
    return scheduler.plan()


def heft_step(scheduler: ListScheduler, node: int) -> None:
    """Commit ``node`` on the candidate device where it finishes earliest (an alias node: settle it)."""
    if scheduler.p.is_alias(node):
        scheduler.settle(node)
        return
    finish = {d: scheduler.trial(node, d) for d in scheduler.p.candidates(node)}
    scheduler.commit(node, min(finish, key=finish.__getitem__))


def fixed_placement(problem: SchedulingProblem, placement: list[str | None]) -> Plan:
    """List-schedule a given placement (ignored for alias nodes) in upward-rank order."""
    scheduler = ListScheduler(problem)
    for node in priority_order(problem, upward_rank(problem, placement)):
        scheduler.commit(node, placement[node])
    return scheduler.plan()


def greedy(problem: SchedulingProblem) -> Plan:
    """Each node on the first device of the priority list that supports it (as ONNX Runtime assigns
    execution providers), then list-scheduled."""
    order = list(problem.priority) + [d for d in problem.devices if d not in problem.priority]
    placement = [next((d for d in order if d in problem.durations[i]), None) for i in range(problem.n)]
    return fixed_placement(problem, placement)


def single(problem: SchedulingProblem, device: str, refusal: Callable[[int], str] | None = None) -> Plan:
    """Everything on ``device``. ``refusal(node)`` explains why a node cannot run there."""
    if device not in problem.device_memory:
        raise ScheduleError(f"unknown device '{device}' in strategy 'single:{device}'; "
                            f"choose one of: {', '.join(problem.devices)}")
    for i in problem.compute_nodes:
        if device not in problem.durations[i]:
            why = refusal(i) if refusal else "it is not among the node's candidate devices"
            raise ScheduleError(f"strategy 'single:{device}': node '{problem.node_names[i]}' "
                                f"({problem.ops[i]}) cannot run on '{device}': {why}; "
                                f"use another strategy or device")
    return fixed_placement(problem, [device] * problem.n)
