"""Lower bounds on the makespan that no schedule of the problem can beat.

Alias nodes (Region, Assemble) are no work: they take no time on the critical path and count in no device's
work; an Assemble's output is not available before its parts are in DRAM."""
from __future__ import annotations

import functools
import math
from typing import Iterable, Sequence

import numpy as np

from hetc.ir.tiles import ASSEMBLE
from hetc.schedule.problem import SchedulingProblem


def critical_path(problem: SchedulingProblem) -> int:
    """Longest path with every node on its fastest device, transfers and syncs free."""
    return max(_fastest_finish(problem), default=0)


def _fastest_finish(problem: SchedulingProblem, first: int = 0, end: int | None = None) -> list[int]:
    """Per node of ``first..end-1`` (every node by default), the end of the longest path to it from ``first``
    on, with every node on its fastest device and transfers free."""
    end = problem.n if end is None else end
    finish = [0] * (end - first)
    for node in range(first, end):
        ready = max((finish[p - first] for p in problem.predecessors[node] if p >= first), default=0)
        finish[node - first] = ready + problem.fastest(node)
    return finish


def release_path(problem: SchedulingProblem) -> int:
    """The critical path, sharpened by the transfers no schedule avoids.

    A node on a device away from DRAM cannot start before its weights and graph inputs (which start in DRAM),
    or an Assemble's output (in its memory once each part has been written there), or Regions of those, have
    crossed the route to that device; nor can a graph output produced there count as done before it is back
    in DRAM. A value a compute node makes (or a Region of it) reaches a reader on another device a semaphore
    later, and one copy per hop later where the two devices' memories differ (its producer on whichever of
    its devices it is there soonest: the earliest end of the producer on each device is kept). Each node
    takes the device that minimises its own finish (separately for each such arrival), so the result is a
    lower bound."""
    @functools.cache   # (every reader of a value on a device asks for the same chains)
    def moved(value: int, src: str, dst: str) -> int:
        """The fastest chain of copies of ``value`` from ``src`` to ``dst``, over every source a copy may be
        made from."""
        if src == dst:
            return 0
        return min(moved(value, src, via) + problem.sync_ns   # a semaphore between every two engines on the chain
                   + min(problem.transfer_ns(value, e) for e in problem.engines_between(via, dst))
                   for via in problem.copy_sources(value, src, dst))

    def fixed_ready(value: int) -> tuple[int, str] | None:
        """When and where a value whose memory no placement changes (an input or a constant in DRAM, an
        Assemble's output in its memory, Regions of them) is there at the earliest; None for a value whose
        memory depends on the placement."""
        root = problem.values[problem.region_root[value]].producer
        if root is None:
            return 0, problem.dram
        if problem.alias_ops.get(root) == ASSEMBLE:
            return finish[root], problem.assembly_memory(root)
        return None

    def made(value: int, device: str) -> int:
        """The earliest a value a compute node makes, or a Region of it, is where ``device`` reads it: the
        producer's end on some device, plus a semaphore from another engine and the copies from another
        memory; 0 for any other value."""
        producer = problem.values[problem.region_root[value]].producer
        if producer is None or problem.is_alias(producer) or problem.values[value].is_host:
            return 0
        home = problem.home(device)
        return min(end if there == device else end + problem.sync_ns + moved(value, problem.home(there), home)
                   for there, end in ends[producer].items())

    joined = {}  # value -> earliest time it can be in its Assemble's memory, for the values an Assemble gathers
    finish, best = [0] * problem.n, 0
    ends: list[dict[str, int]] = [{} for _ in range(problem.n)]   # per compute node, its earliest end per device
    for node in range(problem.n):
        ready = max((finish[p] for p in problem.predecessors[node]), default=0)
        if problem.is_alias(node):
            if problem.alias_ops[node] == ASSEMBLE:
                ready = max([ready] + [joined.get(v, 0) for v in problem.node_inputs[node]])
            finish[node] = ready
            best = max(best, ready)
            continue
        done, out = [], []
        gathered = {m: [] for v in problem.node_outputs[node] for m in problem.region_closure[v]
                    if m in problem.assembled}  # born with the node, written into an Assemble's output
        for device, duration in problem.durations[node].items():
            home = problem.home(device)
            release = max((fixed[0] + moved(v, fixed[1], home) for v in problem.node_inputs[node]
                           if (fixed := fixed_ready(v)) is not None), default=0)
            arrival = max((made(v, device) for v in problem.node_inputs[node]), default=0)
            end = max(ready, release, arrival) + duration
            ends[node][device] = end
            done.append(end)
            out.append(max([end] + [end + moved(v, home, problem.dram) for v in problem.node_outputs[node]
                                    if problem.values[v].is_output]))
            for m, times in gathered.items():
                times.append(end + moved(m, home, problem.assembled[m]))
        finish[node] = min(done)
        best = max(best, min(out))
        joined.update((m, min(times)) for m, times in gathered.items())
    return best


