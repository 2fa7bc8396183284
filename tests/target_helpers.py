"""Hand-built IR nodes and a minimal target text for the target and cost tests."""
from __future__ import annotations

from typing import Any

import numpy as np

from hetc.ir import Node, Value, np_dtype

MINI_TOML = '''\
name = "mini"
description = "a CPU and one accelerator with a 1 MiB scratchpad"
sync_ns = 100

[memories.dram]
kind = "dram"
size = "1GiB"
bandwidth = 10.0

[memories.spm]
size = "1MiB"
bandwidth = 100.0

[devices.cpu]
kind = "cpu"
memory = "dram"
launch_ns = 1000
peak = { float32 = 10.0 }
efficiency = { default = 0.5 }

[devices.acc]
kind = "npu"
memory = "spm"
launch_ns = 100
peak = { float32 = 100.0 }
efficiency = { conv = 0.5, activation = 0.25 }
ops = ["Conv", "Relu"]
dtypes = ["float32"]

[[dma]]
name = "dma0"
memories = ["dram", "spm"]
bandwidth = 8.0
latency_ns = 100
'''


def val(name: str, shape: tuple[int, ...], dtype: str = "float32", const: bool = False) -> Value:
    """A Value; ``const`` gives it a (zero) payload so it counts as a weight."""
    payload = np.zeros(shape, dtype=np_dtype(dtype)) if const else None
    return Value(name=name, dtype=dtype, shape=tuple(shape), const=payload)


def node(op: str, inputs: list[Value | None], outputs: list[Value], domain: str = "", **attrs: Any) -> Node:
    return Node(id=0, op_type=op, name=f"{op.lower()}0", inputs=list(inputs), outputs=list(outputs),
                attrs=attrs, domain=domain)


def conv(x: tuple[int, ...], w: tuple[int, ...], y: tuple[int, ...], bias: bool = False,
         dtype: str = "float32", **attrs: Any) -> Node:
    inputs = [val("x", x, dtype), val("w", w, dtype, const=True)]
    if bias:
        inputs.append(val("b", (w[0],), dtype, const=True))
    return node("Conv", inputs, [val("y", y, dtype)], **attrs)


def unary(op: str, shape: tuple[int, ...], dtype: str = "float32", **attrs: Any) -> Node:
    return node(op, [val("x", shape, dtype)], [val("y", shape, dtype)], **attrs)
