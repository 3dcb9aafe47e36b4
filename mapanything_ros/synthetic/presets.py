"""Named synthetic scenes, so separate processes (player, oracle backend, tests) build the same one.

"default": the default rig (640x480 plumb_bob front camera, 512x384 equidistant fisheye, 16-beam
LiDAR). "small": the same rig geometry (mounts, fields of view, distortion, LiDAR) with the
camera images scaled by 1/4 (160x120 and 128x96), for fast multi-process tests. "small_moving":
"small" with a box that walks to and fro in the middle of the room (mover.MovingBox), to see
a map clear what moved. "small_ground": "small" on a ground robot: the body drives level at
0.2 m (no bob, a tenth of the tilt), so the cameras are 0.3 m above the floor and see it at
grazing angles (the other rigs fly at 1.3 m). "surround": four 640x480 cameras looking forward,
left, right and back (sensors.surround_cameras) with the default LiDAR, for multi-camera rigs.
"""

from dataclasses import replace

from .mover import MovingBox
from .scene import SyntheticScene
from .sensors import default_cameras, scaled_camera, surround_cameras
from .trajectory import Trajectory

PRESETS = ("default", "small", "small_moving", "small_ground", "surround")
SMALL_SCALE = 0.25


def make_scene(preset="default", seed=0):
    """The SyntheticScene of a named preset (see PRESETS and the module doc) and room seed."""
    if preset == "default":
        return SyntheticScene(seed=seed)
    if preset in ("small", "small_moving", "small_ground"):
        cams = [replace(c, camera=scaled_camera(c.camera, SMALL_SCALE)) for c in default_cameras()]
        ground = Trajectory(centre=(0.0, 0.0, 0.2), bob_m=0.0, tilt_rad=0.008) if preset == "small_ground" else None
        return SyntheticScene(seed=seed, cameras=cams, trajectory=ground,
                              mover=MovingBox() if preset == "small_moving" else None)
    if preset == "surround":
        return SyntheticScene(seed=seed, cameras=surround_cameras())
    raise ValueError(f"unknown synthetic preset {preset!r}; expected one of {PRESETS}")
