"""The timing-engine section of docs/benchmarks.md: tools/bench_sim.py writes it, tools/bench.py keeps it."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from conftest import REPO


def tool(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their string annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_the_section_is_written_once_and_survives_regeneration(tmp_path: Path) -> None:
    bench_sim, bench = tool("bench_sim"), tool("bench")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Summary\n\nold tables\n\n## Per-stage benchmarks\n\n* links\n")
    facts = {"tasks": 10, "instructions": 20, "events": 30, "repeat": 3, "heap_events": 4, "same": True,
             "makespan_us": 1.0, "shared_makespan_us": 1.0}
    rows = [["SimPy", "40.0", "39.0-41.0", "750", "1", ""], ["hetc engine, no sharing", "10.0", "9.0-11.0",
                                                             "3,000", "4.00", "3.80-4.20"]]
    bench_sim.write_doc_section(doc, bench_sim.timing_section(rows, facts, ["--repeat", "3"]))
    rows[1][4] = "4.50"
    bench_sim.write_doc_section(doc, bench_sim.timing_section(rows, facts, ["--repeat", "3"]))
    text = doc.read_text()
    assert text.count("## Timing engine vs SimPy") == 1 and "| 4.50 |" in text and "| 4.00 |" not in text
    assert text.index("old tables") < text.index("## Timing engine") < text.index("## Per-stage benchmarks")

    regenerated = bench.keep_timing_section(
        doc, "# Benchmarks\n\n## Summary\n\nnew tables\n\n## Per-stage benchmarks\n\n* x\n")
    assert "new tables" in regenerated and "old tables" not in regenerated
    assert regenerated.count("## Timing engine vs SimPy") == 1 and "| 4.50 |" in regenerated
    assert regenerated.index("## Timing engine") < regenerated.index("## Per-stage benchmarks")
    assert bench.keep_timing_section(tmp_path / "missing.md", "# Benchmarks\n") == "# Benchmarks\n"


def test_regeneration_refuses_to_drop_a_section_written_outside_the_markers(tmp_path: Path) -> None:
    bench = tool("bench")
    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Summary\n\nold\n\n### Measured by hand\n\nnotes\n\n"
                   "## Per-stage benchmarks\n\n* links\n")
    with pytest.raises(bench.LostHeadings, match="would drop 1 heading.*Measured by hand"):
        bench.keep_timing_section(doc, "# Benchmarks\n\n## Summary\n\nnew\n\n## Per-stage benchmarks\n\n* x\n")
