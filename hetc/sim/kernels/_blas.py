"""Pin numpy's BLAS (OpenBLAS) to a fixed thread count for kernel runs.

One thread by default (``HETC_BLAS_THREADS`` overrides): a simulated device is one serial engine, results
must not depend on the host's core count (BLAS splits sums differently per thread count), and on small
shared hosts OpenBLAS's worker hand-off costs more than it saves (a 256x576x3136 sgemm measured 18 ms on
one thread, 48 ms on two, on the 2-core development machine). Implemented with ctypes on the OpenBLAS that
numpy loaded, so no extra dependency; a no-op where that library cannot be found.

OpenBLAS picks its CPU kernels when it loads, from ``OPENBLAS_CORETYPE`` if set (the development host
sets "Haswell", AVX2, on an AVX-512 core: its "SkylakeX" kernels measured 185 vs 95 GFLOP/s for a
128x1152x3136 sgemm there); ``openblas_core()`` reports the choice so that benchmarks can state it.
"""
from __future__ import annotations

import ctypes
import os
import re

_CORE_NAMES = ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_",
               "openblas_get_corename")
_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads64_",
            "openblas_set_num_threads")
_done = False


def _loaded_openblas() -> list[str]:
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps:
            return sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", maps.read())))
    except OSError:
        return []


def pin_blas_threads() -> int | None:
    """Set the thread count once per process; returns it, or None when no OpenBLAS was found."""
    global _done
    if _done:
        return None
    _done = True
    threads = int(os.environ.get("HETC_BLAS_THREADS", "1"))
    setter = _library_function(_SETTERS)
    if setter is None:
        return None
    setter(ctypes.c_int(threads))
    return threads


def _library_function(names: tuple[str, ...]):
    for path in _loaded_openblas():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in names:
            function = getattr(library, name, None)
            if function is not None:
                return function
    return None


def openblas_core() -> str | None:
    """The CPU kernels numpy's OpenBLAS chose (e.g. "Haswell", "SkylakeX"), or None without OpenBLAS."""
    function = _library_function(_CORE_NAMES)
    if function is None:
        return None
    function.restype = ctypes.c_char_p
    return function().decode()

