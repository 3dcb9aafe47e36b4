"""The synthetic scene: room + trajectory + rig, rendered to camera views and LiDAR sweeps.

Everything is exact ray casting (see room.Room): images, true depth, true poses, and LiDAR
points measured from the sensor's pose at each point's own time (a moving, spinning LiDAR).
"""

from dataclasses import dataclass

import numpy as np

from ..geometry import (GRID_INDEX, CameraModel, SourceMotion, project_to_depth, ray_to_z_depth, se3_compose,
                        se3_inverse)
from .room import Room
from .sensors import default_cameras, default_lidar
from .trajectory import Trajectory


@dataclass(frozen=True)
class View:
    """One rendered camera image with its ground truth.

    image (H, W, 3) uint8 RGB; world_from_camera 4x4 (optical frame); depth_z and depth_ray
    (H, W) float32 metres, z-depth and depth along the pixel's unit ray, 0 outside the lens's
    valid field of view.
    """

    name: str
    camera: CameraModel
    stamp_ns: int
    world_from_camera: np.ndarray
    image: np.ndarray
    depth_z: np.ndarray
    depth_ray: np.ndarray


@dataclass(frozen=True)
class Sweep:
    """One LiDAR sweep: points (N, 3) in the LiDAR frame, each at its own time times_ns (N,) int ns,
    over [start_ns, start_ns + sweep_ns]."""

    points: np.ndarray
    times_ns: np.ndarray
    start_ns: int
    end_ns: int


class SyntheticScene:
    """Room, trajectory, rig cameras and LiDAR, and optionally a moving box (`mover`, a
    mover.MovingBox). Deterministic from `seed` (the room's layout and textures). `room` is the
    static room; room_at(stamp) what the sensors see at a stamp."""

    def __init__(self, seed=0, cameras=None, lidar=None, trajectory=None, grid=GRID_INDEX, mover=None):
        self.room = Room(seed)
        self.cameras = tuple(cameras or default_cameras())
        self.lidar = lidar or default_lidar()
        self.trajectory = trajectory or Trajectory()
        self.grid = grid
        self.mover = mover

    def room_at(self, stamp_ns):
        """The Room as it is at stamp_ns: the static room, with the moving box (a mover.MovingBox,
        if any) where it stands then."""
        return self.room if self.mover is None else self.room.with_box(*self.mover.bounds(stamp_ns))

    def rig_camera(self, name):
        """The RigCamera with frame id `name`."""
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise KeyError(f"no camera {name!r}; the rig has {[c.name for c in self.cameras]}")

    def world_from_camera(self, name, stamp_ns):
        """True world_from_camera 4x4 (optical frame) of camera `name` at stamp_ns."""
        return se3_compose(self.trajectory.world_from_body(stamp_ns), self.rig_camera(name).body_from_camera)

    def world_from_lidar(self, stamp_ns):
        """True world_from_lidar (..., 4, 4) at stamps (int ns)."""
        return se3_compose(self.trajectory.world_from_body(stamp_ns), self.lidar.body_from_lidar)

    def ray_depth(self, world_from_camera, rays, stamp_ns):
        """True depth (float64 metres) along camera-frame unit rays (..., 3) from a camera pose at a
        stamp (int ns); NaN for NaN rays."""
        rays = np.asarray(rays, float)
        dirs = np.einsum("ij,nj->ni", world_from_camera[:3, :3], rays.reshape(-1, 3))
        origins = np.broadcast_to(world_from_camera[:3, 3], dirs.shape)
        dist, _ = self.room_at(stamp_ns).cast(origins, dirs)
        return dist.reshape(rays.shape[:-1])

    def render(self, name, stamp_ns):
        """The View of camera `name` at stamp_ns."""
        cam = self.rig_camera(name)
        pose = self.world_from_camera(name, stamp_ns)
        rays = cam.camera.ray_map(grid=self.grid)
        h, w = rays.shape[:2]
        dirs = np.einsum("ij,nj->ni", pose[:3, :3], rays.reshape(-1, 3))
        room = self.room_at(stamp_ns)
        dist, face = room.cast(np.broadcast_to(pose[:3, 3], dirs.shape), dirs)
        rgb = room.color(pose[:3, 3] + dirs * np.nan_to_num(dist)[:, None], face)
        image = np.round(rgb * 255).astype(np.uint8).reshape(h, w, 3)
        depth_ray = np.nan_to_num(dist).astype(np.float32).reshape(h, w)
        return View(name, cam.camera, int(stamp_ns), pose, image, ray_to_z_depth(depth_ray, rays), depth_ray)

    def capture(self, stamp_ns):
        """Views of every rig camera at one stamp (a synchronized capture)."""
        return [self.render(c.name, stamp_ns) for c in self.cameras]

    def sweep(self, start_ns):
        """The LiDAR sweep starting at start_ns, each point measured from the sensor pose at its own
        time (a moving box where it stands at the sweep's start)."""
        dirs, offsets = self.lidar.beams()
        times = int(start_ns) + offsets
        poses = self.world_from_lidar(times)
        world_dirs = np.einsum("nij,nj->ni", poses[:, :3, :3], dirs)
        dist, _ = self.room_at(start_ns).cast(poses[:, :3, 3], world_dirs)
        return Sweep(dirs * dist[:, None], times, int(start_ns), int(start_ns) + self.lidar.sweep_ns)

    def lidar_depth(self, name, stamp_ns, sweep):
        """Sparse z-depth (H, W) float32 (0 = none) of a sweep in camera `name` at stamp_ns, motion-compensated.

        The LiDAR motion over the sweep is taken as constant-velocity between its true poses at
        the sweep's start and end (as a robot would from odometry), so it is close to, not exactly, true.
        """
        cam = self.rig_camera(name)
        motion = SourceMotion(sweep.start_ns, self.world_from_lidar(sweep.start_ns), sweep.end_ns,
                              self.world_from_lidar(sweep.end_ns), int(stamp_ns), extrapolate=True)
        cam_from_lidar = se3_compose(se3_inverse(cam.body_from_camera), self.lidar.body_from_lidar)
        return project_to_depth(sweep.points, cam_from_lidar, cam.camera, times=sweep.times_ns,
                                motion=motion, grid=self.grid)
