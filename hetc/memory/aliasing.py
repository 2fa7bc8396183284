"""The in-place rule: which buffers may share storage. The one place that decides it.

Buffers that share storage form an *alias group*; the group's first buffer owns the storage and the others
record ``alias_of`` = that owner. The group occupies its address range from the earliest start to the latest
end of its members.

* **Views** (``hetc.target.ops.is_view``: Reshape, Flatten, Squeeze, Unsqueeze, Identity, a Dropout that
  cannot train) write their input's bytes unchanged, so the output joins the input's group unless
  ``hetc.target.ops.view_copy_reason`` gives a reason (the cost model prices a view by the same rule: free,
  or a copy), the two lie in one memory, and the group would not hold both a graph input and a graph output
  (the caller fills inputs and reads outputs at distinct addresses).
* **Elementwise ops** may write over an input that dies at them: same size, dtype and shape (no broadcast),
  no member of the input's group is a constant, graph input or graph output, and every other task that reads
  the group is an ancestor of this one in the dependency graph. Ancestry, not planned time, because the
  simulator's timing may differ from the plan; an ancestor finishes first on any timing.
* **Regions and Assemble parts** (hetc.ir.tiles) are not a choice: a Region's output lies in its base's bytes
  at ``region_offset(starts, base strides)`` with the base's byte strides, and each Assemble part's DRAM
  buffer lies in the output's bytes at the part's start with the output's strides (its producer, or the DMA
  bringing it, writes straight there). Positions compose (a region of a region, of an Assemble output, of a
  view): ``placement`` gives each buffer's byte offset from its group's first byte and its strides. These
  members are joined first; a buffer lying at an offset or with strides is then neither viewed nor
  overwritten in place (the rules below assume their operands start at the group's first byte).
* **A Dropout that may train** is elementwise here, not a view: in training mode it rewrites its bytes
  (masked and scaled).
  Overwriting an input that dies at it is safe on every engine, since kernels never compute into an output
  that overlaps an input (the simulator copies the result over it afterwards).
"""
from __future__ import annotations

from hetc.errors import MemoryPlanError
from hetc.ir import Node
from hetc.ir.tiles import contiguous_strides, region_offset
from hetc.memory.artifact import strided_extent
from hetc.memory.lifetimes import BufferTable
from hetc.schedule.artifact import Schedule
from hetc.target.ops import is_view, view_copy_reason

ELEMENTWISE_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Gelu", "Erf",
    "Softplus", "Clip", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Exp", "Log", "Neg", "Abs", "Reciprocal",
    "Max", "Min", "Sum", "Mean", "Where", "Dropout",
})
_PINNED_KINDS = frozenset({"constant", "input", "output"})


class _Groups:
    """Union-find over buffer ids, remembering each group's member kinds and members."""

    def __init__(self, table: BufferTable) -> None:
        self.owner = {b: b for b in table.buffers}
        self.members = {b: [b] for b in table.buffers}
        self.kinds = {b: {spec.kind} for b, spec in table.buffers.items()}

    def root(self, b: str) -> str:
        while self.owner[b] != b:
            self.owner[b] = self.owner[self.owner[b]]
            b = self.owner[b]
        return b

    def join(self, member: str, into: str) -> None:
        """``member`` (the owner of its group, often a single buffer) and its group join the group of ``into``;
        that group keeps its owner."""
        r = self.root(into)
        self.owner[member] = r
        self.members[r].extend(self.members.pop(member))
        self.kinds[r] |= self.kinds.pop(member)


class _Ancestry:
    """Transitive predecessors of tasks over ``deps``, as bitsets over task positions (computed lazily)."""

    def __init__(self, schedule: Schedule) -> None:
        self.tasks = {t.id: t for t in schedule.tasks}
        self.bit = {t.id: 1 << k for k, t in enumerate(schedule.tasks)}
        self.memo: dict[int, int] = {}

    def mask(self, task_id: int) -> int:
        stack = [task_id]
        while stack:                      # iterative DFS: graphs have thousands of tasks
            t = stack[-1]
            pending = [d for d in self.tasks[t].deps if d not in self.memo]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if t not in self.memo:
                acc = 0
                for d in self.tasks[t].deps:
                    acc |= self.memo[d] | self.bit[d]
                self.memo[t] = acc
        return self.memo[task_id]

    def precedes(self, a: int, b: int) -> bool:
        return a == b or bool(self.mask(b) & self.bit[a])


