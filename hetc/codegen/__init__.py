"""hetc.codegen: per-engine programs, semaphores and the bundle directory format."""
from hetc.codegen.bundle import FORMAT_VERSION, Bundle, load_bundle
from hetc.codegen.emit import EmitOptions, emit
from hetc.codegen.program import Compute, Dma, Operand, Program, Signal, Wait

__all__ = ["emit", "EmitOptions", "Bundle", "load_bundle", "FORMAT_VERSION", "Program", "Compute", "Dma",
           "Signal", "Wait", "Operand"]
