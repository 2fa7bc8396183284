"""Random scheduling problems on a CPU + NPU + DSP machine, for the scheduler's property tests."""
from __future__ import annotations

import random

from hetc.schedule.problem import DmaSpec, SchedulingProblem, ValueSpec


def random_problem(seed: int, nodes: int = 12, edge_prob: float = 0.3, weights: bool = True,
                   two_npu_dmas: bool = False, direct_link: bool = False, sync_ns: int = 50) -> SchedulingProblem:
    """A random DAG: node i reads outputs of earlier nodes (and maybe a weight); the NPU and DSP refuse some
    ops. The last node's output and any unread output are graph outputs."""
    rng = random.Random(seed)
    device_memory = {"cpu": "dram", "npu": "npu_sram", "dsp": "dsp_tcm"}
    dmas = {"dma_npu": DmaSpec("dma_npu", ("dram", "npu_sram"), 100.0, 8.0),
            "dma_dsp": DmaSpec("dma_dsp", ("dram", "dsp_tcm"), 100.0, 4.0)}
    if two_npu_dmas:
        dmas["dma_npu2"] = DmaSpec("dma_npu2", ("dram", "npu_sram"), 150.0, 6.0)
    if direct_link:
        dmas["dma_link"] = DmaSpec("dma_link", ("npu_sram", "dsp_tcm"), 80.0, 4.0)
    durations, node_inputs = [], []
    values: list[dict] = [{"name": "input", "nbytes": rng.randint(1, 64) * 256, "producer": None, "consumers": set(),
                           "const": False}]
    for i in range(nodes):
        cpu = rng.randint(500, 5000)
        durs = {"cpu": cpu}
        if rng.random() < 0.8:
            durs["npu"] = max(1, cpu // rng.randint(2, 10))
        if rng.random() < 0.6:
            durs["dsp"] = max(1, cpu // rng.randint(1, 4))
        durations.append(durs)
        producers = [k for k, v in enumerate(values) if not v["const"] and k != 0 and rng.random() < edge_prob]
        if not producers:
            producers = [len(values) - 1 if values[-1]["producer"] is not None or i == 0 else 0]
        reads = list(dict.fromkeys(producers))
        if weights and rng.random() < 0.5:
            values.append({"name": f"w{i}", "nbytes": rng.randint(1, 64) * 512, "producer": None,
                           "consumers": set(), "const": True})
            reads.append(len(values) - 1)
        for k in reads:
            values[k]["consumers"].add(i)
        node_inputs.append(tuple(reads))
        values.append({"name": f"v{i}", "nbytes": rng.randint(1, 64) * 256, "producer": i, "consumers": set(),
                       "const": False})
    specs = tuple(ValueSpec(v["name"], v["nbytes"], v["producer"], tuple(sorted(v["consumers"])),
                            is_output=v["producer"] is not None and (not v["consumers"] or v["producer"] == nodes - 1),
                            is_const=v["const"]) for v in values)
    return SchedulingProblem(
        node_ids=tuple(range(nodes)), node_names=tuple(f"n{i}" for i in range(nodes)),
        ops=tuple("Conv" for _ in range(nodes)), durations=tuple(durations), node_inputs=tuple(node_inputs),
        values=specs, device_memory=device_memory, dmas=dmas, sync_ns=sync_ns, priority=("npu", "dsp", "cpu"))
