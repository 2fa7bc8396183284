"""Load-time bounds: a program whose buffers lie outside their memory, or off its alignment, is refused at load
(and by `hetc simulate`), even when the manifest was re-hashed so the checksums agree."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import pytest

from cli_subprocess import run_hetc
from conftest import MODELS_DIR
from hetc.codegen import load_bundle
from hetc.errors import BundleError

OUT_OF_RANGE = 9_999_999     # beyond edge-soc's 8 MiB npu_sram


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hetc.pipeline import BuildOptions, build
    out = tmp_path_factory.mktemp("bounds") / "tiny"
    return build(MODELS_DIR / "tiny_cnn.onnx", BuildOptions(scheduler="heft")).save(out)


def tamper(built: Path, tmp_path: Path, engine: str, edit: Callable[[dict[str, Any]], bool]) -> tuple[Path, int]:
    """A copy of the bundle whose ``programs/<engine>.json`` has its first instruction that ``edit`` changes
    (``edit`` returns True) edited, with the manifest re-hashed as the loader checks it. Returns the copy and
    the instruction's index."""
    root = tmp_path / "tampered"
    shutil.copytree(built, root)
    name = f"programs/{engine}.json"
    program = json.loads((root / name).read_text())
    index = next(i for i, ins in enumerate(program["instructions"]) if edit(ins))
    raw = json.dumps(program).encode()
    (root / name).write_bytes(raw)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["files"][name] = {"sha256": hashlib.sha256(raw).hexdigest(), "bytes": len(raw)}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root, index


def first_output_in(memory: str, offset: Callable[[int], int]) -> Callable[[dict[str, Any]], bool]:
    def edit(ins: dict[str, Any]) -> bool:
        if ins["op"] != "compute" or ins["outputs"][0]["memory"] != memory:
            return False
        ins["outputs"][0]["offset"] = offset(ins["outputs"][0]["offset"])
        return True
    return edit


def dma_destination_in(memory: str, offset: int) -> Callable[[dict[str, Any]], bool]:
    def edit(ins: dict[str, Any]) -> bool:
        if ins["op"] != "dma" or ins["dst"]["memory"] != memory:
            return False
        ins["dst"]["offset"] = offset
        return True
    return edit


CASES = {
    "out of range": ("npu", first_output_in("npu_sram", lambda _: OUT_OF_RANGE),
                     ["lies outside memory 'npu_sram' (8388608 B)", f"[{OUT_OF_RANGE}, "]),
    "misaligned": ("npu", first_output_in("npu_sram", lambda o: o + 8),
                   ["is not a multiple of memory 'npu_sram''s alignment (64 B)"]),
    "dma destination out of range": ("dma_npu", dma_destination_in("npu_sram", 8 * 2**20 - 64),
                                     ["destination", "lies outside memory 'npu_sram'"]),
}


def test_the_untampered_bundle_loads(built: Path) -> None:
    assert load_bundle(built).programs


@pytest.mark.parametrize("case", CASES)
def test_tampered_program_is_refused_at_load(built: Path, tmp_path: Path, case: str) -> None:
    engine, edit, expected = CASES[case]
    root, index = tamper(built, tmp_path, engine, edit)
    with pytest.raises(BundleError) as info:
        load_bundle(root)
    message = str(info.value)
    for part in (f"engine '{engine}' instruction {index}", "buffer '", "rebuild the bundle", *expected):
        assert part in message, message


@pytest.mark.parametrize("case", CASES)
def test_hetc_simulate_refuses_a_tampered_bundle(built: Path, tmp_path: Path, case: str) -> None:
    engine, edit, expected = CASES[case]
    root, index = tamper(built, tmp_path, engine, edit)
    # The console script's own code path, in a real process: `hetc simulate BUNDLE`.
    run = run_hetc("simulate", root)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: bundle ") and expected[-1] in run.stderr
    assert "Traceback" not in run.stderr
