"""Op vocabulary of the target layer: the kernel set the NPU/DSP simulators implement, and the op classes the
cost model keys efficiencies by."""
from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import onnx.defs

from hetc.passes.identities import dropout_may_train, is_view

if TYPE_CHECKING:
    from hetc.ir import Node

# Ops with hetc kernels on the NPU and DSP (the CPU runs every ONNX op through onnxruntime). A preset may give
# a device any subset of this set and nothing outside it.
KERNEL_SET: frozenset[str] = frozenset({
    "Conv", "ConvTranspose", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool",
    "LRN", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "Softmax", "LogSoftmax",
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "Erf",
    "Softplus", "Clip", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal",
    "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less", "Greater", "ReduceMean", "ReduceSum", "ReduceMax",
    "ReduceMin", "Concat", "Split", "Slice", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
    "Identity", "Gather", "Pad", "Resize", "Cast", "Dropout", "RMSNormalization", "Attention",
    "TopK", "OneHot",   # a mixture of experts' router (hetc.sim.kernels.select)
    "TopKGate",         # the router fused whole (hetc.passes.router): hetc's own composite, no ONNX cases
    # integer arithmetic (docs/kernels.md, "Integer kernels")
    "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QuantizeLinear", "DequantizeLinear",
})

# onnxruntime's contrib ops with NPU/DSP kernels (what its quantizer writes in QOperator format around the
# standard integer ops). A preset lists them domain-qualified, e.g. "com.microsoft.QLinearAdd".
CONTRIB_DOMAIN = "com.microsoft"
CONTRIB_KERNEL_SET: frozenset[str] = frozenset({"QLinearAdd", "QLinearGlobalAveragePool", "QGemm"})


