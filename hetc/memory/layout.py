"""Storages and their layout: the alias groups of a memory plan as address ranges with lifetimes
(``group_storages``), their live bytes over time (the lower bound, the stretches where a memory is too full)
and their packing into each memory (``pack_layout``, ``polish``, ``repacked``)."""
from __future__ import annotations

from dataclasses import dataclass, replace

from hetc.memory.aliasing import member_end
from hetc.memory.artifact import MemoryStats
from hetc.memory.lifetimes import BufferTable
from hetc.memory.packing import live_profile, pack
from hetc.memory.prefetch import Stretch
from hetc.target.target import Target


@dataclass
class Storage:
    """One address range: an alias group (its owner and every buffer sharing its bytes)."""
    owner: str
    memory: str
    start: int
    end: int
    size: int
    members: list[str]


@dataclass
class Layout:
    offsets: dict[str, int]       # storage owner -> offset
    stats: dict[str, MemoryStats]
    methods: dict[str, str]
    constants_bytes: int


def group_storages(table: BufferTable, lifetimes: dict[str, tuple[int, int]], aliases: dict[str, str],
                   held: dict[str, int] | None = None) -> list[Storage]:
    """One storage per alias group: live from its members' earliest start to their latest end (and the
    ``held`` ns longer for the owners it names), as large as the furthest byte any member touches (members
    at offsets with strides included)."""
    groups: dict[str, Storage] = {}
    memo: dict = {}
    held = held or {}
    for bid, spec in table.buffers.items():
        owner = aliases.get(bid, bid)
        start, end = lifetimes[bid]
        end += held.get(owner, 0)
        size = member_end(table, bid, memo) if spec.region_of is not None else spec.size
        g = groups.get(owner)
        if g is None:
            groups[owner] = Storage(owner, spec.memory, start, end, size, [bid])
        else:
            g.start, g.end, g.size = min(g.start, start), max(g.end, end), max(g.size, size)
            g.members.append(bid)
    return sorted(groups.values(), key=lambda g: g.owner)


def is_constant(table: BufferTable, s: Storage) -> bool:
    return table.buffers[s.owner].kind == "constant"


