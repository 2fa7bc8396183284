"""Benchmark the interval packer against Arm Vela's HillClimb allocator (prints tables; not a test).

    pip install ethos-u-vela                                   # the anchor; not a dependency of hetc
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_packing.py
    python tools/bench_packing.py --families uniform-200 --seeds 5 --vela-iterations 2000 10000
    python tools/bench_packing.py --families uniform-200 --hetc-only --hetc-budget 10
    python tools/bench_packing.py --families uniform-200 --seeds 32 --vela-streams 12

Random interval sets, seeded (``generate``): ``uniform`` sizes and lifetimes (a few to a dozen buffers live at
once) and ``dense`` ones (long lifetimes, a quarter of the buffers live at once), of 200 and 2,000 buffers.
For each set and each Vela iteration budget, Vela's ``HillClimbAllocator`` runs on its own interface (its
``LiveRange`` objects, inclusive end times) and hetc's ``pack_intervals`` runs on exactly the same intervals
with ``time_limit_s`` set to the wall time Vela took, so both get the same time. Per set: the lower bound (most
bytes live at once), each result's peak and its ratio to the bound, and the wall times; then medians and ranges
over the seeds. Every packing is checked for overlaps before it is counted.

Vela's climb is random (seeded 1 by ``allocate``), and the moves it needs to reach the bound are heavy-tailed:
one run per set compares hetc with one draw. ``--vela-streams K`` runs it with the random seeds 1..K on each
set, and hetc with each run's time: the counts are then over sets x streams.
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the worktree's hetc, not an installed one

from hetc.memory.packing import lower_bound, pack, packing_violations  # noqa: E402

Interval = tuple[int, int, int]
FAMILIES = ("uniform-200", "dense-200", "uniform-2000", "dense-2000")


def generate(family: str, seed: int) -> list[Interval]:
    """``uniform-N``: starts uniform over N instants, lengths uniform in 1..N/10, sizes uniform in 1..64 KiB.
    ``dense-N``: the same with lengths uniform in 1..N/2 (long-lived buffers, about N/4 live at once)."""
    kind, n = family.split("-")
    n = int(n)
    longest = n // 10 if kind == "uniform" else n // 2
    rng = random.Random(f"{family}/{seed}")
    out = []
    for _ in range(n):
        start = rng.randrange(n)
        out.append((start, start + rng.randint(1, longest), 1024 * rng.randint(1, 64)))
    return out


def run_vela(intervals: list[Interval], iterations: int, stream: int = 1) -> tuple[list[int], float, int]:
    """Vela's HillClimb allocator on its own interface: offsets, wall seconds, iterations it ran. Vela's end
    times are inclusive; the memory limit is the lower bound, so it searches until the bound or the budget.
    ``stream`` seeds Python's ``random``, which Vela's climb draws from (``allocate`` seeds it with 1)."""
    from ethosu.vela.hillclimb_allocation import HillClimbAllocator
    from ethosu.vela.live_range import LiveRange

    lrs = []
    for start, end, size in intervals:
        lr = LiveRange(None, 1)
        lr.start_time, lr.end_time, lr.size = start, end - 1, size
        lrs.append(lr)

    class Counted(HillClimbAllocator):
        turns = 0

        def attempt_bottleneck_fix(self, indices, iterations_stuck):
            Counted.turns += 1
            return super().attempt_bottleneck_fix(indices, iterations_stuck)

        def search(self, indices):
            random.seed(stream)   # the climb is the only draw; allocate() has just seeded 1
            return super().search(indices)

    began = time.perf_counter()
    allocator = Counted(lrs, iterations, lower_bound(intervals))
    offsets = allocator.allocate()
    return offsets, time.perf_counter() - began, Counted.turns


def _peak(intervals: list[Interval], offsets: list[int]) -> int:
    return max((o + s for (_, _, s), o in zip(intervals, offsets)), default=0)


def _check(intervals: list[Interval], offsets: list[int], who: str) -> None:
    problems = packing_violations(intervals, offsets)
    if problems:
        raise SystemExit(f"{who} produced an invalid packing: {problems[:3]}")


def run(families: list[str], seeds: int, vela_iterations: list[int], hetc_budget: float | None,
        hetc_only: bool, vela_streams: int = 1) -> list[dict]:
    rows = []
    for family in families:
        for seed in range(seeds):
            intervals = generate(family, seed)
            bound = lower_bound(intervals)
            budgets: list[tuple[str, float, int | None, int | None]] = []
            if hetc_budget is not None:
                budgets.append((f"{hetc_budget:g} s", hetc_budget, None, None))
            if not hetc_only:
                budgets += [(f"vela {it}", 0.0, it, stream) for it in vela_iterations
                            for stream in range(1, vela_streams + 1)]
            for label, seconds, iterations, stream in budgets:
                row = {"family": family, "seed": seed, "budget": label, "bound": bound}
                if iterations is not None:
                    offsets, seconds, turns = run_vela(intervals, iterations, stream)
                    row["stream"] = stream
                    _check(intervals, offsets, "vela")
                    row.update(vela_peak=_peak(intervals, offsets), vela_s=seconds, vela_iters=turns)
                result = pack(intervals, 1, seconds)
                _check(intervals, result.offsets, "hetc")
                row.update(hetc_peak=result.peak, hetc_s=result.seconds, hetc_method=result.method,
                           budget_s=seconds)
                rows.append(row)
                print(_line(row), flush=True)
    return rows


def _line(r: dict) -> str:
    vela = (f"vela {r['vela_peak'] / r['bound']:.4f} in {r['vela_s']:7.2f} s ({r['vela_iters']} it)"
            if "vela_peak" in r else "")
    stream = f" stream {r['stream']}" if r.get("stream", 1) != 1 else ""
    return (f"{r['family']:>12} seed {r['seed']}{stream} {r['budget']:>11}: bound {r['bound']:>10}  "
            f"hetc {r['hetc_peak'] / r['bound']:.4f} in {r['hetc_s']:6.2f} s ({r['hetc_method']})  {vela}")


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}, {format(max(values), fmt)}]"


def summary(rows: list[dict]) -> str:
    lines = ["| set | budget | runs | hetc peak/bound | hetc s | Vela peak/bound | Vela s | Vela iterations "
             "| hetc <= Vela | hetc at bound where Vela is |",
             "| --- | --- | ---: | --- | --- | --- | --- | --- | ---: | ---: |"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["family"], r["budget"]), []).append(r)
    for (family, budget), group in groups.items():
        hetc = [r["hetc_peak"] / r["bound"] for r in group]
        cells = [family, budget, str(len(group)), _spread(hetc, ".4f"), _spread([r["hetc_s"] for r in group], ".2f")]
        if "vela_peak" in group[0]:
            vela_at = [r for r in group if r["vela_peak"] == r["bound"]]
            cells += [_spread([r["vela_peak"] / r["bound"] for r in group], ".4f"),
                      _spread([r["vela_s"] for r in group], ".2f"),
                      _spread([r["vela_iters"] for r in group], ".0f"),
                      f"{sum(r['hetc_peak'] <= r['vela_peak'] for r in group)}/{len(group)}",
                      f"{sum(r['hetc_peak'] == r['bound'] for r in vela_at)}/{len(vela_at)}"]
        else:
            cells += ["", "", "", "", ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--vela-iterations", type=int, nargs="+", default=[1000],
                        help="Vela's max_iterations; hetc gets the wall time Vela took")
    parser.add_argument("--hetc-budget", type=float, default=None, help="also run hetc alone with this budget (s)")
    parser.add_argument("--hetc-only", action="store_true", help="skip Vela (then --hetc-budget is required)")
    parser.add_argument("--vela-streams", type=int, default=1,
                        help="run Vela with random seeds 1..K on each set (its climb is random), hetc with each time")
    args = parser.parse_args(argv)
    if args.hetc_only and args.hetc_budget is None:
        parser.error("--hetc-only needs --hetc-budget")
    if args.vela_streams < 1:
        parser.error("--vela-streams must be at least 1")
    rows = run(args.families, args.seeds, args.vela_iterations, args.hetc_budget, args.hetc_only, args.vela_streams)
    print()
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
