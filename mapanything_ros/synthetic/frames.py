"""Frames (the pipeline's input) from the synthetic scene, as a robot's drivers would deliver them."""

from ..window import Frame


def capture_frames(scene, stamp_ns, poses=True, lidar=True):
    """Frames of every rig camera at stamp_ns, reference camera first.

    poses: attach the true world_from_camera. lidar: attach the sparse z-depth of the LiDAR sweep
    centred on stamp_ns (motion-compensated, see SyntheticScene.lidar_depth).
    """
    sweep = scene.sweep(int(stamp_ns) - scene.lidar.sweep_ns // 2) if lidar else None
    return [
        Frame(v.image, v.camera, v.stamp_ns, v.name, v.world_from_camera if poses else None,
              scene.lidar_depth(v.name, stamp_ns, sweep) if lidar else None)
        for v in scene.capture(stamp_ns)
    ]