def pad(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


def live_peak(packed: list[Storage], alignment: int) -> tuple[int, int, tuple[str, ...]]:
    """The most bytes ``packed`` (storages of one memory) hold live at once, when, and the buffers live then:
    the memory's lower bound and where it is reached."""
    live, when = live_profile([(s.start, s.end, s.size) for s in packed], alignment)
    return live, when, tuple(sorted(m for s in packed if s.start <= when < s.end for m in s.members))


def live_peaks(storages: list[Storage], target: Target) -> dict[str, int]:
    """Per memory but DRAM, the most bytes ``storages`` (a schedule's) hold live there at once: how far that
    schedule is from fitting."""
    return {name: live_peak([s for s in storages if s.memory == name], memory.alignment)[0]
            for name, memory in target.memories.items() if name != target.dram}


def crowded_stretches(storages: list[Storage], name: str, memory, capacity: int) -> list[Stretch]:
    """The stretches of time where the live bytes of memory ``name`` (storages padded to its alignment) exceed
    ``capacity`` (its size, less any headroom asked for), in time order."""
    events = sorted([(s.end, -pad(s.size, memory.alignment)) for s in storages if s.memory == name] +
                    [(s.start, pad(s.size, memory.alignment)) for s in storages if s.memory == name])
    stretches: list[Stretch] = []
    live, since, fullest, fullest_at = 0, None, 0, 0
    for k, (when, delta) in enumerate(events):    # ends sort before starts at the same instant
        live += delta
        if k + 1 < len(events) and events[k + 1][0] == when:
            continue                              # the live set between instants is what counts
        if live > capacity:
            if since is None or live > fullest:
                fullest, fullest_at = live, when
            since = when if since is None else since
        elif since is not None:
            stretches.append(Stretch(since, when, fullest_at, fullest - capacity))
            since = None
    return stretches


def live_overflow(storages: list[Storage], target: Target,
                   margin: dict[str, int]) -> tuple[str, list[int]] | None:
    """The first scratchpad whose live bytes at some instant exceed its capacity (less the headroom its
    packing turned out to need), and the fullest instant of each stretch of time where they do, in time
    order: no packing can fit those instants."""
    for name, memory in target.memories.items():
        if name == target.dram:
            continue
        stretches = crowded_stretches(storages, name, memory, memory.size - margin.get(name, 0))
        if stretches:
            return name, [s.fullest_at for s in stretches]
    return None


def pack_layout(table: BufferTable, storages: list[Storage], target: Target, memories: list[str],
                seconds: float, restarts: bool = False, memo: dict | None = None, enough: int | None = None
                ) -> Layout:
    """Pack ``memories``, each given ``seconds``; DRAM's constants take the fixed region at its bottom. The
    search restarts from its local optima (using all of ``seconds``) only when asked: the packings inside the
    repair loop only need to fit, the one that ships is polished once (``polish``): they stop once a
    scratchpad fits. ``memo`` keeps each packing by its intervals for the next rounds. ``enough`` (bytes,
    without DRAM's constants) stops each search once its peak is at most that."""
    offsets: dict[str, int] = {}
    stats: dict[str, MemoryStats] = {}
    methods: dict[str, str] = {}
    dram_align = target.memories[target.dram].alignment
    constants_bytes = 0
    for s in storages:                 # constants sit at fixed offsets, in first-use (table) order
        if s.memory == target.dram and is_constant(table, s):
            offsets[s.owner] = constants_bytes
            constants_bytes += pad(s.size, dram_align)
    for name in memories:
        memory = target.memories[name]
        base = constants_bytes if name == target.dram else 0
        packed = [s for s in storages if s.memory == name and s.owner not in offsets]
        intervals = [(s.start, s.end, s.size) for s in packed]
        # Inside the repairs a scratchpad's packing only has to fit (the one that ships is polished); DRAM's
        # is never polished, so it gets the full search.
        stop = enough if enough is not None else memory.size if not restarts and name != target.dram else None
        key = (tuple(intervals), memory.alignment, seconds, restarts, stop)
        result = memo.get(key) if memo is not None else None
        if result is None:   # packing is deterministic: the same intervals get the same offsets again
            result = pack(intervals, memory.alignment, seconds, restarts, stop)
            if memo is not None:
                memo[key] = result
        for s, off in zip(packed, result.offsets):
            offsets[s.owner] = base + off
        live, when, peak_members = live_peak(packed, memory.alignment)
        stats[name] = MemoryStats(peak_bytes=base + result.peak, lower_bound_bytes=base + live,
                                  capacity_bytes=memory.size, peak_time_ns=when, peak_buffers=peak_members)
        methods[name] = result.method
    return Layout(offsets, stats, methods, constants_bytes)


def packing_overflow(layout: Layout, storages: list[Storage], target: Target) -> tuple[str, int] | None:
    """A memory whose packing ends above its capacity, and when the first buffer that sticks out is live."""
    for name, stats in layout.stats.items():
        if stats.peak_bytes > stats.capacity_bytes:
            align = target.memories[name].alignment
            late = [s for s in storages if s.memory == name
                    and layout.offsets[s.owner] + pad(s.size, align) > stats.capacity_bytes]
            return name, min(s.start for s in late) if late else stats.peak_time_ns
    return None


def polish(layout: Layout, table: BufferTable, storages: list[Storage], target: Target, seconds: float) -> None:
    """Re-pack, with restarts, each scratchpad of the shipped layout whose peak is above its lower bound, and
    keep the lower peak (a lower peak fits wherever the first one did). Not DRAM: its peak buys nothing."""
    for name, stats in list(layout.stats.items()):
        if name == target.dram or stats.peak_bytes <= stats.lower_bound_bytes:
            continue
        offsets, again, method = _packed_again(table, storages, target, name, seconds)
        if again.peak_bytes < stats.peak_bytes:
            layout.offsets.update(offsets)
            layout.stats[name], layout.methods[name] = again, method


def repacked(layout: Layout, table: BufferTable, storages: list[Storage], target: Target, memories: set[str],
             seconds: float) -> Layout:
    """``layout`` with each of ``memories`` packed again from ``storages`` where that takes no more bytes."""
    out = Layout(dict(layout.offsets), dict(layout.stats), dict(layout.methods), layout.constants_bytes)
    for name in sorted(memories):
        was = layout.stats[name]
        base = layout.constants_bytes if name == target.dram else 0
        offsets, again, method = _packed_again(table, storages, target, name, seconds, was.peak_bytes - base)
        if again.peak_bytes <= was.peak_bytes:
            out.offsets.update(offsets)
            out.stats[name], out.methods[name] = replace(was, peak_bytes=again.peak_bytes), method
    return out


def _packed_again(table: BufferTable, storages: list[Storage], target: Target, name: str, seconds: float,
                  enough: int | None = None) -> tuple[dict[str, int], MemoryStats, str]:
    """Memory ``name`` packed once more, with restarts: its storages' offsets, its stats, the method that won."""
    again = pack_layout(table, storages, target, [name], seconds, restarts=True, enough=enough)
    owners = {s.owner for s in storages if s.memory == name}
    return {o: off for o, off in again.offsets.items() if o in owners}, again.stats[name], again.methods[name]
