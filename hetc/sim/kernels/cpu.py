"""The CPU path: any ONNX op, with exact ONNX semantics, through a one-node onnxruntime session
(``onnx.reference.ReferenceEvaluator`` when onnxruntime cannot build or run it, or is known to deviate
from the ONNX specification for the node: ``onnxruntime_deviates``). If/Loop/Scan run whole this
way, their bodies being GraphProto attributes. A node of a model stamped above the newest opset onnxruntime
loads is stamped with that opset when its definition is the same there (``runtime_opsets``), and otherwise
keeps the model's opset, which onnxruntime refuses: onnx.reference runs it."""
from __future__ import annotations

import functools
import hashlib
import os
from collections import OrderedDict
from typing import Any, Callable, Protocol

import numpy as np
import onnx
from onnx import helper

from hetc.frontend.opsets import runtime_opsets
from hetc.ir import EXPORT_IR_VERSION, dtype_from_numpy, dtype_to_onnx
from hetc.ir.fused import COMPOSITE_SINCE, FUSED_DOMAIN, epilogue_onnx
from hetc.ir.onnx_export import make_attribute
from hetc.sim.kernels.errors import KernelError

_CACHE_SIZE = 512
# One worker per core up to 4; the simulator itself is single-threaded, so the session may use the machine.
_THREADS = int(os.environ.get("HETC_ORT_THREADS", str(min(4, os.cpu_count() or 1))))


class _Runner(Protocol):
    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


_sessions: "OrderedDict[bytes, _Runner]" = OrderedDict()
# Per attrs dict (the simulator decodes each instruction's attributes once and passes the same dict every
# run) and input/output signature: the session, so that a repeated call skips building and hashing the
# one-node model. The attrs object itself is kept in the entry, so its id cannot be reused while cached.
_by_call: "OrderedDict[tuple, tuple[dict[str, Any], _Runner]]" = OrderedDict()


def free_names(graph: onnx.GraphProto, outer: frozenset[str] = frozenset()) -> set[str]:
    """Names a (sub)graph reads that neither it nor ``outer`` defines: outer-scope captures."""
    defined = set(outer) | {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.name for t in graph.sparse_initializer}
    missing: set[str] = set()
    for node in graph.node:
        missing |= {name for name in node.input if name and name not in defined}
        for attr in node.attribute:
            bodies = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for body in bodies:
                missing |= free_names(body, frozenset(defined))
        defined |= set(node.output)
    return missing


def _check_no_capture(op_type: str, attrs: dict[str, Any]) -> None:
    for name, value in attrs.items():
        bodies = value if isinstance(value, list) else [value]
        for body in bodies:
            if isinstance(body, onnx.GraphProto):
                captured = sorted(free_names(body))
                if captured:
                    raise KernelError(
                        f"{op_type} attribute '{name}' reads outer-scope value(s) {', '.join(captured)}; hetc runs "
                        f"{op_type} whole as one CPU node and does not pass captured values into it. Make them "
                        f"explicit inputs of the body (e.g. Loop-carried values) or inline the subgraph")


