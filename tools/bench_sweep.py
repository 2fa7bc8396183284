"""Benchmark a sweep on local Ray against the same points run serially, side by side, and check ``--resume``.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python tools/bench_sweep.py [--points N] [--repeat R]
        [--spec examples/sweeps/npu_sram.toml] [--no-resume] [--resume-only]

The default is the shipped 200-point grid (5 models x 40 target variants), two rounds: a few minutes on an
idle 2-core machine. ``--points N`` takes N points spread evenly over the grid. Each round runs, in
alternating order, a fresh process per mode (its own session, as a shell starts ``hetc sweep``) doing what
the command does: ``run_sweep`` (serially, or on a local Ray it starts) then ``finish`` (tables, plots,
report). Wall times are end to end, Python's start included. The goal (issue 19) is Ray <= 1.2 x serial / 2.

Besides wall times it prints what a loaded machine does not inflate: each point's CPU time (the row's
``cpu_s``: its thread and its CP-SAT child) and the CPU time of the whole run (the process and every process
it started, Ray's included), and the two phases of a Ray run: its start (``ray.init`` returning, while the
driver already runs points) and the steady state (seconds per point between the 10th and 90th percentile of
completions, against the serial run's). The load average is printed with every run.

The last line estimates the idle-machine ratio from CPU times alone: serial wall ~ its CPU; Ray wall ~ the
driver's sequential CPU (import, tables and plots) + the rest of its CPU spread over the cores. Ray's
background work is counted at the loaded machine's (longer) wall time, so the estimate leans pessimistic.

The resume check starts a Ray sweep, kills its process group once a third of the points are recorded,
resumes it and checks that every point is recorded exactly once: no finished point is redone.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))   # this checkout's hetc, not another install
SPEC = REPO / "examples" / "sweeps" / "npu_sram.toml"
GOAL = 1.2


# ------------------------------------------------------------------------------------------- one run (child)
def child(mode: str, spec_path: Path, out: Path, points: int | None, resume: bool) -> None:
    """One sweep as ``hetc sweep`` runs it; prints its timings as JSON on the last line of stdout."""
    began, began_cpu = time.perf_counter(), time.process_time()
    from hetc.sweep import finish, load_spec, run_sweep
    imported, import_cpu = time.perf_counter(), time.process_time() - began_cpu
    spec = load_spec(spec_path)
    marks: dict[str, float] = {}
    done: list[float] = []

    def progress(event: dict) -> None:
        if event["event"] == "ray":
            marks["ray_ready"] = time.perf_counter() - began
        elif event["event"] == "point":
            done.append(time.perf_counter() - began)

    rows = run_sweep(spec, out, resume=resume, serial=mode == "serial", points=choose(spec.points(), points),
                     progress=progress)
    ran, ran_cpu = time.perf_counter(), time.process_time()
    finish(rows, list(spec.axes), out, spec.name)
    finished, finish_cpu = time.perf_counter(), time.process_time() - ran_cpu
    cpu = process_tree_cpu()   # before Ray stops: its processes are still there to be read
    if mode == "ray":
        import ray
        ray.shutdown()
    print(json.dumps({"import_s": imported - began, "sequential_cpu_s": import_cpu + finish_cpu,
                      "ray_ready_s": marks.get("ray_ready"), "done_s": done,
                      "run_s": ran - began, "finish_s": finished - ran, "end_s": time.perf_counter() - began,
                      "cpu_s": cpu, "point_cpu_s": [r.get("cpu_s") for r in rows],
                      "failed": sum(r.get("status") != "ok" for r in rows)}))


def choose(grid: list, n: int | None) -> list:
    """``n`` points spread evenly over the grid (every model, many target variants)."""
    if n is None or n >= len(grid):
        return grid
    return [grid[(i * len(grid)) // n] for i in range(n)]


def process_tree_cpu() -> float:
    """CPU seconds of this process and every live descendant (and what they reaped)."""
    import resource
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime
    try:
        import psutil
    except ImportError:
        return total
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


# ----------------------------------------------------------------------------------------------- the parent
def start(mode: str, spec: Path, out: Path, points: int | None, resume: bool = False) -> subprocess.Popen:
    args = [sys.executable, __file__, "--child", mode, "--spec", str(spec), "--out", str(out)]
    args += ["--points", str(points)] if points else []
    args += ["--resume"] if resume else []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def timed(mode: str, spec: Path, out: Path, points: int | None) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = start(mode, spec, out, points)
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"the {mode} sweep failed ({proc.returncode}): {stderr[-3000:]}")
    run = json.loads(stdout.strip().splitlines()[-1])
    return {**run, "wall_s": wall, "load_before": load, "load_after": os.getloadavg()[0]}


def steady_s_per_point(done: list[float]) -> float:
    """Seconds per point between the 10th and 90th percentile of completions (start and tail left out)."""
    if len(done) < 10:
        return (done[-1] - done[0]) / max(1, len(done) - 1)
    lo, hi = len(done) // 10, (9 * len(done)) // 10
    return (done[hi] - done[lo]) / (hi - lo)


def rows_of(out: Path) -> list[dict]:
    path = out / "points.jsonl"
    rows = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass   # the line being written when the sweep was killed
    return rows


def check_resume(spec: Path, out: Path, points: int | None, total: int) -> dict:
    """Kill a Ray sweep a third of the way, resume it; return what each run recorded."""
    shutil.rmtree(out, ignore_errors=True)
    proc = start("ray", spec, out, points)
    while len(rows_of(out)) < total // 3 and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)   # its own session: the driver and the Ray it started
    proc.wait()
    before = rows_of(out)
    t0 = time.perf_counter()
    resumed = start("ray", spec, out, points, resume=True)
    _, err = resumed.communicate()
    if resumed.returncode:
        raise SystemExit(f"the resumed sweep failed: {err[-3000:]}")
    keys = [r["key"] for r in rows_of(out)]
    return {"killed_after": len(before), "resumed_s": time.perf_counter() - t0, "recorded": len(keys),
            "unique": len(set(keys)), "redone": len(keys) - len(set(keys)), "total": total}


def spread(values: list[float], unit: str = "s", digits: int = 1) -> str:
    return (f"median {statistics.median(values):.{digits}f} {unit} "
            f"(range {min(values):.{digits}f}-{max(values):.{digits}f})")


def report(runs: dict[str, list[dict]], points: int) -> None:
    serial, ray = runs["serial"], runs["ray"]
    for name, rs in runs.items():
        per_point = [c for r in rs for c in r["point_cpu_s"] if c is not None]
        print(f"{name:6} wall {spread([r['wall_s'] for r in rs])}; CPU of the whole run "
              f"{spread([r['cpu_s'] for r in rs])}; per point CPU {spread(per_point, 's', 3)}, "
              f"summed {statistics.median([sum(c or 0 for c in r['point_cpu_s']) for r in rs]):.1f} s")
        print(f"       import {spread([r['import_s'] for r in rs])}; steady state "
              f"{spread([steady_s_per_point(r['done_s']) for r in rs], 's/point', 3)}; tables, plots and "
              f"report {spread([r['finish_s'] for r in rs])}; failed points {rs[0]['failed']}")
    print(f"ray    start: ray.init returned at {spread([r['ray_ready_s'] for r in ray])} after the process "
          f"started (the driver ran points meanwhile); first point recorded at "
          f"{spread([r['done_s'][0] for r in ray])}")
    ms, mr = statistics.median(r["wall_s"] for r in serial), statistics.median(r["wall_s"] for r in ray)
    ratio = mr / (ms / 2)
    print(f"ray / (serial / 2) = {ratio:.2f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}); "
          f"speed-up {ms / mr:.2f}x on {os.cpu_count()} cores, {points} points")
    cs, cr = statistics.median(r["cpu_s"] for r in serial), statistics.median(r["cpu_s"] for r in ray)
    seq = statistics.median(r["sequential_cpu_s"] for r in ray)
    cores = os.cpu_count() or 1
    idle = seq + (cr - seq) / cores
    print(f"CPU: the Ray run used {cr - cs:+.1f} s more than the serial one ({cr:.1f} against {cs:.1f}); of it "
          f"{seq:.1f} s (import and the tables and plots) runs in the driver alone. On an idle {cores}-core "
          f"machine (wall ~ CPU: serial {cs:.0f} s; Ray {seq:.1f} + {cr - seq:.1f} / {cores} = {idle:.0f} s if the "
          f"rest spreads evenly) the ratio would be about {idle / (cs / 2):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--points", type=int, default=None, help="N points spread over the grid (default: all)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--resume-only", action="store_true")
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--child", choices=("serial", "ray"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.spec, args.out, args.points, args.resume)
    from hetc.sweep import load_spec
    total = len(choose(load_spec(args.spec).points(), args.points))
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    print(f"{total} points of {args.spec}; {os.cpu_count()} cores; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    try:
        if not args.resume_only:
            runs: dict[str, list[dict]] = {"serial": [], "ray": []}
            for i in range(args.repeat):
                for mode in (("serial", "ray") if i % 2 == 0 else ("ray", "serial")):
                    r = timed(mode, args.spec, work / mode, args.points)
                    runs[mode].append(r)
                    print(f"  round {i + 1} {mode:6} {r['wall_s']:6.1f} s  CPU {r['cpu_s']:6.1f} s  load "
                          f"{r['load_before']:.1f} -> {r['load_after']:.1f}", flush=True)
            report(runs, total)
        if not args.no_resume:
            r = check_resume(args.spec, work / "resume", args.points, total)
            print(f"resume: killed after {r['killed_after']} points; resumed run took {r['resumed_s']:.1f} s; "
                  f"{r['recorded']} rows, {r['unique']} distinct points of {r['total']}, {r['redone']} redone")
            if r["redone"] or r["unique"] != total:
                raise SystemExit("resume redid a finished point or lost one")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
