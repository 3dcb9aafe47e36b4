"""The geometry demo: a moving spinning LiDAR projected into two distorted cameras.

A box-shaped room is scanned by a LiDAR that moves during its sweep. Each sweep
is projected into a wide-angle rational_polynomial camera and an equidistant
fisheye at the model resolution, with and without per-point motion
compensation, and compared with the true depth of the room. Writes colourised
sparse-depth pictures and a JSON summary. Later issues grow this into the full
reconstruction demo.
"""

import json
from pathlib import Path

import cv2
import numpy as np

from .geometry import CameraModel, Resize, SourceMotion, project_to_depth, ray_to_z_depth

ROOM = np.array([[-4.0, -3.0, -1.2], [4.0, 3.0, 1.8]])  # lidar frame at t0: x forward, z up
SWEEP_NS = 100_000_000  # 10 Hz LiDAR
VELOCITY = np.array([1.5, 0.3, 0.0])  # m/s of the robot, world frame

# Optical (x right, y down, z forward) from the LiDAR body frame (x forward, y left, z up).
OPTICAL_FROM_BODY = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


def room_distance(origins, directions):
    """Distance along unit directions (N, 3) from origins (N, 3) inside ROOM to its walls."""
    with np.errstate(divide="ignore"):
        t = (ROOM[None] - origins[:, None]) / directions[:, None]  # (N, 2, 3)
    return np.where(t > 0, t, np.inf).min(axis=(1, 2))


def lidar_sweep(beams=32, azimuths=2048):
    """Points (N, 3) in the LiDAR frame at their own times (N,) int ns, and true origins (N, 3).

    The sensor starts at the world origin and moves with VELOCITY; the world frame is the
    LiDAR frame at t = 0.
    """
    el = np.deg2rad(np.linspace(-25.0, 15.0, beams))
    az = np.linspace(-np.pi, np.pi, azimuths, endpoint=False)
    el, az = np.meshgrid(el, az, indexing="ij")
    dirs = np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], -1).reshape(-1, 3)
    times = np.broadcast_to(((az + np.pi) / (2 * np.pi) * SWEEP_NS).astype(np.int64), el.shape).ravel()
    origins = VELOCITY[None] * (times[:, None] * 1e-9)
    points = dirs * room_distance(origins, dirs)[:, None]  # in the moving LiDAR frame (no rotation)
    return points, times


def cameras():
    """Two calibrated cameras (CameraInfo fields) and their body-frame yaw (rad)."""
    wide = CameraModel.from_camera_info_fields(
        1280, 720, [640.0, 0, 641.5, 0, 640.0, 359.2, 0, 0, 1],
        [0.12, -0.05, 0.0004, -0.0003, 0.01, 0.45, -0.06, 0.02], "rational_polynomial")
    fisheye = CameraModel.from_camera_info_fields(
        1280, 720, [420.0, 0, 640.0, 0, 420.0, 360.0, 0, 0, 1],
        [0.05, -0.01, 0.002, -0.0005], "equidistant")
    return {"front_wide": (wide, 0.0), "left_fisheye": (fisheye, np.pi / 2)}


def cam_from_body(yaw):
    """4x4 pose of the LiDAR body frame in a camera optical frame turned by yaw about body z."""
    c, s = np.cos(yaw), np.sin(yaw)
    body_from_cam_body = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    pose = np.eye(4)
    pose[:3, :3] = OPTICAL_FROM_BODY @ body_from_cam_body.T
    return pose


def true_z(camera, resize, cam_from_lidar, lidar_origin):
    """True z-depth of the room at the model-resolution pixels of a camera at lidar_origin."""
    rays = resize.rays(camera)
    world_dirs = rays.reshape(-1, 3) @ cam_from_lidar[:3, :3]  # lidar axes = world axes here
    ok = np.isfinite(world_dirs).all(axis=1)
    dist = np.zeros(len(world_dirs))
    dist[ok] = room_distance(np.broadcast_to(lidar_origin, world_dirs[ok].shape), world_dirs[ok])
    return ray_to_z_depth(dist.reshape(rays.shape[:2]), rays)


def colourise(depth, max_depth=8.0):
    """BGR picture of a sparse depth map: measured pixels enlarged, near = warm, none = black."""
    inv = np.where(depth > 0, 1.0 - np.clip(depth / max_depth, 0, 1), 0.0)
    img = cv2.applyColorMap((inv * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    img[depth <= 0] = 0
    return cv2.dilate(img, np.ones((3, 3), np.uint8))


def run(out_dir):
    """Run the demo, write pictures and summary.json into out_dir; return the summary dict."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points, times = lidar_sweep()
    stamp = SWEEP_NS // 2  # the images are taken mid-sweep
    motion = SourceMotion(0, _translation(np.zeros(3)), SWEEP_NS, _translation(VELOCITY * SWEEP_NS * 1e-9), stamp)
    summary = {"lidar_points": int(len(points)), "cameras": {}}
    for name, (camera, yaw) in cameras().items():
        resize = Resize.to_model(camera.width, camera.height)
        cam_from_lidar = cam_from_body(yaw)
        truth = true_z(camera, resize, cam_from_lidar, VELOCITY * stamp * 1e-9)
        rays_z = resize.rays(camera)[..., 2]
        fov = 2 * np.degrees(np.arccos(np.nanmin(rays_z)))
        figures = {"model_size": list(resize.out_size), "fov_deg": round(float(fov), 1)}
        for label, kwargs in (("compensated", {"times": times, "motion": motion}), ("raw", {})):
            depth = project_to_depth(points, cam_from_lidar, camera, resize=resize, **kwargs)
            hit = (depth > 0) & (truth > 0)
            err = np.abs(depth[hit] - truth[hit])
            figures[label] = {"pixels": int(hit.sum()), "median_abs_error_m": float(np.median(err)),
                              "p95_abs_error_m": float(np.percentile(err, 95))}
            cv2.imwrite(str(out_dir / f"{name}_{label}_depth.png"), colourise(depth))
        summary["cameras"][name] = figures
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _translation(t):
    pose = np.eye(4)
    pose[:3, 3] = t
    return pose
