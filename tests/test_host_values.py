"""Host values (hetc.ir.host): sequences, optionals, string tensors and tensors of run-time shape, compiled,
scheduled, planned, emitted, simulated and validated against onnxruntime on edge-soc."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hetc.codegen import load_bundle
from hetc.errors import OptionError, SimulationError, TargetError, ValidationError
from hetc.ir import EXPORT_IR_VERSION, HostType, parse_host_type
from hetc.memory.artifact import is_host_ref
from hetc.pipeline import BuildOptions, build
from hetc.schedule.verify import verify_schedule
from hetc.sim import simulate
from hetc.validate import compare, load_inputs_npz, make_inputs, reference_outputs

FAST = BuildOptions(time_limit_s=1.0, num_workers=1)


def _model(nodes, inputs, outputs, initializers=(), opset=18) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "host", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _run_and_validate(model: onnx.ModelProto, inputs: dict, tmp_path: Path):
    """Build, save, load back, simulate functionally; compare with onnxruntime; the build and the report."""
    result = build(model, FAST)
    verify_schedule(result.plan.schedule, result.graph, result.target)
    result.plan.verify(result.target)
    directory = result.save(tmp_path / "bundle")
    sim = simulate(load_bundle(directory), inputs, functional=True)
    report = compare(sim.outputs or {}, reference_outputs(model, inputs))
    assert report.passed, str(report)
    return result, sim, report


def sequence_conv_model() -> onnx.ModelProto:
    """SequenceConstruct(x, y) -> SequenceAt(1) -> Conv -> Relu: the host part feeds an NPU-capable tail."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    index = numpy_helper.from_array(np.array(1, np.int64), "index")
    nodes = [helper.make_node("SequenceConstruct", ["x", "y"], ["seq"]),
             helper.make_node("SequenceAt", ["seq", "index"], ["picked"]),
             helper.make_node("Conv", ["picked", "w"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["out"])]
    x = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 8, 8]) for n in ("x", "y")]
    return _model(nodes, x, [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])], [w, index])


def test_sequence_feeding_an_npu_conv(tmp_path: Path) -> None:
    model = sequence_conv_model()
    inputs = make_inputs(model, seed=3)
    result, sim, _ = _run_and_validate(model, inputs, tmp_path)
    graph, target, schedule = result.graph, result.target, result.plan.schedule
    assert graph.values["seq"].is_host and str(graph.values["seq"].host) == "seq(tensor(float32)[1,3,8,8])"
    assert graph.values["seq"].nbytes == 0 and not graph.values["picked"].is_host   # static shape: a device tensor
    by_op = {t.op: t.engine for t in schedule.tasks if t.kind == "compute"}
    assert by_op["SequenceConstruct"] == "cpu" and by_op["SequenceAt"] == "cpu"
    construct = next(n for n in graph.nodes if n.op_type == "SequenceConstruct")
    reason = target.supports(construct, "npu")
    assert not reason and reason.code == "host" and "lives in host memory" in str(reason)
    assert not any(t.kind == "transfer" and t.value == "seq" for t in schedule.tasks)
    assert all(b.value != "seq" for b in result.plan.buffers)
    assert any(is_host_ref(r) for tb in result.plan.task_buffers.values() for r in (*tb.reads, *tb.writes))
    hosted = result.bundle.manifest["host_values"]
    assert hosted == [{"name": "seq", "type": "seq(tensor(float32)[1,3,8,8])", "role": "intermediate"}]
    cpu_listing = result.bundle.programs["cpu"].asm()
    assert "%seq host seq(tensor(float32)[1,3,8,8])" in cpu_listing
    np.testing.assert_allclose(sim.outputs["out"], reference_outputs(model, inputs)["out"], rtol=1e-4, atol=1e-5)


def test_host_bundles_are_byte_identical(tmp_path: Path) -> None:
    """Two builds give the same programs and constants (schedule.json and memory.json record wall times,
    and the manifest their checksums); one plan emitted twice gives identical directories."""
    def tree(directory: Path) -> dict[str, bytes]:
        return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}

    result = build(sequence_conv_model(), FAST)
    first, again = tree(result.save(tmp_path / "a")), tree(result.bundle.save(tmp_path / "b"))
    assert first == again
    second = tree(build(sequence_conv_model(), FAST).save(tmp_path / "c"))
    for name in first:
        if name.startswith("programs/") or name in ("constants.bin", "placement.csv"):
            assert first[name] == second[name], name


