"""A sweep's results: the table (CSV always, Parquet when pyarrow or pandas is installed), the Pareto front,
plots (makespan against each axis, the front) as PNG and SVG, and a self-contained HTML report."""
from __future__ import annotations

import csv
import html
import io
import math
from pathlib import Path
from typing import Any, Sequence

from hetc.sweep.point import OK

OBJECTIVES = ("makespan_sim_us", "sram_bytes", "peak_gops")   # all minimised


def pareto_front(rows: Sequence[dict[str, Any]], objectives: Sequence[str] = OBJECTIVES,
                 group: str | None = "model") -> list[bool]:
    """For each row, whether no other successful row of the same ``group`` (model) is at least as good in
    every objective and better in one. Failed rows are never on the front."""
    marks = [False] * len(rows)
    ok = [i for i, r in enumerate(rows) if r.get("status") == OK and all(_num(r.get(o)) for o in objectives)]
    for i in ok:
        a = [float(rows[i][o]) for o in objectives]
        dominated = False
        for j in ok:
            if j == i or (group and rows[j].get(group) != rows[i].get(group)):
                continue
            b = [float(rows[j][o]) for o in objectives]
            if all(y <= x for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b)):
                dominated = True
                break
        marks[i] = not dominated
    return marks


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    return cols


def write_tables(rows: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    """``results.csv`` and, when pyarrow or pandas is importable, ``results.parquet``."""
    cols = columns(rows)
    written = [out / "results.csv"]
    with open(written[0], "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c, "") for c in cols})
    table = {c: [_cell(r.get(c)) for r in rows] for c in cols}
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table(table), out / "results.parquet")
        written.append(out / "results.parquet")
    except ImportError:
        try:
            import pandas as pd
            pd.DataFrame(table).to_parquet(out / "results.parquet")
            written.append(out / "results.parquet")
        except ImportError:
            pass   # the CSV holds the same rows
    return written


def _cell(v: Any) -> Any:
    """A Parquet column has one type: axis values such as "4MiB" next to 4194304 become strings."""
    return v if v is None or isinstance(v, (bool, int, float)) else str(v)


def axis_names(rows: Sequence[dict[str, Any]], axes: Sequence[str]) -> list[str]:
    return [a for a in axes if any(a in r for r in rows)]


def plot(rows: Sequence[dict[str, Any]], axes: Sequence[str], out: Path) -> list[Path]:
    """makespan-vs-<axis> per axis and pareto.png/.svg; returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if r.get("status") == OK]
    models = sorted({r["model"] for r in ok})
    files: list[Path] = []
    for axis in axis_names(ok, axes):
        fig, ax = plt.subplots(figsize=(6, 4))
        values = sorted({str(r[axis]) for r in ok}, key=_sort_key)
        for m in models:
            pts: dict[str, list[float]] = {}
            for r in ok:
                if r["model"] == m:
                    pts.setdefault(str(r[axis]), []).append(r["makespan_sim_us"])
            xs = [v for v in values if v in pts]
            ax.plot([values.index(v) for v in xs], [min(pts[v]) for v in xs], marker="o", label=m)
        ax.set_xticks(range(len(values)), values, rotation=30)
        ax.set_xlabel(axis)
        ax.set_ylabel("simulated makespan (µs, best over other axes)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.set_title(f"makespan against {axis}")
        fig.tight_layout()
        files += _save(fig, out / f"makespan-vs-{_slug(axis)}")
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for m in models:
        mine = [r for r in ok if r["model"] == m]
        ax.scatter([r["sram_bytes"] / 2**20 for r in mine], [r["makespan_sim_us"] for r in mine], s=12, alpha=0.4)
        front = sorted((r for r in mine if r.get("pareto")), key=lambda r: r["sram_bytes"])
        ax.plot([r["sram_bytes"] / 2**20 for r in front], [r["makespan_sim_us"] for r in front], marker="D",
                label=f"{m} (front)")
    ax.set_xlabel("on-chip SRAM (MiB)")
    ax.set_ylabel("simulated makespan (µs)")
    ax.set_yscale("log")
    ax.set_title("Pareto front: makespan, SRAM and peak compute")
    ax.legend(fontsize=7)
    fig.tight_layout()
    files += _save(fig, out / "pareto")
    plt.close(fig)
    return files


def _save(fig: Any, stem: Path) -> list[Path]:
    fig.savefig(stem.with_suffix(".png"), dpi=110)
    fig.savefig(stem.with_suffix(".svg"))
    return [stem.with_suffix(".png"), stem.with_suffix(".svg")]


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s).strip("-")


def _sort_key(v: str) -> tuple:
    from hetc.target.loader import parse_size
    try:
        return (0, float(parse_size(v)))
    except ValueError:
        return (1, v)


def write_html(rows: Sequence[dict[str, Any]], plots: Sequence[Path], out: Path, title: str) -> Path:
    """report.html: the SVG plots inlined and the table of every row, with no external file or script."""
    cols = columns(rows)
    buf = io.StringIO()
    failed = sum(r.get("status") != OK for r in rows)
    buf.write(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>"
              "body{font-family:sans-serif;margin:1em}table{border-collapse:collapse;font-size:12px}"
              "td,th{border:1px solid #ccc;padding:2px 5px}tr.front{background:#e8f5e9}"
              "tr.failed{background:#fdecea}.plots svg{max-width:48%;height:auto}</style></head><body>")
    buf.write(f"<h1>{html.escape(title)}</h1><p>{len(rows)} points, {failed} failed, "
              f"{sum(bool(r.get('pareto')) for r in rows)} on the Pareto front (green).</p><div class='plots'>")
    for p in plots:
        if p.suffix == ".svg":
            svg = p.read_text(encoding="utf-8")
            buf.write(svg[svg.find("<svg"):])
    buf.write("</div><table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
    for r in rows:
        cls = "failed" if r.get("status") != OK else "front" if r.get("pareto") else ""
        buf.write(f"<tr class='{cls}'>" + "".join(f"<td>{html.escape(_show(r.get(c)))}</td>" for c in cols)
                  + "</tr>")
    buf.write("</table></body></html>")
    path = out / "report.html"
    path.write_text(buf.getvalue(), encoding="utf-8")
    return path


def _show(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def finish(rows: list[dict[str, Any]], axes: Sequence[str], out: Path, title: str) -> list[Path]:
    """Mark the front, write tables, plots and the report; returns every file written."""
    for r, front in zip(rows, pareto_front(rows)):
        r["pareto"] = front
    files = write_tables(rows, out)
    plots = plot(rows, axes, out)
    return files + plots + [write_html(rows, plots, out, title)]
