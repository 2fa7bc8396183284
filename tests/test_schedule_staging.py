"""A weight two cores read may cross DRAM once: copied into the staging memory, then fanned out on chip.

The problem is multi-npu in miniature: two NPU cores, each with its own port to DRAM (8 GB/s) and to the
shared L2 (32 GB/s), and one DRAM-L2 engine (12.8 GB/s). Each core runs one node that reads the same
160 kB weight, so fetching it once into the L2 and twice from there beats two direct fetches.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from hetc.schedule.api import solve
from hetc.schedule.bound import lower_bound
from hetc.schedule.heuristics import heft
from hetc.schedule.problem import DmaSpec, SchedulingProblem, ValueSpec
from hetc.schedule.tasks import copies_needed, derive_tasks

WEIGHT = 160_000


def staged_problem(staging: str | None = "l2") -> SchedulingProblem:
    values = (ValueSpec("w", WEIGHT, None, (0, 1), is_const=True),
              ValueSpec("a", 256, 0, (), is_output=True),
              ValueSpec("b", 256, 1, (), is_output=True))
    dmas = {name: DmaSpec(name, pair, 10.0, bw) for name, pair, bw in [
        ("d0", ("dram", "spm0"), 8.0), ("d1", ("dram", "spm1"), 8.0), ("l2dram", ("dram", "l2"), 12.8),
        ("l0", ("spm0", "l2"), 32.0), ("l1", ("spm1", "l2"), 32.0)]}
    routes = {("spm0", "spm1"): (("spm0", "l2"), ("l2", "spm1")), ("spm1", "spm0"): (("spm1", "l2"), ("l2", "spm0"))}
    return SchedulingProblem(
        node_ids=(0, 1), node_names=("a", "b"), ops=("Conv", "Conv"), durations=({"npu0": 1000}, {"npu1": 1000}),
        node_inputs=((0,), (0,)), values=values, device_memory={"npu0": "spm0", "npu1": "spm1"}, dmas=dmas,
        sync_ns=7, priority=("npu0", "npu1"), routes=routes, staging=staging)


def test_a_dram_value_several_tasks_read_may_come_from_the_staging_memory_and_nothing_else_may():
    p = staged_problem()
    assert p.copy_sources(0, "dram", "spm0") == ["dram", "l2"]
    assert p.copy_sources(0, "spm0", "spm1") == ["l2"]          # already staged: its route's hop
    assert p.copy_sources(0, "spm0", "dram") == ["spm0"]
    assert staged_problem(staging=None).copy_sources(0, "dram", "spm0") == ["dram"]
    lone = replace(p, values=(ValueSpec("w", WEIGHT, None, (0,), is_const=True), *p.values[1:]), _memo={})
    assert lone.copy_sources(0, "dram", "spm0") == ["dram"]     # one reader: nothing to share


def test_the_engine_chosen_for_a_copy_decides_its_source():
    p = staged_problem()
    placement = ("npu0", "npu1")
    assert copies_needed(p, 0, placement) == [("dram", "spm0"), ("dram", "spm1")]
    fanned = {(0, "spm0"): "l0", (0, "spm1"): "l1"}
    assert copies_needed(p, 0, placement, fanned) == [("dram", "l2"), ("l2", "spm0"), ("l2", "spm1")]
    tasks = derive_tasks(p, placement, fanned)
    assert tasks[("x", 0, "spm0")].deps == (("x", 0, "l2"),)
    assert tasks[("x", 0, "l2")].engine == "l2dram"


def test_every_strategy_reads_the_shared_weight_from_dram_once_and_the_bound_allows_it():
    p = staged_problem()
    direct = solve(staged_problem(staging=None), "heft").makespan_ns
    for strategy in ("heft", "cpsat"):
        sched = solve(p, strategy, time_limit_s=5)
        reads = [t for t in sched.tasks if t.kind == "transfer" and t.value == "w" and t.src == "dram"]
        assert [(t.dst, t.engine) for t in reads] == [("l2", "l2dram")], strategy
        assert sched.makespan_ns < direct
        # the bound counts the staged route too: a bound over the direct route alone would exceed this schedule
        assert lower_bound(p) <= sched.makespan_ns
    assert lower_bound(staged_problem(staging=None)) > solve(p, "cpsat", time_limit_s=5).makespan_ns


def test_a_lone_reader_keeps_the_direct_copy_when_it_is_faster():
    p = staged_problem()
    small = replace(p, values=(ValueSpec("w", 64, None, (0, 1), is_const=True), *p.values[1:]), _memo={})
    plan = heft(small)
    assert {engine for (value, _dst), engine in plan.dma_choice.items() if value == 0} == {"d0", "d1"}


def random_staged_problem(seed: int, nodes: int = 10) -> SchedulingProblem:
    """Two NPU cores and a CPU on multi-npu's memory system in miniature; each weight is read by 1 to 3 nodes."""
    import random
    rng = random.Random(seed)
    base = staged_problem()
    values = [ValueSpec("x", rng.randint(1, 32) * 256, None, ())]
    durations, node_inputs, consumers = [], [], {0: set()}
    weights: list[int] = []
    for i in range(nodes):
        cpu = rng.randint(2000, 20000)
        durations.append({"npu0": cpu // 8, "npu1": cpu // 8, "cpu": cpu})
        reads = {rng.choice([v for v, s in enumerate(values) if not s.is_const])}
        if weights and rng.random() < 0.6:
            reads.add(rng.choice(weights))               # a weight an earlier node read too
        elif rng.random() < 0.7:
            values.append(ValueSpec(f"w{i}", rng.randint(8, 64) * 1024, None, (), is_const=True))
            weights.append(len(values) - 1)
            consumers[len(values) - 1] = set()
            reads.add(len(values) - 1)
        for v in reads:
            consumers[v].add(i)
        node_inputs.append(tuple(sorted(reads)))
        values.append(ValueSpec(f"v{i}", rng.randint(1, 32) * 256, i, ()))
        consumers[len(values) - 1] = set()
    values = [replace(s, consumers=tuple(sorted(consumers[k])), is_output=s.producer is not None and not consumers[k])
              for k, s in enumerate(values)]
    return replace(base, node_ids=tuple(range(nodes)), node_names=tuple(f"n{i}" for i in range(nodes)),
                   ops=("Conv",) * nodes, durations=tuple(durations), node_inputs=tuple(node_inputs),
                   values=tuple(values), device_memory={**base.device_memory, "cpu": "dram"},
                   priority=("npu0", "npu1", "cpu"), _memo={})


@pytest.mark.parametrize("seed", range(4))
def test_on_random_staged_problems_every_copy_reads_a_copy_that_is_there_and_the_bound_holds(seed: int):
    p = random_staged_problem(seed)
    bound = lower_bound(p)
    weights = {v.name for v in p.values if v.is_const}
    spans = {}
    for strategy in ("heft", "greedy", "cpsat"):
        sched = solve(p, strategy, time_limit_s=2)
        spans[strategy] = sched.makespan_ns
        assert bound <= sched.makespan_ns, strategy
        by_id = {t.id: t for t in sched.tasks}
        for t in sched.tasks:
            if t.kind == "transfer" and t.src != "dram" and t.value in weights:
                # a staged copy of a weight: it waits for the weight's copy into the staging memory
                assert any(by_id[d].kind == "transfer" and by_id[d].value == t.value and by_id[d].dst == t.src
                           for d in t.deps), (strategy, t)
    assert spans["cpsat"] <= spans["heft"]



def test_a_weight_staged_once_is_never_read_from_dram_again():
    # The weight is in the L2 already (node a's copy came that way) and spm1's L2 port is busy for a while:
    # a direct read from DRAM would reach npu1 sooner, but the weight would cross DRAM twice.
    from hetc.schedule.listsched import ListScheduler
    p = staged_problem()
    state = ListScheduler(p)
    state.book_transfer(0, "l2", "l2dram", 0)
    state.lanes["l1"].book(0, 200_000, ("busy",))
    state.commit(1, "npu1")
    assert state.dma_choice[(0, "spm1")] == "l1"
    fresh = ListScheduler(p)          # nothing staged yet: the direct read wins here
    fresh.lanes["l1"].book(0, 200_000, ("busy",))
    fresh.commit(1, "npu1")
    assert fresh.dma_choice[(0, "spm1")] == "d1"


def test_a_weight_is_staged_on_its_first_copy_when_that_does_not_delay_its_reader():
    # A small weight both cores read, beside a large input each core must load: direct reads would bring the
    # weight sooner, but the inputs decide when the nodes start, so the weight crosses DRAM once.
    from hetc.schedule.listsched import ListScheduler
    p = staged_problem()
    values = (ValueSpec("w", 640, None, (0, 1), is_const=True), ValueSpec("a", 256, 0, (), is_output=True),
              ValueSpec("b", 256, 1, (), is_output=True), ValueSpec("x", 400_000, None, (0,)),
              ValueSpec("y", 400_000, None, (1,)))
    slack = replace(p, values=values, node_inputs=((0, 3), (0, 4)), _memo={})
    plan = heft(slack)
    reads = {dst: engine for (value, dst), engine in plan.dma_choice.items() if value == 0}
    assert reads == {"l2": "l2dram", "spm0": "l0", "spm1": "l1"}
    # with no other input the weight is the node's critical input, and the direct read wins
    alone = ListScheduler(replace(slack, node_inputs=((0,), (0, 4)), _memo={}))
    alone.commit(0, "npu0")
    assert alone.dma_choice[(0, "spm0")] == "d0"
    # a read that is mostly latency (64 B: 8 ns of bytes, 10 ns of latency) takes little of DRAM's bandwidth,
    # so staging it would only add a second latency: it stays direct
    tiny = replace(slack, values=(ValueSpec("w", 64, None, (0, 1), is_const=True), *values[1:]), _memo={})
    assert {engine for (value, _dst), engine in heft(tiny).dma_choice.items() if value == 0} == {"d0", "d1"}
