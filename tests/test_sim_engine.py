"""The timing engine on hand-built programs: a plain reference on random programs, DRAM sharing against
hand-computed fluid times, and deadlocks named by engine, instruction and semaphore."""
from __future__ import annotations

import numpy as np
import pytest

from hetc.codegen import Compute, Dma, Operand, Signal, Wait
from hetc.errors import SimulationError
from hetc.sim.engine import run
from hetc.sim.machine import Machine

SYNC_NS = 100.0


def compute(duration: int) -> Compute:
    """A scratchpad compute: it never touches DRAM."""
    o = Operand("b", "v", "npu_sram", 0, "float32", (4,), (4,), 16)
    return Compute(0, 0, "relu", "Relu", "", "npu.Relu", (o,), (o,), {}, duration, 0, duration, 0)


def copy(nbytes: int, duration: int, dram_bytes: int | None = None) -> Dma:
    """A DMA from DRAM streaming ``dram_bytes`` (default ``nbytes``) in ``duration`` ns when alone."""
    src = Operand("a", "v", "dram", 0, "uint8", (nbytes,), (1,), nbytes)
    dst = Operand("b", "v", "npu_sram", 0, "uint8", (nbytes,), (1,), nbytes)
    return Dma(0, "v", src, dst, nbytes, duration, 0, duration, nbytes if dram_bytes is None else dram_bytes)


def machine(programs: list[list], bandwidth: float = 1e9) -> Machine:
    return Machine(engines=[f"e{i}" for i in range(len(programs))], programs=[tuple(p) for p in programs],
                   sync_ns=SYNC_NS, dram="dram", dram_bandwidth=bandwidth, device_kind={}, opset={},
                   memory_extent={})


def random_programs(seed: int, engines: int = 4, steps: int = 400, dram: bool = False) -> list[list]:
    """Programs in the shape codegen emits (one semaphore per signalling engine) that cannot deadlock: each
    wait asks for a count its semaphore had already reached when the wait was generated."""
    rng = np.random.default_rng(seed)
    programs: list[list] = [[] for _ in range(engines)]
    signalled = [0] * engines
    for _ in range(steps):
        e = int(rng.integers(engines))
        r = rng.random()
        if r < 0.4:
            duration = int(rng.integers(0, 60))
            if dram and rng.random() < 0.6:
                programs[e].append(copy(int(rng.integers(1, 400)), duration))
            else:
                programs[e].append(compute(duration))
        elif r < 0.65:
            programs[e].append(Signal(f"sem.e{e}"))
            signalled[e] += 1
        else:
            other = int(rng.integers(engines))
            if other != e and signalled[other]:
                programs[e].append(Wait(f"sem.e{other}", int(rng.integers(1, signalled[other] + 1))))
    return programs


def reference(programs: list[list]) -> tuple[set, dict[str, list[float]]]:
    """Every engine advanced as far as it can, over and over: each instruction starts when the one before it
    ended, a wait ends when its signal is visible (``SYNC_NS`` after it was issued)."""
    pcs, clock, visible, records = [0] * len(programs), [0.0] * len(programs), {}, set()
    progress = True
    while progress:
        progress = False
        for e, program in enumerate(programs):
            while pcs[e] < len(program):
                ins, start = program[pcs[e]], clock[e]
                if isinstance(ins, Wait):
                    times = visible.get(ins.sem, [])
                    if len(times) < ins.count:
                        break
                    end = max(start, times[ins.count - 1])
                elif isinstance(ins, Signal):
                    visible.setdefault(ins.sem, []).append(start + SYNC_NS)
                    end = start
                else:
                    end = start + ins.duration_ns
                records.add((e, pcs[e], start, end))
                clock[e] = end
                pcs[e] += 1
                progress = True
    return records, visible


def assert_execution_order(programs: list[list], records: list[tuple[int, int, float, float]]) -> None:
    """Each engine's steps in program order, and every wait after the signal that released it."""
    position = {(e, pc): i for i, (e, pc, _, _) in enumerate(records)}
    issuers: dict[str, list[tuple[int, int]]] = {}
    for e, program in enumerate(programs):
        assert [pc for r_e, pc, _, _ in records if r_e == e] == list(range(len(program)))
        for pc, ins in enumerate(program):
            if isinstance(ins, Signal):
                issuers.setdefault(ins.sem, []).append((e, pc))
    for e, program in enumerate(programs):
        for pc, ins in enumerate(program):
            if isinstance(ins, Wait):
                assert position[issuers[ins.sem][ins.count - 1]] < position[(e, pc)]


@pytest.mark.parametrize("seed", range(6))
def test_random_programs_match_the_reference(seed: int) -> None:
    programs = random_programs(seed)
    expected, visible = reference(programs)
    trace = run(machine(programs), contention=False)
    assert len(trace.records) == len(expected) == sum(map(len, programs))
    assert set(trace.records) == expected
    assert trace.signals == visible
    assert trace.heap_events == 0
    assert_execution_order(programs, trace.records)


@pytest.mark.parametrize("seed", range(4))
def test_dram_to_spare_changes_nothing(seed: int) -> None:
    """With bandwidth no set of users can exhaust, sharing on gives exactly the times of sharing off."""
    programs = random_programs(seed, dram=True)
    shared = run(machine(programs, bandwidth=1e9), contention=True)
    alone = run(machine(programs, bandwidth=1e9), contention=False)
    assert set(shared.records) == set(alone.records) == reference(programs)[0]
    assert shared.signals == alone.signals
    assert shared.stats["dram_min_speed"] == 1.0
    assert_execution_order(programs, shared.records)


