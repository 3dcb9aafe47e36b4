"""Timing shared by the benchmarks."""

import statistics
import time


def cpu_timed(fn, repeat, clock=time.process_time):
    """(median seconds of `clock` (default: this process's CPU time) over `repeat` calls, last
    result) of fn()."""
    times, out = [], None
    for _ in range(repeat):
        t = clock()
        out = fn()
        times.append(clock() - t)
    return statistics.median(times), out
