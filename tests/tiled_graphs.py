"""Tiled graphs built by hand with hetc.ir, the way the tiler cuts nodes (hetc.ir.tiles): Region nodes on the
activation input (halo included) -> tile nodes with their own pads and weights -> one Assemble making the
original output. Used by the scheduling tests of alias nodes and to measure scheduling at scale."""
from __future__ import annotations

import random

import numpy as np

from hetc.ir import Graph, Node, Value
from hetc.ir.graph import TileRef
from hetc.ir.tiles import ASSEMBLE, REGION, TILE_DOMAIN


class TiledBuilder:
    """Appends nodes with fresh ids; seeded He-scaled weights (never the light models' constant 0.02)."""

    def __init__(self, seed: int = 0) -> None:
        self.nodes: list[Node] = []
        self.rng = np.random.default_rng(seed)

    def _add(self, op: str, name: str, inputs: list[Value], outputs: list[Value], attrs: dict | None = None,
             domain: str = "", tile: TileRef | None = None) -> None:
        self.nodes.append(Node(len(self.nodes), op, name, inputs, outputs, dict(attrs or {}), domain, tile))

    def weight(self, name: str, cout: int, cin: int, k: int = 3) -> tuple[Value, Value]:
        w = self.rng.standard_normal((cout, cin, k, k)).astype(np.float32) * np.float32(np.sqrt(2.0 / (cin * k * k)))
        b = (self.rng.standard_normal(cout) * 0.1).astype(np.float32)
        return Value(f"{name}_w", "float32", w.shape, const=w), Value(f"{name}_b", "float32", b.shape, const=b)

    def conv(self, name: str, x: Value, w: Value, b: Value, pads: tuple[int, int, int, int],
             tile: TileRef | None = None, out_name: str | None = None) -> Value:
        """A 3x3 stride-1 Conv with ``pads`` = (top, left, bottom, right)."""
        n, _, h, wd = x.shape
        out = Value(out_name or f"{name}_y", "float32", (n, w.shape[0], h + pads[0] + pads[2] - 2,
                                                         wd + pads[1] + pads[3] - 2))
        self._add("Conv", name, [x, w, b], [out], {"kernel_shape": [3, 3], "pads": list(pads),
                                                   "strides": [1, 1], "dilations": [1, 1], "group": 1}, tile=tile)
        return out

    def unary(self, op: str, name: str, x: Value) -> Value:
        out = Value(f"{name}_y", x.dtype, x.shape)
        self._add(op, name, [x], [out])
        return out

    def region(self, name: str, x: Value, starts: list[int], ends: list[int]) -> Value:
        out = Value(name, x.dtype, tuple(e - s for s, e in zip(starts, ends)))
        self._add(REGION, name, [x], [out], {"starts": list(starts), "ends": list(ends)}, domain=TILE_DOMAIN)
        return out

    def assemble(self, name: str, parts: list[Value], axis: int) -> Value:
        shape = list(parts[0].shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        out = Value(name, parts[0].dtype, tuple(shape))
        self._add(ASSEMBLE, f"{name}_assemble", parts, [out], {"axis": axis}, domain=TILE_DOMAIN)
        return out

    def conv_rows(self, name: str, x: Value, cout: int, tiles: int) -> Value:
        """A 3x3 pad-1 Conv cut into ``tiles`` bands of output rows: each tile reads a Region of ``x`` with
        its one-row halo and pads only at the image border; the weights are shared."""
        n, cin, h, wd = x.shape
        w, b = self.weight(name, cout, cin)
        bounds = [round(i * h / tiles) for i in range(tiles + 1)]
        parts = []
        for i, (r0, r1) in enumerate(zip(bounds, bounds[1:])):
            lo, hi = max(r0 - 1, 0), min(r1 + 1, h)
            piece = self.region(f"{name}_in{i}", x, [0, 0, lo, 0], [n, cin, hi, wd])
            ref = TileRef(name, i, tiles, "rows", f"{tiles} row bands fit the scratchpad")
            parts.append(self.conv(f"{name}_t{i}", piece, w, b, (int(r0 == 0), 1, int(r1 == h), 1), tile=ref))
        return self.assemble(f"{name}_y", parts, axis=2)

    def conv_channels(self, name: str, x: Value, cout: int, tiles: int) -> Value:
        """A 3x3 pad-1 Conv cut by output channels: every tile reads the whole input (a Region covering it)
        and its own slice of the weights."""
        n, cin, h, wd = x.shape
        w, b = self.weight(name, cout, cin)
        bounds = [round(i * cout / tiles) for i in range(tiles + 1)]
        parts = []
        for i, (c0, c1) in enumerate(zip(bounds, bounds[1:])):
            piece = self.region(f"{name}_in{i}", x, [0, 0, 0, 0], list(x.shape))
            wi = Value(f"{name}_w{i}", "float32", (c1 - c0, cin, 3, 3), const=w.const[c0:c1])
            bi = Value(f"{name}_b{i}", "float32", (c1 - c0,), const=b.const[c0:c1])
            ref = TileRef(name, i, tiles, "channels", f"{tiles} channel slices, one per core")
            parts.append(self.conv(f"{name}_t{i}", piece, wi, bi, (1, 1, 1, 1), tile=ref))
        return self.assemble(f"{name}_y", parts, axis=1)

    def graph(self, name: str, inputs: list[Value], outputs: list[Value]) -> Graph:
        return Graph.build(name, self.nodes, inputs, outputs, {"": 17})


def tiled_conv(tiles: int = 3, shape: tuple[int, ...] = (1, 32, 48, 48), cout: int = 32) -> Graph:
    """One Conv cut into row tiles: Regions of the graph input -> tile Convs -> Assemble = graph output."""
    builder = TiledBuilder()
    x = Value("x", "float32", shape)
    y = builder.conv_rows("conv", x, cout, tiles)
    return builder.graph("tiled_conv", [x], [y])


def tiled_chain(tiles: int = 3, shape: tuple[int, ...] = (1, 32, 48, 48)) -> Graph:
    """Two tiled Convs: the first one's Assemble feeds both a Relu (an ordinary consumer of the Assemble's
    output) and the Regions of the second tiled Conv; both ends are graph outputs."""
    builder = TiledBuilder(1)
    x = Value("x", "float32", shape)
    a = builder.conv_rows("conv1", x, shape[1], tiles)
    relu = builder.unary("Relu", "relu", a)
    b = builder.conv_rows("conv2", a, shape[1], tiles)
    return builder.graph("tiled_chain", [x], [relu, b])


def regions_of_computed(tiles: int = 2, shape: tuple[int, ...] = (1, 16, 32, 32)) -> Graph:
    """Regions of a value a node computes (not of a graph input), read by tile Convs and by a Mish (the NPU
    and DSP refuse it) on a Region of its own."""
    builder = TiledBuilder(2)
    x = Value("x", "float32", shape)
    w, b = builder.weight("head", shape[1], shape[1])
    y = builder.conv("head", x, w, b, (1, 1, 1, 1))
    z = builder.conv_rows("body", y, shape[1], tiles)
    n, c, h, wd = shape
    corner = builder.region("corner", y, [0, 0, 0, 0], [n, c, h // 2, wd])
    mish = builder.unary("Mish", "mish", corner)
    return builder.graph("regions_of_computed", [x], [z, mish])


def tiled_channels(tiles: int = 4, shape: tuple[int, ...] = (1, 64, 56, 56), cout: int = 128) -> Graph:
    """A compute-heavy Conv cut by output channels into ``tiles`` parts (a split across cores pays)."""
    builder = TiledBuilder(3)
    x = Value("x", "float32", shape)
    y = builder.conv_channels("conv", x, cout, tiles)
    return builder.graph("tiled_channels", [x], [y])


def tiled_vgg(layers: int = 16, tiles: int = 24, shape: tuple[int, ...] = (1, 64, 96, 96)) -> Graph:
    """A VGG-like chain of ``layers`` 3x3 Convs, each cut into ``tiles`` row tiles whose Regions read the previous
    layer's Assemble (the scale of VGG-19 tiled for 2 MiB scratchpads: hundreds of tile nodes, ~1,500 tasks).
    The activations (Relu) are taken as fused into the Convs, as hetc's fusion pass does."""
    builder = TiledBuilder(4)
    x = Value("x", "float32", shape)
    value = x
    for layer in range(layers):
        value = builder.conv_rows(f"conv{layer}", value, shape[1], tiles)
    return builder.graph("tiled_vgg", [x], [value])


def random_tiled_graph(seed: int) -> Graph:
    """A random small DAG of whole and tiled 3x3 Convs (by rows or channels, 2-4 tiles), Relus, Mishes (CPU
    only) and Regions of computed values, all on one activation shape."""
    rng = random.Random(seed)
    shape = (1, rng.choice([8, 16]), rng.choice([16, 24]), 16)
    builder = TiledBuilder(seed)
    x = Value("x", "float32", shape)
    pool, ends = [x], []
    for i in range(rng.randint(2, 5)):
        src = rng.choice(pool)
        kind = rng.choice(["rows", "channels", "conv", "relu", "mish", "region"])
        if kind == "rows":
            pool.append(builder.conv_rows(f"n{i}", src, shape[1], rng.randint(2, 4)))
        elif kind == "channels":
            pool.append(builder.conv_channels(f"n{i}", src, shape[1], rng.randint(2, 4)))
        elif kind == "conv":
            w, b = builder.weight(f"n{i}", shape[1], shape[1])
            pool.append(builder.conv(f"n{i}", src, w, b, (1, 1, 1, 1)))
        elif kind in ("relu", "mish"):
            pool.append(builder.unary(kind.capitalize(), f"n{i}", src))
        else:
            half = builder.region(f"n{i}_half", src, [0, 0, 0, 0], [1, shape[1], shape[2] // 2, shape[3]])
            ends.append(builder.unary(rng.choice(["Relu", "Mish"]), f"n{i}", half))
    read = {v.name for n in builder.nodes for v in n.inputs}
    outputs = [v for v in pool[1:] if v.name not in read] + ends
    return builder.graph(f"random_tiled_{seed}", [x], outputs or [pool[-1]])