def work_bound(problem: SchedulingProblem) -> int:
    """Total fastest work spread perfectly over the devices, for every set of devices: the nodes that can
    only run inside a set S must fit in |S| devices' time (S = all devices is the classic work bound)."""
    devices = problem.devices
    best = 0
    for mask in range(1, 1 << len(devices)) if len(devices) <= 10 else [(1 << len(devices)) - 1]:
        subset = {d for k, d in enumerate(devices) if mask >> k & 1}
        work = sum(min(ns for d, ns in problem.durations[node].items())
                   for node in problem.compute_nodes if set(problem.durations[node]) <= subset)
        best = max(best, math.ceil(work / len(subset)))
    return best


def balance_bound(problem: SchedulingProblem, nodes: Iterable[int] | None = None) -> int:
    """A linear program over the placement, relaxed to fractions: each node's work split over its candidate
    devices, no device busier than T; a weight or graph input (in DRAM from the start) that some share of a
    node reads on a device must be copied into that device's memory once, and the copies into a memory keep
    the DMA engines ending there busy for their bytes over those engines' summed bandwidth, at most T too.
    Dependencies, latencies and activations are ignored, so every schedule is at least the optimum T.
    ``nodes`` restricts it to those compute nodes (default all): the time before they have all ended.
    0 when there is no compute node."""
    if nodes is None:
        if "balance_bound" not in problem._memo:
            problem._memo["balance_bound"] = _balance(problem, problem.compute_nodes)
        return problem._memo["balance_bound"]
    return _balance(problem, [n for n in nodes if not problem.is_alias(n)])


def _balance(problem: SchedulingProblem, nodes: Sequence[int], copies: bool = True) -> int:
    from ortools.linear_solver import pywraplp

    if not nodes:
        return 0
    chosen = set(nodes)
    solver = pywraplp.Solver.CreateSolver("GLOP")
    horizon = solver.NumVar(0, solver.infinity(), "T")
    share: dict[tuple[int, str], object] = {}
    busy: dict[str, list] = {d: [] for d in problem.devices}
    for node in nodes:
        parts = []
        for device, ns in problem.durations[node].items():
            x = share[(node, device)] = solver.NumVar(0, 1, "")
            parts.append(x)
            busy[device].append(ns * x)
        solver.Add(solver.Sum(parts) == 1)
    inflow = {m: sum(e.bandwidth for e in problem.dmas.values() if m in e.memories)
              for m in set(problem.device_memory.values()) - {problem.dram}}
    fetched: dict[str, list] = {m: [] for m, bw in inflow.items() if bw > 0} if copies else {}
    for value, spec in enumerate(problem.values):
        if spec.producer is not None or spec.is_host or not spec.nbytes:
            continue
        copies: dict[str, object] = {}
        for node in problem.compute_consumers[value]:
            if node not in chosen:
                continue
            for device in problem.durations[node]:
                memory = problem.home(device)
                if memory in fetched:
                    if memory not in copies:
                        copies[memory] = solver.NumVar(0, 1, "")
                        fetched[memory].append(spec.nbytes / inflow[memory] * copies[memory])
                    solver.Add(copies[memory] >= share[(node, device)])
    for terms in [*busy.values(), *fetched.values()]:
        if terms:
            solver.Add(solver.Sum(terms) <= horizon)
    solver.Minimize(horizon)
    if solver.Solve() != pywraplp.Solver.OPTIMAL:
        return 0
    # makespans are whole ns: an optimum within the solver's tolerance of an integer rounds to it
    value = horizon.solution_value()
    nearest = round(value)
    return max(0, nearest if abs(value - nearest) <= 1e-7 * max(1.0, value) else math.floor(value))


