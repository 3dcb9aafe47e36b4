"""Frame: one synchronized image of one camera, with what is known about it (numpy, no ROS)."""

from dataclasses import dataclass, field, replace

import numpy as np

from ..geometry import CameraModel


@dataclass(frozen=True, eq=False)
class Frame:
    """One camera image at one time.

    image (H, W, 3) uint8 RGB at the camera's published size; camera: CameraModel; stamp_ns:
    the image's own stamp, int nanoseconds (its pose and depth are at that time); frame_id: the camera's optical frame id (also tells cameras apart);
    world_from_camera: 4x4 float64 pose in the optical frame, or None when unknown;
    sparse_depth: (H, W) float32 z-depth in metres, 0 = no measurement, or None;
    capture_ns: the stamp of the capture the frame belongs to (the frames of one capture share it
    and enter the window together; the sync makes it the midpoint of its image stamps), default
    stamp_ns; meta: whatever the caller keeps with the frame (the session's keyframe record),
    unused here: it lives exactly as long as the frame in the window.
    Deferred work: `image` and `sparse_depth` may be functions returning them (decoding, LiDAR
    projection), called by `resolved()` only for frames that become keyframes, on the pipeline's
    prepare thread (window.prepare), never on the thread that offers the capture.
    """

    image: np.ndarray
    camera: CameraModel
    stamp_ns: int
    frame_id: str
    world_from_camera: np.ndarray | None = None
    sparse_depth: np.ndarray | None = None
    capture_ns: int | None = None
    meta: object = field(default=None, repr=False)

    def __post_init__(self):
        w, h = self.camera.image_size
        if not callable(self.image) and (self.image.shape != (h, w, 3) or self.image.dtype != np.uint8):
            raise ValueError(f"{self.frame_id}: image must be ({h}, {w}, 3) uint8, got "
                             f"{self.image.shape} {self.image.dtype}")
        if self.sparse_depth is not None and not callable(self.sparse_depth) and self.sparse_depth.shape != (h, w):
            raise ValueError(f"{self.frame_id}: sparse_depth must be ({h}, {w}), got {self.sparse_depth.shape}")
        if self.world_from_camera is not None:
            pose = np.asarray(self.world_from_camera, dtype=np.float64)
            if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
                raise ValueError(f"{self.frame_id}: world_from_camera must be a finite 4x4, got {pose.shape}")
            object.__setattr__(self, "world_from_camera", pose)
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        object.__setattr__(self, "capture_ns", self.stamp_ns if self.capture_ns is None else int(self.capture_ns))

    def resolved(self):
        """This frame with its deferred image and sparse depth computed (itself when there is none
        to compute); raises ValueError when they do not match the camera."""
        if not callable(self.image) and not callable(self.sparse_depth):
            return self
        return replace(self, image=self.image() if callable(self.image) else self.image,
                       sparse_depth=self.sparse_depth() if callable(self.sparse_depth) else self.sparse_depth)

    @property
    def key(self):
        """(frame_id, stamp_ns): identifies the image (used as the model's feature-cache id)."""
        return self.frame_id, self.stamp_ns
