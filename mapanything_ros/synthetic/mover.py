"""A moving object for the synthetic scene: a box that stands, walks away and comes back (numpy).

The test of a map's dynamic clearing (docs/map.md): whatever the box left must be carved out of
the map once its old place has been seen again. Periodic in time, like the trajectory, so the
player and an oracle backend agree on where it is at any stamp without sharing a start time.
"""

from dataclasses import dataclass

import numpy as np

from ..layout import SEC


@dataclass(frozen=True)
class MovingBox:
    """A box of half sizes `half` (x, y, z) metres standing on the floor (z = 0), its centre going
    round a cycle (stamp modulo `period_s`): at `first` (x, y) for `stay_s` seconds, a straight
    walk of `walk_s` to `second`, there for `away_s`, then the walk back. The defaults stand it in
    the middle of the default trajectory's ellipse (seen by the left-looking fisheye all the time),
    0.6 m to either side of the centre; a run of the synthetic bags (from 1 s) sees it at `first`
    until 15 s, then at `second` up to 62 s."""

    half: tuple = (0.3, 0.3, 0.5)
    first: tuple = (-0.6, 0.0)
    second: tuple = (0.6, 0.0)
    stay_s: float = 15.0
    walk_s: float = 2.0
    away_s: float = 45.0

    @property
    def period_s(self):
        """Seconds of one cycle (first, walk, second, walk back)."""
        return self.stay_s + self.away_s + 2 * self.walk_s

    def centre(self, stamp_ns):
        """The (x, y) centre (2,) metres at a stamp (int ns)."""
        t = (int(stamp_ns) % int(round(self.period_s * SEC))) / SEC
        a, b = np.asarray(self.first, float), np.asarray(self.second, float)
        out_at = self.stay_s  # leaves first
        back_at = self.stay_s + self.walk_s + self.away_s  # leaves second
        if t < back_at:
            return a + (b - a) * float(np.clip((t - out_at) / self.walk_s, 0, 1))
        return b + (a - b) * float(np.clip((t - back_at) / self.walk_s, 0, 1))

    def bounds(self, stamp_ns):
        """(lo (3,), hi (3,)) corners in metres at a stamp (int ns)."""
        half = np.asarray(self.half, float)
        centre = np.append(self.centre(stamp_ns), half[2])
        return centre - half, centre + half

    def footprints(self, start_ns, end_ns, step_ns=SEC // 10):
        """Corners (lo (K, 3), hi (K, 3)) of the places it stood at between the stamps, every step."""
        corners = [self.bounds(t) for t in range(int(start_ns), int(end_ns) + 1, int(step_ns))]
        return np.array([c[0] for c in corners]), np.array([c[1] for c in corners])