@pytest.mark.parametrize("seed", range(4))
def test_saturated_dram_only_slows_users_down(seed: int) -> None:
    programs = random_programs(seed, dram=True)
    shared = run(machine(programs, bandwidth=8.0), contention=True)
    alone = run(machine(programs, bandwidth=8.0), contention=False)
    assert shared.stats["dram_min_speed"] < 1.0
    assert max(r[3] for r in shared.records) > max(r[3] for r in alone.records)
    assert_execution_order(programs, shared.records)
    visible = {sem: iter(times) for sem, times in shared.signals.items()}
    for e, pc, start, end in shared.records:
        ins = programs[e][pc]
        if isinstance(ins, (Compute, Dma)):
            assert end - start >= ins.duration_ns * (1 - 1e-9)   # never faster than alone
        elif isinstance(ins, Signal):
            assert start == end and next(visible[ins.sem]) == start + SYNC_NS
        else:
            assert end >= shared.signals[ins.sem][ins.count - 1] and end >= start


def test_contended_and_uncontended_makespans_by_hand() -> None:
    """e0 copies 1000 B (100 ns alone) and signals; e1 copies 500 B (50 ns alone); e2 waits for e0 and copies
    300 B (30 ns alone); each asks 10 B/ns of a 10 B/ns DRAM. Shared: e0 and e1 run at half speed until e1
    ends at 100, e0 finishes its last 50 ns alone at 150, its signal shows at 250, e2 copies 250-280.
    Alone: e0 ends at 100, e2 copies 200-230."""
    programs = [[copy(1000, 100), Signal("sem.e0")], [copy(500, 50)], [Wait("sem.e0", 1), copy(300, 30)]]
    shared = run(machine(programs, bandwidth=10.0), contention=True)
    alone = run(machine(programs, bandwidth=10.0), contention=False)
    assert sorted(shared.records) == [(0, 0, 0.0, pytest.approx(150.0)), (0, 1, pytest.approx(150.0),
                                                                           pytest.approx(150.0)),
                                      (1, 0, 0.0, pytest.approx(100.0)), (2, 0, 0.0, pytest.approx(250.0)),
                                      (2, 1, pytest.approx(250.0), pytest.approx(280.0))]
    assert max(r[3] for r in shared.records) == pytest.approx(280.0)
    assert sorted(alone.records) == [(0, 0, 0.0, 100.0), (0, 1, 100.0, 100.0), (1, 0, 0.0, 50.0),
                                     (2, 0, 0.0, 200.0), (2, 1, 200.0, 230.0)]
    assert shared.stats["dram_min_speed"] == pytest.approx(0.5)
    assert alone.stats["dram_min_speed"] == 1.0


def test_dram_user_joining_late_by_hand() -> None:
    """e0 copies 1000 B (100 ns alone) from 0; e1 computes 50 ns on its scratchpad, then copies 250 B (25 ns
    alone), both asking 10 B/ns of a 10 B/ns DRAM: e0 runs alone until 50, then both at half speed, so e1's
    copy ends at 100 and e0, 25 ns of work left, ends alone at 125. A compute outside DRAM is never slowed."""
    programs = [[copy(1000, 100)], [compute(50), copy(250, 25)]]
    trace = run(machine(programs, bandwidth=10.0), contention=True)
    assert sorted(trace.records) == [(0, 0, 0.0, pytest.approx(125.0)), (1, 0, 0.0, 50.0),
                                     (1, 1, 50.0, pytest.approx(100.0))]


def test_zero_duration_and_zero_byte_instructions_take_no_dram() -> None:
    programs = [[copy(100, 0), copy(100, 10, dram_bytes=0), copy(100, 10)], [copy(1000, 100)]]
    trace = run(machine(programs, bandwidth=10.0), contention=True)
    ends = {(e, pc): end for e, pc, _, end in trace.records}
    assert ends[(0, 0)] == 0.0 and ends[(0, 1)] == 10.0   # neither shares: e1 alone until 10
    assert ends[(0, 2)] == pytest.approx(30.0)              # then 10 ns of work at half speed
    assert ends[(1, 0)] == pytest.approx(110.0)             # 20 ns at half speed cost it 10


def test_deadlock_names_the_blocked_instructions() -> None:
    programs = [[compute(10), Signal("sem.e0"), Wait("sem.e1", 1)],
                [compute(5), Wait("sem.e0", 2), Signal("sem.e1")],
                [Wait("sem.e9", 1)]]
    with pytest.raises(SimulationError) as error:
        run(machine(programs), contention=True)
    message = str(error.value)
    assert "e0[2] waits for sem.e1 to reach 1 but it only reached 0 (signalled by e1)" in message
    assert "e1[1] waits for sem.e0 to reach 2 but it only reached 1 (signalled by e0)" in message
    assert "e2[0] waits for sem.e9 to reach 1 but it only reached 0 (signalled by no engine)" in message


def test_an_empty_machine_runs() -> None:
    trace = run(machine([[], []]), contention=True)
    assert trace.records == [] and trace.signals == {} and trace.heap_events == 0
