"""Every invariant of a MemoryPlan, checked from the artifact alone (plus the target it was planned for)."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hetc.ir.tiles import spans

from hetc.memory.artifact import Buffer, MemoryPlan, host_ref_value, is_host_ref, is_immediate_ref

if TYPE_CHECKING:
    from hetc.target.target import Target


def plan_violations(plan: MemoryPlan, target: "Target") -> list[str]:
    problems: list[str] = []
    by_id = {b.id: b for b in plan.buffers}
    if len(by_id) != len(plan.buffers):
        problems.append("two buffers share an id")
    problems += _placement(plan, target, by_id)
    problems += _overlaps(plan, by_id)
    problems += _bindings(plan, target, by_id)
    for name, stats in plan.stats.items():
        if stats.peak_bytes > stats.capacity_bytes:
            problems.append(f"memory '{name}': peak {stats.peak_bytes} B exceeds capacity {stats.capacity_bytes} B")
        if stats.peak_bytes < stats.lower_bound_bytes:
            problems.append(f"memory '{name}': peak {stats.peak_bytes} B is below the lower bound "
                            f"{stats.lower_bound_bytes} B, so the stats are wrong")
    return problems


def _placement(plan: MemoryPlan, target: "Target", by_id: dict[str, Buffer]) -> list[str]:
    problems = []
    for b in plan.buffers:
        memory = target.memories.get(b.memory)
        if memory is None:
            problems.append(f"buffer '{b.id}' is in unknown memory '{b.memory}'")
            continue
        if b.alias_of is None and b.offset % memory.alignment:   # (a region lies where its base's bytes are)
            problems.append(f"buffer '{b.id}' offset {b.offset} is not a multiple of {b.memory}'s alignment "
                            f"{memory.alignment}")
        if b.offset < 0 or b.end > memory.size:
            problems.append(f"buffer '{b.id}' [{b.offset}, {b.end}) lies outside '{b.memory}' "
                            f"({memory.size} B)")
        if b.end_ns <= b.start_ns:
            problems.append(f"buffer '{b.id}' has an empty lifetime [{b.start_ns}, {b.end_ns})")
        if b.kind == "constant" and b.offset + b.size > plan.constants_bytes:
            problems.append(f"constant '{b.id}' lies outside the read-only region of {plan.constants_bytes} B")
        if b.alias_of is not None:
            owner = by_id.get(b.alias_of)
            if owner is None or owner.memory != b.memory or owner.alias_of:
                problems.append(f"buffer '{b.id}' aliases '{b.alias_of}', which is not a storage owner in the "
                                f"same memory")
            elif not _inside(b, owner):
                problems.append(f"buffer '{b.id}' at {b.offset} (strides {b.strides}) reaches bytes outside its "
                                f"owner '{owner.id}' [{owner.offset}, {owner.offset + owner.size})")
    return problems


def _inside(member: Buffer, owner: Buffer) -> bool:
    """Whether every byte run of ``member`` lies in the owner's bytes (what a region or in-place part needs)."""
    if member.size == 0:
        return True
    if member.strides is None:
        runs = [(member.offset, member.offset + member.size)]
    else:
        shape = member.shape
        runs = spans(member.offset, shape, member.strides, member.size // max(1, math.prod(shape)))
    return owner.offset <= runs[0][0] and runs[-1][1] <= owner.offset + owner.size


def _overlaps(plan: MemoryPlan, by_id: dict[str, Buffer]) -> list[str]:
    """Two buffers live at the same time (and not sharing storage by aliasing) must not share a byte."""
    problems = []
    per_memory: dict[str, list[Buffer]] = {}
    for b in plan.buffers:
        if b.size > 0:
            per_memory.setdefault(b.memory, []).append(b)
    for buffers in per_memory.values():
        active: list[Buffer] = []
        for b in sorted(buffers, key=lambda b: (b.start_ns, b.id)):
            active = [a for a in active if a.end_ns > b.start_ns]
            for a in active:
                if a.owner != b.owner and a.offset < b.end and b.offset < a.end:
                    problems.append(f"buffers '{a.id}' and '{b.id}' in '{b.memory}' overlap in time and address")
            active.append(b)
    return problems


def _bindings(plan: MemoryPlan, target: "Target", by_id: dict[str, Buffer]) -> list[str]:
    problems = []
    for task in plan.schedule.tasks:
        tb = plan.task_buffers.get(task.id)
        if tb is None:
            problems.append(f"task {task.id} has no buffer binding")
            continue
        if task.kind == "compute":
            home = target.home(task.engine)
            hosted = [bid for bid in (*tb.reads, *tb.writes) if is_host_ref(bid)]
            if hosted and getattr(target.devices.get(task.engine), "kind", "cpu") != "cpu":
                problems.append(f"task {task.id} on {task.engine} touches host value(s) "
                                f"{[host_ref_value(b) for b in hosted]}; only a CPU may")
            expected = [(bid, home, None) for bid in tb.reads
                        if bid is not None and not is_host_ref(bid) and not is_immediate_ref(bid)]
            expected += [(bid, home, None) for bid in tb.writes if not is_host_ref(bid)]
        else:
            if len(tb.reads) != 1 + (task.when is not None) or len(tb.writes) != 1:
                problems.append(f"transfer task {task.id} must read one buffer (and its gate, predicated) and "
                                f"write one")
                continue
            expected = [(tb.reads[0], task.src, task.value), (tb.writes[0], task.dst, task.value)]
            if task.when is not None:
                expected.append((tb.reads[1], task.dst, task.when))
        for bid, memory, value in expected:
            b = by_id.get(bid or "")
            if b is None:
                problems.append(f"task {task.id} is bound to unknown buffer '{bid}'")
            elif b.memory != memory or (value is not None and b.value != value):
                problems.append(f"task {task.id} is bound to '{bid}' in '{b.memory}', expected value "
                                f"'{value or b.value}' in '{memory}'")
            elif not (b.start_ns <= task.start_ns and task.end_ns <= b.end_ns):
                problems.append(f"task {task.id} [{task.start_ns}, {task.end_ns}) uses '{bid}' outside its "
                                f"lifetime [{b.start_ns}, {b.end_ns})")
        for bid in tb.writes:
            if bid in by_id and by_id[bid].kind == "constant":
                problems.append(f"task {task.id} writes constant '{bid}' in the read-only region")
    return problems
