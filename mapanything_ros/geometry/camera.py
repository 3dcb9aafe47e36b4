"""Camera model built from the fields of a ROS `sensor_msgs/CameraInfo` (plain values, no ROS types).

Pixel coordinates. K, D and width/height describe the full-resolution, unbinned sensor as
calibrated. The published image may be a region of interest (ROI, given in full-resolution
pixels) and binned by (binning_x, binning_y); 0 and 1 both mean no binning. Following ROS
`image_geometry::PinholeCameraModel` (ros-perception/vision_opencv, `fromCameraInfo` and
`toFullResolution`), a published pixel coordinate (u, v) is the full-resolution coordinate
(u * binning_x + roi.x_offset, v * binning_y + roi.y_offset); equivalently the effective K has
fx/binning_x and (cx - x_offset)/binning_x. The published image has
(roi.width or width) // binning_x columns and (roi.height or height) // binning_y rows.
`do_rectify` only says whether a rectified ROI is meant; rays here always come from the raw
(distorted) image, so it is kept but does not change the geometry.

Continuous pixel coordinates are in the K convention: u = fx*xd + s*yd + cx. Where the centre of
pixel (row i, column j) lies in that convention is the "grid": GRID_INDEX puts it at (j, i)
(OpenCV's and ROS's convention, and what upstream MapAnything `infer` uses to turn intrinsics
into rays), GRID_CENTER at (j + 0.5, i + 0.5) (for K calibrated with pixel corners at integers).
"""

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np

from . import distortion
from .resize import Resize

GRID_INDEX = "index"
GRID_CENTER = "center"
GRID_OFFSETS = {GRID_INDEX: 0.0, GRID_CENTER: 0.5}


def grid_offset(grid):
    """Offset of a pixel centre from its integer index in K coordinates for a grid name."""
    if grid not in GRID_OFFSETS:
        raise ValueError(f"unknown pixel grid {grid!r}; expected one of {sorted(GRID_OFFSETS)}")
    return GRID_OFFSETS[grid]


