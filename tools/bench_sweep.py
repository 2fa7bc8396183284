"""Benchmark ``hetc sweep`` on local Ray against the same points run serially, and check ``--resume``.

    python tools/bench_sweep.py [--spec examples/sweeps/npu_sram.toml] [--repeat 3] [--resume-only]

Each round runs the real console script twice, in alternating order: ``hetc sweep SPEC --serial`` (one
process, no Ray) and ``hetc sweep SPEC`` (a local Ray started by the command, one CPU per point). Wall times
are end to end (Python start, Ray start, every point, tables, plots and report). The goal (issue 19) is
Ray <= 1.2 x serial / 2 on a 2-core machine; the machine's load average is printed before and after, because
other processes on a shared machine take CPU from both runs.

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


def hetc(*args: object, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.Popen([sys.executable, "-c", "import sys; from hetc.cli import main; sys.exit(main())",
                             *map(str, args)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **kwargs)


def timed_sweep(spec: Path, out: Path, *extra: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    proc = hetc("sweep", spec, "-o", out, "-q", *extra)
    _, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"hetc sweep {' '.join(extra)} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return time.perf_counter() - t0


def rows_of(out: Path) -> list[dict]:
    path = out / "points.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass   # the line being written when the sweep was killed
    return rows


def check_resume(spec: Path, out: Path, total: int) -> dict:
    """Kill a Ray sweep a third of the way, resume it; return what each run recorded."""
    shutil.rmtree(out, ignore_errors=True)
    proc = hetc("sweep", spec, "-o", out, "-q")
    while len(rows_of(out)) < total // 3 and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)   # its own session: the driver and the Ray it started
    proc.wait()
    before = rows_of(out)
    t0 = time.perf_counter()
    resumed = hetc("sweep", spec, "-o", out, "-q", "--resume")
    _, err = resumed.communicate()
    if resumed.returncode:
        raise SystemExit(f"hetc sweep --resume failed: {err.decode()[-2000:]}")
    after = rows_of(out)
    keys = [r["key"] for r in after]
    return {"killed_after": len(before), "resumed_s": time.perf_counter() - t0, "recorded": len(after),
            "unique": len(set(keys)), "redone": len(keys) - len(set(keys)), "total": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--resume-only", action="store_true")
    args = parser.parse_args()
    from hetc.sweep import load_spec
    total = len(load_spec(args.spec).points())
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    print(f"{total} points of {args.spec}; load average before: {os.getloadavg()}")
    try:
        if not args.resume_only:
            serial, ray = [], []
            for i in range(args.repeat):
                order = [("serial", "--serial"), ("ray", None)]
                for name, flag in (order if i % 2 == 0 else order[::-1]):
                    s = timed_sweep(args.spec, work / name, *([flag] if flag else []))
                    (serial if name == "serial" else ray).append(s)
                    print(f"  round {i + 1} {name:6} {s:6.1f} s   load {os.getloadavg()[0]:.1f}", flush=True)
            ms, mr = statistics.median(serial), statistics.median(ray)
            print(f"serial: median {ms:.1f} s (range {min(serial):.1f}-{max(serial):.1f})")
            print(f"ray:    median {mr:.1f} s (range {min(ray):.1f}-{max(ray):.1f})")
            print(f"ray / (serial / 2) = {mr / (ms / 2):.2f} (goal <= 1.2); speed-up {ms / mr:.2f}x on "
                  f"{os.cpu_count()} cores")
        r = check_resume(args.spec, work / "resume", total)
        print(f"resume: killed after {r['killed_after']} points; resumed run took {r['resumed_s']:.1f} s; "
              f"{r['recorded']} rows, {r['unique']} distinct points of {r['total']}, {r['redone']} redone")
        print(f"load average after: {os.getloadavg()}")
        if r["redone"] or r["unique"] != total:
            raise SystemExit("resume redid a finished point or lost one")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
