"""Sensors of the synthetic rig: cameras (any CameraInfo model) and a spinning LiDAR, mounted on the body.

Mounting poses are body_from_sensor 4x4 (body REP 103: x forward, y left, z up). Cameras use
the optical frame (x right, y down, z forward); the LiDAR frame is x forward, y left, z up.
"""

from dataclasses import dataclass

import numpy as np

from ..geometry import CameraModel
from .trajectory import rotation_zyx

# Rotation body_from_optical for a camera looking along body +x.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def mount(position, yaw=0.0, pitch=0.0, optical=True):
    """body_from_sensor 4x4: sensor at `position` (m, body frame) turned by yaw then pitch (rad).

    optical: the sensor frame is a camera optical frame (looking along its z) rather than x forward.
    """
    pose = np.eye(4)
    r = rotation_zyx(np.float64(yaw), np.float64(pitch), np.float64(0.0))
    pose[:3, :3] = r @ BODY_FROM_OPTICAL if optical else r
    pose[:3, 3] = position
    return pose


@dataclass(frozen=True)
class RigCamera:
    """A camera on the rig: `name` is its frame id."""

    name: str
    camera: CameraModel
    body_from_camera: np.ndarray


@dataclass(frozen=True)
class Lidar:
    """A spinning LiDAR: `rows` beams at elevations in [min, max] (rad), `columns` azimuth steps per
    sweep of `sweep_ns`, starting forward (+x) and turning counter-clockwise (towards +y)."""

    body_from_lidar: np.ndarray
    rows: int = 16
    columns: int = 512
    elevation: tuple = (np.deg2rad(-15.0), np.deg2rad(15.0))
    sweep_ns: int = 100_000_000

    def beams(self):
        """(unit directions (rows·columns, 3) in the LiDAR frame, time offsets (rows·columns,) int ns)."""
        el = np.linspace(*self.elevation, self.rows)
        col = np.arange(self.columns)
        az = 2 * np.pi * col / self.columns
        el, az = np.meshgrid(el, az, indexing="ij")
        dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
        offsets = (col * self.sweep_ns) // self.columns
        return dirs, np.broadcast_to(offsets, el.shape).reshape(-1).astype(np.int64)


def default_cameras():
    """Front plumb_bob camera (640x480) and a left-looking equidistant fisheye (512x384)."""
    front = CameraModel(640, 480, (420.0, 0, 322.5, 0, 418.0, 238.0, 0, 0, 1),
                        (-0.08, 0.03, 0.0005, -0.0004, 0.0), "plumb_bob")
    fisheye = CameraModel(512, 384, (230.0, 0, 257.0, 0, 230.0, 190.5, 0, 0, 1),
                          (0.02, -0.01, 0.002, 0.0), "equidistant")
    return (
        RigCamera("front_optical", front, mount((0.15, 0.0, 0.1))),
        RigCamera("left_fisheye_optical", fisheye, mount((0.0, 0.1, 0.1), yaw=np.pi / 2, pitch=0.1)),
    )


def surround_cameras():
    """Four 640x480 cameras looking forward, left, right and back: the default front camera, the
    default fisheye scaled to 640x480, and two more plumb_bob cameras (a multi-camera rig)."""
    front, fisheye = default_cameras()
    return (
        front,
        RigCamera(fisheye.name, scaled_camera(fisheye.camera, 640 / fisheye.camera.width), fisheye.body_from_camera),
        RigCamera("right_optical", front.camera, mount((0.0, -0.1, 0.1), yaw=-np.pi / 2, pitch=0.1)),
        RigCamera("rear_optical", front.camera, mount((-0.15, 0.0, 0.1), yaw=np.pi)),
    )


def scaled_camera(camera, scale):
    """The CameraModel of `camera` with its image scaled by `scale` (pixel-index grid: a pixel
    centre j maps to (j + 0.5) * scale - 0.5, so fx, fy scale and cx, cy follow that rule)."""
    fx, s, cx, _, fy, cy, *_ = camera.k
    k = (fx * scale, s * scale, (cx + 0.5) * scale - 0.5, 0.0, fy * scale, (cy + 0.5) * scale - 0.5, 0.0, 0.0, 1.0)
    return CameraModel(round(camera.width * scale), round(camera.height * scale), k, camera.d,
                       camera.distortion_model)


def sized_camera(camera, width, height):
    """`camera` scaled to `width` columns, then cropped to `height` rows about its centre (cy
    shifted): another resolution and aspect of the same lens (ValueError when the scaled image has
    fewer than `height` rows)."""
    scaled = scaled_camera(camera, width / camera.width)
    top = (scaled.height - height) // 2
    if top < 0:
        raise ValueError(f"{camera.width}x{camera.height} scaled to {width} columns has {scaled.height} rows, "
                         f"fewer than {height}")
    fx, s, cx, _, fy, cy, *_ = scaled.k
    return CameraModel(width, height, (fx, s, cx, 0.0, fy, cy - top, 0.0, 0.0, 1.0), scaled.d,
                       scaled.distortion_model)


def default_lidar():
    """A 16-beam LiDAR 0.3 m above the body origin, 10 Hz."""
    return Lidar(mount((0.0, 0.0, 0.3), optical=False))
