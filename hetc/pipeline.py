"""The compile pipeline: import -> passes -> schedule -> memory -> codegen [-> simulate -> validate] [-> gantt].

``compile()`` is what ``hetc build`` runs; the CLI only parses flags and prints.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hetc import __version__
from hetc.errors import HetcError
from hetc.frontend import load_onnx
from hetc.ir import Graph
from hetc.passes import optimize
from hetc.schedule import Schedule, placement_rows, schedule as run_scheduler
from hetc.stages import ProgressSink, StageClock
from hetc.target import Target, load_target


@dataclass
class BuildOptions:
    target: str | Path = "edge-soc"
    scheduler: str = "cpsat"
    time_limit_s: float | None = None
    seed: int = 0
    num_workers: int = 2
    shapes: dict[str, tuple[int, ...]] | None = None
    dims: dict[str, int] | None = None


@dataclass
class BuildResult:
    model: Path
    graph: Graph
    target: Target
    schedule: Schedule
    summary: dict[str, Any]
    placement: list[dict[str, Any]] = field(default_factory=list)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(model: str | Path, options: BuildOptions | None = None, progress: ProgressSink | None = None) -> BuildResult:
    """Run the compile stages on ``model`` and return the artifacts and the JSON summary (no files written)."""
    options = options or BuildOptions()
    clock = StageClock(progress)
    model = Path(model)
    with clock.stage("import") as say:
        graph = load_onnx(model, shapes=options.shapes, dims=options.dims)
        say(f"{len(graph.nodes)} nodes")
    with clock.stage("passes") as say:
        graph = optimize(graph)
        say(f"{len(graph.nodes)} nodes after folding")
    target = load_target(options.target)
    with clock.stage("schedule") as say:
        sched = run_scheduler(graph, target, strategy=options.scheduler, time_limit_s=options.time_limit_s,
                              num_workers=options.num_workers, seed=options.seed, progress=say)
        say(f"makespan {sched.makespan_ns / 1000:.1f} us, gap {sched.gap:.1%}")
    summary = _summary(model, graph, target, sched, clock)
    return BuildResult(model=model, graph=graph, target=target, schedule=sched, summary=summary,
                       placement=placement_rows(graph, target, sched))


def _summary(model: Path, graph: Graph, target: Target, sched: Schedule, clock: StageClock) -> dict[str, Any]:
    placement: dict[str, int] = {d: 0 for d in target.devices}
    for device in sched.placement.values():
        placement[device] += 1
    return {
        "model": str(model),
        "hetc_version": __version__,
        "target": target.name,
        "scheduler": sched.stats.strategy,
        "nodes": len(graph.nodes),
        "placement": placement,
        "makespan_us": sched.makespan_ns / 1000,
        "lower_bound_us": sched.lower_bound_ns / 1000,
        "gap": round(sched.gap, 6),
        "solver": {"status": sched.stats.status, "wall_s": round(sched.stats.wall_s, 3)},
        "compile_s": round(clock.total, 3),
        "stage_s": {k: round(v, 3) for k, v in clock.seconds.items()},
    }


def parse_list(text: str | None, allowed: Sequence[str], what: str) -> list[str]:
    """Split a comma-separated flag value and check every item, e.g. ``--gantt html,png``."""
    if not text:
        return []
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if bad:
        raise HetcError(f"unknown {what} {', '.join(repr(b) for b in bad)}; choose from {', '.join(allowed)}")
    return items