def dram_bound(problem: SchedulingProblem) -> int:
    """The bytes that cross DRAM in any schedule over DRAM's bandwidth (``hetc.schedule.dram``): every graph
    input and weight a node reads is read from DRAM at least once (a part read through Regions, at least its
    largest part), and every computed value a graph output holds is written there once."""
    if not problem.dram_bandwidth:
        return 0
    read: dict[int, int] = {}
    for reads in _dram_reads(problem):
        for root, nbytes in reads.items():
            read[root] = max(read.get(root, 0), nbytes)
    written = sum(_computed_outputs(problem).values())
    return math.floor((sum(read.values()) + written) / problem.dram_bandwidth)


def _dram_reads(problem: SchedulingProblem) -> list[dict[int, int]]:
    """Per node, the DRAM-resident values it reads (weights, graph inputs) by root, with the bytes: the root
    itself, or through Regions its largest part."""
    values = problem.values
    reads: list[dict[int, int]] = [{} for _ in range(problem.n)]
    for node in problem.compute_nodes:
        for value in problem.node_inputs[node]:
            root = problem.region_root[value]
            if values[root].producer is None and not values[value].is_host:
                reads[node][root] = max(reads[node].get(root, 0), values[value].nbytes)
    return reads


def _computed_outputs(problem: SchedulingProblem) -> dict[int, int]:
    """The computed values graph outputs hold, each with the bytes of it that must reach DRAM: an output a
    compute node makes; through an Assemble, its parts; through a Region, the view's bytes of its root (the
    largest view when several, so overlapping views count once). What is in DRAM already (an in-place KV
    cache's past rows, a view of an input) is not written again."""
    values, found = problem.values, {}

    def visit(value: int, nbytes: int) -> None:
        producer = values[value].producer
        if producer is None or values[value].is_host:
            return
        if not problem.is_alias(producer):
            found[value] = max(found.get(value, 0), nbytes)
        elif problem.alias_ops[producer] == ASSEMBLE:
            for part in problem.node_inputs[producer]:
                if part not in found:
                    visit(part, values[part].nbytes)
        else:
            visit(problem.region_root[value], nbytes)

    for value, spec in enumerate(values):
        if spec.is_output:
            visit(value, spec.nbytes)
    return found


TAIL_CUTS = 2                    # cuts whose predecessors get their own load-balancing program
_TAIL_MATRIX_MAX = 8_000_000      # nodes x DRAM-resident values (64 MB of counts) above which it is skipped


def dram_tail_bound(problem: SchedulingProblem, known: int = 0) -> int:
    """DRAM's bound after a cut. The successors of a node v cannot start before v and all it depends on have
    ended: the critical path to v, the load-balancing program over those nodes and, where v is a cut node,
    the stages before it (``series_bound``) bound that time.
    From then on DRAM must still deliver what those successors read of the weights and graph inputs, except
    what the on-chip memories together can hold ahead, and take the graph outputs the successors write, at
    its bandwidth. Where fully connected layers stream more weights than the scratchpads hold after the
    convolutions that feed them, the two phases cannot overlap beyond that. Evaluated at every node with the
    critical path, and at the ``TAIL_CUTS`` best of those with the program, unless even the program over
    every node could not lift a cut above ``known`` (a bound found otherwise); 0 without a DRAM bandwidth or
    a known on-chip capacity."""
    bandwidth, onchip = problem.dram_bandwidth, problem.onchip_bytes
    if not bandwidth or onchip is None or not problem.compute_nodes:
        return 0
    after = _bytes_after(problem)
    if after is None:
        return 0
    finish = _fastest_finish(problem)
    for node, ended in _stages(problem)[1].items():   # a cut node ends after the stages before it
        finish[node] = max(finish[node], ended)
    cuts = []
    for node, (read, written) in enumerate(after):
        late = max(0, read - onchip) + written
        if late:
            cuts.append((finish[node] + math.floor(late / bandwidth), node, late))
    if not cuts:
        return 0
    cuts.sort(reverse=True)
    best = cuts[0][0]
    for _, node, late in cuts[:TAIL_CUTS]:
        if max(finish[node], balance_bound(problem)) + math.floor(late / bandwidth) <= max(best, known):
            continue   # a subset's program is no higher than the whole's: this cut cannot win
        before = balance_bound(problem, _ancestors(problem, node) | {node})
        best = max(best, max(finish[node], before) + math.floor(late / bandwidth))
    return best


