"""What a build tells the user, through the real console script: idle accelerators warned about, the two gaps
labelled apart, no raw onnxruntime logging, µs, the Gantt files named, and the memory panel as the plan has it."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cli_subprocess import run_hetc
from conftest import MODELS_DIR
from hetc.frontend import load_onnx
from hetc.passes import optimize
from hetc.target import target_from_toml_text

PRESET = Path(__file__).resolve().parent.parent / "hetc" / "target" / "presets" / "edge-soc.toml"


def _tiny_scratchpads(tmp_path: Path) -> Path:
    """edge-soc with 1 KiB scratchpads: no node fits an accelerator whole (build with --no-tiling to keep it so)."""
    text = re.sub(r'(?m)^size = "(8|4)MiB".*$', 'size = "1KiB"', PRESET.read_text())
    path = tmp_path / "tiny-spm.toml"
    path.write_text(text)
    return path


def test_idle_accelerators_are_warned_about_with_quoted_reasons(tmp_path: Path) -> None:
    target_path = _tiny_scratchpads(tmp_path)
    run = run_hetc("build", MODELS_DIR / "tiny_cnn.onnx", "-o", tmp_path / "b", "-t", target_path, "-q",
                   "--no-tiling")
    assert run.returncode == 0, run.stderr
    warning = [line for line in run.stderr.splitlines() if line.startswith("warning: no work for the accelerators")]
    assert len(warning) == 1, run.stderr
    graph = optimize(load_onnx(MODELS_DIR / "tiny_cnn.onnx"))
    assert f"{len(graph.nodes)} of {len(graph.nodes)} nodes run on the CPU" in warning[0]
    target = target_from_toml_text(target_path.read_text(), str(target_path))
    reasons = {str(target.supports(n, d)) for n in graph.nodes for d in ("npu", "dsp") if not target.supports(n, d)}
    assert any(f'"{r}"' in warning[0] for r in reasons)   # quoted from capability, not rewritten


def test_a_normal_build_does_not_warn_about_idle_accelerators(tmp_path: Path) -> None:
    run = run_hetc("build", MODELS_DIR / "tiny_cnn.onnx", "-o", tmp_path / "b", "-s", "heft", "-q")
    assert run.returncode == 0 and "no work for the accelerators" not in run.stderr


def test_build_prints_the_shipped_gap_names_its_gantt_files_and_says_us(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    run = run_hetc("build", MODELS_DIR / "tiny_cnn.onnx", "-o", bundle, "--gantt", "html,perfetto")
    assert run.returncode == 0, run.stderr
    console = run.stdout + run.stderr
    assert "solver gap" in run.stderr and "gap after memory planning" in run.stderr          # progress lines
    assert re.search(r"│ gap\s+│", run.stdout)                                               # summary
    assert not re.search(r"\d us\b", console) and "µs" in console
    assert f"{bundle / 'gantt.html'}" in run.stdout and f"{bundle / 'gantt.json'}" in run.stdout
    report = (bundle / "report.txt").read_text()
    assert re.search(r"^gap\s+[\d.]+%", report, re.M)
    assert not re.search(r"\d us\b", report)
    # one schedule: the summary, the Solver statistics and schedule.json all describe the shipped one
    summary = json.loads((bundle / "manifest.json").read_text())["summary"]
    schedule = json.loads((bundle / "schedule.json").read_text())
    assert summary["gap"] == round(schedule["gap"], 6)
    assert summary["solver"]["makespan_us"] == schedule["makespan_us"] == summary["makespan_us"]
    assert summary["solver"]["gap"] == round(schedule["solver"]["gap"], 6)
    run = run_hetc("build", MODELS_DIR / "tiny_cnn.onnx", "-o", tmp_path / "j", "--json")
    assert {"gap", "makespan_us"} <= set(json.loads(run.stdout)["solver"])
    run = run_hetc("simulate", bundle, "--timing-only")
    assert run.returncode == 0 and "µs" in run.stdout and not re.search(r"\d us\b", run.stdout)


def test_no_raw_onnxruntime_logging_on_stderr(tmp_path: Path) -> None:
    """An unused initializer makes onnxruntime log a coloured warning unless hetc quiets its sessions."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    unused = numpy_helper.from_array(np.ones((4,), np.float32), "unused_w")
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y], [unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "unused.onnx")
    run = run_hetc("build", tmp_path / "unused.onnx", "-o", tmp_path / "b", "--validate", "-q")
    assert run.returncode == 0, run.stderr
    assert "\x1b[" not in run.stderr and "onnxruntime" not in run.stderr


def test_gantt_memory_panel_shows_the_plan_aliases_counted_once(tmp_path: Path) -> None:
    """The occupancy curve's peak is the plan's lower bound in every memory (aliased buffers included)."""
    bundle = tmp_path / "b"
    assert run_hetc("build", MODELS_DIR / "tiny_cnn.onnx", "-o", bundle, "--gantt", "perfetto", "-q").returncode == 0
    memory = json.loads((bundle / "memory.json").read_text())
    assert any(b["alias_of"] for b in memory["buffers"])          # the case that used to be dropped
    events = json.loads((bundle / "gantt.json").read_text())["traceEvents"]
    peaks: dict[str, int] = {}
    for e in events:
        if e.get("ph") == "C" and e["name"].endswith(" live bytes"):
            name = e["name"].removesuffix(" live bytes")
            peaks[name] = max(peaks.get(name, 0), e["args"]["bytes"])
    stats = json.loads((bundle / "manifest.json").read_text())["summary"]["memory"]
    for name, s in stats.items():
        assert peaks.get(name, 0) == s["lower_bound_bytes"], name
