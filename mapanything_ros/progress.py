"""A one-line text progress bar with rate and ETA, drawn on stderr (no dependencies)."""

import sys
import time

WIDTH = 28  # characters of the bar itself
MIN_INTERVAL_S = 0.1  # redraw at most this often


def _clock(seconds):
    """'m:ss' (or 'h:mm:ss') of a duration in seconds."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """`update(done, total)` redraws `label [#####.....] done/total unit  rate/s  ETA m:ss` in place.

    enabled: None draws only when `stream` is a terminal; True or False force it. Call `close()`
    to end the line (it prints the elapsed time).
    """

    def __init__(self, label, unit="", stream=None, enabled=None):
        self.label, self.unit = label, unit
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else bool(enabled)
        self.start = time.monotonic()
        self._last = -float("inf")
        self.done = self.total = 0

    def update(self, done, total):
        """Set progress to `done` of `total` (same unit) and redraw when due."""
        self.done, self.total = done, total
        now = time.monotonic()
        if self.enabled and (now - self._last >= MIN_INTERVAL_S or done >= total):
            self._last = now
            self._draw(now)

    def close(self):
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic(), final=True)
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, now, final=False):
        elapsed = now - self.start
        frac = min(1.0, self.done / self.total) if self.total else 0.0
        fill = int(round(frac * WIDTH))
        rate = self.done / elapsed if elapsed > 0 else 0.0
        unit = f" {self.unit}" if self.unit else ""
        if final:
            tail = f"{_clock(elapsed)} elapsed"
        else:
            tail = f"ETA {_clock((self.total - self.done) / rate)}" if rate > 0 else "ETA ?"
        line = (f"{self.label} [{'#' * fill}{'.' * (WIDTH - fill)}] {self.done}/{self.total}{unit} "
                f"{rate:.1f}{unit}/s {tail}")
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()
