"""``export_gantt`` and ``gantt_bytes``: one entry point for every chart format."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from hetc.errors import HetcError
from hetc.report.timeline import Timeline

GANTT_FORMATS: tuple[str, ...] = ("perfetto", "html", "png", "svg")
# The file suffix of each format, dot included: a bundle holds ``f"gantt{EXTENSIONS[fmt]}"``.
EXTENSIONS: dict[str, str] = {"perfetto": ".json", "html": ".html", "png": ".png", "svg": ".svg"}


def _check_format(fmt: str) -> str:
    key = fmt.strip().lower()
    if key not in GANTT_FORMATS:
        raise HetcError(f"unknown Gantt format {fmt!r}; choose one of {', '.join(GANTT_FORMATS)} "
                        f"(e.g. --gantt html,perfetto)")
    return key


def gantt_bytes(timeline: Timeline, fmt: str) -> bytes:
    """The chart as the bytes of a ``fmt`` file (perfetto | html | png | svg), e.g. for ``Bundle.with_files``."""
    key = _check_format(fmt)
    # Imported lazily: matplotlib costs ~0.5 s to import and only the image formats need it.
    if key == "perfetto":
        from hetc.report.perfetto import render_perfetto
        return render_perfetto(timeline)
    if key == "html":
        from hetc.report.html import render_html
        return render_html(timeline).encode("utf-8")
    from hetc.report.plot import render_image
    return render_image(timeline, key)


def gantt_files(timeline: Timeline, formats: Iterable[str], stem: str = "gantt") -> dict[str, bytes]:
    """``{"gantt.html": ..., "gantt.json": ...}`` for the requested formats: the bundle's Gantt exports."""
    keys = [_check_format(f) for f in formats]
    return {f"{stem}{EXTENSIONS[k]}": gantt_bytes(timeline, k) for k in keys}


def export_gantt(timeline: Timeline, fmt: str, path: str | Path) -> Path:
    """Write ``timeline`` as ``fmt`` (perfetto | html | png | svg) to ``path``; returns the path written."""
    key = _check_format(fmt)
    path = Path(path)
    if not path.parent.exists():
        raise HetcError(f"cannot write the {key} Gantt chart to {path}: directory {path.parent} does not exist; "
                        f"create it first or choose another path")
    path.write_bytes(gantt_bytes(timeline, key))
    return path
