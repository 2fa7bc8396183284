"""What a timing run defers and keeps: the SimResult's events, sync edges and memory curves are built at their
first read and equal the eager ones; a race-free verdict is kept for the same programs and trace and never
reused for another program or another trace (the stale-cache cases)."""
from __future__ import annotations

import gc
import pickle
import weakref
from dataclasses import replace

import pytest

from hetc.codegen import Dma, Wait
from hetc.errors import SimulationError
from hetc.sim import PreparedSimulation, simulate
from hetc.sim import races
from hetc.sim.engine import run
from hetc.sim.machine import Machine
from hetc.sim.result import Deferred, SimEvent, _event, _memory_usage, count_events
from hetc.sim.simulate import forget_prepared

from test_sim import edit, find
from test_sim_support import mixed_bundle, mixed_inputs, toy_target


@pytest.fixture
def sweeps(monkeypatch) -> list[int]:
    """Counts the race detector's sweeps (verdicts not taken from the kept ones)."""
    races.forget_race_verdicts()
    calls: list[int] = []
    sweep = races._sweep

    def counted(machine, records):
        calls.append(len(records))
        return sweep(machine, records)

    monkeypatch.setattr(races, "_sweep", counted)
    yield calls
    races.forget_race_verdicts()


def test_deferred_fields_equal_the_eager_ones() -> None:
    bundle = mixed_bundle()
    result = PreparedSimulation(bundle).run(functional=False)
    assert all(isinstance(result.__dict__[f], Deferred) for f in ("events", "sync_edges", "memory_usage"))
    machine = Machine.from_bundle(bundle)
    trace = run(machine)
    order = sorted(trace.records, key=lambda r: (r[2], machine.engines[r[0]], r[1]))
    eager = tuple(_event(machine.engines[e], pc, machine.programs[e][pc], s, t) for e, pc, s, t in order)
    assert result.events == eager and all(isinstance(e, SimEvent) for e in result.events)
    assert not isinstance(result.__dict__["events"], Deferred)   # computed once, then kept
    assert result.memory_usage == _memory_usage(len(bundle.constants), bundle.outputs, machine, trace,
                                                result.makespan_ns)
    assert len(result.sync_edges) == sum(e.kind == "wait" for e in result.events)


def test_an_unread_result_does_not_hold_its_bundle() -> None:
    """(A deferred field must not keep the bundle, and its constants image, alive.)"""
    bundle = mixed_bundle()
    result = PreparedSimulation(bundle).run(functional=False)
    gone = weakref.ref(bundle)
    del bundle
    gc.collect()
    assert gone() is None
    assert result.memory_usage and result.events   # still computed from what the result kept


def test_results_of_one_preparation_do_not_share_mutable_fields() -> None:
    prepared = PreparedSimulation(mixed_bundle())
    first, second = prepared.run(functional=False), prepared.run(functional=False)
    expected = dict(second.memory_usage)
    first.memory_usage.clear()
    assert second.memory_usage == expected and prepared.run(functional=False).memory_usage == expected


def test_deferred_results_pickle_and_replace_with_their_values() -> None:
    result = PreparedSimulation(mixed_bundle()).run(functional=False)
    copy = pickle.loads(pickle.dumps(result))
    assert copy == result and copy.events and copy.memory_usage
    other = replace(PreparedSimulation(mixed_bundle()).run(functional=False), stats=result.stats)
    assert other == result and other.events is not None


def test_a_race_free_verdict_is_kept_for_the_same_programs_and_trace(sweeps) -> None:
    forget_prepared()
    bundle = mixed_bundle()
    PreparedSimulation(bundle).run(functional=False)
    assert len(sweeps) == 1
    PreparedSimulation(bundle).run(functional=False)          # same programs, same trace
    simulate(replace(bundle, programs=dict(bundle.programs)), mixed_inputs())   # functional: same trace
    assert len(sweeps) == 1
    forget_prepared()


def test_another_trace_of_the_same_programs_is_checked_again(sweeps) -> None:
    bundle = mixed_bundle(toy_target(dram_bw=1.0))   # DRAM so slow that sharing it re-times the run
    shared, alone = (PreparedSimulation(bundle, contention=c) for c in (True, False))
    assert shared.trace.records != alone.trace.records
    assert len(sweeps) == 2


def test_a_racy_trace_of_kept_programs_still_raises(sweeps) -> None:
    bundle = mixed_bundle()
    broken = edit(bundle, "npu", find(bundle, "npu", lambda i: isinstance(i, Wait)))
    machine = Machine.from_bundle(broken)
    records = run(machine).records
    # The same instructions one at a time: no overlap, so race-free, and that verdict is kept...
    serial = [(e, pc, float(k), float(k + 1)) for k, (e, pc, _, _) in enumerate(records)]
    races.check_races(machine, serial)
    races.check_races(machine, serial)
    assert len(sweeps) == 1
    # ...but the real trace of those very programs overlaps the conv with the DMA it no longer waits for.
    for _ in range(2):   # a race is never kept
        with pytest.raises(SimulationError, match="data race"):
            races.check_races(machine, records)
    assert len(sweeps) == 3


def test_other_programs_with_an_equal_trace_are_checked_again(sweeps) -> None:
    bundle = mixed_bundle()
    PreparedSimulation(bundle)
    broken = edit(bundle, "npu", find(bundle, "npu", lambda i: isinstance(i, Wait)))
    with pytest.raises(SimulationError, match="data race"):
        PreparedSimulation(broken)
    assert len(sweeps) == 2


@pytest.mark.parametrize("dram_bw", [1000.0, 1.0])
@pytest.mark.parametrize("contention", [True, False])
def test_the_engine_end_is_the_latest_record_end(dram_bw: float, contention: bool) -> None:
    trace = run(Machine.from_bundle(mixed_bundle(toy_target(dram_bw=dram_bw))), contention=contention)
    assert trace.stats["end_ns"] == max(r[3] for r in trace.records)


def test_event_counts_follow_the_programs_run() -> None:
    bundle = mixed_bundle()
    broken = edit(bundle, "dma_dsp", find(bundle, "dma_dsp", lambda i: isinstance(i, Dma)))   # one DMA fewer
    for b in (bundle, broken, bundle, broken):   # kept counts never answer for other programs
        machine = Machine.from_bundle(b)
        trace = run(machine)
        expected = sum(2 if machine.programs[e][pc].kind in ("compute", "dma") else 1 for e, pc, _, _ in trace.records)
        assert count_events(machine, trace) == expected
