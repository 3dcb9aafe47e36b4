"""Camera models, rigid transforms and depth projection (numpy; the resampling kernels also run on
torch tensors, see arrays; no ROS)."""

from .camera import GRID_CENTER, GRID_INDEX, CameraModel, ModelPixels
from .depth import MovingSweep, SourceMotion, depth_image_to_meters, project_to_depth, ray_to_z_depth, z_to_ray_depth
from .resize import Resize, model_size
from .transforms import (
    interpolate_pose,
    matrix_to_quat,
    pose_from_quat_trans,
    quat_multiply,
    quat_to_matrix,
    quat_trans_from_pose,
    relative_pose,
    se3_compose,
    se3_inverse,
    slerp,
)

__all__ = [
    "GRID_CENTER", "GRID_INDEX", "CameraModel", "ModelPixels", "MovingSweep", "Resize", "SourceMotion",
    "depth_image_to_meters",
    "interpolate_pose", "matrix_to_quat", "model_size", "pose_from_quat_trans", "project_to_depth",
    "quat_multiply", "quat_to_matrix", "quat_trans_from_pose", "ray_to_z_depth", "relative_pose",
    "se3_compose", "se3_inverse", "slerp", "z_to_ray_depth",
]
