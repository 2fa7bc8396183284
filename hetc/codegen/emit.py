"""Code generation: a planned graph becomes one program per engine plus the bundle's data files."""
from __future__ import annotations

import gc
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hetc.codegen.attrs import encode_attrs
from hetc.codegen.bundle import FORMAT_VERSION, Bundle
from hetc.codegen.program import Compute, Dma, Instruction, Operand, Program, Signal, Wait
from hetc.codegen.sync import plan_sync, semaphore_name, skippable_deps
from hetc.errors import BundleError
from hetc.ir import Graph, Node, Value, itemsize, np_dtype
from hetc.ir import nbytes as _nbytes
from hetc.ir.dtypes import to_storage
from hetc.ir.fused import is_fused, node_label
from hetc.ir.predicates import zero_fills
from hetc.memory.artifact import (HOST, IMMEDIATE, Buffer, MemoryPlan, host_ref, host_ref_value, immediate_ref,
                                  immediate_ref_value, is_host_ref, is_immediate_ref)
from hetc.schedule.artifact import Task
from hetc.target.cost import node_bytes, skipped_cost_ns
from hetc.target.ops import is_view
from hetc.target.target import Target
from hetc.version import __version__


@dataclass(frozen=True)
class EmitOptions:
    """What the caller knows that the plan does not: provenance and the human-facing files."""

    model_sha256: str = ""
    model_name: str = ""
    random_weights_seed: int | None = None                           # built with randomize_weights(model, seed)
    summary: dict[str, Any] = field(default_factory=dict)            # the `hetc build --json` object
    placement_rows: tuple[dict[str, Any], ...] = ()                  # rows of placement.csv
    report: str = ""                                                 # report.txt
    extra_files: dict[str, bytes] = field(default_factory=dict)      # e.g. {"gantt.html": b"..."}


def emit(graph: Graph, plan: MemoryPlan, target: Target, options: EmitOptions | None = None) -> Bundle:
    """Per-engine programs, semaphores, the constants image and the manifest for ``plan.schedule``."""
    collecting = gc.isenabled()
    gc.disable()   # emitting allocates an object per operand; generational GC passes would dominate
    try:
        return _emit(graph, plan, target, options or EmitOptions())
    finally:
        if collecting:
            gc.enable()


def _emit(graph: Graph, plan: MemoryPlan, target: Target, options: EmitOptions) -> Bundle:
    schedule = plan.schedule
    lanes = {engine: [] for engine in target.engines}
    for engine, tasks in schedule.engine_tasks().items():
        if engine not in lanes:
            raise BundleError(f"the schedule uses engine '{engine}' that target '{target.name}' does not have; "
                              "schedule the graph for this target again")
        lanes[engine] = tasks
    nodes = graph.node_map()
    moves = {t.id: _compute(t, nodes, plan, target, graph.values) if t.kind == "compute" else _dma(t, plan, target)
             for t in schedule.tasks}
    data: dict[int, set[int]] = {t.id: set(t.deps) for t in schedule.tasks}
    # Address reuse: the planner's list (hetc.memory.reuse states the rule once).
    reuse: dict[int, set[int]] = {tid: set(before) for tid, before in plan.reuse_deps.items()}
    deps = {tid: data.get(tid, set()) | reuse.get(tid, set()) for tid in data.keys() | reuse.keys()}
    sync = plan_sync(lanes, deps, skippable_deps(moves, data, reuse, plan))

    programs: dict[str, Program] = {}
    for engine, tasks in lanes.items():
        instructions: list[Instruction] = []
        for task in tasks:
            move = moves[task.id]
            instructions += [Wait(sem, count) for sem, count in sync.waits.get(task.id, ())]
            instructions += [Wait(sem, count, move.when) for sem, count in sync.skipped_with.get(task.id, ())]
            instructions.append(move)
            if task.id in sync.signals:
                instructions.append(Signal(semaphore_name(engine)))
        if engine in target.devices:
            device = target.devices[engine]
            programs[engine] = Program(engine, device.kind, (device.memory,), tuple(instructions))
        else:
            programs[engine] = Program(engine, "dma", tuple(target.dmas[engine].memories), tuple(instructions))

    constants, constants_bytes = _constants_image(graph, plan, target)
    manifest = {
        "format": "hetc-bundle",
        "format_version": FORMAT_VERSION,
        "hetc_version": __version__,
        "model": _model_field(options, graph),
        "target": {"name": target.name, "toml": target.source},
        "machine": _machine(target, plan),
        "inputs": [_binding(plan, v, target.dram, first=True) for v in graph.inputs if not v.is_const],
        "outputs": [_binding(plan, v, target.dram, first=False) for v in graph.outputs],
        "opset": dict(sorted(graph.opset.items())),
        "constants": {"file": "constants.bin", "memory": target.dram, "offset": 0, "bytes": constants_bytes},
        "engines": list(lanes),
        "planned_makespan_ns": schedule.makespan_ns,
        "summary": options.summary,
    }
    hosted = _host_values(graph)
    if hosted:   # (only then: bundles of tensor-only graphs stay as they were)
        manifest["host_values"] = hosted
    return Bundle(manifest=manifest, programs=programs, constants=constants, schedule_json=schedule.to_json(),
                  memory_json=plan.to_json(), placement_rows=tuple(options.placement_rows),
                  report=options.report, extra_files=dict(options.extra_files))


