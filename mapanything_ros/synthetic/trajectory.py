"""A smooth rig trajectory inside the room: world-from-body poses at any time (numpy).

Body frame REP 103 (x forward, y left, z up). The body drives round an ellipse about
`centre`, heading along its velocity, with a small yaw sway, pitch and roll, and a height bob.
"""

from dataclasses import dataclass

import numpy as np


def rotation_zyx(yaw, pitch, roll):
    """Rotation matrices (..., 3, 3) Rz(yaw) · Ry(pitch) · Rx(roll), angles in radians."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    r = np.stack([
        cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
        sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
        -sp, cp * sr, cp * cr,
    ], axis=-1)
    return r.reshape(np.shape(yaw) + (3, 3))


@dataclass(frozen=True)
class Trajectory:
    """Closed loop of period `period_s`; time 0 is at stamp `start_ns`."""

    centre: tuple = (0.0, 0.0, 1.3)
    radii: tuple = (1.8, 1.2)
    period_s: float = 20.0
    bob_m: float = 0.15
    sway_rad: float = 0.35
    tilt_rad: float = 0.08
    start_ns: int = 0

    def world_from_body(self, t_ns):
        """Poses (..., 4, 4) float64 at stamps t_ns (int ns, any shape)."""
        t = (np.asarray(t_ns, dtype=np.int64) - self.start_ns).astype(float) * 1e-9
        w = 2 * np.pi / self.period_s
        rx, ry = self.radii
        pos = np.stack([rx * np.cos(w * t), ry * np.sin(w * t), self.bob_m * np.sin(2 * w * t)], -1)
        pos = pos + np.asarray(self.centre)
        heading = np.arctan2(ry * np.cos(w * t), -rx * np.sin(w * t))
        yaw = heading + self.sway_rad * np.sin(3 * w * t)
        r = rotation_zyx(yaw, self.tilt_rad * np.sin(2.3 * w * t), 0.5 * self.tilt_rad * np.sin(1.7 * w * t))
        pose = np.zeros(t.shape + (4, 4))
        pose[..., :3, :3] = r
        pose[..., :3, 3] = pos
        pose[..., 3, 3] = 1.0
        return pose
