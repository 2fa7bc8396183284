"""Consistency checks across the tables of a target: references between memories, devices and DMA engines,
op lists against ONNX and the kernel set, and reachability of every scratchpad."""
from __future__ import annotations

from hetc.errors import TargetError
from hetc.ir.fused import HETC_COMPOSITES
from hetc.target.ops import (CONTRIB_DOMAIN, CONTRIB_KERNEL_SET, KERNEL_SET, OP_CLASSES, has_device_kernel, is_onnx_op,
                             op_class)
from hetc.target.target import Target


def check_target(target: Target) -> None:
    """Raise a TargetError naming the file, the key and the fix for the first inconsistency in ``target``."""
    origin = target.path or target.name
    memories = set(target.memories)

    def fail(where: str, key: str, problem: str, fix: str) -> None:
        raise TargetError(f"{origin}: {where} key '{key}': {problem}; {fix}")

    if target.dram not in memories:
        fail("top level", "dram", f"memory '{target.dram}' is not defined",
             f'define [memories.{target.dram}] or set dram to one of: {", ".join(sorted(memories))}')
    if target.memories[target.dram].kind != "dram":
        fail(f"[memories.{target.dram}]", "kind", f"the DRAM memory has kind '{target.memories[target.dram].kind}'",
             'set kind = "dram"')

    if "host" in memories:
        fail("[memories.host]", "name", "'host' names the host CPU's own heap, where hetc keeps sequences, "
             "optionals and strings (bundles bind them to it)", "rename the memory, e.g. to host_sram")
    if "immediate" in memories:
        fail("[memories.immediate]", "name", "'immediate' names the constants an instruction carries in its "
             "descriptor (bundles bind them to it)", "rename the memory, e.g. to immediate_sram")

    if target.staging and target.staging not in memories:
        fail("top level", "staging", f"memory '{target.staging}' is not defined",
             f"set staging to one of: {', '.join(sorted(memories))}, or remove it to stage through DRAM")

    for dev in target.devices.values():
        where = f"[devices.{dev.name}]"
        if dev.memory not in memories:
            fail(where, "memory", f"memory '{dev.memory}' is not defined",
                 f"define [memories.{dev.memory}] or use one of: {', '.join(sorted(memories))}")
        if dev.kind == "cpu" and dev.memory != target.dram:
            fail(where, "memory", f"a CPU must be homed in DRAM ('{target.dram}'), not '{dev.memory}'",
                 f'set memory = "{target.dram}"')
        if dev.kind == "cpu" and (dev.ops is not None or dev.dtypes is not None or dev.limits):
            key = "ops" if dev.ops is not None else "dtypes" if dev.dtypes is not None else "limits"
            fail(where, key, "a CPU runs every op and dtype through onnxruntime (it is the fallback)",
                 f"remove {key} from [devices.{dev.name}]")
        if dev.ops is None and dev.kind != "cpu":
            fail(where, "ops", f"a {dev.kind} device must list its ops (only a CPU runs everything)",
                 "add ops = [...] with a subset of the kernel set (docs/targets.md)")
        if dev.ops is not None and not dev.ops:
            fail(where, "ops", "the list is empty, so the device would never run anything",
                 "list the ops it has kernels for, or remove the device")
        if dev.dtypes is None and dev.kind != "cpu":
            fail(where, "dtypes", f"a {dev.kind} device must list its dtypes", 'add dtypes = ["float32", ...]')
        for op in sorted(dev.ops or ()):
            domain, _, name = op.rpartition(".")
            if domain:   # a contrib op, domain-qualified
                if not has_device_kernel(domain, name):
                    fail(where, "ops", f"'{op}' has no {dev.kind} kernel in hetc",
                         f"remove it (the CPU runs it); contrib kernels: "
                         f"{', '.join(CONTRIB_DOMAIN + '.' + o for o in sorted(CONTRIB_KERNEL_SET))}")
                continue
            if not is_onnx_op(op) and op not in HETC_COMPOSITES:   # (hetc's own composites: hetc.ir.fused)
                fail(where, "ops", f"'{op}' is not an ONNX operator", "check the spelling against onnx.defs")
            if dev.kind != "cpu" and op not in KERNEL_SET:
                fail(where, "ops", f"'{op}' has no {dev.kind} kernel in hetc",
                     "remove it (the CPU runs it) or see the kernel set in docs/targets.md")
        for dtype in sorted(dev.dtypes or ()):
            if dev.kind != "cpu" and dtype not in dev.peak:
                fail(where, "peak", f"dtype '{dtype}' is listed in dtypes but has no peak rate",
                     f"add {dtype} = <GOP/s> to the peak table")
        if "default" not in dev.efficiency:
            classes = OP_CLASSES if dev.ops is None else sorted({op_class(op) for op in dev.ops})
            missing = [c for c in classes if c not in dev.efficiency]
            if missing:
                fail(where, "efficiency", f"no entry for op class '{missing[0]}' and no 'default'",
                     f"add {missing[0]} = <fraction> or default = <fraction>")

    if not any(dev.kind == "cpu" for dev in target.devices.values()):
        fail("top level", "devices", "the target has no CPU (the fallback that runs every op)",
             'add a [devices.cpu] table with kind = "cpu"')

    for dma in target.dmas.values():
        where = f"[[dma]] '{dma.name}'"
        for m in dma.memories:
            if m not in memories:
                fail(where, "memories", f"memory '{m}' is not defined",
                     f"define [memories.{m}] or use one of: {', '.join(sorted(memories))}")
        if dma.name in target.devices:
            fail(where, "name", f"'{dma.name}' is also a device name", "give the DMA engine a distinct name")

    for memory in target.memories.values():
        if memory.name == target.dram:
            continue
        if not target.engines_between(memory.name, target.dram):
            homed = [d.name for d in target.devices.values() if d.memory == memory.name]
            users = f" (home of {', '.join(homed)})" if homed else ""
            fail(f"[memories.{memory.name}]", "dma",
                 f"no DMA engine connects scratchpad '{memory.name}'{users} to '{target.dram}', so graph "
                 f"inputs and weights cannot reach it",
                 f'add a [[dma]] entry with memories = ["{target.dram}", "{memory.name}"]')

    seen: set[str] = set()
    for name in target.priority:
        if name not in target.devices:
            fail("top level", "priority", f"'{name}' is not a device",
                 f"list devices from: {', '.join(target.devices)}")
        if name in seen:
            fail("top level", "priority", f"'{name}' is listed twice", "list each device once")
        seen.add(name)
