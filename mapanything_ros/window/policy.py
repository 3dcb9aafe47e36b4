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
class KeyframePolicy:
    """Admit a capture when, against the newest keyframe, its camera moved more than `translation_m`,
    turned more than `rotation_rad`, or more than `elapsed_s` passed. Motion is measured per camera
    (same frame_id in both captures) where both poses are known; without poses only time counts."""

    translation_m: float = 0.2
    rotation_rad: float = 0.2
    elapsed_s: float = 1.0

    def reason(self, newest, capture):
        """Why `capture` (frames) is a keyframe after the keyframe `newest` (frames), or None if it is not."""
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
        return None
