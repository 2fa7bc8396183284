"""The error hierarchy. Every user mistake raises a HetcError subclass whose message names the problem
and the fix; the CLI prints ``error: <message>`` and exits with status 2."""
from __future__ import annotations


class HetcError(Exception):
    """Base class for every error hetc reports to a user (as opposed to an internal bug)."""


class OptionError(HetcError):
    """A command-line option or API argument has a value hetc does not accept."""


class ModelError(HetcError):
    """The ONNX model cannot be read, checked or imported (missing file, bad protobuf, bad opset...)."""


class ShapeError(HetcError):
    """A shape is unknown, dynamic without an override, or an override is malformed."""


class TargetError(HetcError):
    """A target description is missing, malformed or inconsistent."""


class ScheduleError(HetcError):
    """No valid schedule exists (e.g. an op no device supports) or the scheduler options are wrong."""


class MemoryPlanError(HetcError):
    """A memory cannot hold what must live in it, even after spilling."""

    def __init__(self, message: str, memory: str | None = None) -> None:
        super().__init__(message)
        self.memory = memory   # the memory that overflowed, when that is the problem


class BundleError(HetcError):
    """A bundle directory is missing, corrupted, of another format version, or would be overwritten."""


class SimulationError(HetcError):
    """The simulator found the bundle inconsistent: deadlock, data race, bad binding."""


class ValidationError(HetcError):
    """Inputs for validation are malformed (wrong names, shapes or dtypes)."""


class WriteError(HetcError):
    """An output (bundle directory, .npz file) cannot be written: no permission, no space, a name too long,
    a path through a regular file."""
