"""The vocabulary of the tiling rules (``hetc.target.tiling.rules`` and ``free_axes``): an axis a node may be
cut along, one tile's input boxes and attributes, a rule, a rule's refusal; and the helpers every family of
rules uses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from hetc.ir import Node, Value
from hetc.target.tiling.boxes import Box, full, with_band

Bands = dict[str, tuple[int, int]]


class Untileable(Exception):
    """A rule's refusal: the message says what cannot be tiled and why (quoted by capability)."""


@dataclass(frozen=True)
class Axis:
    """An axis a node may be cut along: its name ("rows", "channels", "M", "N", "K", "axis 3"), the output
    axis it cuts (None for a reduction axis: K, whose tiles chain partial sums), its extent and the unit band
    boundaries must be multiples of (the output channels of one group in a grouped convolution)."""

    name: str
    out_axis: int | None
    extent: int
    unit: int = 1


@dataclass
class BaseTile:
    """One tile of the base op: per base input a box of it (None: the input is omitted), and the tile's
    attributes. ``inputs[i] is None`` where the original input is omitted or the tile drops it (a K tile
    after the first drops Gemm's C)."""

    inputs: list[Box | None]
    attrs: dict[str, Any] = field(default_factory=dict)
    # input index -> new constant array (Resize sizes, a causal attention band's mask: an input the node
    # itself may lack)
    replace: dict[int, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    """``axes(node, opset)`` lists the cuttable axes; ``tile(node, bands, opset)`` gives one tile."""

    axes: Callable[[Node, int], list[Axis]]
    tile: Callable[[Node, Bands, int], BaseTile]


# ----------------------------------------------------------------------------------------------- helpers
def out_box(node: Node, bands: Bands, axes: Sequence[Axis]) -> Box:
    box = full(node.outputs[0])
    for axis in axes:
        if axis.out_axis is not None and axis.name in bands:
            box = with_band(box, axis.out_axis, *bands[axis.name])
    return box


def nchw_name(axis: int, rank: int) -> str:
    if rank >= 3:
        return {0: "batch", 1: "channels", 2: "rows", 3: "columns"}.get(axis, f"axis {axis}")
    return f"axis {axis}"


def data_input(node: Node) -> Value:
    """The node's first input: the data a tile's box is cut from."""
    x = node.inputs[0]
    assert x is not None
    return x
