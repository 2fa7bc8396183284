"""The command line: every command end to end, and every user mistake as `error: ...` with exit status 2."""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS_DIR
from hetc.cli import main

TINY = MODELS_DIR / "tiny_cnn.onnx"


def run(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """Run ``hetc ARGS`` in-process, as the console script does; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["hetc", *map(str, args)])
    try:
        code = main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def hetc(capsys, monkeypatch):
    return lambda *args: run(capsys, monkeypatch, *args)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hetc.api import compile
    out = tmp_path_factory.mktemp("cli") / "bundle"
    compile(TINY, out, scheduler="heft")
    return out


def test_version(hetc) -> None:
    code, out, _ = hetc("--version")
    assert code == 0 and out.startswith("hetc 0.")


def test_targets_list_and_show(hetc) -> None:
    code, out, _ = hetc("targets", "list")
    assert code == 0 and all(name in out for name in ("edge-soc", "cpu-only", "multi-npu"))
    code, out, _ = hetc("targets", "show", "edge-soc")
    import tomllib
    assert code == 0 and tomllib.loads(out)["name"] == "edge-soc"  # the TOML text, unwrapped
    code, out, _ = hetc("targets", "show", "multi-npu", "--json")
    assert code == 0 and len([d for d in json.loads(out)["devices"]]) >= 5


def test_inspect_json_has_static_shapes_and_a_device_table(hetc) -> None:
    code, out, _ = hetc("inspect", TINY, "--json")
    report = json.loads(out)
    assert code == 0 and report["target"] == "edge-soc" and len(report["nodes"]) == 9
    assert all(d > 0 for n in report["nodes"] for o in n["outputs"] for d in o["shape"])
    conv = next(n for n in report["nodes"] if n["op"] == "Conv+Relu")   # Relu fused as the Conv's epilogue
    assert conv["devices"]["npu"] == {"ok": True} and "not in dsp's op list" in conv["devices"]["dsp"]["reason"]


def test_inspect_table(hetc) -> None:
    code, out, _ = hetc("inspect", TINY, "--target", "multi-npu")
    assert code == 0 and "op histogram" in out and "Conv" in out


def test_build_json_summary_has_the_design_keys(hetc, tmp_path: Path) -> None:
    code, out, err = hetc("build", TINY, "-o", tmp_path / "b", "--scheduler", "heft", "--json", "--validate")
    summary = json.loads(out)
    assert code == 0 and err == ""  # --json keeps progress off both streams
    for key in ("model", "target", "scheduler", "nodes", "placement", "makespan_us", "lower_bound_us", "gap",
                "solver", "compile_s", "stage_s", "memory", "simulated_makespan_us", "validation"):
        assert key in summary
    assert summary["validation"]["passed"] and sum(summary["placement"].values()) == summary["nodes"]
    assert (tmp_path / "b" / "manifest.json").is_file() and (tmp_path / "b" / "placement.csv").is_file()


def test_build_shows_progress_and_summary_and_gantt(hetc, tmp_path: Path) -> None:
    code, out, err = hetc("build", TINY, "-o", tmp_path / "b", "--scheduler", "greedy", "--gantt", "html,svg")
    assert code == 0 and "schedule" in err and "makespan" in out
    assert (tmp_path / "b" / "gantt.html").is_file() and (tmp_path / "b" / "gantt.svg").is_file()
    code, out, err = hetc("build", TINY, "-o", tmp_path / "b", "--scheduler", "greedy", "--quiet")
    assert code == 2 and "already exists; pass --force" in err
    code, out, err = hetc("build", TINY, "-o", tmp_path / "b", "--scheduler", "greedy", "--quiet", "--force")
    assert code == 0 and out == "" and err == ""


def test_simulate_writes_outputs(hetc, bundle: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "x.npz"
    np.savez(inputs, x=np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32))
    code, out, _ = hetc("simulate", bundle, "--inputs", inputs, "--outputs", tmp_path / "y.npz", "--json")
    stats = json.loads(out)
    assert code == 0 and stats["simulated_makespan_us"] > 0
    with np.load(tmp_path / "y.npz") as y:
        assert y["logits"].shape == (1, 10)
    code, out, _ = hetc("simulate", bundle, "--timing-only")
    assert code == 0 and "simulated makespan" in out


def test_validate_model_and_bundle(hetc, bundle: Path) -> None:
    code, out, _ = hetc("validate", TINY, "--scheduler", "heft", "--json")
    assert code == 0 and json.loads(out)["passed"]
    code, out, _ = hetc("validate", bundle, "--model", TINY)
    assert code == 0 and "PASSED" in out
    code, _, err = hetc("validate", bundle)
    assert code == 2 and "pass --model" in err
    code, _, err = hetc("validate", bundle, "--model", MODELS_DIR / "moe.onnx")
    assert code == 2 and "not the model this bundle was built from" in err


def test_gantt_planned_and_simulated(hetc, bundle: Path, tmp_path: Path) -> None:
    code, _, _ = hetc("gantt", bundle, "--format", "perfetto", "-o", tmp_path / "t.json")
    assert code == 0 and json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    code, _, _ = hetc("gantt", bundle, "--format", "png", "-o", tmp_path / "t.png", "--simulated")
    assert code == 0 and (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    code, _, err = hetc("gantt", bundle, "--format", "gif")
    assert code == 2 and "unknown Gantt format 'gif'" in err


@pytest.mark.parametrize("make, args, message", [
    (None, ["inspect", "{tmp}/missing.onnx"], "does not exist"),
    (None, ["inspect", "{tmp}"], "directory"),
    ("garbage", ["inspect", "{tmp}/bad.onnx"], "ONNX"),
    ("truncated", ["inspect", "{tmp}/bad.onnx"], "ONNX"),
    (None, ["inspect", str(TINY), "--target", "no-such-chip"], "no-such-chip"),
    (None, ["inspect", str(TINY), "--shape", "x=1xAx3"], "x=1xAx3"),
    (None, ["inspect", str(TINY), "--shape", "nope=1x3x32x32"], "nope"),
    (None, ["build", str(TINY), "-o", "{tmp}/o", "--scheduler", "magic"], "magic"),
    (None, ["build", str(TINY), "-o", "{tmp}/o", "--scheduler", "single:gpu"], "gpu"),
    (None, ["build", str(TINY), "-o", "{tmp}/o", "--npu-precision", "int3"], "int3"),
    (None, ["simulate", "{tmp}"], "not a hetc bundle"),
])
def test_user_mistakes_exit_2_without_traceback(hetc, tmp_path: Path, make, args, message) -> None:
    if make == "garbage":
        (tmp_path / "bad.onnx").write_bytes(b"this is not a protobuf \x00\xff" * 10)
    elif make == "truncated":
        (tmp_path / "bad.onnx").write_bytes(TINY.read_bytes()[:500])
    code, out, err = hetc(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2, (out, err)
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_warnings_reach_the_user_as_one_warning_line(monkeypatch, capsys):
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)   # restored after the test
    monkeypatch.setattr(sys, "argv", ["hetc", "targets", "list"])
    main()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("onnxruntime cannot load the model; the reference outputs come from onnx.reference instead",
                      RuntimeWarning)
    err = capsys.readouterr().err
    assert "warning: onnxruntime cannot load the model; the reference outputs come from onnx.reference" in err
    assert "RuntimeWarning" not in err and ".py:" not in err


def test_inspect_table_gives_each_output_its_dtype(hetc, monkeypatch: pytest.MonkeyPatch) -> None:
    # a quantized model's integer tensors show as such (issue 16: inspect gives the dtype per tensor)
    monkeypatch.setenv("COLUMNS", "200")   # a terminal wide enough that rich shortens no cell
    code, out, _ = hetc("inspect", MODELS_DIR / "mobilenet_v2_qdq.onnx", "--target", "edge-soc")
    assert code == 0 and "int8[1x16x48x48]" in out and "float32[1x100]" in out
