"""Capability: can a device run a node, and if not, why. Every refusal is a ``Reason`` with a sentence the user
sees when an op falls back to the CPU."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from hetc.errors import TargetError
from hetc.ir import Node, Value
from hetc.ir.fused import base_node, composite_parts, epilogue_of, is_fused, node_label, part_ops
from hetc.target.flops import value_nbytes
from hetc.target.model import Device, Ok, Reason
from hetc.target.ops import (ACCUMULATOR_OUTPUT_OPS, CONV_WEIGHT_INPUT, INDEX_OUTPUTS, PARAMETER_INPUTS,
                             QUANTIZED_OPS, SIGNED_TWIN, conv_groups, conv_weight_shape, has_device_kernel, is_view,
                             node_limitation, qualified_op)

if TYPE_CHECKING:
    from hetc.target.target import Target

OK = Ok()

# The limits a device's ``limits`` table may set, with the TOML type each expects (docs/targets.md).
LIMIT_KEYS: dict[str, type] = {
    "max_rank": int,            # largest tensor rank any operand may have
    "spatial_dims": list,       # spatial ranks Conv/ConvTranspose/pools accept, e.g. [1, 2]
    "max_kernel": int,          # largest kernel extent along any spatial axis (Conv, ConvTranspose, pools)
    "max_stride": int,          # largest stride along any axis
    "max_dilation": int,        # largest dilation (1: no dilated convolutions)
    "grouped_conv": bool,       # groups other than 1 and depthwise
    "depthwise_conv": bool,     # one input channel per group
    "auto_pad": list,           # accepted auto_pad values, e.g. ["NOTSET", "VALID"]
    "ceil_mode": bool,          # pools with ceil_mode = 1
    "max_lrn_size": int,        # LRN window
    "resize_modes": list,       # Resize "mode" values, e.g. ["nearest", "linear"]
    "resize_coordinate_modes": list,  # Resize "coordinate_transformation_mode" values
    "pad_modes": list,          # Pad "mode" values, e.g. ["constant"]
    "softmax_last_axis_only": bool,   # Softmax/LogSoftmax only along the innermost axis
}

_SPATIAL_OPS = frozenset({"Conv", "ConvTranspose", "QLinearConv", "ConvInteger", "MaxPool", "AveragePool"})


def supports(target: Target, node: Node, device: str) -> Ok | Reason:
    """Ok when ``device`` of ``target`` can run ``node``; otherwise the first Reason it cannot."""
    dev = target.devices.get(device)
    if dev is None:
        raise TargetError(f"target '{target.name}' has no device '{device}'; its devices are: "
                          f"{', '.join(target.devices)}")
    verdict = kernel_support(target, node, device)
    if not verdict:
        return verdict
    return _working_set(target, node, dev)


def kernel_support(target: Target, node: Node, device: str) -> Ok | Reason:
    """Every check of ``supports`` but the working set: Ok when ``device`` has a kernel for ``node`` (op,
    dtypes, attributes, epilogue), whatever its size. The tiler cuts nodes for the devices this admits."""
    dev = target.devices[device]
    if dev.kind == "cpu":  # every op, dtype and subgraph: onnxruntime runs them
        return OK
    reason = _node_checks(base_node(node), dev)
    if reason is None and is_fused(node):
        reason = _epilogue(node, dev)
    if reason is not None:
        if not is_fused(node):
            return reason
        parts = composite_parts(node)   # a norm or attention names the ops it was recognised from
        made_of = f" (fused from {', '.join(parts)})" if parts else ""
        return Reason(reason.code, f"{node_label(node)}{made_of}: {reason.message}")
    return OK


def _node_checks(node: Node, dev: Device) -> Reason | None:
    for check in (_host_values, _op, _dtypes, _attributes, _kernel_coverage):
        reason = check(node, dev)
        if reason is not None:
            return reason
    return None


def _epilogue(node: Node, dev: Device) -> Reason | None:
    """A fused node runs where every part of its epilogue does: each op a part is made of is judged as a
    pointwise node on the fused output by the same checks as any node (the first refusal is quoted)."""
    out = node.outputs[0]
    for part in epilogue_of(node):
        for op in part_ops(part):
            reason = _node_checks(Node(node.id, op, node.name, [out], [out]), dev)
            if reason is not None:
                return Reason(reason.code, f"epilogue part {part.op}: {reason.message}")
    return None


def _host_values(node: Node, dev: Device) -> Reason | None:
    """A node reading or writing a host value (a sequence, an optional, a string tensor, a tensor of run-time
    shape) runs on the CPU, which holds such values in its own heap (hetc.ir.host)."""
    operands = [(f"input {i}", v) for i, v in enumerate(node.inputs) if v is not None]
    operands += [(f"output {i}", v) for i, v in enumerate(node.outputs)]
    for role, v in operands:
        if v.host is not None:
            return Reason("host", f"{node.op_type} {role} '{v.name}' is a {v.host} that lives in host memory; "
                                  f"only the CPU touches host values, not {dev.name}")
    return None


def _op(node: Node, dev: Device) -> Reason | None:
    if node.has_subgraph:
        return Reason("subgraph", f"{node.op_type} carries a subgraph; only the CPU runs subgraphs")
    if node.domain not in ("", "ai.onnx") and not has_device_kernel(node.domain, node.op_type):
        return Reason("op", f"{node.domain}::{node.op_type} is a custom-domain op; only the CPU runs it")
    name = qualified_op(node.domain, node.op_type)
    if name not in (dev.ops or ()):
        return Reason("op", f"{name} is not in {dev.name}'s op list")
    return None


def _kernel_coverage(node: Node, dev: Device) -> Reason | None:
    """The device's limits allow the node but hetc's kernels for it do not implement this attribute value
    (or input: a Dropout whose training_mode may be true)."""
    limitation = node_limitation(node)
    if limitation is None:
        return None
    return Reason("attribute", f"{node.op_type}: hetc's {dev.kind.upper()} kernels do not implement "
                               f"{limitation}; it runs on the CPU")


def _dtypes(node: Node, dev: Device) -> Reason | None:
    if dev.dtypes is None:
        return None
    parameters = PARAMETER_INPUTS.get(node.op_type, frozenset())
    operands: list[tuple[str, Value]] = [(f"input {i}", v) for i, v in enumerate(node.inputs)
                                         if v is not None and i not in parameters]
    indices = INDEX_OUTPUTS.get(node.op_type, frozenset())
    operands += [(f"output {i}", v) for i, v in enumerate(node.outputs) if i not in indices]
    for role, v in operands:
        if _datapath_dtype(node, role, v.dtype) not in dev.dtypes:
            return Reason("dtype", f"{node.op_type} {role} '{v.name}' is {v.dtype}; {dev.name} supports "
                                   f"{', '.join(sorted(dev.dtypes))}{_quantized_note(node)}")
    return None


def _datapath_dtype(node: Node, role: str, dtype: str) -> str:
    """The dtype a device's datapath must have for an operand of ``dtype``: itself, except that a quantised
    op's unsigned operand runs on the signed datapath of its width and an integer MAC op's int32 accumulator
    output needs only its 8-bit multipliers (hetc.target.ops)."""
    if node.op_type not in QUANTIZED_OPS:
        return dtype
    if role.startswith("output") and node.op_type in ACCUMULATOR_OUTPUT_OPS:
        dtype = node.inputs[0].dtype
    return SIGNED_TWIN.get(dtype, dtype)


def _quantized_note(node: Node) -> str:
    return " (uint8 counts as int8 for quantised ops)" if node.op_type in QUANTIZED_OPS else ""


def _attributes(node: Node, dev: Device) -> Reason | None:
    limits = dev.limits
    if not limits:
        return None
    max_rank = limits.get("max_rank")
    if max_rank is not None:
        for v in [*node.present_inputs, *node.outputs]:
            if len(v.shape) > max_rank:
                return _refuse(dev, f"{node.op_type} operand '{v.name}' has rank {len(v.shape)}", "max_rank")
    check = _OP_CHECKS.get(node.op_type)
    return check(node, dev, limits) if check is not None else None


def _refuse(dev: Device, what: str, key: str) -> Reason:
    """An attribute refusal that quotes the limit responsible, e.g. "... (npu supports resize_modes: nearest,
    linear)" or "... (npu limit max_stride = 3)"."""
    value = dev.limits[key]
    if isinstance(value, list):
        return Reason("attribute", f"{what} ({dev.name} supports {key}: {', '.join(map(str, value))})")
    shown = str(value).lower() if isinstance(value, bool) else str(value)
    return Reason("attribute", f"{what} ({dev.name} limit {key} = {shown})")


