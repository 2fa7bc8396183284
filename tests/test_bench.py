"""tools/bench.py --quick end to end: real builds, real CP-SAT, real simulation and onnxruntime."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", REPO / "tools" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses resolve their string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def quick_run(bench, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench")
    assert bench.main(["--quick", "--out", str(out / "benchmarks.md"), "--json", str(out / "results.json")]) == 0
    return json.loads((out / "results.json").read_text()), (out / "benchmarks.md").read_text()


def test_quick_measures_real_schedules(quick_run: tuple[dict, str]) -> None:
    results, _ = quick_run
    cases = results["cases"]
    assert {(c["model"], c["target"]) for c in cases} == {("tiny_cnn", "edge-soc"), ("moe", "edge-soc")}
    for case in cases:
        assert case["error"] is None
        spans = case["makespan_us"]
        assert spans["heft"] > 0 and spans["cpsat"] > 0
        assert spans["cpsat"] <= spans["heft"]  # CP-SAT starts from the HEFT plan and only improves on it
        assert 0 < case["lower_bound_us"] <= spans["cpsat"]
        # every node of the model is placed, but the views the build makes of Split/Slice (alias ops) run nowhere
        assert 0 < sum(case["placement"].values()) <= case["nodes"]


def test_quick_validates_and_times_the_simulation(quick_run: tuple[dict, str]) -> None:
    results, _ = quick_run
    for case in results["cases"]:
        assert case["validation"]["passed"]
        assert case["simulated_makespan_us"] > 0
        assert case["sim_warm_s"] > 0 and case["ort_1thread_s"] > 0 and case["ort_default_s"] > 0
        assert all(m["peak_bytes"] >= m["lower_bound_bytes"] for m in case["memory"].values())


def test_quick_markdown_has_machine_summary_and_tables(quick_run: tuple[dict, str]) -> None:
    _, text = quick_run
    assert "python tools/bench.py --quick" in text and "--out" not in text
    assert "load average" in text and "onnxruntime" in text
    assert "CP-SAT / HEFT makespan, geometric mean on edge-soc" in text
    assert "lower bound at or below the shipped plan: 2/2 builds" in text   # tiny_cnn and moe, quick mode
    for heading in ("## Schedules", "## Compile time", "## Memory", "## Simulation and validation"):
        assert heading in text
    tiny_row = next(line for line in text.splitlines() if line.startswith("| tiny_cnn | edge-soc | "))
    assert float(tiny_row.split("|")[3]) > 0  # the node count column holds a measured number
    assert "[docs/memory.md](memory.md#benchmark)" in text


def test_a_failing_build_is_recorded_not_raised(bench, tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a protobuf")
    case = bench.run_case("broken", broken, "edge-soc", ["heft"], 1.0, 1, lambda message: None)
    assert case.error.startswith("import: ModelError") and case.nodes is None
    names, _, _, rows = bench.tables([case], ["heft", "cpsat"])[-1]
    assert names == "Failures" and rows[0][:2] == ["broken", "edge-soc"] and "ModelError" in rows[0][2]


def test_unknown_model_names_the_choices(bench) -> None:
    from hetc.errors import OptionError

    with pytest.raises(OptionError, match="unknown model.*tiny_cnn"):
        bench.run_benchmark(["no_such_model"], ["edge-soc"], ["heft"], 1.0)
