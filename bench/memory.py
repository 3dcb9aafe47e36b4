"""Process memory figures shared by the benchmarks (Linux)."""

import resource


def rss_bytes() -> int:
    """Current resident set size of this process (/proc/self/status VmRSS)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (getrusage ru_maxrss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def hwm_bytes() -> int:
    """Peak resident set size of this process image (/proc/self/status VmHWM): unlike ru_maxrss it
    does not inherit the peak of the parent that forked this process, and /proc/self/clear_refs 5
    resets it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found")
