"""The tiler: nodes too big for the scratchpad of an accelerator that could otherwise run them are cut into
tiles that fit (and, on targets with several identical cores, nodes whose split pays are cut into parts).

* ``rules``: per op family, along which axes a node may be cut and what each tile reads (a table).
* ``plan``: the one driver that chooses the cut with the cost model (budget, estimate, cap); ``shapes`` describes
  a tile, ``estimate`` judges a cut, ``parts`` cuts nodes that fit whole into parts for several devices.
* ``cascade``: chains of tiled layers run band by band, the tensors between them kept on chip.
* ``graph``: ``tile_graph``, which writes the chosen cuts and cascades into the graph with alias nodes
  (hetc.ir.tiles).
"""
from hetc.target.tiling.graph import cut_cascade, cut_node, tile_graph, tiling_note, tiling_rows
from hetc.target.tiling.estimate import TILE_BUDGET_FRACTION, WIDE_TILE_BUDGET_FRACTION, TilePlan
from hetc.target.tiling.plan import MAX_TILES, eligible_accelerators, plan_node, tiling_verdict
from hetc.target.tiling.axes import Untileable
from hetc.target.tiling.rules import RULES

__all__ = ["tile_graph", "cut_node", "cut_cascade", "tiling_rows", "tiling_note", "plan_node", "tiling_verdict",
           "eligible_accelerators", "TilePlan", "MAX_TILES", "TILE_BUDGET_FRACTION", "WIDE_TILE_BUDGET_FRACTION",
           "RULES", "Untileable"]