# ---------------------------------------------------------------------------------------------- instructions
def _operand(plan: MemoryPlan, buffer_id: str) -> Operand:
    """The buffer where the plan put it: an alias lives in its root's bytes, at its own offset (a region of
    a tensor, an Assemble part, at an offset with the base's strides; a view, at the root's offset)."""
    b = plan.buffer(buffer_id)
    root = plan.owner_of(buffer_id)
    shape = tuple(int(d) for d in b.shape)
    size = itemsize(b.dtype) if b.dtype != "string" else 8
    if b.strides is not None:
        strides = tuple(int(s) for s in b.strides)
    else:
        dense: list[int] = []
        step = size
        for d in reversed(shape):
            dense.append(int(step))
            step *= d
        strides = tuple(reversed(dense))
    nbytes = int(math.ceil(math.prod(shape) * size))
    return Operand(buffer=b.id, value=b.value, memory=root.memory, offset=b.offset, dtype=b.dtype,
                   shape=shape, strides=strides, nbytes=nbytes, storage=root.id)


def _task_buffers(plan: MemoryPlan, task: Task):
    tb = plan.task_buffers.get(task.id)
    if tb is None:
        raise BundleError(f"the memory plan binds no buffers to task {task.id} ({task.kind} on {task.engine}); "
                          "run plan_memory on this exact schedule")
    return tb


def host_operand(value: Value) -> Operand:
    """A host value as an instruction names it: its heap entry, by value name (no memory, no bytes)."""
    ref = host_ref(value.name)
    return Operand(buffer=ref, value=value.name, memory=HOST, offset=0, dtype=value.dtype, shape=tuple(value.shape),
                   strides=(), nbytes=0, storage=ref, host=str(value.host))


def immediate_operand(value: Value) -> Operand:
    """An immediate as an instruction carries it: its element in the descriptor (no memory, no bytes)."""
    ref = immediate_ref(value.name)
    return Operand(buffer=ref, value=value.name, memory=IMMEDIATE, offset=0, dtype=value.dtype,
                   shape=tuple(value.shape), strides=(), nbytes=0, storage=ref,
                   immediate=tuple(np.asarray(value.const).reshape(-1).tolist()))


def _any_operand(plan: MemoryPlan, values: dict[str, Value], ref: str) -> Operand:
    if is_host_ref(ref):
        return host_operand(values[host_ref_value(ref)])
    if is_immediate_ref(ref):
        return immediate_operand(values[immediate_ref_value(ref)])
    return _operand(plan, ref)