def _bytes_after(problem: SchedulingProblem) -> list[tuple[int, int]] | None:
    """Per node, the bytes of DRAM-resident values (``_dram_reads``) its successors and theirs read, and the
    bytes they write for the graph's outputs (``_computed_outputs``); None for a graph too large to count
    this way."""
    n, values = problem.n, problem.values
    reads = _dram_reads(problem)
    written = [0] * n
    for value, nbytes in _computed_outputs(problem).items():
        written[values[value].producer] += nbytes
    column = {root: k for k, root in enumerate(sorted({r for d in reads for r in d}))}
    writers = [node for node in range(n) if written[node]]
    if n * (len(column) + len(writers)) > _TAIL_MATRIX_MAX:
        return None
    written_bytes = np.array([written[w] for w in writers], dtype=np.int64)
    writer_column = {node: k for k, node in enumerate(writers)}
    # per node, what it and every node after it read (per value) and which writers are among them
    read_from = np.zeros((n, len(column)), dtype=np.int64)
    writes_from = np.zeros((n, len(writers)), dtype=bool)
    result: list[tuple[int, int]] = [(0, 0)] * n
    for node in reversed(range(n)):
        for succ in problem.successors[node]:
            np.maximum(read_from[node], read_from[succ], out=read_from[node])
            writes_from[node] |= writes_from[succ]
        result[node] = (int(read_from[node].sum()), int(written_bytes[writes_from[node]].sum()))
        for root, nbytes in reads[node].items():   # then the node's own, for its predecessors
            read_from[node, column[root]] = max(read_from[node, column[root]], nbytes)
        if node in writer_column:
            writes_from[node, writer_column[node]] = True
    return result


def _ancestors(problem: SchedulingProblem, node: int) -> set[int]:
    found: set[int] = set()
    stack = list(problem.predecessors[node])
    while stack:
        p = stack.pop()
        if p not in found:
            found.add(p)
            stack.extend(problem.predecessors[p])
    return found


def series_bound(problem: SchedulingProblem) -> int:
    """The graph as a series of stages between its cut nodes, each stage's bound added up.

    A cut node is ordered with every other node: each one is its ancestor or its descendant (a residual Add,
    a norm, the Concat closing a dense block, a join of tiles). Everything before a cut ends before it starts
    and everything after it starts after it ends, so the nodes between two consecutive cuts (a stage) run in a
    window no other node's work enters. Each window lasts at least its own critical path and its own
    load-balancing program (no device can lend a stage the time it idles in another), and the windows and the
    cuts follow one another. Only the first window starts at 0, so only its program counts the weights'
    copies: a later stage's weights may stream during an earlier one. Where the whole graph is one stage this
    is the larger of the critical path and the program; it rises above both where stages alternate between
    being bound by their chains and by their work (DenseNet-121's dense blocks, SqueezeNet's fire modules)."""
    return _stages(problem)[0]