def one_node(op_type: str, domain: str, attrs: dict[str, Any], present: list[bool], n_outputs: int
             ) -> tuple[onnx.NodeProto, list[str], list[str]]:
    """The node of a one-node model, its input names (``hetc_in<i>``, "" for an omitted optional input, trailing
    ones dropped) and its output names (``hetc_out<i>``)."""
    input_names = [f"hetc_in{i}" if p else "" for i, p in enumerate(present)]
    while input_names and not input_names[-1]:
        input_names.pop()
    output_names = [f"hetc_out{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, input_names, output_names, domain=domain or None)
    node.attribute.extend(make_attribute(k, v) for k, v in sorted(attrs.items()))
    return node, input_names, output_names


def single_node_model(op_type: str, domain: str, attrs: dict[str, Any], inputs: list[np.ndarray | None],
                      outputs: list[tuple[str, tuple[int, ...]]], opset: dict[str, int]) -> onnx.ModelProto:
    """A model with one node computing ``op_type`` on graph inputs ``in0..`` into outputs ``out0..``."""
    domain = "" if domain == "ai.onnx" else domain
    if domain == FUSED_DOMAIN:
        return _fused_model(op_type, attrs, inputs, outputs, opset)
    node, input_names, output_names = one_node(op_type, domain, attrs, [x is not None for x in inputs], len(outputs))
    graph_inputs = [helper.make_tensor_value_info(name, dtype_to_onnx(dtype_from_numpy(x.dtype)), list(x.shape))
                    for name, x in zip(input_names, inputs) if name]
    graph_outputs = [helper.make_tensor_value_info(name, dtype_to_onnx(dtype), None)
                     for name, (dtype, _shape) in zip(output_names, outputs)]
    graph = helper.make_graph([node], f"hetc_{op_type}", graph_inputs, graph_outputs)
    imports = {("" if d == "ai.onnx" else d): v for d, v in opset.items()}
    if domain not in imports:
        raise KernelError(f"{op_type} is in domain '{domain}' but the model imports no opset for it; add an "
                          f"opset import for '{domain}'")
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(imports.items())])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _fused_model(op_type: str, attrs: dict[str, Any], inputs: list[np.ndarray | None],
                 outputs: list[tuple[str, tuple[int, ...]]], opset: dict[str, int]) -> onnx.ModelProto:
    """A fused node as the small model of its original nodes (the base op, then each epilogue part's ONNX
    steps), with the one-node model's input and output names: ONNX semantics, whatever the fusion did."""
    input_names = [f"hetc_in{i}" if x is not None else "" for i, x in enumerate(inputs)]
    imports = {("" if d == "ai.onnx" else d): v for d, v in opset.items() if d not in ("", "ai.onnx", FUSED_DOMAIN)}
    # A composite base op runs at the opset that defines it (one node: no other op's meaning can change).
    imports[""] = max(opset.get("", opset.get("ai.onnx", 1)), COMPOSITE_SINCE.get(op_type, 0))
    dtype = outputs[0][0]
    nodes, constants = epilogue_onnx(op_type, attrs, input_names, "hetc_out0", dtype, imports[""], "hetc_fused")
    graph_inputs = [helper.make_tensor_value_info(name, dtype_to_onnx(dtype_from_numpy(x.dtype)), list(x.shape))
                    for name, x in zip(input_names, inputs) if name]
    graph = helper.make_graph(nodes, f"hetc_fused_{op_type}", graph_inputs,
                              [helper.make_tensor_value_info("hetc_out0", dtype_to_onnx(dtype), None)],
                              initializer=constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(imports.items())])
    model.ir_version = EXPORT_IR_VERSION
    return model


def _ort_runner(model: onnx.ModelProto) -> _Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = _THREADS
    options.inter_op_num_threads = 1
    # Spinning workers would burn the cores the simulator and other sessions need between tiny runs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 4  # failures are caught and reported (or retried) by run_on_cpu
    return _OrtRunner(ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]))


class _OrtRunner:
    """A one-node onnxruntime session as a runner; ``bound`` runs it on fixed arrays with io binding."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def __call__(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)

    def bound(self, inputs: list[np.ndarray | None], out: list[np.ndarray]) -> Callable[[], list[np.ndarray]]:
        """Runs the node reading ``inputs`` and writing ``out`` in place, by pointer (no feed dict, no output
        allocation, no copy of the results), and returns ``out``. The arrays must stay alive and contiguous."""
        binding = self.session.io_binding()
        for i, x in enumerate(inputs):
            if x is not None:
                binding.bind_input(f"hetc_in{i}", "cpu", 0, x.dtype.type, x.shape, x.ctypes.data)
        for k, o in enumerate(out):
            binding.bind_output(f"hetc_out{k}", "cpu", 0, o.dtype.type, o.shape, o.ctypes.data)
        run = self.session.run_with_iobinding

        def call() -> list[np.ndarray]:
            run(binding)
            return out
        return call


def _reference_runner(model: onnx.ModelProto) -> _Runner:
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)
    return lambda feeds: evaluator.run(None, feeds)


def draws_seeded_mask(op_type: str, attr_names: Any, training_mode_given: bool) -> bool:
    """A seeded Dropout that may train: ONNX's expected outputs are onnx.reference's mask, numpy's
    RandomState(seed).uniform(0, 1, shape) >= ratio, which onnxruntime's own generator does not match, so hetc
    draws it on onnx.reference (and validates it against onnx.reference). Decided on the training_mode input's
    presence, not its value, because the session chosen for a node serves every later run (training off
    computes the identity on both runtimes)."""
    return op_type == "Dropout" and "seed" in attr_names and training_mode_given


@functools.cache
def onnxruntime_u8s8_saturates() -> bool:
    """Whether onnxruntime's MatMulInteger(uint8, int8) differs from exact integer arithmetic on this machine:
    its AVX2 kernel adds pairs of u8 x s8 products in saturating int16 (onnxruntime's quantization notes warn
    of it); AVX-512 VNNI and AVX-VNNI machines compute exactly. hetc's kernels compute exactly everywhere."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 128), dtype=np.uint8)
    b = rng.integers(-128, 128, (128, 64), dtype=np.int8)
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "u8s8",
                              [helper.make_tensor_value_info("a", TensorProto.UINT8, a.shape),
                               helper.make_tensor_value_info("b", TensorProto.INT8, b.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.INT32, (16, 64))])
    probe = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    probe.ir_version = EXPORT_IR_VERSION
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    y = session.run(None, {"a": a, "b": b})[0]
    return bool((y != a.astype(np.int64) @ b.astype(np.int64)).any())


