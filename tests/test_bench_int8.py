"""tools/bench_int8.py on MobileNetV2: real float and int8 builds side by side, the int8 one validated."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from conftest import REPO


def test_bench_int8_reports_the_int8_build_against_the_float_one(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("bench_int8", REPO / "tools" / "bench_int8.py")
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_int8"] = bench   # dataclasses resolve their string annotations through sys.modules
    spec.loader.exec_module(bench)
    out = tmp_path / "int8.json"
    assert bench.main(["--models", "mobilenet_v2", "--targets", "edge-soc", "--time-limit", "2",
                       "--json", str(out)]) == 0
    (case,) = json.loads(out.read_text())
    fp32, int8 = case["fp32"], case["int8"]
    assert case["passed"] and "43/43 groups within one step" in case["validation"]
    assert int8["macs"] == fp32["macs"] > 0 and int8["macs_integer"] == int8["macs"]   # every MAC is integer
    assert fp32["weight_bytes"] == 4 * int8["weight_bytes"]    # the same weights, a quarter of the bytes
    assert int8["float_weight_dma_bytes"] == 0                 # no float copy of a quantized weight moves
    assert "| mobilenet_v2 | edge-soc | 100.0% |" in capsys.readouterr().out
