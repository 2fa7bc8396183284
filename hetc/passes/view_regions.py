"""A view of a Region is a Region of a view: ``Reshape(Region(X))`` becomes ``Region(Reshape(X))``.

A Region's output lies in its base's bytes at an offset and with the base's strides, so a Reshape of it cannot
share those bytes (``hetc.target.ops.view_copy_reason``) and copies them. Reshaping the base instead, and
taking the region of that, names the same bytes: GPT's ``Split`` of the fused QKV projection into Q, K and V,
each reshaped into heads, ``[1, 8, 384] -> 3 x [1, 8, 128] -> [1, 8, 4, 32]``, becomes one view of the base,
``[1, 8, 12, 32]``, and three regions of four heads each. No byte moves.

The rule: the Region cuts one axis ``a`` of ``X`` (every other axis whole) to ``[start, end)``, and the view
keeps ``X``'s axes before ``a``. With ``inner`` the elements of one step of axis ``a`` and ``q`` those of one
step of the view's axis ``a``, the region is the rows ``[start * inner / q, end * inner / q)`` of ``X`` viewed
as ``X.shape[:a] + (X.shape[a] * inner / q,) + view.shape[a + 1:]``, when those divisions are exact. Sibling
regions viewed alike share the one view of their base. The rules (``VIEW_REGION_RULES``, one per view op)
run on the pattern driver (hetc.passes.patterns) after ``alias_ops`` has made the Regions.
"""
from __future__ import annotations

import math

import numpy as np

from hetc.ir import Graph, Node, Value
from hetc.ir.tiles import ASSEMBLE, REGION, TILE_DOMAIN, is_alias, is_region, region_bounds
from hetc.passes.identities import is_view
from hetc.passes.patterns import Match, Rule, pattern, run_rules
from hetc.passes.rewrite import new_constant, unique_name


def rebased_region(region: Node, view: Node) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None:
    """(the base's viewed shape, starts, ends) that make ``view(region(X))`` a region of a view of ``X``, or
    None when the rule does not apply."""
    base = tuple(int(d) for d in region.inputs[0].shape)
    starts, ends = region_bounds(region)
    cut = [k for k, (s, e, d) in enumerate(zip(starts, ends, base)) if (s, e) != (0, d)]
    if len(cut) != 1:
        return None
    a = cut[0]
    shape = tuple(int(d) for d in view.outputs[0].shape)
    if len(shape) <= a or shape[:a] != base[:a]:
        return None
    inner, q = math.prod(base[a + 1:]), math.prod(shape[a + 1:])
    if q == 0 or (starts[a] * inner) % q or (ends[a] * inner) % q or (base[a] * inner) % q:
        return None
    viewed = (*base[:a], base[a] * inner // q, *shape[a + 1:])
    lo, hi = [0] * len(viewed), list(viewed)
    lo[a], hi[a] = starts[a] * inner // q, ends[a] * inner // q
    return viewed, tuple(lo), tuple(hi)


def _rebasable(m: Match) -> bool:
    region, view, base = m.nodes["r"], m.nodes["y"], m.anchor
    return (is_view(view) and not base.is_const and not is_region(base)
            and m.output.name not in m.graph_outputs and not m.output.host
            and not any(is_alias(c) and c.op_type == ASSEMBLE for c in m.output.consumers)
            and rebased_region(region, view) is not None)


def _rebase(graph: Graph, m: Match) -> list[Node]:
    """The Region of the base's view; the view too unless a sibling's rewrite (an earlier sweep) made it."""
    region, view, base = m.nodes["r"], m.nodes["y"], m.anchor
    viewed, lo, hi = rebased_region(region, view)  # type: ignore[misc]
    whole = next((c.outputs[0] for c in base.consumers if c.op_type == "Reshape" and c.domain == ""
                  and c.outputs[0].shape == viewed and c.outputs[0].name not in m.graph_outputs), None)
    made = []
    if whole is None:
        whole = Value(unique_name(graph, f"{base.name}_as_{'x'.join(map(str, viewed))}"), base.dtype, viewed)
        graph.values[whole.name] = whole
        shape = new_constant(graph, f"{whole.name}_shape", np.asarray(viewed, np.int64))
        made.append(Node(region.id, "Reshape", f"{view.name}/base", [base, shape], [whole]))
    made.append(Node(view.id, REGION, view.name, [whole], [m.output], {"starts": list(lo), "ends": list(hi)},
                     TILE_DOMAIN))
    return made


_REGION = f"{TILE_DOMAIN}:{REGION}"
VIEW_REGION_RULES: list[Rule] = [
    Rule(f"{op} of a Region as a Region of a {op}", pattern((_REGION, ["x"], "r"), (op, ["r", *rest], "y"),
                                                            keep_anchor=True), _rebasable, _rebase)
    for op, rest in (("Reshape", ["?shape"]), ("Flatten", []), ("Squeeze", ["?axes?"]), ("Unsqueeze", ["?axes?"]))
]


def run_view_regions(graph: Graph) -> int:
    """Rewrite in place; returns the number of views rewritten."""
    return sum(run_rules(graph, VIEW_REGION_RULES).values())
