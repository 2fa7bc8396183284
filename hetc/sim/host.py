"""The host heap of the functional simulator: where the host CPU keeps host values (hetc.ir.host).

A host value is a Python object, never bytes in a simulated memory:

- a sequence is a ``list`` of numpy arrays;
- an optional is ``None`` (empty) or its element (an array, or a list for an optional sequence);
- a string tensor is a numpy array of ``object`` dtype holding ``str``;
- a tensor of run-time shape is a numpy array of whatever shape the run produced.

Only CPU instructions touch host values, one at a time in program order, so the heap needs no timing and the
race detector ignores host operands (they have no bytes). A compute instruction with a host operand runs here
(``run_compute``): device operands are read from and written to their planned bytes as usual, host ones from
and to the heap, and the node itself through a one-node onnxruntime session typed with the values' ONNX types
(onnx.reference when onnxruntime refuses it), cached per signature like the tensor-only CPU path.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import helper

from hetc.codegen.program import Compute, Operand
from hetc.errors import SimulationError
from hetc.frontend.opsets import runtime_opsets
from hetc.ir import EXPORT_IR_VERSION, HostType, dtype_from_numpy, dtype_to_onnx, np_dtype, parse_host_type
from hetc.ir.host import conform_host_value
from hetc.ir.dtypes import to_storage
from hetc.sim.kernels.cpu import _check_no_capture, one_node, onnxruntime_deviates, session_for

if TYPE_CHECKING:
    from hetc.ir import Node
    from hetc.sim.functional import FunctionalReplay



class HostHeap:
    """name -> Python object, for one simulated run."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def put(self, name: str, obj: Any) -> None:
        self.values[name] = obj

    def get(self, name: str) -> Any:
        if name not in self.values:
            raise SimulationError(f"host value '{name}' is read before any instruction wrote it; the CPU "
                                  "program is out of order or a graph input was not given")
        return self.values[name]


def touches_host(ins: Compute) -> bool:
    return any(o is not None and o.host for o in ins.inputs) or any(o.host for o in ins.outputs)


# ---------------------------------------------------------------------------------------------- values
def conform(obj: Any, host: HostType, name: str) -> Any:
    """``obj`` in the heap's canonical form for ``host`` (see hetc.ir.host.conform_host_value), or a
    SimulationError saying what is wrong."""
    try:
        return conform_host_value(obj, host, name)
    except ValueError as error:
        raise SimulationError(str(error)) from None


# ---------------------------------------------------------------------------------------------- running
def run_compute(executor: "FunctionalReplay", e: int, pc: int, ins: Compute,
                attrs: dict[str, Any]) -> list[tuple[Operand, Any]]:
    """Execute a compute instruction that has host operands; its pending writes (bytes for device outputs,
    objects for host ones, which the replay's write puts in the heap)."""
    from hetc.sim.functional import view

    machine = executor.machine
    if machine.device_kind[machine.engines[e]] != "cpu":
        raise SimulationError(f"{machine.describe(e, pc)} touches host values on a {machine.engines[e]}; only the "
                              "CPU holds them (the bundle is corrupt)")
    inputs: list[Any] = []
    for o in ins.inputs:
        if o is None:
            inputs.append(None)
        elif o.host:
            inputs.append(executor.heap.get(o.value))
        else:
            a = view(executor.memories, o)
            a.flags.writeable = False
            inputs.append(a)
    try:
        results = run_host_node(ins.op, ins.domain, attrs, inputs, [None if o is None else _type_of(o) for o in ins.inputs],
                                [_type_of(o) for o in ins.outputs], machine.opset)
    except SimulationError:
        raise
    except Exception as exc:  # a kernel failure is reported against the instruction that ran it
        raise SimulationError(f"kernel {ins.kernel} failed on {machine.describe(e, pc)}: "
                              f"{type(exc).__name__}: {exc}") from exc
    if len(results) < len(ins.outputs):
        raise SimulationError(f"kernel {ins.kernel} returned {len(results)} outputs for {machine.describe(e, pc)}, "
                              f"which has {len(ins.outputs)}")
    out: list[tuple[Operand, Any]] = []
    for o, r in zip(ins.outputs, results):
        if o.host:   # detached: a runtime may hand back its (read-only view) input as an element
            out.append((o, _detached(conform(r, parse_host_type(o.host), o.value))))
            continue
        r = np.asarray(r)
        if tuple(r.shape) != o.shape or r.dtype != np_dtype(o.dtype):
            raise SimulationError(f"kernel {ins.kernel} returned {r.dtype}{list(r.shape)} for output '{o.value}' of "
                                  f"{machine.describe(e, pc)}, planned {o.dtype}{list(o.shape)}")
        out.append((o, to_storage(r, o.dtype).copy()))
    return out


