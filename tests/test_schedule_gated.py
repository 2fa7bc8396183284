"""The expected case of a schedule with predicated experts (hetc.schedule.expected: the runs it weighs, its
timing), HEFT weighing its runs by it, and the placement search that lowers it without lengthening the worst
case (hetc.schedule.gated)."""
from __future__ import annotations

import pytest

from hetc.frontend import import_model
from hetc.passes import optimize
from hetc.schedule.api import solve
from hetc.schedule.expected import expected_makespan, gate_scenarios
from hetc.schedule.gated import balance_gated, expected_problem
from hetc.schedule.heuristics import _accelerators_first, _dram_shared, fixed_placement, heft, heft_list, heft_timed
from hetc.schedule.listsched import replay
from hetc.schedule.problem import build_problem
from hetc.schedule.tasks import copy_gate, makespan_of, time_plan
from hetc.target import load_target
from qdq_helpers import make_models


def _problem(target: str = "edge-soc", experts: int = 8, packed_biases: bool = True):
    """The one-token MoE's problem; without ``packed_biases`` each expert's bias stays a constant of its own (one
    more copy per projection: hetc.passes.fusion packs it into the weight), where the plans of the tests that
    ask for it differ as they describe."""
    graph = optimize(import_model(make_models().moe(1, experts, 2, name=f"moe{experts}")),
                     pack_biases=packed_biases)
    return build_problem(graph, load_target(target))


def test_the_runs_weighed_are_every_choice_of_k_experts():
    problem = _problem()
    scenarios = gate_scenarios(problem)
    assert len(scenarios) == 28 and len(set(scenarios)) == 28   # C(8, 2)
    assert all(len(on) == 2 for on in scenarios)
    assert set().union(*scenarios) == set(problem.gates.values())


def test_every_gate_on_is_the_worst_case_and_fewer_take_less():
    problem = _problem()
    plan = heft(problem)
    worst = makespan_of(time_plan(problem, plan)[1])
    every = frozenset(problem.gates.values())
    assert expected_makespan(problem, plan, [every]) == worst
    assert expected_makespan(problem, plan, gate_scenarios(problem)) < worst
    assert expected_makespan(problem, plan, [frozenset()]) < expected_makespan(problem, plan, gate_scenarios(problem))


def test_experts_kept_whole_on_one_device_are_spread_without_a_longer_worst_case():
    """Each expert wholly on the NPU or wholly on the DSP: two chosen experts on one device queue their four
    weight matrices on one DMA engine. The search spreads them and the expected run gets shorter."""
    problem = _problem()
    placement = list(heft(problem).placement)
    experts = sorted({g for g in problem.gates.values()})
    for node, gate in problem.gates.items():
        if "npu" in problem.candidates(node) and "dsp" in problem.candidates(node):
            placement[node] = "npu" if experts.index(gate) % 2 else "dsp"
    plan = fixed_placement(problem, placement)
    worst = makespan_of(time_plan(problem, plan)[1])
    before = expected_makespan(problem, plan, gate_scenarios(problem))
    tuned, info = balance_gated(problem, plan)
    assert makespan_of(time_plan(problem, tuned)[1]) <= worst
    assert info["moves"] >= 1 and info["expected_ns"] < before
    assert abs(expected_makespan(problem, tuned, gate_scenarios(problem)) - info["expected_ns"]) <= 0.5
    split = sum(len({tuned.placement[n] for n, g in problem.gates.items() if g == gate}) > 1 for gate in experts)
    assert split > 0


def test_the_cpsat_schedule_reports_its_expected_case():
    details = solve(_problem(), "cpsat", time_limit_s=0.5).stats.details["expected_case"]
    assert details["scenarios"] == 28 and details["expected_ns"] <= details["expected_before_ns"]


def test_with_two_rows_routed_each_picks_its_own_experts():
    """2 tokens each pick 2 of 8 experts (an expert is still left out with probability (6/8)^2 = 0.56, so it
    stays predicated): a run has the union of their picks on, 2 to 4 experts, 3.5 on average."""
    graph = optimize(import_model(make_models().moe(2, 8, 2, name="moe8")))
    problem = build_problem(graph, load_target("edge-soc"))
    assert {r[3] for r in problem.gate_routers.values()} == {2}
    scenarios = gate_scenarios(problem)
    assert len(scenarios) == 64 and {len(on) for on in scenarios} <= {2, 3, 4}
    assert 3.0 <= sum(len(on) for on in scenarios) / len(scenarios) <= 4.0


def test_a_plan_made_for_the_expected_case_ships_when_it_runs_faster_and_no_worse_than_heft():
    """On multi-npu the solver's plan keeps a chosen expert's first projection on the CPU (it evens the worst
    case, every expert on); HEFT's plan of the problem as a run sees it (each expert's work and weights scaled
    by its 1/4 chance to run) leaves the experts to the cores and runs faster on average."""
    problem = _problem("multi-npu", packed_biases=False)
    heft_worst = makespan_of(time_plan(problem, heft(problem))[1])
    scaled = expected_problem(problem)
    expert = next(iter(problem.gates))
    assert all(scaled.durations[expert][d] * 4 >= ns >= scaled.durations[expert][d] * 4 - 4
               for d, ns in problem.durations[expert].items())
    schedule = solve(problem, "cpsat", time_limit_s=1.0)
    found = schedule.stats.details["expected_case"]
    assert found["start"] == "expected problem"
    assert found["expected_ns"] == found["from_expected_problem_ns"] < found["expected_before_ns"]
    assert schedule.makespan_ns <= heft_worst