def test_string_model(tmp_path: Path) -> None:
    """String inputs and outputs (host values) next to a boolean device output computed from them."""
    s = TensorProto.STRING
    nodes = [helper.make_node("StringConcat", ["a", "b"], ["joined"]),
             helper.make_node("Equal", ["joined", "c"], ["same"]),
             helper.make_node("Not", ["same"], ["differ"])]
    model = _model(nodes, [helper.make_tensor_value_info(n, s, [3]) for n in "abc"],
                   [helper.make_tensor_value_info("joined", s, [3]),
                    helper.make_tensor_value_info("differ", TensorProto.BOOL, [3])], opset=20)
    inputs = {"a": np.array(["x", "é", ""], dtype=object), "b": np.array(["1", "2", "3"], dtype=object),
              "c": np.array(["x1", "é3", "3"], dtype=object)}
    result, sim, report = _run_and_validate(model, inputs, tmp_path)
    assert sim.outputs["joined"].tolist() == ["x1", "é2", "3"]
    assert sim.outputs["differ"].tolist() == [False, True, False]
    bindings = {b["name"]: b for b in result.bundle.inputs}
    assert bindings["a"]["memory"] == "host" and bindings["a"]["host"] == "tensor(string)[3]"
    assert not result.graph.values["differ"].is_host
    random = make_inputs(result.graph, seed=1)   # random words for string inputs
    assert random["a"].dtype == object and random["a"].shape == (3,)


def test_optional_model(tmp_path: Path) -> None:
    """An optional graph input, present and empty; OptionalHasElement on a device output."""
    optional = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, [4]))
    nodes = [helper.make_node("OptionalHasElement", ["maybe"], ["has"]),
             helper.make_node("Optional", ["x"], ["wrapped"]),
             helper.make_node("OptionalGetElement", ["wrapped"], ["got"]),
             helper.make_node("Relu", ["got"], ["out"])]
    model = _model(nodes, [helper.make_value_info("maybe", optional),
                           helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                   [helper.make_tensor_value_info("has", TensorProto.BOOL, []),
                    helper.make_tensor_value_info("out", TensorProto.FLOAT, [4])])
    x = np.array([-1.0, 2.0, -3.0, 4.0], np.float32)
    for maybe, has in ((None, False), (np.ones(4, np.float32), True)):
        _, sim, _ = _run_and_validate(model, {"maybe": maybe, "x": x}, tmp_path / str(has))
        assert bool(sim.outputs["has"]) is has
        np.testing.assert_array_equal(sim.outputs["out"], np.maximum(x, 0))


def test_unique_model(tmp_path: Path) -> None:
    """Unique's outputs have run-time shapes: host tensors, and so is everything computed from them, until a
    reduction gives a static shape again (a device tensor)."""
    nodes = [helper.make_node("Unique", ["x"], ["values", "indices", "inverse", "counts"], sorted=1),
             helper.make_node("Mul", ["values", "two"], ["doubled"]),
             helper.make_node("ReduceSum", ["doubled"], ["total"], keepdims=0)]
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                   [helper.make_tensor_value_info("doubled", TensorProto.FLOAT, ["n"]),
                    helper.make_tensor_value_info("counts", TensorProto.INT64, ["n"]),
                    helper.make_tensor_value_info("total", TensorProto.FLOAT, [])], [two])
    x = np.array([2.0, 1.0, 1.0, 3.0, 4.0, 3.0], np.float32)
    result, sim, _ = _run_and_validate(model, {"x": x}, tmp_path)
    graph = result.graph
    assert str(graph.values["values"].host) == "tensor(float32)[?]" and graph.values["doubled"].is_host
    assert not graph.values["total"].is_host and graph.values["total"].shape == ()
    np.testing.assert_array_equal(sim.outputs["doubled"], [2.0, 4.0, 6.0, 8.0])
    np.testing.assert_array_equal(sim.outputs["counts"], [2, 1, 2, 1])
    assert float(sim.outputs["total"]) == 20.0
    timing = simulate(result.bundle, None, functional=False)   # timing-only mode just advances time
    assert timing.makespan_ns > 0


def test_host_type_text_round_trips() -> None:
    for text in ("tensor(string)[2,3]", "tensor(float32)[?]", "tensor(int64)", "tensor(float32)[]",
                 "seq(tensor(float32)[2,?])", "optional(seq(tensor(int64)[4]))", "seq(?)"):
        assert str(parse_host_type(text)) == text
    host = parse_host_type("optional(seq(tensor(int32)[4]))")
    assert host == HostType("optional", elem=HostType("sequence", elem=HostType("tensor", "int32", (4,))))
    assert host.element_dtype == "int32"
    with pytest.raises(ValueError):
        parse_host_type("map(int64)")


