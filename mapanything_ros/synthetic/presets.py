"""Named synthetic scenes, so separate processes (player, oracle backend, tests) build the same one.

"default": the default rig (640x480 plumb_bob front camera, 512x384 equidistant fisheye, 16-beam
LiDAR). "small": the same rig geometry (mounts, fields of view, distortion, LiDAR) with the
camera images scaled by 1/4 (160x120 and 128x96), for fast multi-process tests. "small_moving":
"small" with a box that walks to and fro in the middle of the room (mover.MovingBox), to see
a map clear what moved.
"""

from dataclasses import replace

from ..geometry import CameraModel
from .mover import MovingBox
from .scene import SyntheticScene
from .sensors import default_cameras

PRESETS = ("default", "small", "small_moving")
SMALL_SCALE = 0.25


def scaled_camera(camera, scale):
    """The CameraModel of `camera` with its image scaled by `scale` (pixel-index grid: a pixel
    centre j maps to (j + 0.5) * scale - 0.5, so fx, fy scale and cx, cy follow that rule)."""
    fx, s, cx, _, fy, cy, *_ = camera.k
    k = (fx * scale, s * scale, (cx + 0.5) * scale - 0.5, 0.0, fy * scale, (cy + 0.5) * scale - 0.5, 0.0, 0.0, 1.0)
    return CameraModel(round(camera.width * scale), round(camera.height * scale), k, camera.d,
                       camera.distortion_model)


def make_scene(preset="default", seed=0):
    """The SyntheticScene of a named preset (see PRESETS and the module doc) and room seed."""
    if preset == "default":
        return SyntheticScene(seed=seed)
    if preset in ("small", "small_moving"):
        cams = [replace(c, camera=scaled_camera(c.camera, SMALL_SCALE)) for c in default_cameras()]
        return SyntheticScene(seed=seed, cameras=cams, mover=MovingBox() if preset == "small_moving" else None)
    raise ValueError(f"unknown synthetic preset {preset!r}; expected one of {PRESETS}")
