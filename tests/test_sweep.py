"""hetc sweep without Ray: spec parsing and its errors, per-point target derivation (a bad point is a row, not
a crash), resume by content hash, the Pareto front on known rows, the result files, the install hint."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from conftest import MODELS_DIR
from hetc.errors import TargetError
from hetc.sweep import SpecError, derive_target, finish, load_rows, load_spec, pareto_front, run_sweep
from hetc.sweep.derive import base_text, dumps_toml
from hetc.target import load_target
from test_cli import run

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "sweeps" / "npu_sram.toml"


def write_spec(tmp_path: Path, body: str, models: str = f'["{MODELS_DIR / "tiny_cnn.onnx"}"]') -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(f"models = {models}\ntime_limit_s = 1.0\n{body}")
    return path


# ---------------------------------------------------------------------------------------------- spec
def test_the_shipped_spec_is_a_200_point_grid() -> None:
    spec = load_spec(EXAMPLE)
    points = spec.points()
    assert len(points) == 200 and len(spec.models) == 5
    assert len({p.overrides for p in points}) == 40
    assert {p.model for p in points if p.validate} == {"tiny_cnn.onnx"}
    assert set(spec.search) <= set(spec.axes)


def test_unquoted_dotted_axis_keys_are_read_as_the_same_axis(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, "[axes]\nmemories.npu_sram.size = ['1MiB', '2MiB']\n"))
    assert spec.axes == {"memories.npu_sram.size": ("1MiB", "2MiB")}


@pytest.mark.parametrize("body, models, message", [
    ("", "[]", "key 'models': expected a non-empty array"),
    ("", '["nowhere.onnx"]', "'nowhere.onnx' does not exist"),
    ("colour = 1\n", None, "key 'colour': is not a known key"),
    ("[axes]\n'devices.npu.launch_ns' = []\n", None, "expected a non-empty array of values"),
    ("[axes]\n'devices.npu.launch_ns' = [1, 1]\n", None, "a value is listed twice"),
    ("[search]\n'devices.npu.launch_ns' = { min = 5, max = 1 }\n", None, "min < max"),
    ("[search]\n'devices.npu.launch_ns' = [1, 2]\n", None, "expected { min = ..., max = ..."),
    ("validate = ['moe.onnx']\n", None, "'moe.onnx' is not one of the models"),
    ("time_limit_s = -1\n", None, "TOML syntax error"),   # time_limit_s is set twice by write_spec
])
def test_spec_mistakes_name_the_key_and_the_fix(tmp_path: Path, body: str, models: str | None,
                                                 message: str) -> None:
    path = write_spec(tmp_path, body) if models is None else write_spec(tmp_path, body, models)
    with pytest.raises(SpecError, match=re.escape(message)):
        load_spec(path)


def test_a_missing_spec_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "none.toml")


# ---------------------------------------------------------------------------------------------- derivation
def test_the_toml_writer_round_trips_every_preset() -> None:
    import tomllib
    for name in ("edge-soc", "multi-npu", "cpu-only"):
        text = base_text(name)
        assert tomllib.loads(dumps_toml(tomllib.loads(text))) == tomllib.loads(text)


def test_a_point_target_has_its_keys_set_and_the_rest_unchanged() -> None:
    base = load_target("edge-soc")
    t = derive_target(base.source, {"memories.npu_sram.size": "2MiB", "devices.npu.peak.int8": 2048.0,
                                    "dma.dma_npu.bandwidth": 8.0})
    assert t.memories["npu_sram"].size == 2 * 2**20
    assert t.devices["npu"].peak["int8"] == 2048.0
    assert t.dmas["dma_npu"].bandwidth == 8.0
    assert t.dmas["dma_dsp"] == base.dmas["dma_dsp"] and t.devices["cpu"] == base.devices["cpu"]
    assert t.name.startswith("edge-soc+")


@pytest.mark.parametrize("overrides, message", [
    ({"memories.npu_sram.size": "lots"}, "'lots' is not a size"),
    ({"devices.npu.launch_ns": -5}, "-5 is negative"),
    ({"devices.npu.colour": 1}, "'colour': is not a known key"),
    ({"memories.l3.size": "1MiB"}, "no table 'memories.l3'"),
    ({"dma.dma_gpu.bandwidth": 1.0}, "no entry named 'dma_gpu'"),
])
def test_a_bad_point_is_a_target_error_from_the_loader(overrides: dict, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        derive_target(base_text("edge-soc"), overrides)


def test_a_bad_point_is_recorded_and_the_sweep_goes_on(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, "[axes]\n'memories.npu_sram.size' = ['1MiB', 'lots', -4]\n"))
    rows = run_sweep(spec, tmp_path / "out", serial=True)
    assert [r["status"] for r in rows] == ["ok", "failed", "failed"]
    assert "TargetError" in rows[1]["error"] and "'lots' is not a size" in rows[1]["error"]
    assert "-4 is not positive" in rows[2]["error"]
    assert rows[0]["makespan_sim_us"] > 0 and rows[0]["util_npu"] > 0


# ---------------------------------------------------------------------------------------------- resume
def test_resume_skips_finished_points_by_content_hash(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, "[axes]\n'devices.npu.launch_ns' = [1000, 2000, 3000]\n"))
    out = tmp_path / "out"
    first = run_sweep(spec, out, serial=True, points=spec.points()[:2])
    events: list[dict] = []
    rows = run_sweep(spec, out, serial=True, resume=True, progress=events.append)
    assert events[0] == {"event": "start", "total": 3, "skipped": 2}
    assert [e["row"]["devices.npu.launch_ns"] for e in events[1:]] == [3000]
    assert rows[:2] == first and len(load_rows(out)) == 3
    # a torn last line (a sweep killed while writing) is dropped and its point redone
    with open(out / "points.jsonl", "a") as f:
        f.write('{"key": "half')
    assert len(load_rows(out)) == 3


def test_an_old_sweep_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    from hetc.errors import WriteError
    spec = load_spec(write_spec(tmp_path, ""))
    run_sweep(spec, tmp_path / "out", serial=True)
    with pytest.raises(WriteError, match="--resume"):
        run_sweep(spec, tmp_path / "out", serial=True)


def test_a_changed_option_is_a_new_point(tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_sweep(load_spec(write_spec(tmp_path, "")), out, serial=True)
    (tmp_path / "spec.toml").write_text((tmp_path / "spec.toml").read_text().replace("1.0", "2.0"))
    rows = run_sweep(load_spec(tmp_path / "spec.toml"), out, serial=True, resume=True)
    assert len(rows) == 1 and len(load_rows(out)) == 2


# ---------------------------------------------------------------------------------------------- results
def _row(model: str, makespan: float, sram: float, gops: float, status: str = "ok") -> dict:
    return {"model": model, "makespan_sim_us": makespan, "sram_bytes": sram, "peak_gops": gops, "status": status}


def test_pareto_front_on_known_rows() -> None:
    rows = [_row("a", 10, 4, 1), _row("a", 20, 2, 1), _row("a", 20, 4, 1),   # 3rd dominated by both
            _row("a", 5, 8, 2), _row("a", 10, 4, 1),                           # a tie is not a domination
            _row("a", 1, 1, 1, status="failed"),                              # failed: never on the front
            _row("b", 30, 4, 1)]                                               # alone in its model
    assert pareto_front(rows) == [True, True, False, True, True, False, True]
    assert pareto_front(rows, group=None)[6] is False


def test_finish_writes_tables_plots_and_a_self_contained_report(tmp_path: Path) -> None:
    rows = [{**_row("m", 10.0 * i, 2.0**20 * i, 100.0), "key": str(i), "memories.npu_sram.size": f"{i}MiB"}
            for i in range(1, 4)] + [{"key": "x", "model": "m", "memories.npu_sram.size": "bad", "status": "failed",
                                      "error": "TargetError: 'bad' is not a size"}]
    files = {f.name for f in finish(rows, ["memories.npu_sram.size"], tmp_path, "t")}
    assert {"results.csv", "results.parquet", "pareto.png", "pareto.svg", "report.html",
            "makespan-vs-memories-npu-sram-size.png", "makespan-vs-memories-npu-sram-size.svg"} <= files
    html = (tmp_path / "report.html").read_text()
    assert html.count("<svg") == 2 and "<img" not in html and "<script" not in html and "<link" not in html
    assert "&#x27;bad&#x27; is not a size" in html
    import pyarrow.parquet as pq
    table = pq.read_table(tmp_path / "results.parquet").to_pylist()
    assert [r["pareto"] for r in table] == [True, False, False, False]
    assert (tmp_path / "results.csv").read_text().splitlines()[0].startswith("model,makespan_sim_us")


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_serial_sweep_writes_results(capsys, monkeypatch, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "[axes]\n'memories.npu_sram.size' = ['1MiB', 'x']\n")
    code, out, err = run(capsys, monkeypatch, "sweep", spec, "-o", tmp_path / "out", "--serial")
    assert code == 0, err
    assert "2 points, 1 failed" in out
    rows = [json.loads(line) for line in (tmp_path / "out" / "points.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "failed"] and (tmp_path / "out" / "report.html").is_file()


def test_cli_without_ray_says_how_to_install_it(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray raises ImportError
    code, _, err = run(capsys, monkeypatch, "sweep", write_spec(tmp_path, ""), "-o", tmp_path / "out")
    assert code == 2 and err.startswith("error: ") and "pip install 'hetc[sweep]'" in err
    assert "Traceback" not in err


def test_cli_spec_error_exits_2(capsys, monkeypatch, tmp_path: Path) -> None:
    code, _, err = run(capsys, monkeypatch, "sweep", tmp_path / "none.toml", "-o", tmp_path / "out", "--serial")
    assert code == 2 and "error: " in err and "does not exist" in err


def test_regenerating_benchmarks_md_keeps_the_sweep_section(tmp_path: Path) -> None:
    from test_bench_sim_doc import tool
    bench = tool("bench")
    doc = tmp_path / "benchmarks.md"
    section = ("<!-- sweep: written from tools/bench_sweep.py -->\n## Design-space sweep on Ray\n\nfigures\n\n"
               "<!-- end of the sweep section -->")
    doc.write_text(f"# Benchmarks\n\nold\n\n{section}\n\n## Per-stage benchmarks\n\n* links\n")
    regenerated = bench.keep_timing_section(doc, "# Benchmarks\n\nnew\n\n## Per-stage benchmarks\n\n* links\n")
    assert "old" not in regenerated and regenerated.count(section) == 1
    assert regenerated.index("new") < regenerated.index(section) < regenerated.index("## Per-stage")


def test_the_progress_bar_says_when_ray_is_up() -> None:
    import io

    from rich.console import Console

    from hetc.sweep.progress import SweepProgress
    progress = SweepProgress(Console(file=io.StringIO(), force_terminal=True, width=100))
    progress({"event": "start", "total": 3, "skipped": 1})
    progress({"event": "point", "row": {"status": "ok"}})   # run by the driver while Ray starts
    progress({"event": "ray", "cpus": 1, "driver": True, "init_s": 4.0})
    progress({"event": "point", "row": {"status": "failed"}})
    task = progress._bar.tasks[0]
    progress.stop()
    assert task.description == "sweep on Ray (1 CPU + the driver) (1 done before)"
    assert (task.completed, task.total, progress.failed) == (2, 2, 1)


def test_a_point_row_has_its_cpu_time(tmp_path: Path) -> None:
    rows = run_sweep(load_spec(write_spec(tmp_path, "")), tmp_path / "out", serial=True)
    assert rows[0]["status"] == "ok" and 0 < rows[0]["cpu_s"]


def test_the_sweep_benchmark_spreads_a_smaller_run_over_every_model() -> None:
    from test_bench_sim_doc import tool
    bench = tool("bench_sweep")
    grid = load_spec(EXAMPLE).points()
    chosen = bench.choose(grid, 20)
    assert len(set(chosen)) == 20 and {p.model for p in chosen} == {p.model for p in grid}
    assert bench.choose(grid, None) == grid == bench.choose(grid, 500)
    # seconds per point between the 10th and 90th percentile of completions: the start and the tail left out
    assert bench.steady_s_per_point([10.0] + [10.0 + 0.5 * i for i in range(1, 20)]) == 0.5
