"""The table of hetc's own NPU/DSP kernels and the call object every kernel receives.

A kernel is a function ``fn(call: KernelCall) -> np.ndarray | list[np.ndarray]``; it is registered under one
or more ONNX op types with ``@kernel("Add", "Sub")``. Kernels see float16/bfloat16 inputs already upcast to
float32 (see ``hetc.sim.kernels.dispatch``) and return arrays whose dtype and shape the dispatcher checks and
converts to the IR's declared ones.
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