def _spatial(node: Node, dev: Device, limits: dict[str, Any]) -> Reason | None:
    op = node.op_type
    if op in CONV_WEIGHT_INPUT:
        kernel = list(node.attr("kernel_shape") or conv_weight_shape(node)[2:])
    else:
        kernel = list(node.attr("kernel_shape") or [])
    dims = limits.get("spatial_dims")
    if dims is not None and len(kernel) not in dims:
        return _refuse(dev, f"{op} is {len(kernel)}-D", "spatial_dims")
    bounds = (("max_kernel", "kernel", kernel), ("max_stride", "strides", node.attr("strides") or []),
              ("max_dilation", "dilations", node.attr("dilations") or []))
    for key, name, values in bounds:
        bound = limits.get(key)
        if bound is not None and any(int(x) > bound for x in values):
            return _refuse(dev, f"{op} has {name} {list(values)}", key)
    auto_pad = str(node.attr("auto_pad", "NOTSET"))
    if "auto_pad" in limits and auto_pad not in limits["auto_pad"]:
        return _refuse(dev, f"{op} auto_pad '{auto_pad}' is not supported", "auto_pad")
    if op in ("MaxPool", "AveragePool") and int(node.attr("ceil_mode", 0)) and not limits.get("ceil_mode", True):
        return _refuse(dev, f"{op} with ceil_mode = 1 is not supported", "ceil_mode")
    if op == "MaxPool" and len(node.outputs) > 1:
        return Reason("attribute", f"MaxPool's Indices output is computed only on the CPU, not on {dev.name}")
    if op in CONV_WEIGHT_INPUT:
        return _groups(node, dev, limits)
    return None


