"""The ``hetc`` command line. Thin: it parses flags, calls the Python API and prints.

Exit status: 0 success, 1 a failed validation, 2 a user error (every HetcError becomes ``error: <message>``
on stderr; a usage error shows typer's usage box), 130 Ctrl-C (``interrupted``). Nothing else is caught, so
a traceback always means a bug in hetc.
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Optional

USER_ERROR, INTERRUPTED = 2, 130


def _interrupted() -> int:
    print("interrupted", file=sys.stderr)
    return INTERRUPTED


try:  # Ctrl-C while the console script imports this module: exit as anywhere else, without a traceback
    import typer

    from hetc.version import __version__
    from hetc.console import ConsoleProgress, stdout
    from hetc.errors import HetcError
except KeyboardInterrupt:
    sys.exit(_interrupted())

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile ONNX models for a heterogeneous CPU + NPU + DSP chip.")
targets_app = typer.Typer(no_args_is_help=True, help="List and show target descriptions.")
app.add_typer(targets_app, name="targets")

TargetOpt = typer.Option("edge-soc", "--target", "-t", help="Preset name or path to a target TOML file.")
ShapeOpt = typer.Option(None, "--shape", metavar="NAME=DIMS",
                        help="Fix an input's shape, e.g. x=1x3x224x224 (repeatable).")
DimOpt = typer.Option(None, "--dim", metavar="NAME=N",
                      help="Fix a symbolic dimension everywhere, e.g. batch=1 (repeatable).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object instead of tables.")


def _version(value: bool) -> None:
    if value:
        stdout.print(f"hetc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


# The compiled libraries the compiler needs, in import order. A Ctrl-C landing inside an extension module's
# initialisation can crash the process (onnx's nanobind module segfaults or aborts) or break the import, so
# they load with Ctrl-C held; the interrupt is delivered right after.
_EXTENSION_MODULES = ("numpy", "onnx", "onnxruntime", "ortools.sat.python.cp_model", "ortools.linear_solver.pywraplp")


def _import_extension_modules() -> None:
    import importlib

    from hetc.destination import interrupts_deferred
    with interrupts_deferred():
        for name in _EXTENSION_MODULES:
            importlib.import_module(name)


def _overrides(shape: list[str] | None, dim: list[str] | None) -> tuple[dict | None, dict | None]:
    from hetc.frontend import parse_dim_overrides, parse_shape_overrides
    return (parse_shape_overrides(shape) if shape else None), (parse_dim_overrides(dim) if dim else None)


# ---------------------------------------------------------------------------------------------- targets
@targets_app.command("list")
def targets_list() -> None:
    """List the preset targets shipped with hetc."""
    from rich.table import Table

    from hetc.target import list_presets
    table = Table("name", "description", box=None)
    for name, description in list_presets():
        table.add_row(name, description)
    stdout.print(table)


@targets_app.command("show")
def targets_show(target: str = typer.Argument(..., help="Preset name or path to a target TOML file."),
                 as_json: bool = JsonOpt) -> None:
    """Show a target's memories, devices and DMA engines (the TOML text, or JSON)."""
    from hetc.target import load_target, target_to_json
    t = load_target(target)
    if as_json:
        print(json.dumps(target_to_json(t), indent=2))
    else:
        print(t.source, end="" if t.source.endswith("\n") else "\n")


# ---------------------------------------------------------------------------------------------- inspect
@app.command()
def inspect(model: Path = typer.Argument(..., help="The ONNX model."), target: str = TargetOpt,
            shape: Optional[list[str]] = ShapeOpt, dim: Optional[list[str]] = DimOpt,
            as_json: bool = JsonOpt) -> None:
    """Op histogram, FLOPs, weights, output shapes, and which device can run each node (and why not)."""
    _import_extension_modules()
    from hetc.inspect import inspect_model
    from hetc.inspect import render_inspect
    shapes, dims = _overrides(shape, dim)
    report = inspect_model(model, target, shapes=shapes, dims=dims)
    if as_json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        render_inspect(report, stdout)


