"""Op classes for colouring charts: a handful of families a reader can tell apart at a glance.

The class names match the cost model's (``hetc.target.ops.OP_CLASSES``) so a chart's legend and a target's
efficiency table speak the same words; "dma" is added for transfers.

The classes group ops by what limits them on an accelerator (dense MACs, pooling windows, normalisation,
pointwise maths, data movement), so a chart coloured by class shows *what kind* of work each engine does.
"""
from __future__ import annotations

OP_CLASSES: dict[str, frozenset[str]] = {
    "conv": frozenset({"Conv", "ConvTranspose", "ConvInteger", "QLinearConv"}),
    "matmul": frozenset({"Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "Einsum"}),
    "pool": frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "MaxRoiPool"}),
    "norm": frozenset({"BatchNormalization", "InstanceNormalization", "LayerNormalization", "LRN",
                       "GroupNormalization", "RMSNormalization"}),
    "softmax": frozenset({"Softmax", "LogSoftmax", "Hardmax"}),
    "activation": frozenset({"Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish",
                             "Tanh", "Gelu", "Erf", "Softplus", "Clip", "Mish", "Celu", "ThresholdedRelu"}),
    "elementwise": frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs",
                              "Reciprocal", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less", "Greater",
                              "Not", "And", "Or", "Floor", "Ceil", "Round", "Sign", "Mod"}),
    "reduce": frozenset({"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2",
                         "ReduceL1", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "TopK"}),
    "data": frozenset({"Concat", "Split", "Slice", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                       "Identity", "Gather", "Pad", "Resize", "Cast", "Dropout", "Expand", "Tile", "Shape",
                       "GatherElements", "ScatterElements", "DepthToSpace", "SpaceToDepth"}),
}

# Colour-blind-safe palette (Okabe-Ito plus two neutrals); "dma" is a distinct grey-blue so transfers never
# read as compute.
CLASS_COLOURS: dict[str, str] = {
    "conv": "#0072B2",
    "matmul": "#D55E00",
    "pool": "#009E73",
    "norm": "#CC79A7",
    "softmax": "#882255",
    "activation": "#F0E442",
    "elementwise": "#56B4E9",
    "reduce": "#E69F00",
    "data": "#999999",
    "other": "#6A3D9A",
    "dma": "#7F9CB0",
}

CLASS_ORDER: tuple[str, ...] = tuple(CLASS_COLOURS)

_CLASS_OF_OP: dict[str, str] = {op: cls for cls, ops in OP_CLASSES.items() for op in ops}


def op_class(op: str | None) -> str:
    """The colour class of an ONNX op type (fused ops such as ``Conv+Relu`` take their first op's class)."""
    if not op:
        return "other"
    head = op.split("+", 1)[0].split("_", 1)[0]
    return _CLASS_OF_OP.get(op, _CLASS_OF_OP.get(head, "other"))


def class_colour(cls: str) -> str:
    return CLASS_COLOURS.get(cls, CLASS_COLOURS["other"])
