"""``export_gantt``: one entry point for every chart format."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from hetc.errors import HetcError
from hetc.report.timeline import Timeline

GANTT_FORMATS: tuple[str, ...] = ("perfetto", "html", "png", "svg")
# The file name each format gets inside a bundle (``gantt.<ext>``).
EXTENSIONS: dict[str, str] = {"perfetto": "json", "html": "html", "png": "png", "svg": "svg"}


def _writer(fmt: str) -> Callable[[Timeline, Path], Path]:
    # Imported lazily: matplotlib costs ~0.5 s to import and only the image formats need it.
    if fmt == "perfetto":
        from hetc.report.perfetto import write_perfetto
        return write_perfetto
    if fmt == "html":
        from hetc.report.html import write_html
        return write_html
    from hetc.report.plot import write_image
    return lambda timeline, path: write_image(timeline, path, fmt)


def export_gantt(timeline: Timeline, fmt: str, path: str | Path) -> Path:
    """Write ``timeline`` as ``fmt`` (perfetto | html | png | svg) to ``path``; returns the path written."""
    key = fmt.strip().lower()
    if key not in GANTT_FORMATS:
        raise HetcError(f"unknown Gantt format {fmt!r}; choose one of {', '.join(GANTT_FORMATS)} "
                        f"(e.g. --gantt html,perfetto)")
    path = Path(path)
    if not path.parent.exists():
        raise HetcError(f"cannot write the {key} Gantt chart to {path}: directory {path.parent} does not exist; "
                        f"create it first or choose another path")
    return _writer(key)(timeline, path)