def _compute(task: Task, nodes: dict[int, Node], plan: MemoryPlan, target: Target,
             graph_values: dict[str, Value]) -> Compute:
    node = nodes.get(task.node)  # type: ignore[arg-type]
    if node is None:
        raise BundleError(f"task {task.id} runs node {task.node}, which is not in the graph; "
                          "emit the bundle from the graph the schedule was built for")
    tb = _task_buffers(plan, task)
    inputs = tuple(_any_operand(plan, graph_values, b) if b is not None else None
                   for b in tb.reads[:len(node.inputs)])
    outputs = tuple(_any_operand(plan, graph_values, b) for b in tb.writes)
    # the gate, read after the inputs (hetc.memory.lifetimes)
    when = _operand(plan, tb.reads[len(node.inputs)]) if node.when is not None else None
    zero_fill = when is not None and zero_fills(node)
    device = target.devices[task.engine]
    for o in (*inputs, *outputs, *([when] if when is not None else [])):
        if o is not None and o.host and device.kind != "cpu":
            raise BundleError(f"node '{node.name}' runs on {task.engine} but its operand '{o.value}' is a host "
                              "value, which only a CPU holds; schedule the node on the CPU")
        if o is not None and o.has_bytes and o.memory != device.memory:
            raise BundleError(f"node '{node.name}' runs on {task.engine} (home {device.memory}) but its operand "
                              f"'{o.value}' is in {o.memory}; the memory plan is missing a transfer")
    inplace: tuple[int, ...] = ()
    if is_view(node):
        read_at = {(i.storage, i.offset) for i in inputs if i is not None}
        inplace = tuple(k for k, o in enumerate(outputs) if (o.storage, o.offset) in read_at)
    domain = node.domain or ""
    qualified = (node_label(node) if is_fused(node) else
                 node.op_type if domain in ("", "ai.onnx") else f"{domain}.{node.op_type}")
    return Compute(task=task.id, node=node.id, name=node.name or f"{node.op_type}_{node.id}", op=node.op_type,
                   domain=domain, kernel=f"{device.kind}.{qualified}", inputs=inputs, outputs=outputs,
                   attrs=encode_attrs(node.attrs), duration_ns=task.own_ns,
                   planned_start_ns=task.start_ns, planned_end_ns=task.end_ns,
                   dram_bytes=node_bytes(node) if device.memory == target.dram else 0,   # as the schedule timed it
                   inplace=inplace, when=when,
                   skip_ns=math.ceil(skipped_cost_ns(target, node, task.engine, zero_fill)) if when else 0,
                   zero_fill=zero_fill)


def _dma(task: Task, plan: MemoryPlan, target: Target) -> Dma:
    tb = _task_buffers(plan, task)
    if len(tb.reads) != 1 + (task.when is not None) or len(tb.writes) != 1 or None in tb.reads:
        raise BundleError(f"transfer task {task.id} must read one buffer (and its gate, predicated) and write one; "
                          f"the memory plan binds {tb.reads} -> {tb.writes}")
    src, dst = _operand(plan, tb.reads[0]), _operand(plan, tb.writes[0])
    if not (src.dense and dst.dense) and src.shape != dst.shape:
        raise BundleError(f"transfer task {task.id} copies '{src.buffer}' {list(src.shape)} to '{dst.buffer}' "
                          f"{list(dst.shape)}; a strided DMA needs equal shapes (the memory plan is invalid)")
    nbytes = task.bytes or min(src.nbytes, dst.nbytes)
    # predicated: the gate is read where the copy goes (hetc.schedule.tasks.copy_gate waits for it there)
    when = None if task.when is None else _operand(plan, tb.reads[1])
    return Dma(task=task.id, value=task.value or src.value, src=src, dst=dst, bytes=nbytes,
               duration_ns=task.own_ns, planned_start_ns=task.start_ns, planned_end_ns=task.end_ns,
               dram_bytes=nbytes * ((src.memory == target.dram) + (dst.memory == target.dram)), when=when)


# ---------------------------------------------------------------------------------------------- data files
def _model_field(options: EmitOptions, graph: Graph) -> dict[str, Any]:
    model: dict[str, Any] = {"name": options.model_name or graph.name, "sha256": options.model_sha256}
    if options.random_weights_seed is not None:   # validating the bundle randomizes the model the same way
        model["random_weights_seed"] = options.random_weights_seed
    return model