def plain_convolutions(groups: int, dev: Device) -> int:
    """The kernels ``dev`` runs a Conv of ``groups`` groups (``ops.conv_groups``) as: where it has no grouped
    convolution (``grouped_conv = false``) one plain convolution per group, each over its group's input
    channels and writing its band of output channels in place, one launch each; one kernel otherwise."""
    return groups if groups > 1 and dev.limits.get("grouped_conv", True) is False else 1


def _groups(node: Node, dev: Device, limits: dict[str, Any]) -> Reason | None:
    group = int(node.attr("group", 1))
    if group == 1 or plain_convolutions(conv_groups(node), dev) > 1:
        return None
    w = conv_weight_shape(node)
    depthwise = node.op_type != "ConvTranspose" and len(w) >= 2 and w[1] == 1
    key = "depthwise_conv" if depthwise else "grouped_conv"
    if not limits.get(key, True):
        kind = "depthwise" if depthwise else f"grouped (group = {group})"
        return _refuse(dev, f"{kind} {node.op_type} is not supported", key)
    return None


def _lrn(node: Node, dev: Device, limits: dict[str, Any]) -> Reason | None:
    bound = limits.get("max_lrn_size")
    size = int(node.attr("size", 1))
    if bound is not None and size > bound:
        return _refuse(dev, f"LRN has size {size}", "max_lrn_size")
    return None


