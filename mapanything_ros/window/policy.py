"""Keyframe policy: is a new capture different enough from the newest keyframe to be kept?"""

from dataclasses import dataclass

import numpy as np

from ..geometry import relative_pose


def motion(world_from_a, world_from_b):
    """(translation m, rotation rad) between two poses (4x4)."""
    rel = relative_pose(world_from_a, world_from_b)
    cos = np.clip((np.trace(rel[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.linalg.norm(rel[:3, 3])), float(np.arccos(cos))


@dataclass(frozen=True)
class MotionRate:
    """How fast the main camera moved between the two newest keyframes of the last window, from
    their refined poses: speed (m/s in the poses' frame), turn (rad/s). What a capture without a
    pose (image-only) is admitted by as well as time: its motion since the newest keyframe is
    taken as rate times the time elapsed (constant velocity)."""

    speed: float
    turn: float

    @classmethod
    def of(cls, frames, poses):
        """The rate of the newest capture's main camera (its first frame) between that capture and
        the one before it, among `frames` (window.Window.views order), whose world-from-camera
        poses are `poses` (4x4 each, one frame); None with fewer than two captures or when the
        one before lacks that camera."""
        stamps = sorted({f.capture_ns for f in frames})
        if len(stamps) < 2:
            return None
        main = next(f.frame_id for f in frames if f.capture_ns == stamps[-1])
        pose = {f.capture_ns: p for f, p in zip(frames, poses) if f.frame_id == main}
        if stamps[-2] not in pose:
            return None
        moved, turned = motion(pose[stamps[-2]], pose[stamps[-1]])
        dt = (stamps[-1] - stamps[-2]) * 1e-9
        return cls(moved / dt, turned / dt)


@dataclass(frozen=True)
class KeyframePolicy:
    """Admit a capture when, against the newest keyframe, its camera moved more than `translation_m`,
    turned more than `rotation_rad`, or more than `elapsed_s` passed. Motion is measured per camera
    (same frame_id in both captures) where both poses are known; where a capture has no pose, it
    is the MotionRate of the last window times the time elapsed, when there is one; otherwise
    only time counts."""

    translation_m: float = 0.2
    rotation_rad: float = 0.2
    elapsed_s: float = 1.0

    def reason(self, newest, capture, rate=None):
        """Why `capture` (frames) is a keyframe after the keyframe `newest` (frames), or None if it
        is not; rate: a MotionRate for frames without a pose, or None."""
        dt = (capture[0].capture_ns - newest[0].capture_ns) * 1e-9
        if dt > self.elapsed_s:
            return f"{dt:.3f} s elapsed > {self.elapsed_s} s"
        before = {f.frame_id: f.world_from_camera for f in newest}
        for frame in capture:
            old = before.get(frame.frame_id)
            if old is None or frame.world_from_camera is None:
                continue
            moved, turned = motion(old, frame.world_from_camera)
            if moved > self.translation_m:
                return f"{frame.frame_id} moved {moved:.3f} m > {self.translation_m} m"
            if turned > self.rotation_rad:
                return f"{frame.frame_id} turned {turned:.3f} rad > {self.rotation_rad} rad"
        if rate is None or all(f.world_from_camera is not None for f in capture):
            return None
        if rate.speed * dt > self.translation_m:
            return (f"moved about {rate.speed * dt:.3f} m ({rate.speed:.2f} m/s over {dt:.3f} s, from the last "
                    f"window) > {self.translation_m} m")
        if rate.turn * dt > self.rotation_rad:
            return (f"turned about {rate.turn * dt:.3f} rad ({rate.turn:.2f} rad/s over {dt:.3f} s, from the last "
                    f"window) > {self.rotation_rad} rad")
        return None
