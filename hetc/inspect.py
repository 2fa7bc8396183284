"""``hetc inspect``: what a model is made of and what each device of a target can do with it."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hetc.frontend import load_onnx
from hetc.ir import Graph, Node
from hetc.ir.fused import node_label
from hetc.passes import optimize
from hetc.target import Target, load_target
from hetc.target.cost import node_flops
from hetc.target.tiling import TILE_BUDGET_FRACTION, TilePlan, plan_node
from hetc.target.tiling.cascade import CASCADE_AXIS, CascadePlan, plan_cascades

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class NodeReport:
    id: int
    name: str
    op: str
    outputs: list[dict[str, Any]]       # name, dtype, shape
    flops: int
    devices: dict[str, str | None]      # device -> None when it can run the node, else the reason
    tiling: dict[str, Any] | None = None  # how the tiler cuts it (tiles, axis, why), or None when it stays whole
    when: str | None = None             # the gate it is predicated on (hetc.ir.predicates), or None


@dataclass(frozen=True)
class InspectReport:
    model: str
    target: str
    nodes: list[NodeReport]
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    op_histogram: dict[str, int]
    total_flops: int
    weight_bytes: int
    supported_counts: dict[str, int] = field(default_factory=dict)  # device -> nodes it can run

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model, "target": self.target,
            "inputs": self.inputs, "outputs": self.outputs,
            "op_histogram": self.op_histogram, "total_flops": self.total_flops,
            "weight_bytes": self.weight_bytes, "supported_counts": self.supported_counts,
            "nodes": [{"id": n.id, "name": n.name, "op": n.op, "outputs": n.outputs, "flops": n.flops,
                       "devices": {d: ({"ok": True} if r is None else {"ok": False, "reason": r})
                                   for d, r in n.devices.items()},
                       "tiling": n.tiling, **({"when": n.when} if n.when else {})}
                      for n in self.nodes],
        }


def _value_json(v: Any) -> dict[str, Any]:
    out = {"name": v.name, "dtype": v.dtype, "shape": list(v.shape)}
    if v.host is not None:   # a host value (hetc.ir.host): its ONNX type says more than dtype and shape
        out["host"] = str(v.host)
    return out


def _node_report(node: Node, target: Target, opset: int, cascade: CascadePlan | None) -> NodeReport:
    """What each device can do with ``node`` as it is, and how the build's tiler would cut it (or the
    ``cascade`` it would run it in). The device verdicts are for the node whole: a node the tiler cuts runs
    as tiles that fit (its ``tiling``)."""
    devices: dict[str, str | None] = {}
    for device in target.devices:
        verdict = target.supports(node, device)
        devices[device] = None if verdict else str(verdict)
    if cascade is not None:
        tiling = {"tiles": cascade.bands, "axis": CASCADE_AXIS, "cut": cascade.describe(), "why": cascade.why}
    else:
        plan = plan_node(target, node, opset)
        tiling = ({"tiles": plan.count, "axis": plan.axis_label, "cut": plan.describe(), "why": plan.why}
                  if isinstance(plan, TilePlan) else None)
    return NodeReport(id=node.id, name=node.name, op=node_label(node), outputs=[_value_json(v) for v in node.outputs],
                      flops=node_flops(node), devices=devices, tiling=tiling,
                      when=None if node.when is None else node.when.name)


def _op_histogram(graph: Graph) -> dict[str, int]:
    """Nodes per op, a fused node under its label ("Conv+Clip")."""
    hist: dict[str, int] = {}
    for n in graph.nodes:
        hist[node_label(n)] = hist.get(node_label(n), 0) + 1
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def inspect_graph(graph: Graph, target: Target, model: str = "") -> InspectReport:
    opset = graph.opset.get("", graph.opset.get("ai.onnx", 17))
    cascades = {id(layer.node): c for c in plan_cascades(graph, target, opset, TILE_BUDGET_FRACTION)
                for layer in c.layers}
    nodes = [_node_report(n, target, opset, cascades.get(id(n))) for n in graph.nodes]
    counts = {d: sum(1 for n in nodes if n.devices[d] is None) for d in target.devices}
    return InspectReport(model=model or graph.name, target=target.name, nodes=nodes,
                         inputs=[_value_json(v) for v in graph.inputs],
                         outputs=[_value_json(v) for v in graph.outputs],
                         op_histogram=_op_histogram(graph), total_flops=sum(n.flops for n in nodes),
                         weight_bytes=graph.weight_bytes(), supported_counts=counts)


def inspect_model(model: str | Path, target: str | Path = "edge-soc", shapes: dict | None = None,
                  dims: dict | None = None) -> InspectReport:
    """Import and optimise ``model`` as ``hetc build`` would, then report per node what each device can do."""
    graph = optimize(load_onnx(model, shapes=shapes, dims=dims))
    return inspect_graph(graph, load_target(target), model=str(model))


def render_inspect(report: InspectReport, console: "Console") -> None:
    """Print the report as rich tables: summary, op histogram, then one row per node."""
    from rich.table import Table

    devices = list(report.supported_counts)
    console.print(f"[bold]{report.model}[/] on target [bold]{report.target}[/]: {len(report.nodes)} nodes, "
                  f"{report.total_flops / 1e9:.3f} GFLOP, weights {report.weight_bytes / 2**20:.2f} MiB")
    for kind, values in (("input", report.inputs), ("output", report.outputs)):
        for v in values:
            text = f"host {v['host']}" if "host" in v else _typed(v)
            console.print(f"  {kind:<6} {v['name']}: {_escape(text)}")
    hist = Table("op", "count", *[f"on {d}" for d in devices], title="op histogram", box=None)
    for op, count in report.op_histogram.items():
        runnable = [sum(1 for n in report.nodes if n.op == op and n.devices[d] is None) for d in devices]
        hist.add_row(op, str(count), *map(str, runnable))
    console.print(hist)
    predicated = any(n.when for n in report.nodes)   # a column for the experts' gates (hetc.ir.predicates)
    table = Table("#", "node", "op", *(["runs if"] if predicated else []), "output", "MFLOP", *devices,
                  title="nodes", box=None)
    for n in report.nodes:
        outputs = _escape(", ".join(_typed(o) for o in n.outputs))
        cells = ["[green]yes[/]" if n.devices[d] is None else f"[red]no[/]: {_escape(n.devices[d])}"
                 for d in devices]
        gate = [_escape(n.when or "")] if predicated else []
        table.add_row(str(n.id), _escape(n.name), n.op, *gate, outputs, f"{n.flops / 1e6:.2f}", *cells)
    console.print(table)
    tiled = [n for n in report.nodes if n.tiling is not None]
    if tiled:
        tiles = Table("#", "node", "op", "tiles", "cut", "why", title="tiling (hetc build cuts these nodes)", box=None)
        for n in tiled:
            assert n.tiling is not None
            tiles.add_row(str(n.id), _escape(n.name), n.op, str(n.tiling["tiles"]), _escape(n.tiling["cut"]),
                          _escape(n.tiling["why"]))
        console.print(tiles)


def _typed(value: dict) -> str:
    """``int8[1x16x48x48]``: a quantized model's integer tensors show as such."""
    return f"{value['dtype']}[{'x'.join(map(str, value['shape']))}]"


def _escape(text: str | None) -> str:
    from rich.markup import escape
    return escape(text or "")