def qualified_op(domain: str, op_type: str) -> str:
    """How a device's op list names an op: plain for the default ONNX domain, ``domain.op`` otherwise."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}.{op_type}"


def has_device_kernel(domain: str, op_type: str) -> bool:
    """Whether hetc has an NPU/DSP kernel for ``op_type`` of ``domain``."""
    if domain in ("", "ai.onnx"):
        return op_type in KERNEL_SET
    return domain == CONTRIB_DOMAIN and op_type in CONTRIB_KERNEL_SET


# Ops whose products are integer x integer, accumulated in int32: they compute at the rate of their 8-bit
# (or 16-bit) operands, whatever type they write (ConvInteger/MatMulInteger write the int32 accumulators).
INTEGER_MAC_OPS: frozenset[str] = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm"})
# Ops of the quantised vocabulary: their unsigned integer operands run on the signed datapath of the same width
# (uint8 x is int8 x - 128 with the zero point moved by 128, which the kernel folds into the zero point).
QUANTIZED_OPS: frozenset[str] = INTEGER_MAC_OPS | {"QuantizeLinear", "DequantizeLinear", "QLinearAdd",
                                                   "QLinearGlobalAveragePool"}
SIGNED_TWIN: dict[str, str] = {"uint8": "int8", "uint16": "int16", "uint32": "int32"}
# Where each convolution keeps its weight [M, C / group, *kernel] ([C, M / group, *kernel] for ConvTranspose).
CONV_WEIGHT_INPUT: dict[str, int] = {"Conv": 1, "ConvTranspose": 1, "ConvInteger": 1, "QLinearConv": 3}
# Outputs that are accumulators: an integer MAC array holds int32 partial sums, so writing them out needs no
# int32 datapath of the device beyond its 8-bit MACs.
ACCUMULATOR_OUTPUT_OPS: frozenset[str] = frozenset({"ConvInteger", "MatMulInteger"})

# The classes a device's ``efficiency`` table is keyed by. "depthwise" is an optional refinement of "conv"
# (MAC arrays run depthwise convolutions far below their dense-conv utilisation); "default" covers any class a
# table does not name.
OP_CLASSES: tuple[str, ...] = ("conv", "matmul", "elementwise", "activation", "pool", "norm", "reduce",
                               "softmax", "data", "other")
EFFICIENCY_KEYS: frozenset[str] = frozenset(OP_CLASSES) | {"depthwise", "default"}

_CLASS_MEMBERS: dict[str, tuple[str, ...]] = {
    "conv": ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv"),
    "matmul": ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "QGemm", "Einsum", "LSTM", "GRU", "RNN",
               "Attention"),
    "pool": ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool", "GlobalLpPool",
             "MaxRoiPool", "RoiAlign", "MaxUnpool", "QLinearGlobalAveragePool"),
    "norm": ("BatchNormalization", "InstanceNormalization", "LayerNormalization", "GroupNormalization",
             "RMSNormalization", "LRN", "MeanVarianceNormalization", "LpNormalization"),
    "softmax": ("Softmax", "LogSoftmax", "Hardmax", "TopKGate"),
    "reduce": ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
               "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "CumSum", "TopK"),
    "activation": ("Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid", "HardSwish",
                   "Tanh", "Gelu", "Erf", "Softplus", "Softsign", "Clip", "ThresholdedRelu", "Mish", "Shrink",
                   "Swish"),
    "elementwise": ("Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal", "Max",
                    "Min", "Sum", "Mean", "Where", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                    "And", "Or", "Xor", "Not", "Floor", "Ceil", "Round", "Sign", "Mod", "BitShift", "IsNaN",
                    "IsInf", "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh",
                    "Atanh", "BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot", "QuantizeLinear",
                    "DequantizeLinear", "DynamicQuantizeLinear", "QLinearAdd"),
    "data": ("Concat", "Split", "Slice", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity",
             "Gather", "GatherElements", "GatherND", "Scatter", "ScatterElements", "ScatterND", "Pad", "Resize",
             "Upsample", "Cast", "CastLike", "Dropout", "Expand", "Tile", "DepthToSpace", "SpaceToDepth",
             "Shape", "Size", "ConstantOfShape", "Constant", "Range", "OneHot", "NonZero", "ReverseSequence",
             "Compress", "Trilu", "EyeLike"),
}
_OP_TO_CLASS: dict[str, str] = {op: cls for cls, ops in _CLASS_MEMBERS.items() for op in ops}


# Inputs that are shapes, axes, indices or scalars steering the kernel rather than tensors it computes on
# (op -> input positions). They are small constants the kernel reads as scalars, so a device's data dtypes
# do not constrain them (a Reshape's int64 shape does not stop an fp16-only NPU from reshaping).
PARAMETER_INPUTS: dict[str, frozenset[int]] = {
    "Reshape": frozenset({1}), "Slice": frozenset({1, 2, 3, 4}), "Pad": frozenset({1, 2, 3}),
    "Resize": frozenset({1, 2, 3}), "Split": frozenset({1}), "Squeeze": frozenset({1}),
    "Unsqueeze": frozenset({1}), "ReduceMean": frozenset({1}), "ReduceSum": frozenset({1}),
    "ReduceMax": frozenset({1}), "ReduceMin": frozenset({1}), "Gather": frozenset({1}),
    "TopK": frozenset({1}), "OneHot": frozenset({0, 1}),
    "Dropout": frozenset({1, 2}),
    # quantisation parameters: scales, zero points and QLinearConv's int32 bias (added to the accumulator)
    "QLinearConv": frozenset({1, 2, 4, 5, 6, 7, 8}), "QLinearMatMul": frozenset({1, 2, 4, 5, 6, 7}),
    "ConvInteger": frozenset({2, 3}), "MatMulInteger": frozenset({2, 3}),
    "QuantizeLinear": frozenset({1, 2}), "DequantizeLinear": frozenset({1, 2}),
    "QLinearAdd": frozenset({1, 2, 4, 5, 6, 7}), "QLinearGlobalAveragePool": frozenset({1, 2, 3, 4}),
    "QGemm": frozenset({1, 2, 4, 5, 6, 7, 8}),
}


# Outputs that are positions (op -> output positions): an index is an address whatever its stored width, so
# the device's data dtypes do not constrain it either (TopK's int64 indices come from an int32 lane).
INDEX_OUTPUTS: dict[str, frozenset[int]] = {"TopK": frozenset({1})}


def op_class(op_type: str) -> str:
    """The cost class of an op type (plain or domain-qualified): one of ``OP_CLASSES`` ("other" for anything
    unlisted)."""
    return _OP_TO_CLASS.get(op_type.rsplit(".", 1)[-1] if op_type.startswith(CONTRIB_DOMAIN + ".") else op_type,
                            "other")


@lru_cache(maxsize=None)
def is_onnx_op(op_type: str) -> bool:
    """Whether ``op_type`` is an operator of the default ONNX domain known to the installed onnx package."""
    return onnx.defs.has(op_type)


# Attribute values hetc's NPU/DSP kernels do not implement. Capability checks route such nodes to the CPU and
# the simulator's kernels refuse them, both from this one rule set.
UNSUPPORTED_CAST_TARGETS: tuple[str, ...] = ("string", "float8", "float4", "int4", "uint4", "int2", "uint2")


def resize_limitation(mode: str, antialias: bool) -> str | None:
    """Why a Resize node has no NPU/DSP kernel, or None when it has one."""
    if mode not in ("nearest", "linear"):
        return f"mode '{mode}' (only nearest and linear have NPU/DSP kernels)"
    if antialias and mode == "linear":
        return "antialias=1 (anti-aliased linear downscaling)"
    return None


def kernel_limitation(op_type: str, attrs: dict) -> str | None:
    """Why a node of a kernel-set op still has no NPU/DSP kernel (an attribute value the kernels do not
    implement), or None."""
    from hetc.ir import dtype_from_onnx

    text = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    if op_type == "Resize":
        if text.get("mode") == "linear" and text.get("coordinate_transformation_mode") == "align_corners":
            # onnxruntime and the ONNX spec disagree here when scales are given (the spec divides by
            # in_len * scale - 1, onnxruntime by out_len - 1); the CPU path follows the spec.
            return "linear align_corners (onnxruntime and the ONNX spec disagree on it)"
        return resize_limitation(text.get("mode", "nearest"), bool(text.get("antialias", 0)))
    if op_type == "BatchNormalization" and text.get("training_mode", 0):
        return "BatchNormalization training_mode=1"
    if op_type in ("MaxPool", "AveragePool") and str(text.get("auto_pad", "")).startswith("SAME") and any(
            s > k for s, k in zip(text.get("strides") or (), text.get("kernel_shape") or ())):
        return f"{op_type} auto_pad={text['auto_pad']} with a stride larger than the kernel"
    if op_type == "Cast" and "to" in text:
        target = dtype_from_onnx(int(text["to"]))
        if target.startswith(UNSUPPORTED_CAST_TARGETS):
            return f"Cast to {target} (saturation and parsing rules)"
    if op_type == "QuantizeLinear" and int(text.get("output_dtype", 0)):  # 0: the zero point's type
        target = dtype_from_onnx(int(text["output_dtype"]))
        if target.startswith(UNSUPPORTED_CAST_TARGETS):
            return f"QuantizeLinear to {target} (saturation and parsing rules)"
    if op_type == "Pad" and text.get("mode", "constant") not in ("constant", "reflect", "edge", "wrap"):
        return f"Pad mode '{text['mode']}'"
    return None


def conv_weight_shape(node: "Node") -> tuple[int, ...]:
    """The weight shape of a convolution node (``CONV_WEIGHT_INPUT``), () when absent or not a convolution."""
    index = CONV_WEIGHT_INPUT.get(node.op_type)
    if index is None or index >= len(node.inputs) or node.inputs[index] is None:
        return ()
    return tuple(node.inputs[index].shape)


def conv_groups(node: "Node") -> int:
    """The group count of a grouped Conv that is not depthwise (``group`` > 1 and more than one input channel
    per group); 1 for any other node."""
    if node.op_type != "Conv" or int(node.attr("group", 1)) <= 1:
        return 1
    weight = conv_weight_shape(node)
    return 1 if len(weight) < 2 or weight[1] == 1 else int(node.attr("group", 1))


def attention_limitation(ranks: list[int], n_inputs: int, n_outputs: int, dtype: str, attrs: dict) -> str | None:
    """Why an Attention node has no NPU/DSP kernel, or None: the kernel takes 4-D Q, K, V (heads as an axis)
    and an optional mask, in float32 (ONNX rounds every step of a 16-bit attention's function body)."""
    if any(rank != 4 for rank in ranks):
        return "Attention with 3-D Q, K, V (the kernel takes heads as an axis)"
    if n_inputs > 4 or n_outputs > 1:
        return "Attention with past key/value inputs, padded key lengths or present/qk outputs"
    text = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
    if text.get("softcap", 0.0) or text.get("qk_matmul_output_mode", 0) or \
            text.get("left_window_size", -1) != -1 or text.get("right_window_size", -1) != -1:
        return "Attention with softcap, a qk_matmul output or a local window"
    if dtype in ("float16", "bfloat16"):
        return f"Attention in {dtype} (ONNX rounds every step of its function body)"
    return None


def view_copy_reason(node: "Node") -> str | None:
    """Why a view op (``is_view``) must copy its input's bytes rather than share them, or None when the memory
    planner aliases its output to its input (hetc.memory.aliasing quotes this; it then costs nothing: no
    kernel runs). Two more copies only the placement shows: a graph input viewed as a graph output, and, in the
    memory where a tensor is assembled (a CPU's DRAM, on a target joining there), a view whose input or output
    is one of its parts."""
    from hetc.ir.tiles import is_region

    if not is_view(node):
        return f"{node.op_type} is not a view op"
    x, y = (node.inputs[0] if node.inputs else None), node.outputs[0]
    if x is None or x.nbytes != y.nbytes:
        return "its input is missing or of another size"
    if x.is_const:
        return f"its input '{x.name}' is a constant (read-only bytes)"
    if is_region(x):
        return f"its input '{x.name}' is a region of another tensor (at an offset, with that tensor's strides)"
    return None


def node_limitation(node: "Node") -> str | None:
    """``kernel_limitation`` plus the limits that depend on a node's inputs rather than its attributes: why
    this kernel-set node has no NPU/DSP kernel, or None."""
    if dropout_may_train(node):
        # The kernels implement inference only; the CPU path draws a seeded mask as onnx.reference does.
        training = node.inputs[2]
        return (f"training mode (training_mode '{training.name}' is not a constant false, so the output "
                f"is masked at random)")
    if node.op_type == "Attention":
        inputs = list(node.inputs)
        while inputs and inputs[-1] is None:
            inputs.pop()
        return attention_limitation([len(v.shape) if v is not None else 0 for v in node.inputs[:3]], len(inputs),
                                    len(node.outputs), node.outputs[0].dtype, node.attrs)
    return kernel_limitation(node.op_type, node.attrs)
