"""Immediates (hetc.ir.immediates): a one-element constant read only by compute nodes rides in the instruction:
no transfer, no buffer, its value in the program, read from there by the simulator."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import MODELS_DIR
from hetc.codegen.bundle import load_bundle
from hetc.ir import Graph, Node, Value, is_immediate
from hetc.ir.tiles import REGION, TILE_DOMAIN
from hetc.pipeline import BuildOptions, build


def _graph_reading(const: np.ndarray, region: bool = False) -> Value:
    x, y = Value("x", "float32", (4,)), Value("y", "float32", (4,))
    c = Value("c", str(const.dtype), tuple(const.shape), const=const)
    nodes = [Node(1, "Mul", "mul", [x, c], [y])]
    outputs = [y]
    if region:   # a tile's view of the constant
        view = Value("view", c.dtype, c.shape)
        nodes.append(Node(2, REGION, "region", [c], [view], attrs={"starts": [0] * c.const.ndim}, domain=TILE_DOMAIN))
        outputs.append(view)
    Graph.build("g", nodes, [x], outputs, {"": 17})
    return c


@pytest.mark.parametrize("const, immediate", [
    (np.array(0.5, np.float32), True),            # a scalar
    (np.array([3], np.int64), True),              # one element, 8 bytes
    (np.array([1, 2], np.float32), False),        # a vector is a buffer
    (np.array([1.0], np.complex128), False),      # 16 bytes: more than a descriptor word
])
def test_the_rule(const: np.ndarray, immediate: bool) -> None:
    assert is_immediate(_graph_reading(const)) is immediate


def test_a_constant_a_region_reads_stays_a_buffer() -> None:
    assert is_immediate(_graph_reading(np.array([0.5], np.float32)))
    assert not is_immediate(_graph_reading(np.array([0.5], np.float32), region=True))


@pytest.fixture(scope="module")
def qdq_build():
    return build(str(MODELS_DIR / "mobilenet_v2_qdq.onnx"), BuildOptions(target="edge-soc", validate=True))


def test_scalar_quantization_parameters_move_by_no_dma_and_own_no_buffer(qdq_build) -> None:
    graph = qdq_build.graph
    immediates = {v.name for v in graph.values.values() if is_immediate(v)}
    # every QLinearConv's input, weight (per tensor) and output scales and zero points are scalars
    assert len(immediates) > 40
    moved = {t.value for t in qdq_build.schedule.tasks if t.kind == "transfer"}
    assert not moved & immediates
    assert not {b.value for b in qdq_build.plan.buffers} & immediates
    assert qdq_build.validation is not None and qdq_build.validation.passed


def test_the_program_carries_the_value_and_the_bundle_round_trips(qdq_build, tmp_path) -> None:
    graph = qdq_build.graph
    carried = [o for program in qdq_build.bundle.programs.values() for ins in program.instructions
               if ins.kind == "compute" for o in ins.inputs if o is not None and o.immediate is not None]
    assert carried
    for o in carried:
        const = np.asarray(graph.values[o.value].const)
        assert np.array_equal(np.array(o.immediate, dtype=const.dtype).reshape(const.shape), const)
        assert o.runs() == [] and not o.has_bytes and f"#{o.immediate[0]!r}" in o.asm()
    loaded = load_bundle(qdq_build.save(tmp_path / "b"))
    assert loaded.programs == qdq_build.bundle.programs
