"""Kernels per device kind: hetc's own numpy kernels for the NPU and DSP, onnxruntime single-node sessions
for the CPU. ``run_kernel`` is the contract with the simulator engine; docs/kernels.md describes it."""
from hetc.sim.kernels import (attention, conv, elementwise, linalg, norm, pool, quantized,  # noqa: F401
                              quantized_contrib, reduce, resize, select, shape)  # (importing registers them)
from hetc.sim.kernels.cpu import clear_session_cache, run_on_cpu, single_node_model
from hetc.sim.kernels.dispatch import (DEVICE_KINDS, KERNEL_OPS, PRECISIONS, has_kernel, kernel_limitation,
                                       run_kernel)
from hetc.sim.kernels.errors import KernelError
from hetc.sim.kernels.registry import KERNELS

__all__ = ["run_kernel", "has_kernel", "kernel_limitation", "KERNEL_OPS", "KERNELS", "KernelError",
           "DEVICE_KINDS", "PRECISIONS", "run_on_cpu", "single_node_model", "clear_session_cache"]