def _constants_image(graph: Graph, plan: MemoryPlan, target: Target) -> tuple[bytes, int]:
    """DRAM bytes [0, region end) with every weight at its planned offset, zeros in between."""
    placed = sorted((b for b in plan.buffers
                     if b.memory == target.dram and b.alias_of is None and b.value in graph.values
                     and graph.values[b.value].is_const), key=lambda b: (b.offset, b.id))
    size = max([plan.constants_bytes] + [b.offset + b.size for b in placed])
    image = np.zeros(size, np.uint8)   # one copy of the weights into it (zeroed pages are allocated lazily)
    cursor = 0
    for b in placed:
        if b.offset < cursor:
            raise BundleError(f"constant buffers overlap in {target.dram} at offset {b.offset} ('{b.id}'); "
                              "the memory plan is invalid (MemoryPlan.verify reports it)")
        data = np.ascontiguousarray(np.asarray(graph.values[b.value].const).astype(np_dtype(b.dtype), copy=False))
        stored = to_storage(data, b.dtype)   # sub-byte types packed, as the plan sized them
        image[b.offset:b.offset + stored.nbytes] = stored.reshape(-1).view(np.uint8)
        cursor = b.offset + stored.nbytes
    return image.tobytes(), size


def _host_values(graph: Graph) -> list[dict[str, str]]:
    """Every host value of the graph: name, ONNX type, and whether it is a graph input, output or neither."""
    inputs, outputs = {v.name for v in graph.inputs}, {v.name for v in graph.outputs}
    return [{"name": v.name, "type": str(v.host),
             "role": "input" if v.name in inputs else "output" if v.name in outputs else "intermediate"}
            for v in sorted((v for v in graph.values.values() if v.host is not None), key=lambda v: v.name)]


def _binding(plan: MemoryPlan, v: Value, dram: str, first: bool) -> dict[str, Any]:
    """Where a graph input (its first DRAM copy) or output (its last one) lives; a host value is bound to the
    host's heap by name (``memory`` "host", no offset, ``host`` its ONNX type)."""
    value = v.name
    if v.host is not None:
        return {"name": value, "buffer": None, "memory": HOST, "offset": None, "dtype": v.dtype,
                "shape": list(v.shape) if v.host.static_shape is not None else None, "nbytes": 0,
                "host": str(v.host)}
    dram_copies: list[Buffer] = [b for b in plan.buffers if b.value == value and b.memory == dram]
    if not dram_copies:
        return {"name": value, "buffer": None, "memory": None, "offset": None, "dtype": None, "shape": None,
                "nbytes": 0}
    b = min(dram_copies, key=lambda b: (b.start_ns, b.id)) if first else \
        max(dram_copies, key=lambda b: (b.end_ns, b.id))
    root = plan.owner_of(b.id)
    if b.strides is not None and not first:
        raise BundleError(f"graph output '{value}' is bound to the strided buffer '{b.id}'; the caller reads "
                          f"whole tensors (the plan is invalid)")
    binding = {"name": value, "buffer": b.id, "memory": root.memory, "offset": b.offset, "dtype": b.dtype,
               "shape": list(b.shape), "nbytes": _nbytes(b.dtype, tuple(b.shape))}
    if root.id != b.id:         # an input written in place into a slice of an output (a KV cache's past rows)
        binding["storage"] = root.id
    if b.strides is not None:
        binding["strides"] = list(b.strides)
    return binding


def _machine(target: Target, plan: MemoryPlan) -> dict[str, Any]:
    """The part of the target the simulator needs, plus how many bytes of each memory the plan touches."""
    extent: dict[str, int] = {}
    for b in plan.buffers:
        extent[b.memory] = max(extent.get(b.memory, 0), b.end)
    return {
        "dram": target.dram,
        "sync_ns": target.sync_ns,
        "memories": {name: {"size": m.size, "bandwidth": m.bandwidth, "kind": m.kind,
                            "extent": extent.get(name, 0)} for name, m in target.memories.items()},
    }
