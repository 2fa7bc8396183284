"""``run_kernel``: the one entry point the simulator calls for every compute instruction.

The CPU runs every op through onnxruntime (``hetc.sim.kernels.cpu``); the NPU and DSP run hetc's own numpy
kernels (``KERNELS``) and nothing else: an op without a kernel there is an error, never a silent detour
through onnxruntime. ``precision`` is the NPU's datapath (the CLI's ``--npu-precision``); the DSP and the
CPU always compute in fp32. ``"fp16"`` rounds the NPU's inputs and weights to float16, lets the kernel
compute (accumulating in float32 or wider, as fp16 MAC arrays do) and rounds the result to float16 before
returning it in the declared dtype.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from hetc.ir import np_dtype
from hetc.sim.kernels._blas import pin_blas_threads
from hetc.sim.kernels.cpu import cpu_node, run_on_cpu
from hetc.sim.kernels.errors import KernelError
from hetc.ir.fused import (EPILOGUE_ATTR, FUSED_DOMAIN, base_attrs, operands, packed_dims, parse_part, part_steps,
                           run_epilogue)
from hetc.sim.kernels.registry import KERNELS, KernelCall, KernelFn
from hetc.target.ops import KERNEL_SET, QUANTIZED_OPS, has_device_kernel
from hetc.target.ops import kernel_limitation as kernel_limitation_of_attrs

# The ops with NPU/DSP kernels (the kernel set of DESIGN.md); a target preset may give a device a subset.
KERNEL_OPS = KERNEL_SET
DEVICE_KINDS = ("cpu", "npu", "dsp")
PRECISIONS = ("fp32", "fp16")
_WIDENED = {np.dtype(np.float16), np_dtype("bfloat16")}  # kernels compute these in float32


def has_kernel(device_kind: str, op_type: str) -> bool:
    """Whether ``device_kind`` can run ``op_type`` at all (the CPU runs every op)."""
    if device_kind == "cpu":
        return True
    return device_kind in DEVICE_KINDS and op_type in KERNEL_OPS


def kernel_limitation(device_kind: str, op_type: str, attrs: dict[str, Any], opset: int) -> str | None:
    """Why this particular node cannot run on ``device_kind`` although the op has a kernel there (an
    attribute value the kernel does not implement), or None. Lets capability checks route it to the CPU.
    ``opset`` (the default domain's version) is part of the signature because attribute meanings are."""
    if device_kind == "cpu":
        return None
    if not has_kernel(device_kind, op_type):
        return f"no {device_kind.upper()} kernel for {op_type}"
    return kernel_limitation_of_attrs(op_type, attrs)


def _round_fp16(x: np.ndarray | None) -> np.ndarray | None:
    if x is None or x.dtype.kind != "f":
        return x
    return x.astype(np.float16).astype(np.float32)


def _widen(x: np.ndarray | None) -> np.ndarray | None:
    if x is not None and x.dtype in _WIDENED:
        return x.astype(np.float32)
    return x


def _prepare(op_type: str, inputs: Sequence[np.ndarray | None], precision: str) -> list[np.ndarray | None]:
    """The kernel's inputs: float16/bfloat16 widened to float32, rounded to float16 first on the fp16
    datapath, except an integer op's float inputs, its scales, which the output pipeline holds in float32
    whatever the MAC array's float precision."""
    rounded = precision == "fp16" and op_type not in QUANTIZED_OPS
    return [_round_fp16(_widen(x)) if rounded else _widen(x) for x in inputs]


def _conform(op_type: str, results: list[np.ndarray], outputs: list[tuple[str, tuple[int, ...]]],
             inputs: list[np.ndarray | None], precision: str) -> list[np.ndarray]:
    """Results in exactly the declared dtypes and shapes, never aliasing an input array."""
    if len(results) < len(outputs):
        raise KernelError(f"internal: the {op_type} kernel produced {len(results)} outputs, the node has "
                          f"{len(outputs)}")
    conformed = []
    for index, (result, (dtype, shape)) in enumerate(zip(results, outputs)):
        result = np.asarray(result)
        if tuple(result.shape) != tuple(shape):
            raise KernelError(f"internal: the {op_type} kernel produced output {index} of shape "
                              f"{tuple(result.shape)}, the IR declares {tuple(shape)}")
        if precision == "fp16" and result.dtype.kind == "f":
            result = result.astype(np.float16)
        target = np_dtype(dtype)
        aliased = any(x is not None and np.may_share_memory(result, x) for x in inputs)
        # (np.asarray keeps 0-d results 0-d, where np.ascontiguousarray would make them 1-d.)
        conformed.append(np.array(result, dtype=target, order="C", copy=True) if aliased
                         else np.asarray(result, dtype=target, order="C"))
    return conformed


def _check_call(device_kind: str, op_type: str, domain: str, precision: str) -> None:
    if device_kind not in DEVICE_KINDS:
        raise KernelError(f"unknown device kind '{device_kind}'; expected one of {', '.join(DEVICE_KINDS)}")
    if precision not in PRECISIONS:
        raise KernelError(f"unknown precision '{precision}'; expected one of {', '.join(PRECISIONS)}")
    known = domain in ("", "ai.onnx", FUSED_DOMAIN) or has_device_kernel(domain, op_type)
    if device_kind != "cpu" and (not known or op_type not in KERNELS):
        raise KernelError(f"the {device_kind.upper()} has no kernel for {domain + '.' if domain else ''}{op_type}; "
                          f"the schedule must place this node on a device that supports it (the CPU runs "
                          f"every op)")


def _kernel_fn(op_type: str, domain: str, attrs: dict[str, Any]) -> KernelFn:
    """The NPU/DSP kernel of a node: the registered one, or for a fused node (hetc.ir.fused) one kernel that
    runs the base op's and then applies each epilogue part's steps to its result in place, with the same
    kernels (the intermediates never go to memory)."""
    if domain != FUSED_DOMAIN:
        return KERNELS[op_type]
    parts = [parse_part(t) for t in attrs.get(EPILOGUE_ATTR, [])]
    base_fn, plain_attrs, dims = KERNELS[op_type], base_attrs(attrs), packed_dims(attrs)
    for op, _attrs, _operands in (step for part in parts for step in part_steps(part, 11)):
        if op not in KERNELS:
            raise KernelError(f"internal: no NPU/DSP kernel for {op}, a step of a fused {op_type}")

    def fused(call: KernelCall) -> np.ndarray:
        base_inputs, part_operands = operands(parts, dims, list(call.inputs))
        produced = base_fn(KernelCall(op_type, plain_attrs, base_inputs, call.outputs, call.opset))
        acc = np.asarray(produced[0] if isinstance(produced, list) else produced)

        def step(op: str, step_attrs: dict[str, Any], args: list[np.ndarray | None]) -> np.ndarray:
            result = KERNELS[op](KernelCall(op, step_attrs, args, call.outputs, call.opset))
            return np.asarray(result[0] if isinstance(result, list) else result)
        return run_epilogue(parts, acc, part_operands, call.opset, step)
    return fused


def run_kernel(device_kind: str, op_type: str, domain: str, attrs: dict[str, Any],
               inputs: list[np.ndarray | None], outputs: list[tuple[str, tuple[int, ...]]],
               opset: dict[str, int], precision: str = "fp32") -> list[np.ndarray]:
    """Execute one node on one device kind and return its outputs in the declared dtypes and shapes.

    ``attrs`` are IR attributes (plain Python values, numpy arrays for tensors, GraphProto for subgraphs);
    ``outputs`` lists each output's IR dtype name and static shape; ``opset`` maps domains to versions.
    """
    _check_call(device_kind, op_type, domain, precision)
    if device_kind == "cpu":
        results = run_on_cpu(op_type, domain, attrs, inputs, outputs, opset)
        return _conform(op_type, results, outputs, inputs, "fp32")
    pin_blas_threads()
    if device_kind != "npu":
        precision = "fp32"
    version = opset.get("", opset.get("ai.onnx", 0))
    prepared = _prepare(op_type, inputs, precision)
    call = KernelCall(op_type, attrs, prepared, outputs, version)
    with np.errstate(all="ignore"):  # inf/nan results are legitimate ONNX outputs, as in onnxruntime
        produced = _kernel_fn(op_type, domain, attrs)(call)
    results = produced if isinstance(produced, list) else [produced]
    return _conform(op_type, results, outputs, inputs, precision)


BoundKernel = Callable[[], list[np.ndarray]]


def bind_kernel(device_kind: str, op_type: str, domain: str, attrs: dict[str, Any],
                inputs: list[np.ndarray | None], outputs: list[tuple[str, tuple[int, ...]]],
                opset: dict[str, int], precision: str = "fp32",
                out: Sequence[np.ndarray | None] | None = None) -> BoundKernel:
    """``run_kernel`` prepared for repeated calls on the same input arrays, whose contents (not identity,
    dtype or shape) change between calls, as views into device memory do: the checks, the kernel lookup,
    the ``KernelCall`` and the CPU path's session are set up once, and each call returns the results.

    Unlike ``run_kernel`` a result may alias an input or one of ``out`` (arrays of the declared dtypes and
    shapes a kernel may compute into, ``KernelCall.out``); the caller copies results where it needs them.
    The call runs without its own ``np.errstate`` (1-2 us a call): callers silence floating-point warnings
    once around a batch of calls, as the functional replay does."""
    _check_call(device_kind, op_type, domain, precision)
    if device_kind == "cpu":
        node = cpu_node(op_type, domain, attrs, inputs, outputs, opset, list(out) if out else None)
        return _conformed(op_type, node, outputs, "fp32")
    pin_blas_threads()
    if device_kind != "npu":
        precision = "fp32"
    version = opset.get("", opset.get("ai.onnx", 0))
    fn = _kernel_fn(op_type, domain, attrs)
    widened = precision == "fp16" or any(x is not None and x.dtype in _WIDENED for x in inputs)
    if widened:
        def produce() -> list[np.ndarray]:
            prepared = _prepare(op_type, inputs, precision)
            produced = fn(KernelCall(op_type, attrs, prepared, outputs, version))
            return produced if isinstance(produced, list) else [produced]
    else:
        call = KernelCall(op_type, attrs, list(inputs), outputs, version, tuple(out) if out else None)

        def produce() -> list[np.ndarray]:
            produced = fn(call)
            return produced if isinstance(produced, list) else [produced]
    return _conformed(op_type, produce, outputs, precision)


def _conformed(op_type: str, produce: BoundKernel, outputs: list[tuple[str, tuple[int, ...]]],
               precision: str) -> BoundKernel:
    """``produce`` with its results checked against the declared shapes and converted to the declared dtypes
    (``_conform`` without its copies: the caller copies into device memory anyway)."""
    declared = [(np_dtype(dtype), tuple(shape)) for dtype, shape in outputs]
    count = len(declared)
    fp16 = precision == "fp16"

    def run() -> list[np.ndarray]:
        results = produce()
        if len(results) < count:
            raise KernelError(f"internal: the {op_type} kernel produced {len(results)} outputs, the node has "
                              f"{count}")
        conformed = []
        for index, (result, (dtype, shape)) in enumerate(zip(results, declared)):
            if type(result) is not np.ndarray:
                result = np.asarray(result)
            if result.shape != shape:
                raise KernelError(f"internal: the {op_type} kernel produced output {index} of shape "
                                  f"{result.shape}, the IR declares {shape}")
            if fp16 and result.dtype.kind == "f":
                result = result.astype(np.float16)
            conformed.append(result if result.dtype == dtype else result.astype(dtype))
        return conformed
    return run