def test_the_solver_start_stays_where_the_expected_problem_is_no_faster():
    found = solve(_problem("edge-soc"), "cpsat", time_limit_s=1.0).stats.details["expected_case"]
    assert found["start"] == "solver" and found["from_expected_problem_ns"] >= found["expected_ns"]


@pytest.mark.parametrize("target", ["edge-soc", "multi-npu"])
def test_heft_ships_its_run_fastest_on_average_where_tasks_are_predicated(target):
    """HEFT's runs (hetc.schedule.heuristics.heft_timed) are weighed as the build weighs predicated plans: by
    the expected makespan, the worst case breaking ties. On edge-soc its run with DRAM's bandwidth shared is the
    shortest at worst and the slowest on average, and does not ship."""
    problem = _problem(target, packed_biases=False)
    scenarios = gate_scenarios(problem)
    runs = [heft_list(problem)] + [heft_list(v) for v in (_accelerators_first(problem), _dram_shared(problem)) if v]
    plan, span = heft_timed(problem)
    shipped = expected_makespan(problem, plan, scenarios)
    assert span == makespan_of(time_plan(problem, plan)[1])
    assert all(shipped <= expected_makespan(problem, run, scenarios) for run in runs)
    if target == "edge-soc":
        shared = heft_list(_dram_shared(problem))
        assert makespan_of(time_plan(problem, shared)[1]) < span
        assert expected_makespan(problem, shared, scenarios) > shipped


def test_a_skipped_task_waits_for_its_gate_alone():
    """In a run, an expert its gate turned off waits only for its gate there (``skipped_deps``): never for its
    inputs or for room, which would hold its engine's queue. That never lengthens a run, and with large
    experts (a weight matrix of 1 MiB) it shortens some."""
    from dataclasses import replace
    from hetc.schedule.tasks import earliest_times, gate_ready, skipped_deps

    graph = optimize(import_model(make_models().moe(1, 8, 2, name="moe8", d_model=256, hidden=1024)))
    problem = build_problem(graph, load_target("edge-soc"))
    expected = expected_problem(problem)   # the second start of the search (gated.for_the_expected_case)
    made = heft(expected)
    starts = {k[1]: s for k, (s, _e) in time_plan(expected, made)[1].items() if k[0] == "c"}
    plan = replay(problem, list(made.placement), sorted(starts, key=lambda n: (starts[n], n)))
    specs, _ = time_plan(problem, plan)
    predicated = [k for k in specs if _gate(problem, k, plan) is not None]
    assert len(predicated) > 16   # the computes and their weights' copies
    for key in predicated:
        gate = _gate(problem, key, plan)
        memory = problem.home(plan.placement[key[1]]) if key[0] == "c" else key[2]
        assert skipped_deps(problem, key, plan.placement) == gate_ready(problem, gate, memory, plan.placement)
        assert set(skipped_deps(problem, key, plan.placement)) <= set(specs[key].deps)

    def holding_the_queue(on: frozenset[int]) -> int:   # skipped tasks waiting for everything they would read
        run = {k: replace(t, duration=0) if k in predicated and _gate(problem, k, plan) not in on else t
               for k, t in specs.items()}
        return makespan_of(earliest_times(run, plan.orders, problem.sync_ns, order_hint=list(specs)))

    scenarios = gate_scenarios(problem)
    now = [expected_makespan(problem, plan, [on]) for on in scenarios]
    before = [holding_the_queue(on) for on in scenarios]
    assert all(a <= b for a, b in zip(now, before))
    assert sum(now) < sum(before)


def _gate(problem, key, plan):
    return problem.gates.get(key[1]) if key[0] == "c" else copy_gate(problem, key[1], key[2], plan.placement)


def test_a_run_shares_dram_with_the_tasks_that_run_in_it():
    """At worst, every expert's weights stream through DRAM at once and each copy lasts longer for it; in a run
    the chosen ones share DRAM only with each other. The expected case times them so (as the simulator
    does), not at their worst-case lengths."""
    from dataclasses import replace
    from hetc.schedule.tasks import earliest_times, skipped_deps

    problem = _problem("multi-npu")
    plan = heft(problem)
    specs, times = time_plan(problem, plan)
    every = frozenset(problem.gates.values())
    assert expected_makespan(problem, plan, [every]) == makespan_of(times)
    stretched = [k for k, t in specs.items() if k[0] == "x" and t.duration > problem.transfer_ns(k[1], t.engine)]
    assert stretched   # DRAM slowed some copies at worst

    def at_worst_lengths(on: frozenset[int]) -> int:
        run = {k: replace(t, duration=0, deps=skipped_deps(problem, k, plan.placement))
               if _gate(problem, k, plan) is not None and _gate(problem, k, plan) not in on else t
               for k, t in specs.items()}
        return makespan_of(earliest_times(run, plan.orders, problem.sync_ns))

    scenarios = gate_scenarios(problem)
    assert expected_makespan(problem, plan, scenarios) < sum(map(at_worst_lengths, scenarios)) / len(scenarios)
