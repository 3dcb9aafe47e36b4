"""Time units: stamps and clocks are int nanoseconds throughout the package."""

SEC = 1_000_000_000  # ns per second
MS = 1_000_000  # ns per millisecond
