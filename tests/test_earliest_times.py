"""``earliest_times``'s one-pass path (an order hint) gives the times of the general path, or falls back to it."""
from __future__ import annotations

import random

import pytest

from hetc.schedule.tasks import TaskSpec, earliest_times


def _random_problem(seed: int, n: int = 60):
    rng = random.Random(seed)
    engines = ["cpu", "npu", "dma0", "dma1"]
    tasks = {}
    for k in range(n):
        deps = tuple(rng.sample(range(k), min(k, rng.randint(0, 3))))
        tasks[k] = TaskSpec(k, rng.choice(engines), rng.randint(0, 9), deps)
    orders: dict[str, list[int]] = {}
    for k in range(n):                      # task order is topological, so per-engine order is too
        orders.setdefault(tasks[k].engine, []).append(k)
    release = {k: rng.randint(0, 40) for k in range(n) if rng.random() < 0.3}
    return tasks, orders, release


@pytest.mark.parametrize("seed", range(20))
def test_an_order_hint_gives_the_same_times(seed):
    tasks, orders, release = _random_problem(seed)
    general = earliest_times(tasks, orders, 3, release)
    assert earliest_times(tasks, orders, 3, release, order_hint=list(tasks)) == general
    # a hint that is not topological falls back to the general path
    assert earliest_times(tasks, orders, 3, release, order_hint=list(reversed(list(tasks)))) == general


def test_a_cycle_is_still_reported_with_a_hint():
    tasks = {0: TaskSpec(0, "cpu", 1, (1,)), 1: TaskSpec(1, "npu", 1, ())}
    orders = {"cpu": [0], "npu": [1]}
    assert earliest_times(tasks, orders, 0, order_hint=[1, 0]) == {1: (0, 1), 0: (1, 2)}
    with pytest.raises(ValueError):
        earliest_times({0: TaskSpec(0, "cpu", 1, (1,)), 1: TaskSpec(1, "cpu", 1, ())},
                       {"cpu": [0, 1]}, 0, order_hint=[0, 1])


# ------------------------------------------------------------------ the memory planner's incremental re-timing
def _timed_schedule(seed: int, n: int = 80):
    """A random schedule that satisfies the rule (re-timed from random planned starts)."""
    from hetc.memory.retime import retime
    from hetc.schedule.artifact import Task
    rng = random.Random(seed)
    engines = ["cpu", "npu", "dma0", "dma1"]
    tasks, start = [], 0
    for k in range(n):
        deps = tuple(sorted(rng.sample(range(k), min(k, rng.randint(0, 3)))))
        start += rng.randint(1, 4)   # strictly later: engine order (by start) agrees with the dependencies
        duration = rng.randint(1, 9)
        tasks.append(Task(k, "compute", rng.choice(engines), start, start + duration, deps=deps))
    return rng, retime(tasks, 3)


@pytest.mark.parametrize("seed", range(40))
def test_re_timing_only_what_edits_reach_gives_the_full_answer(seed):
    """The edits spill_at and delay_at make: new transfers, new dependencies on them or on earlier tasks,
    a task postponed in its engine's queue; the incremental answer equals the whole re-timing's."""
    from dataclasses import replace

    from hetc.memory.retime import retime
    from hetc.schedule.artifact import Task
    rng, timed = _timed_schedule(seed)
    tasks = list(timed)
    for _ in range(rng.randint(1, 4)):
        edit = rng.random()
        k = rng.randrange(len(tasks))
        x = tasks[k]
        if edit < 0.4:      # a new transfer after x, read by a later task
            at = x.end_ns + 3
            new = Task(max(t.id for t in tasks) + 1, "transfer", rng.choice(["dma0", "dma1"]), at, at + 5,
                       deps=(x.id,))
            tasks.append(new)
            later = [j for j, t in enumerate(tasks) if t.start_ns > new.end_ns and t.id != new.id]
            if later:
                j = rng.choice(later)
                tasks[j] = replace(tasks[j], deps=tuple(sorted({*tasks[j].deps, new.id})))
        elif edit < 0.7:    # postponed: the same task starts later (its queue order may change)
            shift = rng.randint(1, 15)
            tasks[k] = replace(x, start_ns=x.start_ns + shift, end_ns=x.end_ns + shift)
        else:               # made to wait for the end of an earlier-starting task
            earlier = [t for t in tasks if t.end_ns <= x.start_ns and t.id != x.id]
            if earlier:
                tasks[k] = replace(x, deps=tuple(sorted({*x.deps, rng.choice(earlier).id})))
    assert retime(tasks, 3, timed) == retime(tasks, 3)
