"""``hetc gantt BUNDLE`` through the real console script: it never touches the bundle, refuses an output
inside it, and draws the same chart as the build-time export (planned, or simulated when the build simulated)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_subprocess import run_hetc
from conftest import MODELS_DIR
from hetc.codegen import load_bundle


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _x_slices(trace_bytes: bytes) -> list[tuple]:
    events = json.loads(trace_bytes)["traceEvents"]
    return sorted((e["name"], e["ts"], e["dur"], json.dumps(e.get("args"), sort_keys=True))
                  for e in events if e.get("ph") == "X")


@pytest.mark.parametrize("validate", [False, True], ids=["planned", "simulated"])
def test_gantt_leaves_the_bundle_intact_and_matches_the_build_export(tmp_path: Path, validate: bool) -> None:
    bundle = tmp_path / "b"
    flags = ["--validate"] if validate else []
    run = run_hetc("build", MODELS_DIR / "tiny_cnn.onnx", "-o", bundle, "--gantt", "perfetto,html", "-q", *flags)
    assert run.returncode == 0, run.stderr
    before = _tree(bundle)
    for fmt, ext in (("perfetto", ".json"), ("html", ".html"), ("png", ".png"), ("svg", ".svg")):
        run = run_hetc("gantt", bundle, "-f", fmt, cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        written = tmp_path / f"b.gantt{ext}"
        assert str(written) in run.stdout and written.stat().st_size > 0
    assert _tree(bundle) == before                       # nothing inside the bundle changed
    load_bundle(bundle)                                  # its checksums still hold
    assert run_hetc("simulate", bundle, "--timing-only").returncode == 0
    # the same chart as the build's: same slices, names, tensor shapes in the tooltips
    exported = (tmp_path / "b.gantt.json").read_bytes()
    assert _x_slices(exported) == _x_slices(before["gantt.json"])
    names = {s[0] for s in _x_slices(exported)}
    assert "conv_0" in names                             # real node names, not "Conv#0"
    if not validate:
        args = [json.loads(s[3]) for s in _x_slices(exported) if s[0] == "conv_0"]
        assert args and any("float32[1x3x32x32]" in i for i in args[0]["inputs"])
    assert exported == before["gantt.json"]
    assert (tmp_path / "b.gantt.html").read_bytes() == before["gantt.html"]


def test_gantt_refuses_an_output_inside_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    assert run_hetc("build", MODELS_DIR / "tiny_cnn.onnx", "-o", bundle, "-q", "-s", "heft").returncode == 0
    before = _tree(bundle)
    for target in (bundle / "gantt.html", bundle / "programs" / "x.html"):
        run = run_hetc("gantt", bundle, "-o", target)
        assert run.returncode == 2
        assert run.stderr.startswith("error: ") and "inside the bundle" in run.stderr and "Traceback" not in run.stderr
    assert _tree(bundle) == before
