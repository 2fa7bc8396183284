"""Regenerate the pictures and the example report of docs/gantt.md from models in models/.

    python tools/make_doc_images.py                      # tiny_cnn and gpt_decoder on edge-soc, CP-SAT
    python tools/make_doc_images.py --models unet --target edge-soc --scheduler heft

Each model is compiled by ``hetc.pipeline.build`` with validation (so it is also simulated functionally and
checked against onnxruntime), exactly as ``hetc build --validate`` does. Outputs in docs/images/:
<model>_planned.png, <model>_simulated.png, <model>.svg, <model>_report.txt (the bundle's report.txt), and
<model>_html.png (a headless-Chromium screenshot of the HTML page) when Chromium is installed.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def screenshot(html: Path, png: Path) -> bool:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        return False
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--hide-scrollbars", "--window-size=1500,900", f"--screenshot={png}", html.as_uri()],
                   capture_output=True, timeout=120, check=True)
    return png.exists()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny_cnn", "gpt_decoder"])
    parser.add_argument("--target", default="edge-soc")
    parser.add_argument("--scheduler", default="cpsat")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args()

    from hetc.pipeline import BuildOptions, build
    from hetc.report import Timeline, export_gantt
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        began = time.perf_counter()
        result = build(REPO / "models" / f"{name}.onnx",
                       BuildOptions(target=args.target, scheduler=args.scheduler, validate=True))
        schedule, plan = result.plan.schedule, result.plan
        planned = Timeline.from_schedule(schedule, result.graph, plan, result.target, title=name)
        simulated = Timeline.from_simulation(result.sim, schedule, plan, result.target, title=name)
        export_gantt(planned, "png", args.out / f"{name}_planned.png")
        export_gantt(simulated, "png", args.out / f"{name}_simulated.png")
        export_gantt(planned, "svg", args.out / f"{name}.svg")
        (args.out / f"{name}_report.txt").write_text(result.bundle.report)
        with tempfile.TemporaryDirectory() as tmp:
            page = export_gantt(simulated, "html", Path(tmp) / f"{name}.html")
            shot = screenshot(page, args.out / f"{name}_html.png")
        print(f"{name}: {len(schedule.tasks)} tasks, {schedule.stats.strategy} {schedule.stats.status}, planned "
              f"{planned.makespan_us:.1f} µs, simulated {simulated.makespan_us:.1f} µs, validation "
              f"{'passed' if result.validation.passed else 'FAILED'}, html screenshot {'yes' if shot else 'no'}, "
              f"{time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
