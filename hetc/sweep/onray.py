"""A sweep's points on Ray: the local Ray's start hidden behind work, one thread per task, a bounded queue.

Where a sweep on a small machine loses time to Ray (measured in docs/benchmarks.md#design-space-sweep-on-ray):

- **Start.** ``ray.init()`` starts Ray's own processes (~4 s of CPU) and each worker imports Ray and hetc on
  its first task (~3 s of CPU each): a fixed cost that a serial run spends on points. A local sweep's driver
  runs points itself on a thread (the *driver lane*, from the end of the queue) from the start, while Ray
  starts, and on to the end: it is warm already, so the local Ray gets one CPU fewer (one worker fewer to
  start) and the machine's cores stay busy. With one core the lane only covers the start: it stops when the
  first Ray task comes back. On a cluster, or with a Ray the caller started (a notebook's), there is no
  lane. ``ray.init`` stays on the main thread (called from another thread the driver lost its GCS
  connection); rows are recorded under one lock.
- **Threads.** A task owns one CPU, so its libraries must not start a thread per core: CP-SAT gets one worker
  (``run_point``), and the workers' environment caps OpenMP, OpenBLAS, MKL and hetc's onnxruntime sessions
  at one thread (``WORKER_ENV``). A local Ray inherits it from the driver's environment, set for the sweep
  and restored after it: a job ``runtime_env`` would make Ray start a worker of its own for the first task
  beside the one it prestarts at ``ray.init`` (~1 s more to the first result, ~1.4 s of CPU for the idle
  worker, measured). On a cluster the job's ``runtime_env`` carries it to every node.
- **Per task** Ray costs about a millisecond against a point's 0.1-1 s of CPU, so points are not batched;
  the model bytes and target texts go through the object store once (``ray.put``). Tasks are submitted one
  per CPU and a few ahead, not all at once, so that the driver lane and Ray take from the same queue.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterator

from hetc.errors import OptionError
from hetc.sweep.point import FAILED, run_point
from hetc.sweep.spec import Point, SweepSpec

if TYPE_CHECKING:
    from hetc.sweep.runner import Inputs

# One thread per task: OpenMP and the BLAS libraries numpy may load, and hetc's onnxruntime sessions
# (HETC_ORT_THREADS, read by hetc.sim.kernels.cpu). Ray sets OMP_NUM_THREADS=1 itself for num_cpus=1.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              "HETC_ORT_THREADS": "1"}
Record = Callable[[dict[str, Any]], None]
Progress = Callable[[dict[str, Any]], None]


def init_ray(ray: Any, address: str | None, num_cpus: int | None) -> bool:
    """Start a local Ray (or join ``address``) unless one is up; True when this call started or joined it.
    A local Ray's workers inherit the caller's environment: start it inside ``worker_environment()``."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address:
        kwargs["address"] = address
        kwargs["runtime_env"] = {"env_vars": dict(WORKER_ENV)}
    elif num_cpus:
        kwargs["num_cpus"] = num_cpus
    try:
        ray.init(**kwargs)
    except ConnectionError as exc:
        raise OptionError(f"cannot join the Ray cluster at '{address}' ({exc}); check the address "
                          f"(ray status prints it) or drop --address for a local Ray") from None
    return True


def run_on_ray(ray: Any, spec: SweepSpec, inputs: "Inputs", todo: list[tuple[Point, str]], record: Record,
               address: str | None, num_cpus: int | None, progress: Progress | None = None) -> None:
    """Run ``todo`` on Ray, recording each row as it comes back (from this thread or the driver lane).
    ``num_cpus`` of a local Ray counts the driver's lane: ``num_cpus - 1`` Ray workers and the driver."""
    queue: deque[tuple[Point, str]] = deque(todo)
    lock = threading.Lock()

    def locked(row: dict[str, Any]) -> None:
        with lock:
            record(row)

    local = not address and not ray.is_initialized()
    cores = num_cpus or os.cpu_count() or 1
    # A local sweep's driver has hetc imported already: a lane for the whole sweep, one Ray worker fewer to
    # start (each costs ~3 s of CPU). On one core it only covers Ray's start; on a cluster, or when the caller
    # has a Ray running already, the driver runs no points.
    stays = local and cores >= 2
    # Set before the lane's thread starts (changing the environment beside a running thread is a race)
    with worker_environment() if local else contextlib.nullcontext():
        lane = None
        if local:
            lane = _DriverLane(queue, lambda p, k: run_point(p, k, inputs.models[p.model], inputs.base,
                                                             inputs.files, spec.time_limit_s, spec.seed), locked)
        began = time.perf_counter()
        try:
            init_ray(ray, address, cores - 1 if stays else num_cpus)
            cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
            if progress is not None:
                with lock:
                    progress({"event": "ray", "cpus": cpus, "driver": stays,
                              "init_s": time.perf_counter() - began})
            _run_tasks(ray, spec, inputs, queue, locked, cpus + max(1, cpus // 4), None if stays else lane)
        finally:
            if lane is not None:
                lane.stop.set()   # done, or an error or Ctrl-C: the lane records the point it is on and stops
                lane.join()


@contextlib.contextmanager
def worker_environment() -> Iterator[None]:
    """``WORKER_ENV`` in this process's environment (so in a local Ray's, started meanwhile), then the
    caller's environment as it was."""
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run_tasks(ray: Any, spec: SweepSpec, inputs: "Inputs", queue: deque[tuple[Point, str]], record: Record,
               ahead: int, lane: "_DriverLane | None") -> None:
    task = ray.remote(num_cpus=1, max_retries=0)(run_point)
    model_refs = {name: ray.put(b) for name, b in inputs.models.items()}   # shipped once, read by every task
    base_ref, files_ref = ray.put(inputs.base), ray.put(inputs.files)
    pending: dict[Any, tuple[Point, str]] = {}

    def submit() -> None:
        while len(pending) < ahead:
            try:
                p, k = queue.popleft()
            except IndexError:   # the driver lane took the last ones
                return
            pending[task.remote(p, k, model_refs[p.model], base_ref, files_ref, spec.time_limit_s,
                                spec.seed)] = (p, k)

    submit()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        if lane is not None:
            lane.stop.set()   # Ray's workers are warm: the driver goes back to waiting
        for ref in ready:
            p, k = pending.pop(ref)
            try:
                row = ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - a worker that died: the point failed, the sweep goes on
                row = {"key": k, "model": p.model, "scheduler": p.scheduler, **p.axes, "status": FAILED,
                       "error": f"ray task failed: {type(exc).__name__}: {exc}".splitlines()[0]}
            record(row)
        submit()


class _DriverLane(threading.Thread):
    """Runs points in the driver, from the end of the queue, until ``stop`` is set or the queue is empty."""

    def __init__(self, queue: deque[tuple[Point, str]], run: Callable[[Point, str], dict[str, Any]],
                 record: Record) -> None:
        super().__init__(name="hetc-sweep-driver-lane", daemon=True)
        self.queue, self.run_point, self.record = queue, run, record
        self.stop = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                p, k = self.queue.pop()
            except IndexError:
                return
            self.record(self.run_point(p, k))


__all__ = ["init_ray", "run_on_ray", "WORKER_ENV"]