def _detached(obj: Any) -> Any:
    """A copy of every array in ``obj`` (a simulated memory's bytes may be reused after this instruction)."""
    if isinstance(obj, list):
        return [_detached(x) for x in obj]
    return np.array(obj, copy=True) if isinstance(obj, np.ndarray) else obj


def node_types(node: Node) -> tuple[list[HostType | None], list[HostType]]:
    """(input types, output types) of an IR node, as ``run_host_node`` takes them."""
    def of(v: Any) -> HostType:
        return v.host if v.host is not None else HostType("tensor", dtype=v.dtype, shape=tuple(v.shape))
    return [None if v is None else of(v) for v in node.inputs], [of(v) for v in node.outputs]


def _type_of(o: Operand) -> HostType:
    return parse_host_type(o.host) if o.host else HostType("tensor", dtype=o.dtype, shape=tuple(o.shape))


def run_host_node(op_type: str, domain: str, attrs: dict[str, Any], inputs: list[Any],
                  input_types: list[HostType | None], output_types: list[HostType],
                  opset: dict[str, int]) -> list[Any]:
    """Run one node on Python objects with ONNX's semantics: onnxruntime, else onnx.reference."""
    domain = "" if domain == "ai.onnx" else domain
    _check_no_capture(op_type, attrs)
    model = _single_node_model(op_type, domain, attrs, inputs, input_types, output_types,
                               runtime_opsets(op_type, domain, attrs, opset))
    feeds = {f"hetc_in{i}": x for i, x in enumerate(inputs) if input_types[i] is not None}
    arrays = [x for x in inputs if isinstance(x, np.ndarray)]
    deviates = onnxruntime_deviates(op_type, domain, attrs, arrays if len(arrays) == len(inputs) else [],
                                    [(t.dtype or "", ()) for t in output_types])
    _, results = session_for(model, feeds, deviates,
                             lambda: f"{op_type} (opset {opset.get(domain, '?')}) on host values "
                                     f"{[str(t) for t in input_types]}")
    return results


def _single_node_model(op_type: str, domain: str, attrs: dict[str, Any], inputs: list[Any],
                       input_types: list[HostType | None], output_types: list[HostType],
                       opset: dict[str, int]) -> onnx.ModelProto:
    node, names, outputs = one_node(op_type, domain, attrs, [t is not None for t in input_types], len(output_types))
    graph_inputs = []
    for name, x, t in zip(names, inputs, input_types):
        if not name:
            continue
        if t.kind == "tensor" and isinstance(x, np.ndarray) and t.dtype != "string":
            # A tensor input takes the array's exact type: sessions are cached per shape.
            graph_inputs.append(helper.make_tensor_value_info(name, dtype_to_onnx(dtype_from_numpy(x.dtype)),
                                                              list(x.shape)))
        else:
            graph_inputs.append(helper.make_value_info(name, t.to_type_proto()))
    graph_outputs = [helper.make_value_info(name, _open_shape(t).to_type_proto()) for name, t in zip(outputs, output_types)]
    graph = helper.make_graph([node], f"hetc_{op_type}", graph_inputs, graph_outputs)
    imports = dict(opset)
    imports.setdefault(domain, 1)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(imports.items())])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _open_shape(t: HostType) -> HostType:
    """An output type for the session: a tensor's shape left to the runtime (as the tensor-only CPU path
    does), sequences and optionals kept whole."""
    return HostType("tensor", dtype=t.dtype) if t.kind == "tensor" else t
