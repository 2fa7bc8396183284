"""Test scaffolding for tiled graphs: hand-built tiles (hetc.ir.tiles), an alias-aware hand schedule, and the
untiled ONNX models they must agree with.

``hand_schedule`` is the scheduler's list scheduler on a placement chosen by the test
(``hetc.schedule.schedule_placement``, timed by hetc.schedule.tasks, which states how alias nodes run), so that
the memory, codegen and simulator side can be tested on placements and durations the test controls.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from hetc.ir import EXPORT_IR_VERSION, Graph, Node, Value
from hetc.ir.graph import TileRef
from hetc.ir.tiles import ASSEMBLE, REGION, TILE_DOMAIN, is_alias
from hetc.schedule.api import schedule_placement
from hetc.schedule.artifact import Schedule, SolverStats
from hetc.target.target import Target


# ------------------------------------------------------------------------------------------ weights, models
def he_weights(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Fan-in-scaled normal weights (He): realistic magnitudes, every output channel different."""
    fan_in = math.prod(shape[1:])
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(np.float32)


def conv_model(layers: list[tuple[str, np.ndarray, np.ndarray, list[int]]], x_shape: tuple[int, ...],
               y_shape: tuple[int, ...]) -> onnx.ModelProto:
    """x -> Conv(+Relu) ... -> y: ``layers`` are (name, W, B, pads); a name ending in '+relu' adds a Relu."""
    nodes, inits, cur = [], [], "x"
    for k, (name, w, b, pads) in enumerate(layers):
        base = name.split("+")[0]
        inits += [numpy_helper.from_array(w, f"{base}_w"), numpy_helper.from_array(b, f"{base}_b")]
        out = f"{base}_out" if k + 1 < len(layers) or name.endswith("+relu") else "y"
        nodes.append(helper.make_node("Conv", [cur, f"{base}_w", f"{base}_b"], [out], name=base, pads=pads))
        cur = out
        if name.endswith("+relu"):
            relu_out = f"{base}_relu" if k + 1 < len(layers) else "y"
            nodes.append(helper.make_node("Relu", [cur], [relu_out], name=f"{base}_relu"))
            cur = relu_out
    graph = helper.make_graph(nodes, "untiled", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def onnxruntime_outputs(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)


# ------------------------------------------------------------------------------------------ tiled graphs
@dataclass
class TiledBuilder:
    """Appends nodes with fresh ids; ``region``/``assemble`` make the alias ops, ``conv`` a tile Conv."""

    nodes: list[Node] = field(default_factory=list)

    def _add(self, node_op: str, name: str, inputs: list, outputs: list, attrs: dict, domain: str = "",
             tile: TileRef | None = None) -> Node:
        node = Node(len(self.nodes), node_op, name, inputs, outputs, attrs, domain, tile)
        self.nodes.append(node)
        return node

    def region(self, name: str, x: Value, starts: list[int], ends: list[int]) -> Value:
        out = Value(name, x.dtype, tuple(e - s for s, e in zip(starts, ends)))
        self._add(REGION, f"region_{name}", [x], [out], {"starts": list(starts), "ends": list(ends)}, TILE_DOMAIN)
        return out

    def assemble(self, name: str, parts: list[Value], axis: int) -> Value:
        shape = list(parts[0].shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        out = Value(name, parts[0].dtype, tuple(shape))
        self._add(ASSEMBLE, f"assemble_{name}", list(parts), [out], {"axis": axis}, TILE_DOMAIN)
        return out

    def conv(self, name: str, x: Value, w: np.ndarray, b: np.ndarray, pads: list[int], tile: TileRef) -> Value:
        kh, kw = w.shape[2:]
        oh = x.shape[2] + pads[0] + pads[2] - kh + 1
        ow = x.shape[3] + pads[1] + pads[3] - kw + 1
        out = Value(name, "float32", (x.shape[0], w.shape[0], oh, ow))
        wv = Value(f"{name}_w", "float32", w.shape, const=np.ascontiguousarray(w))
        bv = Value(f"{name}_b", "float32", b.shape, const=np.ascontiguousarray(b))
        self._add("Conv", name, [x, wv, bv], [out], {"pads": list(pads)}, tile=tile)
        return out

    def op(self, op_type: str, name: str, inputs: list[Value], shape: tuple[int, ...]) -> Value:
        out = Value(name, "float32", shape)
        self._add(op_type, name, list(inputs), [out], {})
        return out


def row_tiles(h_out: int, count: int) -> list[tuple[int, int]]:
    step = -(-h_out // count)
    return [(a, min(a + step, h_out)) for a in range(0, h_out, step)]


def conv_by_rows(builder: TiledBuilder, name: str, x: Value, w: np.ndarray, b: np.ndarray, count: int,
                 region_of_region: bool = False) -> Value:
    """A 3x3 pad-1 stride-1 Conv cut into ``count`` row tiles: a Region of the input per tile (halo
    included), the tile's own pads, one Assemble along H. ``region_of_region``: the last tile's region is
    taken from a Region of ``x`` that starts two rows earlier (offsets must compose)."""
    n, c, h, width = x.shape
    parts = []
    for k, (a, z) in enumerate(row_tiles(h, count)):
        lo, hi = max(a - 1, 0), min(z + 1, h)
        pads = [1 if a == 0 else 0, 1, 1 if z == h else 0, 1]
        if region_of_region and k == count - 1 and lo >= 2:
            outer = builder.region(f"{name}_outer{k}", x, [0, 0, lo - 2, 0], [n, c, h, width])
            region = builder.region(f"{name}_in{k}", outer, [0, 0, 2, 0], [n, c, hi - lo + 2, width])
        else:
            region = builder.region(f"{name}_in{k}", x, [0, 0, lo, 0], [n, c, hi, width])
        parts.append(builder.conv(f"{name}_t{k}", region, w, b, pads,
                                  TileRef(name, k, count, "rows", "test: rows with halo")))
    return builder.assemble(name, parts, axis=2)


def conv_by_channels(builder: TiledBuilder, name: str, x: Value, w: np.ndarray, b: np.ndarray, count: int,
                     pads: list[int]) -> Value:
    """A Conv cut by output channels: each tile reads the whole input, its own weight slice, Assemble on C."""
    step = -(-w.shape[0] // count)
    parts = []
    for k, a in enumerate(range(0, w.shape[0], step)):
        z = min(a + step, w.shape[0])
        parts.append(builder.conv(f"{name}_t{k}", x, w[a:z], b[a:z], pads,
                                  TileRef(name, k, count, "channels", "test: output channels")))
    return builder.assemble(name, parts, axis=1)


# ------------------------------------------------------------------------------------------ hand schedule
def hand_schedule(graph: Graph, target: Target, placement: dict[str, str], duration: int = 100,
                  durations: dict[str, int] | None = None) -> Schedule:
    """Tasks in topological order, each as early as its engine and operands allow (the scheduler's own list
    scheduler and execution model: ``hetc.schedule.schedule_placement``); ``placement`` maps node names to
    devices (default: the CPU), ``durations`` node names to ns (default ``duration``). Alias nodes are no
    tasks."""
    devices = {n.id: placement.get(n.name, "cpu") for n in graph if not is_alias(n)}
    return schedule_placement(graph, target, devices, [n.id for n in graph.topo_order()],
                              lambda node, device: (durations or {}).get(node.name, duration),
                              SolverStats("hand", "HEURISTIC", 0, 0))
