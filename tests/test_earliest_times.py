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