# ---------------------------------------------------------------------------------------------- build
PrecisionOpt = typer.Option("fp32", "--npu-precision", help="NPU arithmetic in the simulation: fp32 | fp16.")
InputsOpt = typer.Option(None, "--inputs", help=".npz file of inputs (default: seeded random values).")
WeightsOpt = typer.Option("model", "--weights", help="model: the model's own weights; random: seeded "
                          "fan-in-scaled random weights (--seed), for models with placeholder weights.")


def _precision(value: str) -> str:
    from hetc.errors import OptionError
    from hetc.pipeline import PRECISIONS
    if value not in PRECISIONS:
        raise OptionError(f"unknown --npu-precision '{value}'; choose one of: {', '.join(PRECISIONS)}")
    return value


@app.command()
def build(model: Path = typer.Argument(..., help="The ONNX model."),
          output: Path = typer.Option(..., "--output", "-o", help="Bundle directory to write."),
          target: str = TargetOpt,
          scheduler: str = typer.Option("cpsat", "--scheduler", "-s",
                                        help="cpsat | heft | greedy | single:DEVICE"),
          time_limit: Optional[float] = typer.Option(None, "--time-limit", min=0.01,
                                                     help="CP-SAT time limit in seconds (default: by size)."),
          seed: int = typer.Option(0, "--seed", help="Solver seed and random-input seed."),
          shape: Optional[list[str]] = ShapeOpt, dim: Optional[list[str]] = DimOpt,
          validate: bool = typer.Option(False, "--validate", help="Simulate and compare with onnxruntime."),
          inputs: Optional[Path] = InputsOpt,
          weights: str = WeightsOpt,
          npu_precision: str = PrecisionOpt,
          tiling: bool = typer.Option(True, "--tiling/--no-tiling",
                                      help="Cut nodes too big for an accelerator's scratchpad into tiles "
                                           "(and split large ones across identical cores)."),
          gantt: str = typer.Option("", "--gantt", help="Gantt exports to add: html,perfetto,png,svg."),
          force: bool = typer.Option(False, "--force", help="Replace an existing bundle directory."),
          as_json: bool = JsonOpt,
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary output.")) -> None:
    """Compile MODEL for a target and write the bundle directory."""
    _import_extension_modules()
    from hetc.codegen.bundle import check_output_dir
    from hetc.pipeline import BuildOptions, build as run_build
    shapes, dims = _overrides(shape, dim)
    check_output_dir(output, force)  # fail before minutes of compiling, not after
    options = BuildOptions(target=target, scheduler=scheduler, time_limit_s=time_limit, seed=seed,
                           shapes=shapes, dims=dims, validate=validate or inputs is not None, inputs=inputs,
                           input_seed=seed, weights=weights, precision=_precision(npu_precision),
                           tiling=tiling, gantt=[g.strip() for g in gantt.split(",") if g.strip()])
    progress = ConsoleProgress(enabled=not (quiet or as_json))
    try:
        result = run_build(model, options, progress=progress)
    finally:
        progress.stop()
    result.save(output, force=force)
    if as_json:
        print(json.dumps(result.summary, indent=1))
    elif not quiet:
        from hetc.report import render_summary
        stdout.print(render_summary(result.summary))
        stdout.print(f"bundle written to {output}/")
        charts = [output / name for name in result.bundle.extra_files if name.startswith("gantt")]
        if charts:
            stdout.print("Gantt chart" + ("s" if len(charts) > 1 else "") + " written to "
                         + ", ".join(str(c) for c in charts))
    if result.validation is not None and not result.validation.passed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- simulate
@app.command()
def simulate(bundle: Path = typer.Argument(..., help="A bundle directory written by hetc build."),
             inputs: Optional[Path] = InputsOpt,
             outputs: Optional[Path] = typer.Option(None, "--outputs", help="Write the outputs to this .npz."),
             timing_only: bool = typer.Option(False, "--timing-only", help="Skip the kernels (timing only)."),
             npu_precision: str = PrecisionOpt,
             seed: int = typer.Option(0, "--seed", help="Seed of the random inputs."),
             no_contention: bool = typer.Option(False, "--no-contention",
                                                help="Give every DRAM user the full bandwidth."),
             as_json: bool = JsonOpt) -> None:
    """Run a bundle in the discrete-event simulator."""
    _import_extension_modules()
    from hetc.api import simulate as run_sim
    from hetc.destination import check_output_file
    from hetc.errors import OptionError
    from hetc.validate import check_npz_file
    if timing_only and outputs is not None:
        raise OptionError("--outputs needs the kernels to run; drop --timing-only")
    if inputs is not None:
        check_npz_file(inputs)
    if outputs is not None:
        check_output_file(outputs, "the outputs")   # before the simulation, not after
    result = run_sim(bundle, inputs, functional=not timing_only, precision=_precision(npu_precision), seed=seed,
                     contention=not no_contention)
    if outputs is not None and result.outputs is not None:
        _save_npz(outputs, result.outputs)
    stats = {"planned_makespan_us": result.planned_makespan_ns / 1000,
             "simulated_makespan_us": result.makespan_ns / 1000,
             "events": result.stats.get("events"), "wall_s": round(result.stats.get("wall_s", 0.0), 3),
             "functional": not timing_only}
    if "worst_case_makespan_ns" in result.stats:   # predicated experts (hetc.ir.predicates)
        stats.update(worst_case_makespan_us=result.stats["worst_case_makespan_ns"] / 1000,
                     skipped_instructions=result.stats["skipped"], gates_off=result.stats["gates_off"])
    if as_json:
        print(json.dumps(stats, indent=1))
        return
    stdout.print(f"planned makespan   {stats['planned_makespan_us']:,.1f} µs")
    stdout.print(f"simulated makespan {stats['simulated_makespan_us']:,.1f} µs "
                 f"({stats['events']} events in {stats['wall_s']} s)")
    if "worst_case_makespan_us" in stats:
        stdout.print(f"predicated         {len(stats['gates_off'])} gates off, {stats['skipped_instructions']} "
                     f"instructions skipped; worst case {stats['worst_case_makespan_us']:,.1f} µs"
                     + (" (timing only reads no gate: every gate on)" if timing_only else ""))
    if outputs is not None:
        stdout.print(f"outputs written to {outputs}")


def _save_npz(path: Path, arrays: dict) -> None:
    import os
    import tempfile

    import numpy as np

    from hetc.destination import interrupts_deferred, write_error
    from hetc.errors import OptionError
    stored = {}
    for name, value in arrays.items():   # host values (hetc.ir.host): string tensors as unicode arrays
        if value is None or isinstance(value, (list, tuple)):
            kind = "an empty optional" if value is None else "a sequence"
            raise OptionError(f"output '{name}' is {kind}, which an .npz archive cannot hold (it stores arrays "
                              "only); read the outputs through the Python API (hetc.api.simulate(...).outputs)")
        stored[name] = value.astype(str) if value.dtype == object else value
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
        os.close(fd)
        np.savez(tmp, **stored)
        os.replace(tmp, path)  # never leave a half-written file behind
        tmp = None
    except OSError as error:
        raise write_error(path, error, "the outputs") from None
    finally:
        if tmp is not None:
            with interrupts_deferred():
                Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------- validate
@app.command()
def validate(source: Path = typer.Argument(..., help="An ONNX model (compiled in memory) or a bundle directory."),
             model: Optional[Path] = typer.Option(None, "--model", help="The original model, for a bundle."),
             target: str = TargetOpt,
             scheduler: str = typer.Option("cpsat", "--scheduler", "-s", help="Scheduler, for a model."),
             shape: Optional[list[str]] = ShapeOpt, dim: Optional[list[str]] = DimOpt,
             inputs: Optional[Path] = InputsOpt,
             seed: int = typer.Option(0, "--seed", help="Seed of the random inputs (and random weights)."),
             weights: str = WeightsOpt,
             npu_precision: str = PrecisionOpt,
             as_json: bool = JsonOpt) -> None:
    """Simulate functionally and compare every output with onnxruntime; exit 1 on a mismatch."""
    _import_extension_modules()
    from hetc.errors import OptionError
    from hetc.validate import check_npz_file
    precision = _precision(npu_precision)
    if inputs is not None:
        check_npz_file(inputs)
    if source.is_dir():
        from hetc.api import validate_bundle
        if model is None:
            raise OptionError(f"validating the bundle {source} needs the original model; pass --model MODEL.onnx")
        if weights != "model":
            raise OptionError(f"--weights applies to a model, not to the bundle {source}: a bundle records the "
                              "weights it was built with; drop --weights")
        report = validate_bundle(source, model, inputs, seed=seed, precision=precision).report
    else:
        from hetc.api import validate as run_validate
        shapes, dims = _overrides(shape, dim)
        progress = ConsoleProgress(enabled=not as_json)
        try:
            result = run_validate(source, inputs, seed=seed, target=target, scheduler=scheduler, shapes=shapes,
                                  dims=dims, precision=precision, weights=weights,
                                  progress=progress)
        finally:
            progress.stop()
        report = result.validation
    if as_json:
        print(json.dumps(report.to_dict(), indent=1, default=float))
    else:
        stdout.print(str(report), markup=False, soft_wrap=True)  # a table: never re-wrapped at 80 columns
    if not report.passed:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------- gantt
@app.command()
def gantt(bundle: Path = typer.Argument(..., help="A bundle directory written by hetc build."),
          fmt: str = typer.Option("html", "--format", "-f", help="perfetto | html | png | svg"),
          output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write, outside the bundle "
                                                "(default: <bundle>.gantt.<ext> beside the bundle)."),
          simulated: Optional[bool] = typer.Option(None, "--simulated/--planned",
                                                   help="Draw the simulated run (timing-only) or the plan "
                                                   "(default: what the build drew).")) -> None:
    """Export the bundle's schedule as a Gantt chart (the bundle itself is never modified)."""
    _import_extension_modules()
    from hetc.api import as_bundle
    from hetc.errors import OptionError
    from hetc.pipeline import check_gantt_formats
    from hetc.report import EXTENSIONS, export_gantt
    from hetc.report.bundle_view import bundle_timeline
    (fmt,) = check_gantt_formats([fmt])
    b = as_bundle(bundle)
    path = output or bundle.resolve().parent / f"{bundle.resolve().name}.gantt{EXTENSIONS[fmt]}"
    if path.resolve().is_relative_to(bundle.resolve()):
        raise OptionError(f"-o {output} is inside the bundle {bundle}, and a bundle is never modified after it "
                          f"is written (its manifest's checksums would no longer match); write the chart "
                          f"outside it, e.g. -o {bundle.resolve().name}.gantt{EXTENSIONS[fmt]}, or drop -o")
    path = export_gantt(bundle_timeline(b, simulated, source=str(bundle)), fmt, path)
    stdout.print(f"wrote {path}")


