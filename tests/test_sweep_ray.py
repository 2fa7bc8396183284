"""hetc sweep on a real local Ray: a tiny grid (rows equal to the serial run's), and a two-trial Optuna search.
Skipped when Ray is not installed (pip install -e '.[sweep]')."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed; pip install -e '.[sweep]' to run the sweep tests")

from conftest import MODELS_DIR  # noqa: E402
from hetc.sweep import finish, load_rows, load_spec, run_sweep  # noqa: E402
from hetc.sweep.onray import WORKER_ENV  # noqa: E402

MOE = MODELS_DIR / "moe.onnx"
SPEC = f"""models = ["{MODELS_DIR / 'tiny_cnn.onnx'}", "{MOE}"]
time_limit_s = 1.0
validate = ["tiny_cnn.onnx"]
[axes]
"memories.npu_sram.size" = ["256KiB", "4MiB", "nonsense"]
[search]
"devices.npu.peak.float32" = {{ min = 64, max = 512, log = true }}
"memories.npu_sram.size" = {{ min = 262144, max = 8388608 }}
"""


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


def test_a_grid_on_ray_gives_the_serial_rows(tmp_path: Path) -> None:
    """The sweep starts its own local Ray (as ``hetc sweep`` does): 2 CPUs are a Ray worker and the driver."""
    if ray.is_initialized():
        ray.shutdown()
    (tmp_path / "spec.toml").write_text(SPEC)
    spec = load_spec(tmp_path / "spec.toml")
    events: list[dict] = []
    before = {k: os.environ.get(k) for k in WORKER_ENV}
    try:
        on_ray = run_sweep(spec, tmp_path / "ray", num_cpus=2, progress=events.append)
        # the local Ray's worker got one thread per library from the driver, whose environment is restored
        worker_env = ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in WORKER_ENV}).remote())
    finally:
        ray.shutdown()
    assert worker_env == WORKER_ENV
    assert {k: os.environ.get(k) for k in WORKER_ENV} == before
    serial = run_sweep(spec, tmp_path / "serial", serial=True)
    assert [r["status"] for r in on_ray] == ["ok", "ok", "failed"] * 2
    assert all(r.get("validated") for r in on_ray if r["model"] == "tiny_cnn.onnx" and r["status"] == "ok")
    deterministic = ("key", "makespan_sim_us", "makespan_planned_us", "dma_bytes", "error")
    assert [{k: r.get(k) for k in deterministic} for r in on_ray] == \
           [{k: r.get(k) for k in deterministic} for r in serial]
    assert all(0 < r["cpu_s"] for r in on_ray)
    kinds = [e["event"] for e in events]
    # Ray took seconds to start; the driver ran points (a bad point fails in milliseconds) meanwhile
    ready = events[kinds.index("ray")]
    assert kinds.count("ray") == 1 and kinds.index("ray") > 1 and (ready["cpus"], ready["driver"]) == (1, True)
    recorded = [r["key"] for r in load_rows(tmp_path / "ray")]
    assert sorted(recorded) == sorted(r["key"] for r in on_ray)   # every point once, by Ray or the driver
    files = finish(on_ray, list(spec.axes), tmp_path / "ray", "t")
    assert (tmp_path / "ray" / "report.html") in files


@pytest.mark.slow   # Ray Tune starts its own driver-side machinery: about 30 s for three trials
def test_optuna_search_records_every_trial(local_ray, tmp_path: Path) -> None:
    from hetc.sweep.search import run_search
    (tmp_path / "spec.toml").write_text(SPEC.replace(f', "{MOE}"', ""))
    spec = load_spec(tmp_path / "spec.toml")
    rows = run_search(spec, tmp_path / "out", trials=3)
    assert len(rows) == 3 and all(r["status"] == "ok" for r in rows), rows
    sizes = {r["memories.npu_sram.size"] for r in rows}
    assert len(sizes) == 3 and all(262144 <= s <= 8388608 for s in sizes)
    assert all(64 <= r["devices.npu.peak.float32"] <= 512 for r in rows)