def _resize(node: Node, dev: Device, limits: dict[str, Any]) -> Reason | None:
    for key, attr, default in (("resize_modes", "mode", "nearest"),
                               ("resize_coordinate_modes", "coordinate_transformation_mode", "half_pixel")):
        value = str(node.attr(attr, default))
        if key in limits and value not in limits[key]:
            return _refuse(dev, f"Resize {attr} '{value}' is not supported", key)
    if int(node.attr("antialias", 0)):
        return Reason("attribute", f"Resize with antialias = 1 runs only on the CPU, not on {dev.name}")
    return None


def _pad(node: Node, dev: Device, limits: dict[str, Any]) -> Reason | None:
    mode = str(node.attr("mode", "constant"))
    if "pad_modes" in limits and mode not in limits["pad_modes"]:
        return _refuse(dev, f"Pad mode '{mode}' is not supported", "pad_modes")
    return None


def _softmax(node: Node, dev: Device, limits: dict[str, Any]) -> Reason | None:
    if not limits.get("softmax_last_axis_only", False):
        return None
    rank = len(node.inputs[0].shape) if node.inputs[0] is not None else 0
    axis = int(node.attr("axis", -1))
    if rank and axis % rank != rank - 1:
        return _refuse(dev, f"{node.op_type} along axis {axis} of a rank-{rank} tensor is not supported",
                       "softmax_last_axis_only")
    return None


def _batchnorm(node: Node, dev: Device, limits: dict[str, Any]) -> Reason | None:
    # The accelerator kernels implement inference only (hetc/sim/kernels/norm.py refuses the rest).
    if int(node.attr("training_mode", 0)) or len(node.outputs) > 1:
        return Reason("attribute", f"BatchNormalization in training mode (batch statistics, running-mean "
                                   f"outputs) runs only on the CPU, not on {dev.name}")
    return None


_OP_CHECKS: dict[str, Callable[[Node, Device, dict[str, Any]], Reason | None]] = {
    **{op: _spatial for op in _SPATIAL_OPS}, "LRN": _lrn, "Resize": _resize, "Pad": _pad,
    "Softmax": _softmax, "LogSoftmax": _softmax, "BatchNormalization": _batchnorm,
}


def working_set_bytes(node: Node, alignment: int = 1) -> int:
    """Bytes of ``node``'s distinct inputs (weights included) and outputs, each rounded up to ``alignment``:
    what must be resident in the device's home memory at once. A view op's output aliases its input
    (DESIGN.md, in-place aliasing), so it is not counted twice."""
    def aligned(v: Value) -> int:
        return -(-value_nbytes(v) // alignment) * alignment

    distinct = list({id(v): v for v in [*node.present_inputs, *node.outputs]}.values())
    if is_view(node) and node.inputs and node.inputs[0] is not None:
        aliased = {id(v) for v in node.outputs}
        return sum(aligned(v) for v in distinct if id(v) not in aliased)
    return sum(aligned(v) for v in distinct)


def _working_set(target: Target, node: Node, dev: Device) -> Ok | Reason:
    memory = target.memories[dev.memory]
    need = working_set_bytes(node, memory.alignment)
    if need <= memory.size:
        return OK
    inputs = {id(v): v for v in node.present_inputs}.values()
    in_bytes = sum(value_nbytes(v) for v in inputs)
    weights = sum(value_nbytes(v) for v in inputs if v.is_const)
    out_bytes = sum(value_nbytes(v) for v in node.outputs)
    if dev.kind == "cpu":
        tiling = ""
    else:  # the tiler's verdict: why this node cannot be cut into tiles that fit, or how it would be
        from hetc.target.tiling import tiling_verdict
        tiling = f"; {tiling_verdict(target, node)}"
    return Reason("working-set", f"{node.op_type} needs {need:,} bytes resident at once (inputs {in_bytes:,} "
                                 f"including weights {weights:,}, outputs {out_bytes:,}) but {memory.name} "
                                 f"holds {memory.size:,} bytes{tiling}")
