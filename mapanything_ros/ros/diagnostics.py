"""Bookkeeping behind the node's /diagnostics: input rates, recent problems, DiagnosticStatus building."""

import threading
import time
from collections import deque

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
HOLD_S = 5.0  # a problem stays reported this long (wall time) after it last happened
RATE_WINDOW_S = 5.0


class Rates:
    """Message rates (Hz) per input over the last RATE_WINDOW_S of wall time."""

    def __init__(self):
        self._lock = threading.Lock()
        self._times = {}

    def tick(self, key):
        with self._lock:
            times = self._times.setdefault(key, deque())
            times.append(time.monotonic())
            self._trim(times)

    def rate(self, key):
        with self._lock:
            times = self._times.get(key, deque())
            self._trim(times)
            return len(times) / RATE_WINDOW_S

    @staticmethod
    def _trim(times):
        while times and times[0] < time.monotonic() - RATE_WINDOW_S:
            times.popleft()


class Problems:
    """Recent problems per status name: report(status, key, level, message); a problem is active for
    HOLD_S after its last report, or until cleared (hold=None keeps it until clear())."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items = {}  # status -> {key: (level, message, expiry or None)}

    def report(self, status, key, level, message, hold=HOLD_S):
        with self._lock:
            expiry = None if hold is None else time.monotonic() + hold
            self._items.setdefault(status, {})[key] = (level, message, expiry)

    def clear(self, status, key):
        with self._lock:
            self._items.get(status, {}).pop(key, None)

    def active(self, status):
        """[(level, message)] still active for `status`, most severe first."""
        now = time.monotonic()
        with self._lock:
            items = self._items.get(status, {})
            for key in [k for k, (_, _, e) in items.items() if e is not None and e < now]:
                del items[key]
            return sorted(((lv, msg) for lv, msg, _ in items.values()), key=lambda p: p[0], reverse=True)


def make_status(name, hardware_id, problems, values, ok_message="ok"):
    """DiagnosticStatus named `name`: level and message of the most severe problem ([(level, message)]),
    all problem messages joined, and `values` (dict) as KeyValues."""
    level = max((p[0] for p in problems), default=OK)
    message = "; ".join(m for _, m in problems) if problems else ok_message
    return DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                            values=[KeyValue(key=str(k), value=str(v)) for k, v in values.items()])
