"""The table of hetc's own NPU/DSP kernels and the call object every kernel receives.

A kernel is a function ``fn(call: KernelCall) -> np.ndarray | list[np.ndarray]``; it is registered under one
or more ONNX op types with ``@kernel("Add", "Sub")``. Kernels see float16/bfloat16 inputs already upcast to
float32 (see ``hetc.sim.kernels.dispatch``) and return arrays whose dtype and shape the dispatcher checks and
converts to the IR's declared ones. A kernel may compute straight into device memory: ``call.into(k, ...)`` is
the destination of output k when the caller gave one (``out``), for a numpy ``out=`` argument.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from hetc.sim.kernels.errors import KernelError


@dataclass(frozen=True)
class KernelCall:
    """Everything one kernel invocation needs: the node's op, attributes, inputs, declared outputs and the
    opset version of the default ONNX domain (kernels branch on it where ONNX semantics changed)."""

    op_type: str
    attrs: dict[str, Any]
    inputs: list[np.ndarray | None]
    outputs: list[tuple[str, tuple[int, ...]]]
    opset: int
    # Per output, an array of its declared dtype and shape to write the result into (device memory, which
    # overlaps no input), or None; the functional simulator's replay gives them, run_kernel does not.
    out: tuple[np.ndarray | None, ...] | None = None

    def attr(self, name: str, default: Any = None) -> Any:
        value = self.attrs.get(name, default)
        if isinstance(value, bytes):  # ONNX stores strings as bytes; kernels compare with str
            return value.decode()
        return value

    def input(self, index: int) -> np.ndarray | None:
        """Input ``index``, or None when it is omitted (absent, or given as an empty optional)."""
        if index >= len(self.inputs):
            return None
        return self.inputs[index]

    def required(self, index: int) -> np.ndarray:
        value = self.input(index)
        if value is None:
            self.fail(f"required input {index} is missing")
        return value

    def ints_from(self, attr: str, input_index: int) -> list[int] | None:
        """An integer list given as an attribute in old opsets and as an input in newer ones."""
        tensor = self.input(input_index)
        if tensor is not None:
            return [int(v) for v in np.asarray(tensor).reshape(-1)]
        value = self.attrs.get(attr)
        return None if value is None else [int(v) for v in value]

    def into(self, index: int, *operands: np.ndarray) -> np.ndarray | None:
        """The destination of output ``index`` when the caller gave one and every operand has its dtype (so
        that computing into it gives the very bytes computing apart would), else None: pass it as ``out=``
        and return what the numpy function returns."""
        if self.out is None or self.out[index] is None:
            return None
        target = self.out[index]
        return target if all(x.dtype == target.dtype for x in operands) else None

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(self.outputs[0][1])

    def fail(self, reason: str) -> None:
        raise KernelError(f"the NPU/DSP kernel for {self.op_type} (opset {self.opset}) does not support "
                          f"this node: {reason}; place the node on the CPU instead")


KernelFn = Callable[[KernelCall], "np.ndarray | list[np.ndarray]"]
KERNELS: dict[str, KernelFn] = {}


def kernel(*op_types: str) -> Callable[[KernelFn], KernelFn]:
    """Register ``fn`` as the NPU/DSP kernel of each op in ``op_types``."""
    def register(fn: KernelFn) -> KernelFn:
        for op_type in op_types:
            if op_type in KERNELS:
                raise RuntimeError(f"two kernels registered for {op_type}")
            KERNELS[op_type] = fn
        return fn
    return register
