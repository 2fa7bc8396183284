"""The default optimisation pipeline."""
from __future__ import annotations

import time
from typing import Callable, Sequence

from hetc.ir import Graph
from hetc.passes.affine import run_fold_affine
from hetc.passes.conv_batchnorm import run_fold_conv_batchnorm
from hetc.passes.dead_code import run_eliminate_dead_code
from hetc.passes.fold_constants import run_fold_constants
from hetc.passes.attention import run_fuse_composites
from hetc.passes.fusion import FusionCheck, run_fuse_epilogues, run_merge_sums, run_pack_biases
from hetc.passes.identities import run_remove_identities
from hetc.passes.qdq import run_lower_qdq
from hetc.passes.patterns import Rule, run_rules
from hetc.passes.predication import run_predicate_experts
from hetc.passes.router import run_fuse_routers
from hetc.passes.rewrite import renumber

# Identity removal first (it exposes constants and Conv->BN pairs hidden behind Identity/Dropout), QDQ
# lowering before folding (folding would turn a DequantizeLinear of an int8 weight into a float copy), folding
# next (BN parameters are often computed), per-channel scales and shifts into the Conv/BN before them, norms,
# attention and routers from their decomposed forms before epilogue fusion (which would otherwise take the
# scores' scale and mask into the Q.K^T MatMul), epilogue fusion after BN and affine folding (a Conv+BN+Relu6
# becomes one Conv+Clip), Sums take their Adds once epilogues took theirs, experts predicated once their gating
# Mul is fused, DCE last to sweep what the others orphaned. A Conv's bias goes into its weight before the
# epilogues fuse onto it (a MatMul's, an Add, with them: hetc.passes.fusion).
PIPELINE: list[tuple[str, Callable[[Graph], int]]] = [
    ("remove_identities", run_remove_identities),
    ("lower_qdq", run_lower_qdq),
    ("fold_constants", run_fold_constants),
    ("fold_conv_batchnorm", run_fold_conv_batchnorm),
    ("fold_affine", run_fold_affine),
    ("fuse_norms_attention", run_fuse_composites),
    ("fuse_routers", run_fuse_routers),
    ("pack_biases", run_pack_biases),
    ("fuse_epilogues", run_fuse_epilogues),
    ("merge_sums", run_merge_sums),
    ("predicate_experts", run_predicate_experts),
    ("eliminate_dead_code", run_eliminate_dead_code),
]


def optimize(graph: Graph, stats: dict[str, dict[str, float]] | None = None,
             lowerings: Sequence[Rule] = (), fusion_check: FusionCheck | None = None,
             pack_biases: bool = True) -> Graph:
    """A new, optimised graph (``graph`` is untouched) with nodes renumbered 0..n-1 in topological order.

    ``lowerings`` are a target's rewrite rules (hetc.target.lowering), run after Conv+BN and per-channel affine
    folding and before the fusions, so that a lowered node still takes its epilogue. ``fusion_check`` is the
    target's say on each epilogue (hetc.target.lowering.fusion_check); without ``pack_biases`` no bias
    travels in its weight (hetc.target.lowering.packs_biases). If ``stats`` is given it receives, per pass,
    the number of nodes it changed and its wall time."""
    result = graph.copy()
    steps = list(PIPELINE)
    if fusion_check is not None or not pack_biases:
        steps = [(name, (lambda g: run_fuse_epilogues(g, fusion_check, pack_biases)) if name == "fuse_epilogues"
                  else run) for name, run in steps if pack_biases or name != "pack_biases"]
    if lowerings:
        at = [name for name, _ in steps].index("fold_affine") + 1
        steps.insert(at, ("lower_for_target", lambda g: sum(run_rules(g, lowerings).values())))
    for name, run in steps:
        start = time.perf_counter()
        changed = run(result)
        if stats is not None:
            stats[name] = {"changed": changed, "seconds": time.perf_counter() - start}
    renumber(result)
    return result
