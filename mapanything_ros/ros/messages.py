"""rclpy messages of the session's outputs: headers, CameraInfo copies, ReconstructionWindow, TF."""

from array import array

import numpy as np

from geometry_msgs.msg import Pose
from nav_msgs.msg import OccupancyGrid
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header
from tf2_msgs.msg import TFMessage

from ..geometry.rectify import info_fields
from ..geometry.transforms import quat_trans_from_pose
from ..msg import ReconstructionWindow
from .tf import matrix_to_transform


def make_header(frame_id, stamp_ns):
    """std_msgs/Header at an int-nanosecond stamp."""
    return Header(frame_id=frame_id, stamp=Time(nanoseconds=int(stamp_ns)).to_msg())


def with_header(info, header):
    """A copy of CameraInfo `info` with `header`."""
    return CameraInfo(header=header, height=info.height, width=info.width, distortion_model=info.distortion_model,
                      d=info.d, k=info.k, r=info.r, p=info.p, binning_x=info.binning_x, binning_y=info.binning_y,
                      roi=info.roi)


def rectified_info(info, rect, header):
    """The pinhole CameraInfo (geometry.rectify.info_fields) of a rectified image
    (geometry.rectify.Rectification `rect`) of the camera of CameraInfo `info`."""
    binning = (max(info.binning_x, 1), max(info.binning_y, 1))
    return CameraInfo(header=header, **info_fields(rect, info.p, binning))


def pose_msg(world_from_camera):
    """geometry_msgs/Pose of a 4x4 (quaternion x, y, z, w)."""
    q, t = quat_trans_from_pose(world_from_camera)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in t)
    pose.orientation.x, pose.orientation.y, pose.orientation.z, pose.orientation.w = (float(v) for v in q)
    return pose


def window_msg(output):
    """ReconstructionWindow of a session.WindowOutput."""
    result = output.result
    msg = ReconstructionWindow(header=make_header(output.frame_id, output.stamp_ns), sequence=output.sequence,
                               reference_index=0, metric_scale=float(output.reconstruction.metric_scale),
                               metric_inputs=output.metric_inputs, backend=output.values["backend"],
                               inference_time=float(result.timings.get("inference", 0)))
    for stamp, frame_id, pose, intrinsics, posed, depth in output.views():
        msg.stamps.append(make_header("", stamp).stamp)
        msg.frame_ids.append(frame_id)
        msg.poses.append(pose_msg(pose))
        msg.used_intrinsics.append(intrinsics)
        msg.used_pose.append(posed)
        msg.used_depth.append(depth)
    return msg


def tf_msg(transforms):
    """TFMessage of (parent_from_child 4x4, parent, child, stamp_ns) tuples."""
    return TFMessage(transforms=[matrix_to_transform(m, parent, child, stamp) for m, parent, child, stamp in transforms])


def occupancy_msg(grid, header):
    """nav_msgs/OccupancyGrid of a mapping.Grid2D (cells -1 / 0 / 100, row-major from its origin,
    rows along y): the grid's origin at height 0 of header.frame_id, unrotated. A grid of no cells
    is sent as one unknown cell at its origin: Nav2's static layer (nav2_util validateMsg) and
    RViz's Map display refuse a 0 x 0 map and keep showing the one before."""
    cells = grid.cells if grid.cells.size else np.full((1, 1), -1, np.int8)
    msg = OccupancyGrid(header=header)
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(grid.resolution)
    msg.info.height, msg.info.width = (int(n) for n in cells.shape)
    msg.info.origin.position.x, msg.info.origin.position.y = (float(v) for v in grid.origin)
    msg.info.origin.orientation.w = 1.0
    msg.data = array("b", cells.astype("int8", copy=False).tobytes())
    return msg
