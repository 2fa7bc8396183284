"""The HTML Gantt page: structure, self-containment, and (when Chromium is installed) a real browser run."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from hetc.report import Timeline, export_gantt
from test_report_artifacts import make_all

SVG_NAMESPACE = "http://www.w3.org/2000/svg"   # an identifier for createElementNS, never fetched


@pytest.fixture(scope="module")
def artifacts():
    return make_all(30)


@pytest.fixture(scope="module")
def pages(artifacts, tmp_path_factory):
    graph, target, schedule, plan, sim = artifacts
    out = tmp_path_factory.mktemp("html")
    timelines = {"planned": Timeline.from_schedule(schedule, graph, plan, target),
                 "simulated": Timeline.from_simulation(sim, schedule, plan, target)}
    return {k: (export_gantt(t, "html", out / f"{k}.html"), t) for k, t in timelines.items()}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: dict[str, list[str]] = {}
        self._open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open.append(dict(attrs).get("class") or tag)

    def handle_endtag(self, tag):
        if self._open:
            self._open.pop()

    def handle_data(self, data):
        if self._open:
            self.text.setdefault(self._open[-1], []).append(data)


def _parse(path: Path) -> _Collector:
    parser = _Collector()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


@pytest.mark.parametrize("which", ["planned", "simulated"])
def test_one_lane_group_and_label_per_engine(pages, which):
    path, timeline = pages[which]
    parsed = _parse(path)
    lanes = [a["data-engine"] for tag, a in parsed.tags if tag == "g" and a.get("class") == "lane"]
    assert lanes == [lane.engine for lane in timeline.lanes]
    assert sorted(parsed.text["lane-label"]) == sorted(lane.label for lane in timeline.lanes)
    slices = [a for tag, a in parsed.tags if tag == "rect" and (a.get("class") or "").startswith("slice ")]
    assert len(slices) == len(timeline.slices)
    memories = [a["data-memory"] for tag, a in parsed.tags if tag == "g" and a.get("class") == "memory"]
    assert memories == [m.memory for m in timeline.memories] and memories
    legend = [a["data-class"] for tag, a in parsed.tags if a.get("class") == "legend-item"]
    assert legend == timeline.op_classes()
    for control in ("zoom-in", "zoom-out", "zoom-reset", "tooltip", "show-flows"):
        assert any(a.get("id") == control for _, a in parsed.tags), control


@pytest.mark.parametrize("which", ["planned", "simulated"])
def test_page_is_self_contained(pages, which):
    path, _ = pages[which]
    text = path.read_text(encoding="utf-8")
    parsed = _parse(path)
    for tag, attrs in parsed.tags:
        assert "src" not in attrs and "href" not in attrs, (tag, attrs)
        assert tag not in ("link", "iframe", "img", "object", "embed"), tag
    assert re.findall(r"https?://[^\s'\"<>]+", text) == [SVG_NAMESPACE]
    assert "//cdn" not in text and "@import" not in text and "fetch(" not in text and "XMLHttpRequest" not in text
    assert all(m == "url(#" for m in re.findall(r"url\(.?", text))


def test_tooltip_data_holds_op_details(pages):
    path, timeline = pages["planned"]
    text = path.read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="hetc-data">(.*?)</script>', text, re.S).group(1)
    data = json.loads(block)
    assert len(data["slices"]) == len(timeline.slices)
    conv = next(s for s in data["slices"] if s["cls"] == "conv")
    assert conv["args"]["op"] == "Conv" and conv["args"]["inputs"] and conv["args"]["outputs"]
    assert data["makespan"] == pytest.approx(timeline.makespan_us)


def test_script_breaking_text_in_names_is_escaped(artifacts, tmp_path):
    graph, target, schedule, plan, sim = artifacts
    graph.nodes[0].name = "</script><b>evil</b>"
    try:
        path = export_gantt(Timeline.from_schedule(schedule, graph, plan, target), "html", tmp_path / "x.html")
    finally:
        graph.nodes[0].name = "conv_0"
    text = path.read_text(encoding="utf-8")
    assert "</script><b>" not in text and "<\\/script>" in text


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium at /usr/bin/chromium or on PATH "
                                                "(apt-get install -y chromium to run the browser check)")
@pytest.mark.parametrize("which", ["planned", "simulated"])
def test_page_runs_in_headless_chromium(pages, which):
    """Load the page with #selftest: the script drives zoom buttons, the wheel, a drag and the tooltip through
    the real handlers and records the outcome on <body>; the console must stay silent."""
    path, timeline = pages[which]
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--enable-logging=stderr", "--v=0", "--dump-dom", path.resolve().as_uri() + "#selftest"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    body = re.search(r"<body([^>]*)>", run.stdout)
    assert body, run.stderr[-2000:]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-ready") == "1"
    assert attrs.get("data-selftest") == "ok"
    assert int(attrs["data-lanes"]) == len(timeline.lanes)
    assert re.search(r'<pre id="hetc-errors"></pre>', run.stdout)
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
