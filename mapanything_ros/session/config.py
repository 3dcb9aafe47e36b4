"""What the parameters (settings.SPECS names) configure: the pipeline and the capture sync."""

from ..mapping import CompletionConfig
from ..pipeline import PipelineConfig
from ..sync import LIDAR_SOURCE, CaptureSync
from ..units import SEC
from ..window import BatchConfig, KeyframePolicy

DEPTH_WAIT_S = 0.3  # longest a capture waits for depth (message time): a 10 Hz sweep goes out at its end


def pipeline_config(values):
    """The PipelineConfig of a parameter set."""
    p = values
    return PipelineConfig(
        window_size=p["window_size"],
        keyframes=KeyframePolicy(p["keyframe_translation"], p["keyframe_rotation"], p["keyframe_interval"]),
        batch=BatchConfig(use_intrinsics=p["use_intrinsics"], use_poses=p["use_poses"], use_depth=p["use_depth"],
                          metric_poses=p["metric_poses"], metric_depth=p["metric_depth"],
                          depth_without_scale=p["depth_without_scale"], long_side=p["long_side"]),
        keep_measured=p["keep_measured_depth"], align_to_measured=p["align_to_measured_depth"],
        completion=None if p["depth_correction"] == "none" else CompletionConfig(dense=p["depth_correction"] == "field"),
        edge_threshold=p["edge_threshold"] or None, edge_noise_sigmas=p["edge_noise_sigmas"],
        voxel_size=p["map_voxel_size"], truncation=p["map_truncation"] or None,
        truncation_ratio=p["map_truncation_ratio"], max_weight=p["map_max_weight"], min_weight=p["map_min_weight"],
        max_range=p["map_max_range"] or None, max_voxels=p["map_max_voxels"], confidence_quantile=p["map_confidence_quantile"],
        map_insert=p["map_insert"])


def depth_sources(values):
    """The CaptureSync depth source names: [LIDAR_SOURCE], the cameras (depth_image) or none."""
    if values["depth_source"] == "lidar":
        return [LIDAR_SOURCE]
    return list(values["cameras"]) if values["depth_source"] == "depth_image" else []


def make_sync(values):
    """The CaptureSync of a parameter set (cameras, slop, depth sources and tolerance, camera timeout)."""
    return CaptureSync(values["cameras"], slop_ns(values), depth_sources(values),
                       int(values["depth_tolerance"] * SEC), int(DEPTH_WAIT_S * SEC),
                       camera_timeout_ns=camera_timeout_ns(values), on_silent=values["silent_camera"])


def camera_timeout_ns(values):
    """camera_timeout in ns, at least 1 (any positive value is a timeout, a tiny one too)."""
    return max(1, int(values["camera_timeout"] * SEC))


def slop_ns(values):
    """sync_slop in ns, at least 1 (a set's stamps spread less than it: 0 would pair nothing)."""
    return max(1, int(round(values["sync_slop"] * SEC)))
