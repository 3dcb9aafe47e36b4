"""Lens distortion models between camera-frame directions and normalised image coordinates.

Each model maps a direction (X, Y, Z) in the camera optical frame (x right, y down, z forward)
to distorted normalised coordinates (xd, yd), so that the pixel is u = fx*xd + s*yd + cx,
v = fy*yd + cy, and back. Formulas follow the OpenCV documentation (calib3d "pinhole camera
model" and the fisheye module), which is what ROS `sensor_msgs/CameraInfo` "plumb_bob",
"rational_polynomial" and "equidistant" calibrations mean.

Valid field of view: each model is invertible only where its radial map is strictly increasing
(and, for the rational model, its denominator positive). `max_angle` is the half-angle (radians,
from the optical axis) of that cone; directions outside it, and image points whose inverse lies
outside it, are invalid (NaN rays, `valid=False`). Inside it the inverse is solved by a bracketed
Newton iteration to double precision.

`unproject(lens, xd, yd)` is the inverse that the package uses: the compiled _lens.unproject where
CMakeLists.txt built it (the steps of the lens classes' numpy `unproject`, per point; _lens.c says
where the bits can differ), else the numpy one.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

try:  # the compiled inverse (CMakeLists.txt builds it)
    from .. import _lens
except ImportError:
    _lens = None

# Largest angle considered for the radial-tangential models (their z=1 plane cannot reach 90°).
PINHOLE, RADTAN, EQUIDISTANT = 0, 1, 2  # lens kinds of spec() (and of _tsdf_fuse.c, _lens.c)
_MAX_PLANE_ANGLE = np.deg2rad(89.0)
_SEARCH_SAMPLES = 100_001
_TABLE_SIZE = 4097
_NEWTON_ITERS = 60
_STEP = 1e-14  # Newton stops when its relative update is this small


def _first_failure(ok, grid):
    """Largest prefix grid[:i] where `ok(grid)` holds, refined by bisection; returns the bound."""
    good = ok(grid)
    if good.all():
        return float(grid[-1])
    i = int(np.argmin(good))
    lo, hi = grid[i - 1], grid[i]
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(np.array([mid]))[0] else (lo, mid)
    return float(lo)


def _flat(xd, yd):
    """(broadcast shape, xd, yd as contiguous 1-D float64 copies) for in-place index updates."""
    xd, yd = np.broadcast_arrays(np.asarray(xd, dtype=np.float64), np.asarray(yd, dtype=np.float64))
    return xd.shape, xd.ravel().copy(), yd.ravel().copy()


def _monotone_table(fn, upper):
    """(knots, values) float64 (_TABLE_SIZE,): fn's values at knots from 0 to upper, denser near
    the axis."""
    knots = upper * np.linspace(0.0, 1.0, _TABLE_SIZE) ** 2
    values = fn(knots)[0]
    knots.setflags(write=False)  # cached on the lens, shared by every inverse
    values.setflags(write=False)
    return knots, values


def _invert_monotone(fn, target, knots, table, polish=True):
    """Solve fn(r) = target for r in [0, knots[-1]], fn strictly increasing there, fn(0) = 0.

    `fn(r)` returns (value, derivative); (knots, table) is _monotone_table(fn, upper). The table
    brackets every root and gives a linear interpolation guess; with `polish`, a safeguarded
    Newton iteration (bisection whenever Newton leaves the bracket) refines it to double
    precision. Returns (r, valid); valid is False where the target is beyond fn(upper), negative
    or not finite, or Newton did not converge (r NaN).
    """
    target = np.asarray(target, dtype=np.float64)
    valid = np.isfinite(target) & (target >= 0) & (target <= table[-1])
    t = np.where(valid, target, 0.0)
    i = np.clip(np.searchsorted(table, t), 1, len(table) - 1)
    lo, hi = knots[i - 1], knots[i]
    x = lo + (t - table[i - 1]) / (table[i] - table[i - 1]) * (hi - lo)
    if not polish:
        return np.where(valid, x, np.nan), valid
    out = x.copy()
    idx = np.flatnonzero(valid)
    x, lo, hi, t = x.ravel()[idx], lo.ravel()[idx], hi.ravel()[idx], t.ravel()[idx]
    for _ in range(_NEWTON_ITERS):
        f, df = fn(x)
        res = f - t
        lo = np.where(res < 0, x, lo)
        hi = np.where(res > 0, x, hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = x - res / df
        step = np.where((step >= lo) & (step <= hi), step, 0.5 * (lo + hi))
        done = ~(np.abs(step - x) > _STEP * np.maximum(x, 1.0))
        out.ravel()[idx[done]] = step[done]
        keep = ~done
        idx, x, lo, hi, t = idx[keep], step[keep], lo[keep], hi[keep], t[keep]
        if idx.size == 0:
            break
    valid.ravel()[idx] = False
    return np.where(valid, out, np.nan), valid


@dataclass(frozen=True)
class Pinhole:
    """No distortion: xd = X/Z, yd = Y/Z; valid for Z > 0."""

    max_angle = np.pi / 2

    def spec(self):
        """(kind, coefficients (8,), limit): this lens for compiled code (_tsdf_fuse.c: PINHOLE)."""
        return PINHOLE, (0.0,) * 8, 0.0

    def project(self, x, y, z):
        """(xd, yd, valid) of directions given as float64 coordinate arrays x, y, z (...)."""
        valid = (z > 0) & np.isfinite(x) & np.isfinite(y) & np.isfinite(z)
        with np.errstate(divide="ignore", invalid="ignore"):
            return x / z, y / z, valid

    def unproject(self, xd, yd):
        """(unit rays (..., 3), valid) of normalised image points."""
        shape, xd, yd = _flat(xd, yd)
        rays = np.stack([xd, yd, np.ones_like(xd)], axis=-1)
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        valid = np.isfinite(xd) & np.isfinite(yd)
        rays[~valid] = np.nan
        return rays.reshape(shape + (3,)), valid.reshape(shape)


@dataclass(frozen=True)
class RadialTangential:
    """OpenCV radial-tangential model (ROS "plumb_bob" with k4..k6 = 0, "rational_polynomial").

    With x = X/Z, y = Y/Z, r² = x² + y²:
    g = (1 + k1 r² + k2 r⁴ + k3 r⁶) / (1 + k4 r² + k5 r⁴ + k6 r⁶),
    xd = x g + 2 p1 x y + p2 (r² + 2x²),  yd = y g + p1 (r² + 2y²) + 2 p2 x y.
    The valid region is r <= max_radius, where r·g(r²) is increasing and the denominator positive.
    """

    k: tuple  # (k1, k2, k3, k4, k5, k6)
    p: tuple  # (p1, p2)

    def _radial(self, s, derivative=False):
        """g(s), and if asked dg/ds and the denominator, at s = r²."""
        k1, k2, k3, k4, k5, k6 = self.k
        num = 1 + s * (k1 + s * (k2 + s * k3))
        den = 1 + s * (k4 + s * (k5 + s * k6))
        if not derivative:
            return num / den
        dnum = k1 + s * (2 * k2 + s * 3 * k3)
        dden = k4 + s * (2 * k5 + s * 3 * k6)
        return num / den, (dnum * den - num * dden) / (den * den), den

    def _radius_map(self, r):
        g, dg, _ = self._radial(r * r, derivative=True)
        return r * g, g + 2 * r * r * dg

    @cached_property
    def max_radius(self):
        """Radius on the z=1 plane up to which the radial map is invertible."""
        grid = np.linspace(0.0, np.tan(_MAX_PLANE_ANGLE), _SEARCH_SAMPLES)

        def ok(r):
            _, dr = self._radius_map(r)
            return (self._radial(r * r, derivative=True)[2] > 0) & (dr > 0)

        return _first_failure(ok, grid)

    @property
    def max_angle(self):
        return float(np.arctan(self.max_radius))

    @cached_property
    def table(self):
        """(knots, values): the radial map r -> r g(r²) up to max_radius (the inverse's first guess)."""
        return _monotone_table(self._radius_map, self.max_radius)

    def spec(self):
        """(kind, (k1..k6, p1, p2), max_radius²): this lens for compiled code (_tsdf_fuse.c: RADTAN)."""
        return RADTAN, (*map(float, self.k), *map(float, self.p)), float(self.max_radius) ** 2

    def distort(self, x, y):
        """(xd, yd) of undistorted normalised coordinates."""
        p1, p2 = self.p
        s = x * x + y * y
        g = self._radial(s)
        return x * g + 2 * p1 * x * y + p2 * (s + 2 * x * x), y * g + p1 * (s + 2 * y * y) + 2 * p2 * x * y

    def project(self, x, y, z):
        with np.errstate(divide="ignore", invalid="ignore"):
            x, y = x / z, y / z
            valid = (z > 0) & np.isfinite(x) & np.isfinite(y) & (x * x + y * y <= self.max_radius**2)
            xd, yd = self.distort(x, y)
        return xd, yd, valid

    def unproject(self, xd, yd):
        shape, xd, yd = _flat(xd, yd)
        rd = np.hypot(xd, yd)
        # Radial-only inverse as the starting point, then 2-D Newton including the tangential
        # terms (which can move a point slightly beyond the radial limit, so clip the guess).
        knots, table = self.table
        r, valid = _invert_monotone(self._radius_map, np.minimum(rd, table[-1]), knots, table, polish=False)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(rd > 0, r / rd, 1.0)
        x, y = xd * ratio, yd * ratio
        x, y, converged = self._newton(x, y, xd, yd, valid)
        valid &= converged & (x * x + y * y <= self.max_radius**2 * (1 + 1e-12))
        rays = np.stack([x, y, np.ones_like(x)], axis=-1)
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        rays[~valid] = np.nan
        return rays.reshape(shape + (3,)), valid.reshape(shape)

    def _newton(self, x, y, xd, yd, active):
        """2-D Newton on distort(x, y) = (xd, yd) from (x, y); returns (x, y, converged).

        Quadratic convergence means the residual after a step smaller than _STEP is at the
        rounding floor; points still moving after _NEWTON_ITERS steps count as not converged.
        """
        p1, p2 = self.p
        x, y = x.copy(), y.copy()
        idx = np.flatnonzero(active)
        xs, ys, tx, ty = x.ravel()[idx], y.ravel()[idx], xd.ravel()[idx], yd.ravel()[idx]
        done = np.zeros(idx.size, dtype=bool)
        for _ in range(_NEWTON_ITERS):
            ex, ey = self.distort(xs, ys)
            ex, ey = ex - tx, ey - ty
            g, dg, _ = self._radial(xs * xs + ys * ys, derivative=True)
            j00 = g + 2 * xs * xs * dg + 2 * p1 * ys + 6 * p2 * xs
            j11 = g + 2 * ys * ys * dg + 6 * p1 * ys + 2 * p2 * xs
            j01 = 2 * xs * ys * dg + 2 * p1 * xs + 2 * p2 * ys
            det = j00 * j11 - j01 * j01
            dx, dy = (j11 * ex - j01 * ey) / det, (j00 * ey - j01 * ex) / det
            xs, ys = xs - dx, ys - dy
            # Stop at the rounding floor: the update no longer changes the solution.
            done = ~(np.maximum(np.abs(dx), np.abs(dy)) > _STEP * np.maximum(np.hypot(xs, ys), 1.0))
            if done.mean() < 0.5:
                continue  # compacting costs a full copy; finished points just take another step
            x.ravel()[idx[done]], y.ravel()[idx[done]] = xs[done], ys[done]
            keep = ~done
            idx, xs, ys, tx, ty, done = idx[keep], xs[keep], ys[keep], tx[keep], ty[keep], done[keep]
            if idx.size == 0:
                break
        x.ravel()[idx], y.ravel()[idx] = xs, ys
        converged = active.copy()
        converged.ravel()[idx] = done  # points still moving after the last step failed
        return x, y, converged


@dataclass(frozen=True)
class Equidistant:
    """OpenCV fisheye model (ROS "equidistant"): theta_d = θ (1 + k1 θ² + k2 θ⁴ + k3 θ⁶ + k4 θ⁸).

    θ is the angle from the optical axis, computed as atan2(√(X²+Y²), Z), so directions beyond
    90° are represented where the polynomial allows; (xd, yd) = theta_d · (X, Y) / √(X²+Y²).
    Valid while θ < max_angle, where theta_d(θ) is increasing (at most π).
    """

    k: tuple  # (k1, k2, k3, k4)

    def _theta_map(self, t):
        k1, k2, k3, k4 = self.k
        t2 = t * t
        poly = 1 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))
        dpoly = 1 + t2 * (3 * k1 + t2 * (5 * k2 + t2 * (7 * k3 + t2 * 9 * k4)))
        return t * poly, dpoly

    @cached_property
    def max_angle(self):
        grid = np.linspace(0.0, np.pi * (1 - 1e-9), _SEARCH_SAMPLES)
        return _first_failure(lambda t: self._theta_map(t)[1] > 0, grid)

    @cached_property
    def table(self):
        """(knots, values): the angle map θ -> θ_d up to max_angle (the inverse's first guess)."""
        return _monotone_table(self._theta_map, self.max_angle)

    def spec(self):
        """(kind, (k1..k4, 0, 0, 0, 0), max_angle): this lens for compiled code (_tsdf_fuse.c: EQUIDISTANT)."""
        return EQUIDISTANT, (*map(float, self.k), 0.0, 0.0, 0.0, 0.0), float(self.max_angle)

    def project(self, x, y, z):
        rho = np.hypot(x, y)
        theta = np.arctan2(rho, z)
        valid = np.isfinite(x) & np.isfinite(y) & np.isfinite(z) & (theta < self.max_angle) & ((rho > 0) | (z > 0))
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(rho > 0, self._theta_map(theta)[0] / rho, 0.0)
        return x * scale, y * scale, valid

    def unproject(self, xd, yd):
        shape, xd, yd = _flat(xd, yd)
        theta_d = np.hypot(xd, yd)
        theta, valid = _invert_monotone(self._theta_map, theta_d, *self.table)
        valid &= theta < self.max_angle
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = np.where(theta_d > 0, np.sin(theta) / theta_d, 1.0)
        rays = np.stack([xd * scale, yd * scale, np.cos(theta)], axis=-1)
        rays[~valid] = np.nan
        return rays.reshape(shape + (3,)), valid.reshape(shape)


