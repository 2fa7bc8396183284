"""The CP-SAT model of one window of nodes, on top of everything already committed.

The window's nodes get optional intervals per candidate device; every copy a value may need gets an optional
transfer whose presence follows from placement literals; tasks already committed are fixed intervals on their
engines. With the window = the whole graph and nothing committed, this is the exact problem and the objective
is the makespan; on a window the objective is max(end + tail), the tail being the fastest path still to come.

Alias nodes (Region, Assemble) get no variables: a window's alias nodes are settled in the committed state
once the window is booked. A value is read as ``hetc.schedule.tasks`` says: a Region's output is born with its
root (the compute node, input or Assemble it is a Region of), in the same memory at the same time; an
Assemble's output is in DRAM once each part is (its producer's end when born there, else the end of its
transfer to DRAM, which every part born elsewhere gets, as a graph output does).

Units are ticks: the problem handed in is already scaled (``hetc.schedule.ticks``).
"""
from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import signal
import time
from dataclasses import dataclass, field

from ortools.sat.python import cp_model

from hetc.destination import interrupts_deferred
from hetc.schedule.listsched import ListScheduler
from hetc.schedule.problem import SchedulingProblem
from hetc.schedule.tasks import handoff_ns, must_reach, origin

Literal = "cp_model.IntVar | bool"
# Deterministic seconds CP-SAT advances per wall second on the 2-core reference machine, measured on the
# light models: ~0.04-0.06 for the full interleaved portfolio, ~0.03 for LNS only. Budgeting below that makes
# the deterministic limit, not the clock, end a search, so reruns give the same schedule.
DETERMINISTIC_PER_WALL_S = {False: 0.03, True: 0.02}
SAFETY_NET_FACTOR, SAFETY_NET_S = 10, 10.0   # see safety_net_s


def safety_net_s(budget_s: float) -> float:
    """The wall-clock limit of a search budgeted in deterministic work units (this one, the memory packer's).
    Only a stuck search reaches it: a tighter net fires on a loaded machine and makes the result, and so the
    bundle, depend on the load (at 2-3 x budget it did, for mobilenet_v2's schedule and gpt_decoder's plan)."""
    return SAFETY_NET_FACTOR * budget_s + SAFETY_NET_S


@dataclass
class SolverParams:
    time_limit_s: float
    num_workers: int = 2
    seed: int = 0
    lns_only: bool = False          # improve the hint by large-neighbourhood search only (no proof)


@dataclass
class WindowResult:
    status: str                                    # CP-SAT status name
    nodes: list[tuple[int, str, int]]              # (node, device, start)
    transfers: list[tuple[int, str, str, int]]     # (value, dst memory, engine, start)
    objective: int
    bound: int
    wall_s: float


@dataclass
class _Transfer:
    need: cp_model.IntVar
    start: cp_model.IntVar
    end: cp_model.IntVar
    engines: dict[str, Literal]
    reasons: list[list[Literal]] = field(default_factory=list)


def _live(lits: list) -> list:
    """Enforcement literals without the constant True ones."""
    return [lit for lit in lits if lit is not True]


# A time after which a value is available, to wait for: (the end variable or constant time, what made it: the
# device of a compute task, the _Transfer, or a committed copy's ``Made``; the literals under which it holds)
_Term = tuple