def test_host_value_user_errors(tmp_path: Path) -> None:
    model = sequence_conv_model()
    model.graph.input[1].CopyFrom(helper.make_value_info("y", helper.make_sequence_type_proto(
        helper.make_tensor_type_proto(TensorProto.FLOAT, [1, 3, 8, 8]))))
    model.graph.node[0].CopyFrom(helper.make_node("SequenceInsert", ["y", "x"], ["seq"]))
    result = build(model, FAST)
    bundle = load_bundle(result.save(tmp_path / "b"))
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(SimulationError, match="must be a list of arrays"):
        simulate(bundle, {"x": x, "y": x})
    with pytest.raises(SimulationError, match="missing input 'y'"):
        simulate(bundle, {"x": x})
    np.savez(tmp_path / "in.npz", x=x)
    with pytest.raises(ValidationError, match="cannot hold"):
        load_inputs_npz(tmp_path / "in.npz", result.graph)
    out = simulate(bundle, {"x": x, "y": [x]})   # SequenceAt(1) picks the inserted x
    np.testing.assert_array_equal(out.outputs["out"], np.zeros((1, 4, 8, 8), np.float32))


def test_host_memory_name_is_reserved(tmp_path: Path) -> None:
    import hetc.target

    preset = Path(hetc.target.__file__).parent / "presets" / "edge-soc.toml"
    (tmp_path / "t.toml").write_text(preset.read_text().replace("npu_sram", "host"))
    with pytest.raises(TargetError, match="'host' names the host CPU's own heap"):
        hetc.target.load_target(tmp_path / "t.toml")


def test_cli_outputs_npz_refuses_a_sequence(tmp_path: Path) -> None:
    from hetc.cli import _save_npz

    with pytest.raises(OptionError, match="is a sequence"):
        _save_npz(tmp_path / "o.npz", {"s": [np.zeros(2)]})
    _save_npz(tmp_path / "o.npz", {"t": np.array(["a", "bc"], dtype=object)})
    with np.load(tmp_path / "o.npz", allow_pickle=False) as archive:
        assert archive["t"].tolist() == ["a", "bc"]


def test_manifest_of_a_tensor_graph_has_no_host_section() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    manifest = build(model, FAST).bundle.manifest
    assert "host_values" not in manifest and "host" not in json.dumps(manifest["inputs"])


@pytest.mark.parametrize("target, scheduler", [("edge-soc", "heft"), ("edge-soc", "greedy"),
                                               ("edge-soc", "single:cpu"), ("cpu-only", "cpsat"),
                                               ("multi-npu", "heft")])
def test_every_scheduler_keeps_host_values_on_the_cpu(target: str, scheduler: str) -> None:
    model = sequence_conv_model()
    inputs = make_inputs(model, seed=1)
    result = build(model, BuildOptions(target=target, scheduler=scheduler, time_limit_s=1.0, num_workers=1))
    verify_schedule(result.plan.schedule, result.graph, result.target)
    result.plan.verify(result.target)
    placed = {t.op: t.engine for t in result.plan.schedule.tasks if t.kind == "compute"}
    assert placed["SequenceConstruct"] == placed["SequenceAt"] == "cpu"
    assert result.plan.schedule.lower_bound_ns <= result.plan.schedule.makespan_ns
    assert compare(simulate(result.bundle, inputs).outputs, reference_outputs(model, inputs)).passed


def test_single_npu_names_the_host_value() -> None:
    from hetc.errors import ScheduleError

    with pytest.raises(ScheduleError, match="'seq' is a seq.* that lives in host memory"):
        build(sequence_conv_model(), BuildOptions(scheduler="single:npu", time_limit_s=1.0, num_workers=1))


def test_validation_compares_host_values() -> None:
    seq = [np.ones(2, np.float32), np.zeros(3, np.float32)]
    strings = np.array(["a", "b"], dtype=object)
    ok = compare({"s": [a.copy() for a in seq], "o": None, "t": strings.copy()},
                 {"s": seq, "o": None, "t": strings})
    assert ok.passed and ok.outputs[0].dtype == "seq(float32)" and ok.outputs[1].note == "empty optional"
    bad = compare({"s": seq[:1], "o": np.ones(1), "t": np.array(["a", "c"], dtype=object)},
                  {"s": seq, "o": None, "t": strings})
    notes = {o.name: (o.passed, o.note) for o in bad.outputs}
    assert notes["s"] == (False, "length 1, expected 2")
    assert notes["o"][0] is False and "expected an empty optional" in notes["o"][1]
    assert notes["t"][0] is False
    off = compare({"s": [seq[0], seq[1] + 1]}, {"s": seq})
    assert not off.passed and "1 of 2 elements differ, first s[1]" in off.outputs[0].note
