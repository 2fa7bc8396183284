"""The Timeline of a bundle on disk: what ``hetc gantt`` draws, built by the same Timeline builders as the
build-time export, from what the bundle holds (no model, no graph).

Node names and tensors come from the compute instructions of ``programs/<engine>.json`` (each names its node,
op and input/output values); shapes, dtypes and constness from ``memory.json``'s buffers (the whole value,
where an instruction of a tiled node holds only its tile).
"""
from __future__ import annotations

from hetc.codegen import Bundle
from hetc.codegen.program import Operand
from hetc.ir import Value
from hetc.report.timeline import NodeFacts, Timeline, describe_tensor
from hetc.sim import simulate
from hetc.target import target_from_toml_text


def bundle_simulated(bundle: Bundle) -> bool:
    """True when the build simulated the bundle (its build-time Gantt then drew the simulated run)."""
    return "simulated_makespan_us" in bundle.manifest.get("summary", {})


def bundle_node_facts(bundle: Bundle) -> dict[int, NodeFacts]:
    """Node id -> name, op and tensors, as the programs and the memory plan record them."""
    tensors: dict[str, tuple[str, tuple[int, ...], bool]] = {}
    for b in bundle.memory_json.get("buffers", []):
        if b.get("alias_of") is None and b["value"] not in tensors:
            tensors[b["value"]] = (b["dtype"], tuple(b["shape"]), b.get("kind") == "constant")
    facts: dict[int, NodeFacts] = {}
    for program in bundle.programs.values():
        for ins in program.instructions:
            if ins.kind != "compute" or ins.node in facts:
                continue   # a tiled node's later tiles: its first instruction already named it
            ins_text, ins_bytes = _tensors(ins.inputs, tensors)
            outs_text, outs_bytes = _tensors(ins.outputs, tensors)
            facts[ins.node] = NodeFacts(ins.node, ins.name or f"{ins.op}#{ins.node}", ins.op, ins_text, outs_text,
                                        ins_bytes + outs_bytes)
    return facts


def _tensors(operands: "tuple[Operand | None, ...]", tensors: dict[str, tuple[str, tuple[int, ...], bool]]
             ) -> tuple[tuple[str, ...], int]:
    texts, total = [], 0
    for op in operands:
        if op is None:      # an omitted optional input, as the graph shows it
            texts.append("-")
            continue
        dtype, shape, const = tensors.get(op.value, (op.dtype, tuple(op.shape), False))
        texts.append(describe_tensor(op.value, dtype, shape, const))
        total += Value(op.value, dtype, shape).nbytes if op.has_bytes else 0
    return tuple(texts), total


def bundle_timeline(bundle: Bundle, simulated: bool | None = None, source: str = "bundle") -> Timeline:
    """The chart of ``bundle``: the simulated run (timing-only: the kernels do not change the timing) when
    ``simulated`` is true, the plan otherwise; ``None`` draws what the build drew."""
    if simulated is None:
        simulated = bundle_simulated(bundle)
    target = target_from_toml_text(bundle.manifest["target"]["toml"], f"{source}/manifest.json")
    plan = bundle.memory_plan()
    sched = plan.schedule
    title = bundle.manifest["model"]["name"]
    if simulated:
        return Timeline.from_simulation(simulate(bundle, functional=False), sched, plan, target, title=title)
    return Timeline.from_schedule(sched, None, plan, target, title=title, nodes=bundle_node_facts(bundle))
