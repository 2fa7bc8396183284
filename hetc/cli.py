"""The ``hetc`` command line. Thin: it parses flags, calls the Python API and prints.

Every HetcError becomes ``error: <message>`` on stderr and exit status 2; nothing else is caught, so a
traceback always means a bug in hetc.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from hetc import __version__
from hetc.console import ConsoleProgress, stderr, stdout
from hetc.errors import HetcError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Compile ONNX models for a heterogeneous CPU + NPU + DSP chip.")
targets_app = typer.Typer(no_args_is_help=True, help="List and show target descriptions.")
app.add_typer(targets_app, name="targets")

TargetOpt = typer.Option("edge-soc", "--target", "-t", help="Preset name or path to a target TOML file.")
ShapeOpt = typer.Option(None, "--shape", help="Fix an input's shape, e.g. x=1x3x224x224 (repeatable).")
DimOpt = typer.Option(None, "--dim", help="Fix a symbolic dimension everywhere, e.g. batch=1 (repeatable).")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object instead of tables.")


def _version(value: bool) -> None:
    if value:
        stdout.print(f"hetc {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    pass


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
        stdout.print(t.source, markup=False)


# ---------------------------------------------------------------------------------------------- inspect
@app.command()
def inspect(model: Path = typer.Argument(..., help="The ONNX model."), target: str = TargetOpt,
            shape: Optional[list[str]] = ShapeOpt, dim: Optional[list[str]] = DimOpt,
            as_json: bool = JsonOpt) -> None:
    """Op histogram, FLOPs, weights, output shapes, and which device can run each node (and why not)."""
    from hetc.inspect import inspect_model
    from hetc.inspect import render_inspect
    shapes, dims = _overrides(shape, dim)
    report = inspect_model(model, target, shapes=shapes, dims=dims)
    if as_json:
        print(json.dumps(report.to_json(), indent=1))
    else:
        render_inspect(report, stdout)


# ---------------------------------------------------------------------------------------------- build
@app.command()
def build(model: Path = typer.Argument(..., help="The ONNX model."),
          output: Path = typer.Option(..., "--output", "-o", help="Bundle directory to write."),
          target: str = TargetOpt,
          scheduler: str = typer.Option("cpsat", "--scheduler", "-s",
                                        help="cpsat | heft | greedy | single:DEVICE"),
          time_limit: Optional[float] = typer.Option(None, "--time-limit", min=0.01,
                                                     help="CP-SAT time limit in seconds (default: by size)."),
          seed: int = typer.Option(0, "--seed", help="Solver seed (results are deterministic per seed)."),
          shape: Optional[list[str]] = ShapeOpt, dim: Optional[list[str]] = DimOpt,
          force: bool = typer.Option(False, "--force", help="Replace an existing output directory."),
          as_json: bool = JsonOpt,
          quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary output.")) -> None:
    """Compile MODEL for a target and write the bundle directory."""
    from hetc.pipeline import BuildOptions, build as run_build
    from hetc.writer import write_build
    shapes, dims = _overrides(shape, dim)
    options = BuildOptions(target=target, scheduler=scheduler, time_limit_s=time_limit, seed=seed,
                           shapes=shapes, dims=dims)
    result = run_build(model, options, progress=ConsoleProgress(enabled=not (quiet or as_json)))
    write_build(result, output, force=force)
    if as_json:
        print(json.dumps(result.summary, indent=1))
    elif not quiet:
        from hetc.report.summary_view import render_summary
        stdout.print(render_summary(result.summary))
        stdout.print(f"bundle written to {output}")


def main() -> None:
    """Console-script entry point: run the app, turning user errors into ``error: ...`` and exit 2."""
    try:
        app(standalone_mode=False)
    except HetcError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        stderr.print("aborted")
        sys.exit(130)
    except Exception as exc:  # click usage errors come through here in non-standalone mode
        import click
        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(2)
        raise