_NO_TABLE = np.zeros(0)  # a pinhole's: no inverse to guess


def unproject(lens, xd, yd):
    """(unit rays (..., 3) float64, valid (...) bool) of normalised image points xd, yd (...)
    through `lens` (Pinhole, RadialTangential or Equidistant): the compiled _lens.unproject where it
    is built, else lens.unproject (numpy). NaN rays where not valid."""
    if _lens is None:
        return lens.unproject(xd, yd)
    xd, yd = np.broadcast_arrays(np.asarray(xd, np.float64), np.asarray(yd, np.float64))
    kind, coefficients, limit = lens.spec()
    knots, table = (_NO_TABLE, _NO_TABLE) if kind == PINHOLE else lens.table
    rays, valid = np.empty(xd.shape + (3,)), np.empty(xd.shape, bool)
    _lens.unproject(kind, coefficients, limit, knots, table, np.ascontiguousarray(xd).reshape(-1),
                    np.ascontiguousarray(yd).reshape(-1), rays, valid)
    return rays, valid


# Accepted lengths of D per ROS distortion model (sensor_msgs/distortion_models).
_D_LENGTHS = {"plumb_bob": (0, 4, 5), "rational_polynomial": (0, 8), "equidistant": (0, 4)}


def from_ros(model, d):
    """Distortion model from a CameraInfo `distortion_model` string and `D` coefficients.

    plumb_bob: (k1, k2, p1, p2[, k3]); rational_polynomial: (k1, k2, p1, p2, k3, k4, k5, k6)
    (the same order as OpenCV's first 8); equidistant: (k1, k2, k3, k4). Empty or all-zero D
    gives Pinhole, also for an empty model string. Raises ValueError otherwise.
    """
    d = tuple(float(c) for c in d)
    if not all(np.isfinite(d)):
        raise ValueError(f"D (distortion coefficients) must be finite, got {d}")
    if model == "" and not any(d):
        return Pinhole()
    if model not in _D_LENGTHS:
        raise ValueError(f"unknown distortion_model {model!r}; expected one of {sorted(_D_LENGTHS)}")
    if len(d) not in _D_LENGTHS[model]:
        raise ValueError(f"D has {len(d)} coefficients; distortion_model {model!r} takes {_D_LENGTHS[model]}")
    if not any(d):
        return Pinhole()
    if model == "equidistant":
        return Equidistant(k=d)
    d = d + (0.0,) * (8 - len(d))
    return RadialTangential(k=(d[0], d[1], d[4], d[5], d[6], d[7]), p=(d[2], d[3]))
