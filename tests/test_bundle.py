"""The bundle directory: round trip, determinism, refusal to overwrite, and every kind of corruption."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hetc.codegen import FORMAT_VERSION, EmitOptions, emit, load_bundle
from hetc.errors import BundleError
from hetc.sim import simulate

from test_sim_support import mixed_bundle, mixed_inputs, mixed_plan

OPTIONS = EmitOptions(model_sha256="ab" * 32, model_name="mixed", summary={"makespan_us": 8.5, "nodes": 7},
                      placement_rows=({"node": "conv", "device": "npu", "reason": ""},
                                      {"node": "add", "device": "cpu", "reason": "op not supported"}),
                      report="hetc report\n", extra_files={"gantt.html": b"<html></html>\n"})


def build(tmp: Path, name: str = "b") -> Path:
    graph, target, plan = mixed_plan()
    return emit(graph, plan, target, OPTIONS).save(tmp / name)


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bundle_has_every_file_and_manifest_checksums(tmp_path: Path) -> None:
    root = build(tmp_path)
    files = tree(root)
    for name in ("manifest.json", "constants.bin", "schedule.json", "memory.json", "placement.csv", "report.txt",
                 "gantt.html", "programs/npu.json", "programs/npu.asm", "programs/dma_dsp.asm"):
        assert name in files
    manifest = json.loads(files["manifest.json"])
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["model"] == {"name": "mixed", "sha256": "ab" * 32}
    assert manifest["target"]["toml"].lstrip().startswith('name = "toy"')
    assert manifest["summary"] == {"makespan_us": 8.5, "nodes": 7}
    assert manifest["inputs"][0]["name"] == "x" and manifest["inputs"][0]["memory"] == "dram"
    assert manifest["outputs"][0]["shape"] == [1, 16]
    # build-info.json (wall-clock figures, see test_reproducible.py) is the one file left unhashed
    assert set(manifest["files"]) == set(files) - {"manifest.json", "build-info.json"}
    for name, meta in manifest["files"].items():
        assert meta["sha256"] == hashlib.sha256(files[name]).hexdigest()
    assert files["placement.csv"].decode().splitlines()[0] == "node,device,reason"
    assert not list(tmp_path.glob(".b.*")), "the temporary directory must be gone"


def test_constants_image_holds_weights_at_their_offsets(tmp_path: Path) -> None:
    import numpy as np
    graph, target, plan = mixed_plan()
    bundle = emit(graph, plan, target)
    w = plan.buffer("w@dram")
    image = np.frombuffer(bundle.constants, dtype=np.uint8)
    assert np.array_equal(image[w.offset:w.offset + w.size].view(np.float32).reshape(w.shape),
                          graph.values["w"].const)


def test_round_trip_resimulates_to_the_same_trace(tmp_path: Path) -> None:
    bundle = mixed_bundle()
    before = simulate(bundle, mixed_inputs())
    bundle.save(tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    after = simulate(loaded, mixed_inputs())
    assert after.events == before.events and after.sync_edges == before.sync_edges
    assert after.memory_usage == before.memory_usage
    assert (after.outputs["y"] == before.outputs["y"]).all()
    assert loaded.files() == bundle.files()
    assert loaded.schedule() == bundle.schedule()


def test_same_inputs_give_byte_identical_bundles(tmp_path: Path) -> None:
    first, second = build(tmp_path, "one"), build(tmp_path, "two")
    assert tree(first) == tree(second)


def test_existing_directory_needs_force(tmp_path: Path) -> None:
    root = build(tmp_path)
    bundle = load_bundle(root).with_report("second build\n")
    with pytest.raises(BundleError, match="--force"):
        bundle.save(root)
    bundle.save(root, force=True)
    assert (root / "report.txt").read_text() == "second build\n"
    other = tmp_path / "not_a_bundle"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    for force in (False, True):   # never "pass --force" where --force would refuse too
        with pytest.raises(BundleError, match="not a hetc bundle"):
            bundle.save(other, force=force)
    afile = tmp_path / "notes.txt"
    afile.write_text("precious")
    with pytest.raises(BundleError, match="not a hetc bundle"):
        bundle.save(afile)
    assert (other / "thesis.tex").read_text() == "precious" and afile.read_text() == "precious"


def test_missing_file(tmp_path: Path) -> None:
    root = build(tmp_path)
    (root / "programs" / "dsp.json").unlink()
    with pytest.raises(BundleError, match="missing programs/dsp.json"):
        load_bundle(root)


def test_truncated_constants(tmp_path: Path) -> None:
    root = build(tmp_path)
    data = (root / "constants.bin").read_bytes()
    (root / "constants.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"constants.bin .* is \d+ bytes but the manifest says \d+"):
        load_bundle(root)


def test_edited_program(tmp_path: Path) -> None:
    root = build(tmp_path)
    path = root / "programs" / "npu.json"
    path.write_text(path.read_text().replace('"duration_ns": 1000', '"duration_ns": 1001'))
    with pytest.raises(BundleError, match="npu.json .* does not match its checksum"):
        load_bundle(root)


def test_newer_format_version(tmp_path: Path) -> None:
    root = build(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="newer than this hetc reads.*upgrade hetc"):
        load_bundle(root)


def test_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not a hetc bundle"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path)


def test_extra_files_cannot_escape_the_bundle(tmp_path: Path) -> None:
    bundle = mixed_bundle().with_files({"../evil.txt": b"x"})
    with pytest.raises(BundleError, match="leaves the bundle"):
        bundle.save(tmp_path / "b")