@dataclass(frozen=True)
class CameraModel:
    """A calibrated camera: CameraInfo fields, validated. Frozen and hashable (caches key on it).

    roi is (x_offset, y_offset, height, width, do_rectify) as in sensor_msgs/RegionOfInterest;
    a zero height/width means the full image.
    """

    width: int
    height: int
    k: tuple
    d: tuple = ()
    distortion_model: str = "plumb_bob"
    binning_x: int = 0
    binning_y: int = 0
    roi: tuple = (0, 0, 0, 0, False)

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "k", tuple(float(v) for v in np.asarray(self.k, dtype=np.float64).ravel()))
        set_(self, "d", tuple(float(v) for v in np.asarray(self.d, dtype=np.float64).ravel()))
        if len(self.k) != 9:
            raise ValueError(f"K must have 9 values (3x3 row-major), got {len(self.k)}")
        if not all(np.isfinite(self.k)):
            raise ValueError(f"K must be finite, got {self.k}")
        fx, s, _, z10, fy, _, z20, z21, one = self.k
        for name, value in (("fx = K[0]", fx), ("fy = K[4]", fy)):
            if not value > 0:
                raise ValueError(f"focal length {name} must be positive and finite, got {value}")
        if z10 != 0 or z20 != 0 or z21 != 0 or one != 1:
            raise ValueError(f"K must be upper triangular with K[8] = 1, got {self.k}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"width and height must be positive, got {self.width}x{self.height}")
        set_(self, "width", int(self.width))
        set_(self, "height", int(self.height))
        for name in ("binning_x", "binning_y"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
            set_(self, name, int(getattr(self, name)))
        if len(self.roi) != 5:
            raise ValueError(f"roi must be (x_offset, y_offset, height, width, do_rectify), got {self.roi}")
        x0, y0, rh, rw, rect = self.roi
        x0, y0, rh, rw = int(x0), int(y0), int(rh), int(rw)
        if min(x0, y0, rh, rw) < 0 or x0 + (rw or self.width - x0) > self.width or y0 + (
            rh or self.height - y0
        ) > self.height:
            raise ValueError(f"roi {self.roi} does not fit in the {self.width}x{self.height} calibration")
        set_(self, "roi", (x0, y0, rh, rw, bool(rect)))
        set_(self, "distortion_model", str(self.distortion_model))
        distortion.from_ros(self.distortion_model, self.d)  # validates model and D

    @classmethod
    def from_camera_info_fields(cls, width, height, k, d, distortion_model, binning_x=0, binning_y=0, roi=None):
        """Build from CameraInfo fields; roi is (x_offset, y_offset, height, width, do_rectify) or None."""
        return cls(width, height, k, d, distortion_model, binning_x, binning_y, roi or (0, 0, 0, 0, False))

    @classmethod
    def pinhole(cls, fx, fy, cx, cy, width, height):
        """Undistorted camera with focal lengths and principal point in pixels."""
        return cls(width, height, (fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0))

    @cached_property
    def lens(self):
        """The distortion model (distortion.Pinhole, RadialTangential or Equidistant)."""
        return distortion.from_ros(self.distortion_model, self.d)

    @property
    def max_angle(self):
        """Half-angle (radians) of the valid field of view about the optical axis."""
        return self.lens.max_angle

    @property
    def binning(self):
        """(binning_x, binning_y) with 0 mapped to 1."""
        return max(self.binning_x, 1), max(self.binning_y, 1)

    @property
    def image_size(self):
        """(width, height) in pixels of the published (ROI-cropped, binned) image."""
        bx, by = self.binning
        return (self.roi[3] or self.width) // bx, (self.roi[2] or self.height) // by

    @property
    def intrinsics(self):
        """Effective 3x3 K of the published image (ROI and binning applied, as image_geometry)."""
        bx, by = self.binning
        fx, s, cx, _, fy, cy = self.k[:6]
        x0, y0 = self.roi[:2]
        return np.array([[fx / bx, s / bx, (cx - x0) / bx], [0.0, fy / by, (cy - y0) / by], [0.0, 0.0, 1.0]])

    def rays(self, u, v):
        """Unit rays (..., 3) in the optical frame at published-image pixel coordinates u, v (K convention).

        NaN where the pixel lies outside the valid field of view.
        """
        k = self.intrinsics
        u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
        yd = (v - k[1, 2]) / k[1, 1]
        xd = (u - k[0, 2] - k[0, 1] * yd) / k[0, 0]
        return distortion.unproject(self.lens, xd, yd)[0]

    def project(self, points):
        """(uv (..., 2), valid (...)) published-image pixel coordinates (K convention) of camera-frame points.

        valid: finite and inside the valid field of view (which implies z > 0 for non-fisheye
        models); uv is NaN where not valid. Points need not be inside the image.
        """
        u, v, valid = self.pixels(*(np.asarray(points, dtype=np.float64)[..., i] for i in range(3)))
        uv = np.stack([u, v], axis=-1)
        uv[~valid] = np.nan
        return uv, valid

    def pixels(self, x, y, z):
        """(u, v, valid) as `project` for camera-frame points given as float64 coordinate arrays
        x, y, z (...); u and v are not set to NaN where not valid."""
        xd, yd, valid = self.lens.project(x, y, z)
        k = self.intrinsics
        u, v = k[0, 0] * xd + k[0, 1] * yd + k[0, 2], k[1, 1] * yd + k[1, 2]
        valid &= np.isfinite(u) & np.isfinite(v)
        return u, v, valid

    def ray_map(self, height=None, width=None, grid=GRID_INDEX, resize=None):
        """Read-only (H, W, 3) float64 unit rays for every pixel, NaN outside the valid field of view.

        Without arguments, for the published image. With `resize` (a Resize from this camera's
        image_size), for the resized/cropped image. With only height/width, for the image
        stretched to that size. Results are cached per (camera, resize, grid).
        """
        grid_offset(grid)
        if resize is None:
            w, h = self.image_size
            resize = Resize.stretch((w, h), (width or w, height or h))
        elif resize.in_size != self.image_size:
            raise ValueError(f"resize is for a {resize.in_size} image, the camera publishes {self.image_size}")
        return _cached_ray_map(self, resize, grid)


@lru_cache(maxsize=8)
def _cached_ray_map(camera, resize, grid):
    w, h = resize.out_size
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    su, sv = resize.to_source(u, v)
    off = GRID_OFFSETS[grid]
    rays = camera.rays(su + off, sv + off)
    rays.setflags(write=False)
    return rays


def clear_ray_cache():
    """Drop all cached ray maps."""
    _cached_ray_map.cache_clear()


@dataclass(frozen=True)
class ModelPixels:
    """The projection of a camera's points to the model pixels of its resized image: called with
    camera-frame coordinates (x, y, z) arrays, gives (column, row, valid) in continuous
    pixel-index coordinates of the model image (mapping.tsdf.RangeView.pixels)."""

    camera: CameraModel
    resize: Resize
    grid: str

    @classmethod
    def native(cls, camera):
        """The camera's own image (no resize, index grid)."""
        return cls(camera, Resize.stretch(camera.image_size, camera.image_size), GRID_INDEX)

    def __call__(self, x, y, z):
        u, v, valid = self.camera.pixels(x, y, z)
        off = grid_offset(self.grid)
        col, row = self.resize.to_output(u - off, v - off)
        return col, row, valid

    @cached_property
    def projection(self):
        """(lens, pixel): this projection for compiled code (_tsdf_fuse.c): the lens's
        distortion spec() and (fx, skew, cx, fy, cy, grid offset, sx, sy, crop x, crop y)."""
        k = self.camera.intrinsics
        (sx, sy), (crop_x, crop_y) = self.resize.scale, self.resize.crop
        pixel = (k[0, 0], k[0, 1], k[0, 2], k[1, 1], k[1, 2], grid_offset(self.grid), sx, sy, crop_x, crop_y)
        return self.camera.lens.spec(), tuple(float(x) for x in pixel)
