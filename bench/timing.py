"""CPU timing shared by the benchmarks."""

import statistics
import time


def cpu_timed(fn, repeat):
    """(median CPU seconds of this process over `repeat` calls, last result) of fn()."""
    times, out = [], None
    for _ in range(repeat):
        t = time.process_time()
        out = fn()
        times.append(time.process_time() - t)
    return statistics.median(times), out