def resolve_aliases(table: BufferTable, schedule: Schedule, nodes: dict[int, Node],
                    overwrite: bool = True) -> dict[str, str]:
    """``{buffer id: owner buffer id}`` for every buffer that shares another's storage; ``overwrite=False``
    leaves out the elementwise in-place rule (views and regions only)."""
    groups = _Groups(table)
    for bid, spec in table.buffers.items():   # regions and parts first: they are not a choice
        if spec.region_of is not None:
            if groups.root(spec.region_of) == groups.root(bid):
                raise MemoryPlanError(f"buffer '{bid}' would lie in its own bytes (a cycle of regions)")
            groups.join(groups.root(bid), spec.region_of)
    ancestry = _Ancestry(schedule)
    for task in sorted(schedule.tasks, key=lambda t: (t.start_ns, t.id)):
        if task.kind != "compute" or not table.writes.get(task.id):
            continue
        node = nodes[task.node]
        out = table.writes[task.id][0]
        if out not in table.buffers or groups.root(out) != out or _placed(table, out):
            continue   # a host value (nothing to share), or a buffer a region rule has placed already
        if is_view(node) and view_copy_reason(node) is None:
            src = table.reads[task.id][0] if table.reads[task.id] else None
            if src in table.buffers and not _placed(table, src) and _may_view(table, groups, src, out):
                groups.join(out, src)
        elif overwrite and node.op_type in ELEMENTWISE_OPS and len(node.outputs) >= 1:
            for src in table.reads[task.id]:
                if src in table.buffers and not _placed(table, src) and \
                        _may_overwrite(table, groups, ancestry, src, out, task.id):
                    groups.join(out, src)
                    break
    return {b: groups.root(b) for b in table.buffers if groups.root(b) != b}


def _placed(table: BufferTable, bid: str) -> bool:
    """Whether the buffer lies inside another's bytes by a region rule (at an offset, maybe strided)."""
    return table.buffers[bid].region_of is not None


def placement(table: BufferTable, bid: str, memo: dict[str, tuple[int, tuple[int, ...] | None]] | None = None
              ) -> tuple[int, tuple[int, ...] | None]:
    """(byte offset from its group's first byte, byte strides or None when C-contiguous) of a buffer. Every
    other member of a group starts at the group's first byte, contiguous (the view and in-place rules)."""
    memo = {} if memo is None else memo
    chain = []
    while bid not in memo and table.buffers[bid].region_of is not None:
        chain.append(bid)
        bid = table.buffers[bid].region_of   # type: ignore[assignment]
    memo.setdefault(bid, (0, None))
    for member in reversed(chain):
        spec = table.buffers[member]
        base_offset, base_strides = memo[spec.region_of]   # type: ignore[index]
        base = table.buffers[spec.region_of]               # type: ignore[index]
        strides = base_strides or contiguous_strides(base.shape, base.dtype)
        memo[member] = (base_offset + region_offset(spec.region_starts or (), strides), strides)
    return memo[chain[0] if chain else bid]


def member_end(table: BufferTable, bid: str, memo: dict | None = None) -> int:
    """One past the last byte a buffer touches, from its group's first byte."""
    offset, strides = placement(table, bid, memo)
    spec = table.buffers[bid]
    if strides is None:
        return offset + spec.size
    return offset + strided_extent(spec.shape, strides, spec.size)


def strides_or_none(shape: tuple[int, ...], strides: tuple[int, ...] | None, dtype: str
                    ) -> tuple[int, ...] | None:
    """``strides``, or None when they are C-contiguous for ``shape`` (axes of one element have no stride)."""
    if strides is None:
        return None
    dense = contiguous_strides(shape, dtype)
    same = all(d == 1 or s == c for d, s, c in zip(shape, strides, dense))
    return None if same else tuple(strides)


def _may_view(table: BufferTable, groups: _Groups, src: str, out: str) -> bool:
    s, o = table.buffers[src], table.buffers[out]
    kinds = groups.kinds[groups.root(src)] | groups.kinds[groups.root(out)]
    return (s.memory == o.memory and s.size == o.size and "constant" not in kinds
            and not {"input", "output"} <= kinds)


def _may_overwrite(table: BufferTable, groups: _Groups, ancestry: _Ancestry, src: str, out: str,
                   task_id: int) -> bool:
    s, o = table.buffers[src], table.buffers[out]
    if (s.memory, s.size, s.dtype, s.shape) != (o.memory, o.size, o.dtype, o.shape):
        return False
    root = groups.root(src)
    if groups.kinds[root] & _PINNED_KINDS:
        return False
    for member in groups.members[root]:
        for reader in table.buffers[member].readers:
            if reader != task_id and not ancestry.precedes(reader, task_id):
                return False
    return True