def onnxruntime_deviates(op_type: str, domain: str, attrs: dict[str, Any], inputs: list[np.ndarray | None],
                         outputs: list[tuple[str, tuple[int, ...]]]) -> bool:
    """Whether onnxruntime 1.31 is known to compute this node differently from the ONNX specification (its
    results fail ONNX's own conformance cases for it, which onnx.reference passes); such nodes run on
    onnx.reference first."""
    if domain not in ("", "ai.onnx"):
        return False
    if op_type in ("DFT", "STFT"):  # onnxruntime's float32 transforms miss ONNX's expected values by ~3e-4
        return True
    if op_type == "MaxUnpool":  # an explicit output_shape input: onnxruntime places the values differently
        return len(inputs) > 2 and inputs[2] is not None
    if op_type == "Resize":  # align_corners with linear/cubic interpolation, when downsampling
        return (attrs.get("coordinate_transformation_mode") == "align_corners"
                and attrs.get("mode", "nearest") != "nearest")
    if op_type in ("Cast", "CastLike"):  # rounding to float8e4m3fn (saturating or not)
        return bool(outputs) and outputs[0][0] == "float8e4m3fn"
    if op_type == "Softmax":  # float16: rounds once, where ONNX's function body rounds every step
        return bool(outputs) and outputs[0][0] == "float16"
    if op_type == "Dropout":
        return draws_seeded_mask(op_type, attrs, len(inputs) > 2 and inputs[2] is not None)
    if op_type == "MatMulInteger":  # uint8 x int8 on an AVX2 machine without VNNI: saturating int16 sums
        return (len(inputs) > 1 and inputs[0] is not None and inputs[1] is not None and inputs[0].dtype == np.uint8
                and inputs[1].dtype == np.int8 and onnxruntime_u8s8_saturates())
    if op_type == "Attention":  # a causal mask over a past cache is offset; float16 loses accuracy
        with_past = len(inputs) > 4 and inputs[4] is not None
        return (bool(attrs.get("is_causal", 0)) and with_past) or (
            bool(inputs) and inputs[0] is not None and inputs[0].dtype == np.float16)
    return False


def run_on_cpu(op_type: str, domain: str, attrs: dict[str, Any], inputs: list[np.ndarray | None],
               outputs: list[tuple[str, tuple[int, ...]]], opset: dict[str, int]) -> list[np.ndarray]:
    """Run one node with ONNX's own semantics; the session is cached per op signature."""
    call_key = (op_type, domain, id(attrs), tuple(None if x is None else (x.dtype.str, x.shape) for x in inputs),
                tuple((dtype, tuple(shape)) for dtype, shape in outputs), tuple(sorted(opset.items())))
    cached = _by_call.get(call_key)
    if cached is not None and cached[0] is attrs:
        return list(cached[1](_feeds(inputs)))
    runner, results = _resolve(op_type, domain, attrs, inputs, outputs, opset)
    _remember(call_key, attrs, runner)
    return results


