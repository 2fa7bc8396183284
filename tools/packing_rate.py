"""Measure how many hill-climbing work units the packer does per wall second: ``WORK_PER_SECOND`` in
``hetc/memory/packing.py`` turns a packing's time budget into those units, so it should be this figure.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/packing_rate.py

On ``tools/bench_packing.py``'s seeded sets, from each set's best greedy packing, hill climbing (with restarts)
runs a fixed number of units; sets it solves to the lower bound before spending them are left out (they stop
early and time nothing). Prints each set's rate and the median and range. Run it on an idle machine: the rate
is the machine's, and a loaded one makes every packing's budget a wall-time overrun, not a different result.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # the worktree's hetc, not an installed one

from bench_packing import FAMILIES, generate  # noqa: E402

from hetc.memory import packing  # noqa: E402
from hetc.memory.bestfit import IntervalProblem, best_greedy, peak_of  # noqa: E402


def rate(intervals: list[tuple[int, int, int]], units: int) -> float | None:
    """Units per second of one hill climb on ``intervals``, None when it reached the bound early."""
    problem = IntervalProblem.build(intervals, 1)
    order, offsets, _ = best_greedy(problem)
    bound = problem.lower_bound()
    began = time.perf_counter()
    found, _ = packing._hill_climb(problem, order, offsets, bound, units, began + 600, True)   # noqa: SLF001 - timing the search itself
    seconds = time.perf_counter() - began
    return None if peak_of(problem, found) <= bound else units / seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--units", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    rates = []
    for family in FAMILIES:
        for seed in range(args.seeds):
            r = rate(generate(family, seed), args.units)
            print(f"{family} seed {seed}: " + ("reached the bound early, not timed" if r is None
                                               else f"{r / 1e6:.2f} M units/s"), flush=True)
            if r is not None:
                rates.append(r)
    print(f"median {statistics.median(rates) / 1e6:.2f} M units/s [{min(rates) / 1e6:.2f}, "
          f"{max(rates) / 1e6:.2f}] over {len(rates)} sets; WORK_PER_SECOND is {packing.WORK_PER_SECOND / 1e6:.2f} M")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