# ---------------------------------------------------------------------------------------------- sweep
@app.command()
def sweep(spec: Path = typer.Argument(..., help="A sweep spec TOML (see examples/sweeps/, docs/sweep.md)."),
          output: Path = typer.Option(..., "--output", "-o", help="Directory for rows, tables, plots, report."),
          resume: bool = typer.Option(False, "--resume", help="Continue a sweep in -o: skip its finished points."),
          address: Optional[str] = typer.Option(None, "--address", help="Join this Ray cluster (default: a "
                                                "local Ray started for the sweep)."),
          num_cpus: Optional[int] = typer.Option(None, "--num-cpus", min=1, help="CPUs a local sweep uses "
                                                 "(default: all): the driver and a Ray of the others."),
          serial: bool = typer.Option(False, "--serial", help="Run the points one by one in this process, "
                                      "without Ray."),
          search: str = typer.Option("grid", "--search", help="grid: every point of [axes]; optuna: Ray Tune + "
                                     "Optuna over the [search] ranges."),
          trials: int = typer.Option(20, "--trials", help="Optuna trials per model and scheduler."),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary.")) -> None:
    """Compile and simulate every point of a design-space sweep (on Ray) and write the results to -o."""
    _import_extension_modules()
    from hetc.console import stderr
    from hetc.errors import OptionError
    from hetc.sweep import finish, load_spec, require_ray, run_sweep
    from hetc.sweep.progress import SweepProgress
    if search not in ("grid", "optuna"):
        raise OptionError(f"unknown --search '{search}'; choose grid or optuna")
    if not serial or search == "optuna":
        require_ray()   # say how to install it before reading anything
    loaded = load_spec(spec)
    progress = SweepProgress(stderr, enabled=not quiet)
    try:
        if search == "optuna":
            from hetc.sweep.search import run_search
            rows = run_search(loaded, output, trials, address=address, num_cpus=num_cpus, resume=resume,
                              progress=progress)
        else:
            rows = run_sweep(loaded, output, resume=resume, serial=serial, address=address, num_cpus=num_cpus,
                             progress=progress)
    finally:
        progress.stop()
    axes = list(loaded.search) if search == "optuna" else list(loaded.axes)
    files = finish(rows, axes, output, loaded.name)
    if not quiet:
        failed = sum(r.get("status") != "ok" for r in rows)
        stdout.print(f"{len(rows)} points, {failed} failed, {sum(bool(r.get('pareto')) for r in rows)} on the "
                     f"Pareto front; wrote {', '.join(f.name for f in files if f.suffix != '.svg')} to {output}/")


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """Warnings (a reference taken from onnx.reference, a node folded by another runtime, ...) as one
    ``warning: ...`` line for the user, not Python's file:line report."""
    print(f"warning: {str(message).strip()}", file=sys.stderr)


def _is_usage_error(exc: BaseException) -> bool:
    """A command-line usage error (unknown option, missing argument...). typer >= 0.26 raises its vendored
    click's exceptions, older typer click's own; both carry ``exit_code`` and ``show()``, and hetc imports
    neither click."""
    return isinstance(getattr(exc, "exit_code", None), int) and callable(getattr(exc, "show", None))


def _show_usage_error(exc: Exception) -> None:
    try:  # typer's own usage box, as standalone typer prints it
        from typer import rich_utils
        rich_utils.rich_format_error(exc)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - a typer without it: click's plain "Usage: ... Error: ..."
        exc.show()  # type: ignore[attr-defined]


def _from_ctrl_c(exc: BaseException) -> bool:
    """Whether Ctrl-C caused ``exc``: an extension module that Ctrl-C interrupts while it initialises (OR-Tools'
    CP-SAT helper, imported on first use) raises ImportError("initialization failed") from the interrupt."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and not any(seen is c for c in chain):   # (a chain may loop)
        if isinstance(seen, KeyboardInterrupt):
            return True
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    return False


def main() -> int:
    """Console-script entry point (the script exits with what it returns). Exit status: 0 success, 1 failed
    validation, 2 user error (``error: ...`` with the fix, or typer's usage box), 130 Ctrl-C
    (``interrupted``, no traceback, nothing half-written)."""
    warnings.showwarning = _show_warning
    try:
        try:
            status = app(standalone_mode=False)
        except HetcError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return USER_ERROR
        except typer.Exit as exc:  # raised outside a command (older typer), e.g. by --version
            status = exc.exit_code
        except typer.Abort:  # older typer (click) turns Ctrl-C into Abort
            return _interrupted()
        except Exception as exc:
            if _from_ctrl_c(exc):
                return _interrupted()
            if not _is_usage_error(exc):
                raise   # a bug in hetc: keep its traceback
            _show_usage_error(exc)
            return USER_ERROR
        # Non-standalone typer returns the command's value, or the code of a typer.Exit raised inside it
        # (typer >= 0.26 also turns Ctrl-C into Exit(130)).
        status = status if isinstance(status, int) else 0
        return _interrupted() if status == INTERRUPTED else status
    except KeyboardInterrupt:   # Ctrl-C outside a command's run (argument parsing, printing the error)
        return _interrupted()
