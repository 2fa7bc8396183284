"""hetc.passes: graph rewrites (constant folding, dead-code elimination, Conv+BN folding, Identity and
inference-Dropout removal, per-channel affine folding, QDQ lowering to integer ops, norm/attention and epilogue
fusion as pattern rules). Each pass returns a new graph; ``optimize`` runs them all."""
from hetc.passes.affine import AFFINE_RULES
from hetc.passes.attention import COMPOSITE_RULES, fuse_composites
from hetc.passes.conv_batchnorm import fold_conv_batchnorm
from hetc.passes.dead_code import eliminate_dead_code
from hetc.passes.fold_constants import fold_constants
from hetc.passes.fusion import EPILOGUE_RULES, SUM_RULES, fuse_epilogues
from hetc.passes.identities import remove_identities
from hetc.passes.pipeline import PIPELINE, optimize
from hetc.passes.qdq import QDQ_RULES, lower_qdq

__all__ = ["optimize", "fold_constants", "eliminate_dead_code", "fold_conv_batchnorm", "remove_identities",
           "fuse_epilogues", "EPILOGUE_RULES", "SUM_RULES", "AFFINE_RULES", "fuse_composites", "COMPOSITE_RULES",
           "lower_qdq", "QDQ_RULES", "PIPELINE"]