def cut_nodes(problem: SchedulingProblem) -> list[int]:
    """The nodes ordered with every other node (each one is an ancestor or a descendant), in order.

    Nodes are indexed in a topological order, so a cut v has every node before it as an ancestor and every
    node after it as a descendant: in the nodes up to v, v is the only one no other of them follows (a DAG's
    every node leads to such a sink), and in the nodes from v on, the only one no other of them precedes.
    Counting those sinks and sources as the prefix grows and the suffix shrinks finds every cut in
    O(nodes + edges)."""
    n = problem.n
    alone_at_end = [False] * n
    sinks, followed = 0, [False] * n
    for node in range(n):
        sinks += 1
        for p in problem.predecessors[node]:
            if not followed[p]:
                followed[p] = True
                sinks -= 1
        alone_at_end[node] = sinks == 1
    cuts, sources, preceded = [], 0, [False] * n
    for node in reversed(range(n)):
        sources += 1
        for s in problem.successors[node]:
            if not preceded[s]:
                preceded[s] = True
                sources -= 1
        if sources == 1 and alone_at_end[node]:
            cuts.append(node)
    return cuts[::-1]


def _stages(problem: SchedulingProblem) -> tuple[int, dict[int, int]]:
    """``series_bound``, and per cut node the time before which it cannot end (the stages and cuts up to it
    added up)."""
    if "stages" in problem._memo:
        return problem._memo["stages"]
    n = problem.n
    total, first, ended = 0, 0, {}
    for stage_end in [*cut_nodes(problem), n]:
        if first < stage_end:   # a cut's ancestors precede it in the order: a stage is a range of nodes
            work = [node for node in range(first, stage_end) if not problem.is_alias(node)]
            chain = max(_fastest_finish(problem, first, stage_end))
            spread = _balance(problem, work, copies=first == 0) if len(work) > 1 else 0
            total += max(chain, spread)
        if stage_end < n:
            total += problem.fastest(stage_end)
            ended[stage_end] = total
        first = stage_end + 1
    problem._memo["stages"] = (total, ended)
    return total, ended


def lower_bound(problem: SchedulingProblem) -> int:
    """The largest of ``bound_parts``."""
    return max(bound_parts(problem).values())


def any_schedule_bound(problem: SchedulingProblem) -> int:
    """The largest of the bounds every schedule of the model meets, whether it fits the memories or not: all
    of ``bound_parts`` but DRAM's after a cut, which counts on the memories' capacity. A schedule the
    scheduler made (before memory planning) that meets it is optimal."""
    return max(v for k, v in bound_parts(problem).items() if k != "DRAM after a cut")


def bound_parts(problem: SchedulingProblem) -> dict[str, int]:
    """Every bound ``lower_bound`` takes the largest of, by name (ns): the critical path on fastest devices
    with free transfers; the same with the weight, input and output transfers no schedule avoids; total
    fastest work over the devices, and the same for every subset of devices; the load-balancing linear
    program; the stages between the graph's cut nodes, one after another (``series_bound``); the bytes no
    schedule keeps out of DRAM over its bandwidth; and those it cannot read before a cut
    (``dram_tail_bound``)."""
    if "bound_parts" not in problem._memo:
        parts = {"critical path": critical_path(problem), "critical path with transfers": release_path(problem),
                 "work": work_bound(problem), "load balance": balance_bound(problem),
                 "stages between cuts": series_bound(problem), "DRAM": dram_bound(problem)}
        parts["DRAM after a cut"] = dram_tail_bound(problem, max(parts.values()))
        problem._memo["bound_parts"] = parts
    return problem._memo["bound_parts"]


def tick_bound_to_ns(bound_ticks: int, problem: SchedulingProblem, scaled: SchedulingProblem, tick: int) -> int:
    """Turn a proven bound of the tick model (durations rounded up) into a bound in ns.

    Stretching any ns schedule by alpha = max(tick duration / ns duration) and flooring its start times gives
    a feasible tick schedule no longer than alpha * makespan / tick, so makespan >= bound * tick / alpha."""
    alpha = 1.0
    for node in range(problem.n):
        for d, ns in problem.durations[node].items():
            alpha = max(alpha, scaled.durations[node][d] * tick / ns)
    for value in range(len(problem.values)):
        for engine in problem.dmas:
            alpha = max(alpha, scaled.transfer_ns(value, engine) * tick / problem.transfer_ns(value, engine))
    if problem.sync_ns > 0:
        alpha = max(alpha, scaled.sync_ns * tick / problem.sync_ns)
    return math.floor(bound_ticks * tick / alpha)
