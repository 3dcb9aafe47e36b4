"""Problems of a session, throttled: one place for how often a kind of problem is said (ROS-free).

The node turns them into log lines and /diagnostics, the replay into the summary's counts.
"""

import re
import threading
import time
import traceback

WARN, ERROR = 1, 2  # the levels of diagnostic_msgs/DiagnosticStatus
THROTTLE_S = 5.0  # each kind of problem is logged at most once per this many seconds
BURST = 3  # log lines per THROTTLE_S for one (status, key, level), whatever their messages
KINDS_MAX = 1000  # kinds of problem remembered
# numbers, and hex or uuid-like tokens with a digit (frame ids made per message, addresses)
_VARYING = re.compile(r"[-+]?\d[\d.e+-]*|\b[0-9a-fA-F-]*\d[0-9a-fA-F-]*\b")


def kind_of(status, key, level, message):
    """The kind of a problem: what throttling tells apart (its numbers and ids masked)."""
    return status, key, level, _VARYING.sub("#", message)


class Reporter:
    """report(status, key, level, message) -> sink(status, key, level, message, log, traceback=None):
    every report reaches the sink (for diagnostics and counts); `log` is True for at most one line per
    THROTTLE_S of each kind of problem (status, key, level and the message with its numbers
    masked: each kind is said, whatever came just before) and at most BURST lines per THROTTLE_S
    for one (status, key, level) (messages that never repeat, e.g. a frame id made per message,
    cannot flood the log). Thread-safe."""

    def __init__(self, sink, throttle_s=THROTTLE_S, clock=time.monotonic):
        self.sink, self.throttle_s, self.clock = sink, throttle_s, clock
        self._lock = threading.Lock()
        self._last = {}  # kind -> time of its last log line
        self._burst = {}  # (status, key, level) -> times of its recent log lines
        self._tracebacks = set()  # (status, key, exception type) whose traceback was logged

    def __call__(self, status, key, level, message):
        self.sink(status, key, level, message, self._should_log(status, key, level, message))

    def _should_log(self, status, key, level, message):
        now = self.clock()
        kind = kind_of(status, key, level, message)
        with self._lock:
            recent = [t for t in self._burst.get(kind[:3], ()) if now - t < self.throttle_s]
            log = now - self._last.get(kind, -float("inf")) >= self.throttle_s and len(recent) < BURST
            if log:
                if len(self._last) > KINDS_MAX:
                    self._last = {k: t for k, t in self._last.items() if now - t < self.throttle_s}
                self._last[kind] = now
                recent.append(now)
            self._burst[kind[:3]] = recent
        return log

    def exception(self, status, key, message, err):
        """Report an exception at ERROR (the sink's message is one line), its traceback logged
        with it the first time a line for this (status, key, exception type) is logged."""
        text = f"{message}: {err!r}"
        log = self._should_log(status, key, ERROR, text)
        first = (status, key, type(err).__name__)
        with self._lock:
            new = log and first not in self._tracebacks
            if new:
                self._tracebacks.add(first)
        self.sink(status, key, ERROR, text, log, "".join(traceback.format_exception(err)).rstrip() if new else None)
