"""Timing helper shared by the micro-benchmarks in this folder.

Benchmarks run as `python bench/<name>.py`, which puts this folder first on `sys.path`, so
they import it as `from timing import median_us`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_us(func: Callable[[], object], *, inner: int = 1, repeat: int = 15) -> float:
    """Median microseconds per call of `func` over `repeat` samples of `inner` calls each
    (one warm-up call first)."""
    func()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            func()
        samples.append((time.perf_counter() - start) * 1e6 / inner)
    return statistics.median(samples)