class WindowModel:
    def __init__(self, sp: SchedulingProblem, state: ListScheduler, window: list[int],
                 tails: dict[int, int], hint: ListScheduler, max_candidates: int | None = None) -> None:
        window = [n for n in window if not sp.is_alias(n)]  # alias nodes are settled by the caller
        self.p, self.state, self.window, self.tails, self.h = sp, state, window, tails, hint
        self.in_window = set(window)
        self.joined_terms: dict[int, list[_Term]] = {}
        self.assembled_ready: dict[tuple[int, str], cp_model.IntVar] = {}
        self.cands = {n: self._candidates(n, max_candidates) for n in window}
        self.m = cp_model.CpModel()
        self.hints: list[tuple[cp_model.IntVar, int]] = []
        self.hint_of: dict[int, int] = {}
        self.x: dict[tuple[int, str], Literal] = {}
        self.start: dict[int, cp_model.IntVar] = {}
        self.end: dict[int, cp_model.IntVar] = {}
        self.transfers: dict[tuple[int, str, str], _Transfer] = {}
        self.in_memory: dict[tuple[int, str], Literal] = {}
        self.intervals: dict[str, list] = {e: [] for e in list(sp.device_memory) + list(sp.dmas)}
        # copies the hint made by DMA (a producer's own output is not a transfer)
        self.new_copies = {k: c for k, c in hint.copies.items() if k not in state.copies and c[1] in sp.dmas}
        self._horizon()
        self._nodes()
        self._edges()
        self._presence()
        self._engines()
        self._objective()

    # ------------------------------------------------------------------ helpers
    def _var(self, lo: int, hi: int, name: str, hint: int) -> cp_model.IntVar:
        var = self.m.new_int_var(lo, hi, name)
        self.hints.append((var, hint))
        self.hint_of[var.index] = hint
        return var

    def _bool(self, name: str, hint: bool) -> cp_model.IntVar:
        var = self.m.new_bool_var(name)
        self.hints.append((var, int(hint)))
        self.hint_of[var.index] = int(hint)
        return var

    def _horizon(self) -> None:
        p, h = self.p, self.h
        spans = [(h.finish[n] - p.durations[n][h.placement[n]], h.finish[n]) for n in self.window]
        spans += [(end - p.transfer_ns(v, eng), end) for (v, _), (end, eng) in self.new_copies.items()]
        lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
        self.cut = max(0, lo - (hi - lo))           # look back one window span for prefetching gaps
        self.horizon = hi + (hi - lo) // 2 + 1
        self.hint_obj = max([h.finish[n] + self.tails.get(n, 0) for n in self.window] + [hi])

    def _candidates(self, node: int, limit: int | None) -> list[str]:
        """The devices the model may choose for a node. With a limit, the most plausible ones: the hint's
        choice, the fastest device, and where the node's producers sit (no transfer). Symmetric devices (four
        identical NPU cores) otherwise multiply the optional transfers without adding real choices."""
        every = self.p.candidates(node)
        if limit is None or len(every) <= limit:
            return every
        durs = self.p.durations[node]
        preferred = [self.h.placement[node], min(every, key=lambda d: (durs[d], every.index(d)))]
        preferred += [self.h.placement[p] for p in self.p.compute_predecessors[node]]
        preferred += sorted(every, key=lambda d: (durs[d], every.index(d)))
        chosen = list(dict.fromkeys(d for d in preferred if d in durs))[:limit]
        return [d for d in every if d in chosen]

    def _origin(self, sched: ListScheduler, value: int) -> str:
        return origin(self.p, value, sched.placement)

    def _root_producer(self, value: int) -> int | None:
        """The node a value is born with: its producer, or for a Region the producer of the value it is a
        Region of (a compute node or an Assemble; None for inputs and constants)."""
        return self.p.values[self.p.region_root[value]].producer

    def _unsettled_assemble(self, value: int) -> int | None:
        """The Assemble a value is (a Region of) the output of, when that Assemble is not committed yet."""
        root = self._root_producer(value)
        if (root is not None and self.p.is_alias(root)
                and (value, self.p.assembly_memory(root)) not in self.state.copies):
            return root
        return None

    # ------------------------------------------------------------------ variables
    def _nodes(self) -> None:
        p, h = self.p, self.h
        for n in self.window:
            chosen = h.placement[n]
            hs = h.finish[n] - p.durations[n][chosen]
            s = self.start[n] = self._var(self.cut, self.horizon, f"s{n}", hs)
            e = self.end[n] = self._var(self.cut, self.horizon, f"e{n}", h.finish[n])
            cands = self.cands[n]
            for d in cands:
                lit = True if len(cands) == 1 else self._bool(f"x{n}_{d}", d == chosen)
                self.x[(n, d)] = lit
                dur = p.durations[n][d]
                if lit is True:
                    self.intervals[d].append(self.m.new_interval_var(s, dur, e, f"i{n}_{d}"))
                else:
                    self.intervals[d].append(self.m.new_optional_interval_var(s, dur, e, lit, f"i{n}_{d}"))
            if len(cands) > 1:
                self.m.add_exactly_one(self.x[(n, d)] for d in cands)

    def _in_memory(self, n: int, mem: str, name: str) -> Literal:
        """Literal: node n (in the window) runs on a device homed in ``mem``."""
        if (n, mem) in self.in_memory:
            return self.in_memory[(n, mem)]
        devices = [d for d in self.cands[n] if self.p.home(d) == mem]
        if len(devices) == len(self.cands[n]):
            lit = True
        elif len(devices) == 1:
            lit = self.x[(n, devices[0])]
        else:
            lit = self._bool(name, self.p.home(self.h.placement[n]) == mem)
            self.m.add(lit == sum(self.x[(n, d)] for d in devices))
        self.in_memory[(n, mem)] = lit
        return lit

    def _transfer(self, value: int, born: str, dst: str) -> _Transfer:
        key = (value, born, dst)
        if key in self.transfers:
            return self.transfers[key]
        p = self.p
        made = self.new_copies.get((value, dst))
        used = made is not None and self._origin(self.h, value) == born
        end_hint, engine_hint = made if used else (self.cut, None)
        start_hint = end_hint - p.transfer_ns(value, engine_hint) if used else self.cut
        need = self._bool(f"t{value}_{born}_{dst}", used)
        start = self._var(self.cut, self.horizon, f"ts{value}_{born}_{dst}", start_hint)
        end = self._var(self.cut, self.horizon, f"te{value}_{born}_{dst}", end_hint)
        engines: dict[str, Literal] = {}
        # one engine per (source, engine) choice: the engine decides where the copy is read from
        choices = [(src, eng) for src in p.copy_sources(value, born, dst) for eng in p.engines_between(src, dst)]
        for src, eng in choices:
            lit = need if len(choices) == 1 else self._bool(f"y{value}_{dst}_{eng}", used and eng == engine_hint)
            engines[eng] = lit
            self.intervals[eng].append(self.m.new_optional_interval_var(
                start, p.transfer_ns(value, eng), end, lit, f"x{value}_{dst}_{eng}"))
        if len(choices) > 1:
            self.m.add(sum(engines.values()) == need)
        t = self.transfers[key] = _Transfer(need, start, end, engines)
        for src in dict.fromkeys(src for src, _eng in choices):
            self._after_source(t, value, born, src, {eng: engines[eng] for s, eng in choices if s == src})
        return t

    def _after_source(self, t: _Transfer, value: int, born: str, src: str, engines: dict[str, Literal]) -> None:
        """The copy ``t``, made from ``src`` by one of ``engines``, starts after the value is there: after its
        producer, a committed copy, or the copy into ``src`` made in this window (needed when one of
        ``engines`` is chosen)."""
        p = self.p
        producer = self._root_producer(value)
        assembling = self._unsettled_assemble(value) if src == born else None
        if src == born and producer in self.in_window:
            for lit in engines.values():
                self.m.add(t.start >= self.end[producer] + p.sync_ns).only_enforce_if(lit)
        elif assembling is not None:
            for eng, lit in engines.items():
                self.m.add(t.start >= self._assembled(assembling, eng)).only_enforce_if(lit)
        elif (value, src) in self.state.copies:
            for eng, lit in engines.items():
                self.m.add(t.start >= self._ready(value, src, eng)).only_enforce_if(lit)
        else:
            via = self._transfer(value, born, src)
            for lit in engines.values():
                via.reasons.append([lit])
                self.m.add(t.start >= via.end + p.sync_ns).only_enforce_if(lit)

    def _ready(self, value: int, mem: str, engine: str) -> int:
        return self.state.ready_on(self.state.copies[(value, mem)], engine)

    def _wait(self, var: cp_model.IntVar, term: _Term, engines: dict[str, Literal], enforce: list) -> None:
        """``var``, the start of a task on one of ``engines`` (engine -> literal choosing it), is after
        ``term``, plus a semaphore unless the same engine made it. Exact: the whole-graph bound is a proof."""
        time, by, lits = term
        for engine, lit in engines.items():
            when = _live([lit] + enforce + lits)
            if isinstance(time, int):
                self.m.add(var >= self.state.ready_on((time, by), engine)).only_enforce_if(when)
            elif isinstance(by, _Transfer) and engine in by.engines:
                self.m.add(var >= time).only_enforce_if(when)
                self.m.add(var >= time + self.p.sync_ns).only_enforce_if(when + [by.engines[engine].Not()])
            else:
                self.m.add(var >= time + handoff_ns(by, engine, self.p.sync_ns)).only_enforce_if(when)

    def _assembled(self, assemble: int, engine: str) -> cp_model.IntVar:
        """When a task on ``engine`` may start after an uncommitted Assemble's output is whole in its memory: one
        variable per (Assemble, engine) above every part's term, so k readers of k parts cost 2k constraints,
        not k^2."""
        key = (assemble, engine)
        if key not in self.assembled_ready:
            made = self.h.copies[(self.p.node_outputs[assemble][0], self.p.assembly_memory(assemble))]
            var = self._var(0, self.horizon + self.p.sync_ns, f"a{assemble}_{engine}", self.h.ready_on(made, engine))
            for term in self._joined_terms(assemble):
                self._wait(var, term, {engine: True}, [])
            self.assembled_ready[key] = var
        return self.assembled_ready[key]

    def _joined_terms(self, assemble: int) -> list[_Term]:
        """The terms after which an uncommitted Assemble's output is whole in its memory: per part, its
        producer's end (on a device homed there) or its transfer's there, under the literals placing it so."""
        if assemble in self.joined_terms:
            return self.joined_terms[assemble]
        p, terms = self.p, []
        joined = p.assembly_memory(assemble)
        for part in p.node_inputs[assemble]:
            root = self._root_producer(part)
            nested = self._unsettled_assemble(part)
            if nested is not None:
                terms += self._joined_terms(nested)
            elif (part, joined) in self.state.copies:
                terms.append((*self.state.copies[(part, joined)], []))
            elif root in self.in_window:
                for born in sorted({p.home(d) for d in self.cands[root]}):
                    if born == joined:
                        terms += [(self.end[root], d, [self.x[(root, d)]]) for d in self.cands[root]
                                  if p.home(d) == born]
                    else:  # the transfer's presence follows from the part's own need (see _edges)
                        t = self._transfer(part, born, joined)
                        terms.append((t.end, t, [self._in_memory(root, born, f"pm{part}_{born}")]))
            else:  # born in a committed memory but not yet copied: the copy is needed, here
                t = self._transfer(part, self._origin(self.state, part), joined)
                t.reasons.append([])
                terms.append((t.end, t, []))
        self.joined_terms[assemble] = terms
        return terms

    # ------------------------------------------------------------------ constraints
    def _edges(self) -> None:
        p = self.p
        for n in self.window:
            for value in p.node_inputs[n]:
                producer = self._root_producer(value)
                assembling = self._unsettled_assemble(value)
                if producer in self.in_window:
                    self._edge_in_window(n, value, producer)
                elif assembling is not None:
                    self._edge_from_assemble(n, value, assembling)
                else:
                    self._edge_from_committed(n, value)
            for out in p.node_outputs[n]:
                for value in p.region_closure[out]:  # born with n: graph outputs and Assemble parts
                    for wanted in must_reach(p, value):
                        for born in sorted({p.home(d) for d in self.cands[n]} - {wanted}):
                            self._transfer(value, born, wanted).reasons.append(
                                [self._in_memory(n, born, f"pm{value}_{born}")])

    def _edge_in_window(self, n: int, value: int, producer: int) -> None:
        p = self.p
        self.m.add(self.start[n] >= self.end[producer])
        origins = sorted({p.home(d) for d in self.cands[producer]})
        for d in self.cands[n]:
            mem, x = p.home(d), self.x[(n, d)]
            other = self.x.get((producer, d))
            if other is None:
                self.m.add(self.start[n] >= self.end[producer] + p.sync_ns).only_enforce_if(_live([x]))
            elif other is not True:
                self.m.add(self.start[n] >= self.end[producer] + p.sync_ns).only_enforce_if(
                    _live([x]) + [other.Not()])
            for born in origins:
                if born == mem:
                    continue
                pm = self._in_memory(producer, born, f"pm{value}_{born}")
                t = self._transfer(value, born, mem)
                t.reasons.append([x, pm])
                self.m.add(self.start[n] >= t.end + p.sync_ns).only_enforce_if(_live([x, pm]))

    def _edge_from_assemble(self, n: int, value: int, assemble: int) -> None:
        """n reads (a Region of) the output of an Assemble of this window: in place in the Assemble's memory
        after every part is there, else through a transfer from that memory that waits for them."""
        p = self.p
        joined = p.assembly_memory(assemble)
        for d in self.cands[n]:
            mem, x = p.home(d), self.x[(n, d)]
            if mem == joined:
                self.m.add(self.start[n] >= self._assembled(assemble, d)).only_enforce_if(_live([x]))
            else:
                t = self._transfer(value, joined, mem)
                t.reasons.append([x])
                self.m.add(self.start[n] >= t.end + p.sync_ns).only_enforce_if(_live([x]))

    def _edge_from_committed(self, n: int, value: int) -> None:
        p = self.p
        born = self._origin(self.state, value)
        for d in self.cands[n]:
            mem, x = p.home(d), self.x[(n, d)]
            if (value, mem) in self.state.copies:
                self.m.add(self.start[n] >= self._ready(value, mem, d)).only_enforce_if(_live([x]))
            else:
                t = self._transfer(value, born, mem)
                t.reasons.append([x])
                self.m.add(self.start[n] >= t.end + p.sync_ns).only_enforce_if(_live([x]))

    def _presence(self) -> None:
        """A copy is made exactly when some reason (a consumer there, an output, a later hop) needs it."""
        for key, t in self.transfers.items():
            witnesses = []
            for reason in t.reasons:
                lits = _live(reason)
                if not lits:
                    self.m.add(t.need == 1)
                    witnesses = None
                    break
                self.m.add_bool_or([lit.Not() for lit in lits] + [t.need])
                if len(lits) == 1:
                    witnesses.append(lits[0])
                else:
                    both = self._bool(f"r{key}_{len(witnesses)}", all(self._hint_value(l) for l in lits))
                    for lit in lits:
                        self.m.add_implication(both, lit)
                    witnesses.append(both)
            if witnesses is not None:
                self.m.add_bool_or([t.need.Not()] + witnesses)

    def _hint_value(self, lit: Literal) -> bool:
        return True if lit is True else bool(self.hint_of[lit.index])

    def _engines(self) -> None:
        for engine, intervals in self.intervals.items():
            lane = self.state.lanes[engine]
            blocks: list[list[int]] = []
            for s, e in zip(lane.starts, lane.ends):
                if e <= self.cut or s >= self.horizon:
                    continue
                if blocks and s <= blocks[-1][1]:
                    blocks[-1][1] = max(blocks[-1][1], e)
                else:
                    blocks.append([s, e])
            fixed = [self.m.new_fixed_size_interval_var(s, e - s, f"f{engine}_{s}") for s, e in blocks]
            if len(intervals) + len(fixed) > 1 and intervals:
                self.m.add_no_overlap(intervals + fixed)

    def _objective(self) -> None:
        top = self.horizon + max(self.tails.values(), default=0)
        self.objective = self._var(0, top, "objective", self.hint_obj)
        for n in self.window:
            self.m.add(self.objective >= self.end[n] + self.tails.get(n, 0))
        for t in self.transfers.values():
            self.m.add(self.objective >= t.end).only_enforce_if(t.need)
        self.m.minimize(self.objective)

    # ------------------------------------------------------------------ solve
    def solve(self, params: SolverParams) -> WindowResult:
        """Solve in a forked child process. CP-SAT 9.15 very rarely aborts the whole process from inside a
        search (twice in ~20 runs of the test suite, never reproducibly); in a child, an abort costs only
        this window, which then keeps its HEFT hint (status "CRASHED"), and the compiler carries on."""
        for var, value in self.hints:
            self.m.add_hint(var, value)
        if multiprocessing.current_process().daemon:  # a pool worker may not fork: solve here, unguarded
            return self.solve_here(params)
        began = time.perf_counter()
        context = multiprocessing.get_context("fork")
        reader, writer = context.Pipe(duplex=False)
        child = context.Process(target=self._solve_and_send, args=(params, writer), daemon=True)
        with interrupts_deferred():  # the child starts with Ctrl-C held, until it ignores it
            child.start()
        writer.close()
        try:
            result: WindowResult = reader.recv()
        except EOFError:  # the child died without an answer
            result = WindowResult("CRASHED", [], [], 0, 0, 0.0)
        except BaseException:  # Ctrl-C in this process: the child must not outlive it, nor keep searching
            child.kill()
            raise
        finally:
            child.join()
            reader.close()
        result.wall_s = time.perf_counter() - began
        return result

    def _solve_and_send(self, params: SolverParams, writer: "multiprocessing.connection.Connection") -> None:
        # Ctrl-C reaches the whole process group: the parent handles it (and kills this child); a
        # KeyboardInterrupt here would only print a second traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        writer.send(self.solve_here(params))
        writer.close()

    def solve_here(self, params: SolverParams) -> WindowResult:
        """Solve in this process (the hints must already be added)."""
        solver = cp_model.CpSolver()
        prm = solver.parameters
        # Determinism: interleaved workers stopped by a deterministic-time budget give the same answer on
        # every run. The wall-clock limit is a safety net above it (only when it fires can runs differ).
        prm.num_workers = max(1, params.num_workers)
        prm.interleave_search = params.num_workers > 1
        prm.random_seed = params.seed
        prm.max_deterministic_time = params.time_limit_s * DETERMINISTIC_PER_WALL_S[params.lns_only]
        # From a complete hint, LNS alone improves far more per second than the full portfolio (moe on
        # edge-soc: 0.88x HEFT in 2 s vs 0.98x); the full portfolio is kept where a proof is within reach.
        prm.use_lns_only = params.lns_only
        # The clock is only a safety net against a stuck search: a search ends on its deterministic budget.
        # (At 2 x budget, mobilenet_v2's second window stopped at 0.43 s having run 0.0011 of its 0.0038
        # deterministic s, where it finishes in 0.67 s, and its schedule changed from run to run.)
        prm.max_time_in_seconds = safety_net_s(params.time_limit_s)
        prm.catch_sigint_signal = False  # Ctrl-C interrupts hetc, it does not just end the search early
        prm.cp_model_probing_level = 0  # probing the optional intervals costs seconds and rarely pays here
        began = time.perf_counter()
        status = solver.solve(self.m)
        wall = time.perf_counter() - began
        name = solver.status_name(status)
        if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            return WindowResult(name, [], [], 0, 0, wall)
        return WindowResult(name, *self._extract(solver), wall)

    def _extract(self, solver: cp_model.CpSolver) -> tuple[list, list, int, int]:
        nodes = []
        for n in self.window:
            device = next(d for d in self.cands[n] if self.x[(n, d)] is True or solver.boolean_value(self.x[(n, d)]))
            nodes.append((n, device, solver.value(self.start[n])))
        transfers = []
        for (value, _, dst), t in self.transfers.items():
            if solver.boolean_value(t.need):
                engine = next(e for e, lit in t.engines.items() if solver.boolean_value(lit))
                transfers.append((value, dst, engine, solver.value(t.start)))
        return nodes, transfers, int(solver.objective_value), int(solver.best_objective_bound)