def cpu_node(op_type: str, domain: str, attrs: dict[str, Any], inputs: list[np.ndarray | None],
             outputs: list[tuple[str, tuple[int, ...]]], opset: dict[str, int],
             out: list[np.ndarray | None] | None = None) -> Callable[[], list[np.ndarray]]:
    """``run_on_cpu`` bound to fixed input arrays (views whose contents change between calls, never their
    identity, dtype or shape): the first call finds or builds the session as ``run_on_cpu`` does, every later
    call goes straight to it with the feeds built here. Given ``out`` (an array of the declared dtype and shape
    per output, overlapping no input), an onnxruntime session then reads the inputs and writes the outputs
    by pointer through io binding and the call returns ``out`` (measured 12 us faster a call on a
    ShuffleNet-sized grouped Conv, 54 against 66 us with the copy into device memory)."""
    feeds = _feeds(inputs)
    fast: Callable[[], list[np.ndarray]] | None = None

    def run() -> list[np.ndarray]:
        nonlocal fast
        if fast is not None:
            return fast()
        runner, results = _resolve(op_type, domain, attrs, inputs, outputs, opset)
        if isinstance(runner, _OrtRunner) and out is not None and _bindable(inputs, out):
            fast = runner.bound(inputs, out)  # type: ignore[arg-type]
        else:
            fast = lambda: runner(feeds)   # noqa: E731
        return results
    return run


_BINDABLE = frozenset("?bBhHiIlLqQefd")   # numpy type characters onnxruntime binds by pointer


def _bindable(inputs: list[np.ndarray | None], out: list[np.ndarray | None]) -> bool:
    arrays = [x for x in inputs if x is not None] + list(out)
    return all(a is not None and a.dtype.char in _BINDABLE and a.size and a.flags.c_contiguous for a in arrays)


def _feeds(inputs: list[np.ndarray | None]) -> dict[str, np.ndarray]:
    return {f"hetc_in{i}": x for i, x in enumerate(inputs) if x is not None}


def _resolve(op_type: str, domain: str, attrs: dict[str, Any], inputs: list[np.ndarray | None],
             outputs: list[tuple[str, tuple[int, ...]]], opset: dict[str, int]) -> tuple[_Runner, list[np.ndarray]]:
    """The runner for this node (a cached session of the same one-node model, or a new one) and its results
    on ``inputs``: onnxruntime first, onnx.reference when onnxruntime cannot run it (or deviates)."""
    _check_no_capture(op_type, attrs)
    opsets = opset if domain == FUSED_DOMAIN else runtime_opsets(op_type, domain, attrs, opset)
    model = single_node_model(op_type, domain, attrs, inputs, outputs, opsets)
    return session_for(model, _feeds(inputs), onnxruntime_deviates(op_type, domain, attrs, inputs, outputs),
                       lambda: f"{op_type} (opset {opset.get(domain or '', '?')}) on inputs "
                               f"{[None if x is None else (str(x.dtype), x.shape) for x in inputs]}")


def session_for(model: onnx.ModelProto, feeds: dict[str, Any], reference_first: bool,
                describe: Callable[[], str]) -> tuple[_Runner, list[Any]]:
    """The runner of a one-node model (cached per model, LRU) and its results on ``feeds``: onnxruntime first,
    onnx.reference when onnxruntime cannot run it, or the other way round (``reference_first``). ``describe``
    names the node for the error raised when neither can."""
    key = hashlib.sha256(model.SerializeToString(deterministic=True)).digest()
    runner = _sessions.get(key)
    if runner is not None:
        _sessions.move_to_end(key)
        return runner, list(runner(feeds))
    errors = []
    runtimes = (_reference_runner, _ort_runner) if reference_first else (_ort_runner, _reference_runner)
    for make in runtimes:
        try:
            runner = make(model)
            results = list(runner(feeds))
        except Exception as error:  # noqa: BLE001 - any failure moves on to the next runtime
            errors.append(f"{make.__name__.strip('_').replace('_runner', '')}: {str(error).strip()[:300]}")
            continue
        _sessions[key] = runner
        if len(_sessions) > _CACHE_SIZE:
            _sessions.popitem(last=False)
        return runner, results
    raise KernelError(f"neither onnxruntime nor onnx.reference can run {describe()}: " + " | ".join(errors))


def _remember(call_key: tuple, attrs: dict[str, Any], runner: _Runner) -> None:
    _by_call[call_key] = (attrs, runner)
    if len(_by_call) > _CACHE_SIZE:
        _by_call.popitem(last=False)


def clear_session_cache() -> None:
    _sessions.clear()
    _by_call.clear()
