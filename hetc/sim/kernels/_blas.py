"""Pin numpy's BLAS (OpenBLAS) to a fixed thread count for kernel runs.

One thread by default (``HETC_BLAS_THREADS`` overrides): a simulated device is one serial engine, results
must not depend on the host's core count (BLAS splits sums differently per thread count), and on small
shared hosts OpenBLAS's worker hand-off costs more than it saves (a 256x576x3136 sgemm measured 18 ms on
one thread, 48 ms on two, on the 2-core development machine). Implemented with ctypes on the OpenBLAS that
numpy loaded, so no extra dependency; a no-op where that library cannot be found.
"""
from __future__ import annotations

import ctypes
import os
import re

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
    for path in _loaded_openblas():
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(library, name, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                return threads
    return None
