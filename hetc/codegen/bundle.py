"""The bundle: an in-memory object, its directory form (``Bundle.save``) and ``load_bundle``.

Serialisation is deterministic (sorted keys, no timestamps, fixed line endings) so that the same build gives
byte-identical files. ``manifest.json`` records the sha256 and size of every other file; loading checks them.
Wall-clock figures are the one exception: they are written to ``build-info.json``, which is not hashed.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hetc.codegen.bounds import bounds_message, bounds_violations
from hetc.codegen.build_info import (BUILD_INFO, MANIFEST, read_build_info, split_wall_clock, with_wall_clock,
                                     without_wall_clock)
from hetc.codegen.program import Program
from hetc.destination import interrupts_deferred, make_parent, probe_directory_name, write_error
from hetc.errors import BundleError, HetcError
from hetc.memory.artifact import MemoryPlan
from hetc.schedule.artifact import Schedule

FORMAT_VERSION = 5


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


def _csv_bytes(rows: tuple[dict[str, Any], ...]) -> bytes:
    if not rows:
        return b""
    columns = list(rows[0])
    for row in rows[1:]:
        columns += [c for c in row if c not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@dataclass(frozen=True)
class Bundle:
    manifest: dict[str, Any]                  # without "files" (added, with checksums, when serialised)
    programs: dict[str, Program]              # engine -> program, in the target's engine order
    constants: bytes                          # DRAM image of the read-only region
    schedule_json: dict[str, Any]
    memory_json: dict[str, Any]
    placement_rows: tuple[dict[str, Any], ...] = ()
    report: str = ""
    extra_files: dict[str, bytes] = field(default_factory=dict)

    # ------------------------------------------------------------------ views
    @property
    def inputs(self) -> list[dict[str, Any]]:
        return self.manifest["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return self.manifest["outputs"]

    def schedule(self) -> Schedule:
        return Schedule.from_json(self.schedule_json)

    def memory_plan(self) -> MemoryPlan:
        return MemoryPlan.from_json(self.memory_json, self.schedule())

    def with_summary(self, summary: dict[str, Any]) -> "Bundle":
        return replace(self, manifest={**self.manifest, "summary": summary})

    def with_report(self, report: str) -> "Bundle":
        return replace(self, report=report)

    def with_files(self, files: dict[str, bytes]) -> "Bundle":
        """Add extra files (Gantt exports...) under the given relative paths."""
        return replace(self, extra_files={**self.extra_files, **files})

    # ------------------------------------------------------------------ serialisation
    def files(self) -> dict[str, bytes]:
        """Every hashed file of the bundle directory, ``manifest.json`` (with the checksums) included: a
        function of the model, the target and the options. ``build_info()`` has the rest."""
        files: dict[str, bytes] = {}
        for engine, program in self.programs.items():
            files[f"programs/{engine}.json"] = program.dumps().encode()
            files[f"programs/{engine}.asm"] = program.asm().encode()
        files["constants.bin"] = self.constants
        files["schedule.json"] = _json_bytes(without_wall_clock("schedule.json", self.schedule_json))
        files["memory.json"] = _json_bytes(without_wall_clock("memory.json", self.memory_json))
        files["placement.csv"] = _csv_bytes(self.placement_rows)
        files["report.txt"] = self.report.encode()
        for name, data in self.extra_files.items():
            if name in files or name in (MANIFEST, BUILD_INFO) or Path(name).is_absolute() or ".." in Path(name).parts:
                raise BundleError(f"extra bundle file '{name}' clashes with a bundle file or leaves the bundle; "
                                  "give it another relative name")
            files[name] = data
        checksums = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
                     for name, data in sorted(files.items())}
        files[MANIFEST] = _json_bytes({**without_wall_clock(MANIFEST, self.manifest), "files": checksums})
        return dict(sorted(files.items()))

    def build_info(self) -> dict[str, Any]:
        """The wall-clock figures left out of ``files()``, by file: the content of ``build-info.json``."""
        docs = {MANIFEST: self.manifest, "schedule.json": self.schedule_json, "memory.json": self.memory_json}
        info = {name: split_wall_clock(name, doc)[1] for name, doc in docs.items()}
        return {name: figures for name, figures in info.items() if figures}

    def save(self, directory: str | os.PathLike[str], force: bool = False) -> Path:
        """Write the bundle to ``directory`` atomically (temporary sibling, then rename). An OSError (no
        space, no permission...) becomes a WriteError; Ctrl-C leaves neither a partial bundle nor the sibling."""
        target = check_output_dir(directory, force)
        tmp = _sibling(target, "tmp")
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            files = self.files()
            info = self.build_info()
            if info:
                files[BUILD_INFO] = _json_bytes(info)
            for name, data in files.items():
                path = tmp / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            with interrupts_deferred():
                _move_into_place(tmp, target)
        except OSError as error:
            raise write_error(target, error, "the bundle") from None
        finally:
            with interrupts_deferred():
                shutil.rmtree(tmp, ignore_errors=True)
        return target


def _sibling(target: Path, kind: str) -> Path:
    """The hidden sibling ``save`` writes into ("tmp") or parks a replaced bundle in ("old")."""
    return target.parent / f".{target.name}.{kind}-{os.getpid()}"


def _move_into_place(tmp: Path, target: Path) -> None:
    if not target.exists():
        tmp.rename(target)
        return
    old = _sibling(target, "old")
    target.rename(old)
    try:
        tmp.rename(target)
    except OSError:
        old.rename(target)   # put the previous bundle back rather than lose both
        raise
    shutil.rmtree(old)


def check_output_dir(directory: str | os.PathLike[str], force: bool = False) -> Path:
    """``directory`` as a Path if a bundle may be written there; a BundleError (or a WriteError: parent not
    creatable or writable, name too long) otherwise. The CLI calls it before compiling so a long build does
    not end in a refusal. It creates the parent directory."""
    target = Path(directory)
    if target.exists():
        # (a file or someone else's directory first: "pass --force" would be the wrong advice there)
        if not target.is_dir() or (any(target.iterdir()) and not (target / MANIFEST).exists()):
            raise BundleError(f"'{target}' exists and is not a hetc bundle; refusing to overwrite it even "
                              "with --force; choose another output directory")
        if not force:
            raise BundleError(f"bundle directory '{target}' already exists; pass --force to overwrite it")
    make_parent(target, "the bundle")
    probe = _sibling(target, "tmp")
    shutil.rmtree(probe, ignore_errors=True)   # a leftover of a killed build with this process id
    probe_directory_name(probe, target, "the bundle")    # the parent is writable and the longest name fits
    return target


def load_bundle(directory: str | os.PathLike[str]) -> Bundle:
    """Read a bundle directory, checking its format version, every file's checksum and every program's
    buffers against the target's memories. ``build-info.json`` (wall-clock figures) is optional, not hashed,
    and only ever adds those figures back."""
    root = Path(directory)
    if not (root / MANIFEST).is_file():
        raise BundleError(f"'{root}' is not a hetc bundle (no {MANIFEST}); build one with `hetc build MODEL -o DIR`")
    try:
        manifest = json.loads((root / MANIFEST).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{root / MANIFEST} is not valid JSON ({exc}); rebuild the bundle") from None
    if manifest.get("format") != "hetc-bundle" or not isinstance(manifest.get("format_version"), int):
        raise BundleError(f"{root / MANIFEST} is not a hetc bundle manifest; rebuild the bundle")
    version = manifest["format_version"]
    if version > FORMAT_VERSION:
        raise BundleError(f"bundle '{root}' has format version {version}, newer than this hetc reads "
                          f"({FORMAT_VERSION}); upgrade hetc")
    if version < FORMAT_VERSION:
        raise BundleError(f"bundle '{root}' has old format version {version} (this hetc reads {FORMAT_VERSION}); "
                          "rebuild it with `hetc build`")
    files = manifest.pop("files", {})
    data: dict[str, bytes] = {}
    for name, meta in files.items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"bundle '{root}' is missing {name}; rebuild it with `hetc build`")
        raw = path.read_bytes()
        if len(raw) != meta["bytes"]:
            raise BundleError(f"{name} in bundle '{root}' is {len(raw)} bytes but the manifest says {meta['bytes']} "
                              "(truncated or edited); rebuild the bundle")
        if hashlib.sha256(raw).hexdigest() != meta["sha256"]:
            raise BundleError(f"{name} in bundle '{root}' does not match its checksum (edited after the build); "
                              "rebuild the bundle")
        data[name] = raw
    for required in ("constants.bin", "schedule.json", "memory.json"):
        if required not in data:
            raise BundleError(f"the manifest of bundle '{root}' does not list {required}; rebuild the bundle")
    programs: dict[str, Program] = {}
    for engine in manifest["engines"]:
        name = f"programs/{engine}.json"
        if name not in data:
            raise BundleError(f"the manifest of bundle '{root}' does not list {name}; rebuild the bundle")
        programs[engine] = Program.from_json(json.loads(data[name]))
    _check_bounds(root, manifest, programs)
    info = read_build_info(root)
    manifest = with_wall_clock(manifest, MANIFEST, info)
    known = {MANIFEST, "constants.bin", "schedule.json", "memory.json", "placement.csv", "report.txt"}
    known |= {f"programs/{e}.{ext}" for e in programs for ext in ("json", "asm")}
    rows = tuple(csv.DictReader(io.StringIO(data.get("placement.csv", b"").decode())))
    return Bundle(manifest=manifest, programs=programs, constants=data["constants.bin"],
                  schedule_json=with_wall_clock(json.loads(data["schedule.json"]), "schedule.json", info),
                  memory_json=with_wall_clock(json.loads(data["memory.json"]), "memory.json", info),
                  placement_rows=rows, report=data.get("report.txt", b"").decode(),
                  extra_files={n: d for n, d in data.items() if n not in known})


def _check_bounds(root: Path, manifest: dict[str, Any], programs: dict[str, Program]) -> None:
    """Every buffer of every instruction (and every input/output binding) inside its memory of the embedded
    target, at its alignment; a BundleError naming each offender otherwise."""
    from hetc.target import target_from_toml_text
    toml = (manifest.get("target") or {}).get("toml")
    if not isinstance(toml, str):
        raise BundleError(f"the manifest of bundle '{root}' embeds no target; rebuild the bundle")
    try:
        memories = target_from_toml_text(toml, f"the target embedded in {root / MANIFEST}").memories
    except HetcError as exc:
        raise BundleError(f"{exc}; rebuild the bundle") from None
    bindings = [(kind, b) for kind in ("input", "output") for b in manifest.get(f"{kind}s", ())]
    problems = bounds_violations(programs, memories, bindings)
    if problems:
        raise BundleError(f"bundle '{root}' has instructions whose buffers do not fit its target's memories: "
                          f"{bounds_message(problems)}; the programs were edited or written by a faulty hetc: "
                          "rebuild the bundle with `hetc build`")

