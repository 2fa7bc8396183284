"""Regenerate the pictures and the example report of docs/gantt.md from models in models/.

    python tools/make_doc_images.py                      # tiny_cnn and gpt_decoder on edge-soc
    python tools/make_doc_images.py --models unet --target edge-soc --scheduler heft

Each model goes through the real stages (import, passes, schedule, memory plan, codegen, timing simulation);
the schedule comes from ``hetc.schedule.schedule`` with ``--scheduler``, or, if that stage is not installed,
from the simulator's reference list scheduler (``hetc.sim.handplan``), and the script says which it used.
Outputs in docs/images/: <model>_planned.png, <model>_simulated.png, <model>.svg, <model>_report.txt, and
<model>_html.png (a headless-Chromium screenshot of the HTML page) when Chromium is installed.
"""
from __future__ import annotations

import argparse
import importlib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def compile_model(model: Path, target_name: str, scheduler: str):
    from hetc.frontend import load_onnx
    from hetc.memory import plan_memory
    from hetc.passes import optimize
    from hetc.target import load_target
    graph = optimize(load_onnx(model))
    target = load_target(target_name)
    schedule_fn = getattr(importlib.import_module("hetc.schedule"), "schedule", None)
    if schedule_fn is not None:
        schedule = schedule_fn(graph, target, strategy=scheduler)
        used = scheduler
    else:
        from hetc.sim.handplan import cost_duration, first_candidate_placement, plan_by_hand
        placement = first_candidate_placement(graph, target)
        schedule = plan_by_hand(graph, target, placement, cost_duration(target)).schedule
        used = "reference list scheduler (hetc.schedule not installed)"
    return graph, target, plan_memory(graph, schedule, target), used


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

    from hetc.codegen import emit
    from hetc.report import Timeline, export_gantt, report_text
    from hetc.sim import simulate
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        began = time.perf_counter()
        graph, target, plan, used = compile_model(REPO / "models" / f"{name}.onnx", args.target, args.scheduler)
        sim = simulate(emit(graph, plan, target), functional=False)
        planned = Timeline.from_schedule(plan.schedule, graph, plan, target, title=name)
        simulated = Timeline.from_simulation(sim, plan.schedule, plan, target, title=name)
        export_gantt(planned, "png", args.out / f"{name}_planned.png")
        export_gantt(simulated, "png", args.out / f"{name}_simulated.png")
        export_gantt(planned, "svg", args.out / f"{name}.svg")
        header = f"# {name} on {args.target}, schedule by {used}\n\n"
        (args.out / f"{name}_report.txt").write_text(header + report_text(plan.schedule, graph, plan, target, sim))
        with tempfile.TemporaryDirectory() as tmp:
            page = export_gantt(simulated, "html", Path(tmp) / f"{name}.html")
            shot = screenshot(page, args.out / f"{name}_html.png")
        print(f"{name}: {len(plan.schedule.tasks)} tasks, planned {planned.makespan_us:.1f} us, simulated "
              f"{simulated.makespan_us:.1f} us, schedule by {used}, html screenshot {'yes' if shot else 'no'}, "
              f"{time.perf_counter() - began:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
