"""Rigid transforms (SE(3)) and unit quaternions, batched over leading axes.

Quaternions are always (x, y, z, w), scalar last, Hamilton convention (i*j = k), and a
quaternion q acts on a vector as q v q^-1 (active rotation). ROS `geometry_msgs/Quaternion`
and MapAnything's `camera_pose_quats` / `cam_quats` use this same order and convention, so
passing a quaternion between them is the identity (checked against the model fixtures in
`test/test_geometry_transforms.py`). Functions that return quaternions canonicalise to w >= 0.

Poses are 4x4 float64 homogeneous matrices `a_from_b` mapping points in frame b to frame a
(e.g. world_from_cam, MapAnything's "cam2world"). Translations are in metres.
"""

import math

import numpy as np

_ZERO_QUAT = "quaternion with zero or non-finite norm"
IDENTITY_QUAT = np.array([0.0, 0.0, 0.0, 1.0])
_BLOCK = 16384  # poses per block in interpolate_pose_rows


def quat_normalize(q):
    """Unit quaternion(s) (..., 4) xyzw; raises ValueError on zero or non-finite norm."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    if not np.all(np.isfinite(n) & (n > 1e-12)):
        raise ValueError(_ZERO_QUAT)
    return q / n


def quat_canonical(q):
    """The same rotation with w >= 0 (q and -q are the same rotation), (..., 4) xyzw.

    For w == 0 exactly, the first non-zero of x, y, z is made positive.
    """
    q = np.asarray(q, dtype=np.float64)
    sign = np.sign(q[..., 3])
    for i in range(3):
        sign = np.where(sign == 0, np.sign(q[..., i]), sign)
    return np.where(sign[..., None] < 0, -q, q)


def quat_to_matrix(q):
    """Rotation matrices (..., 3, 3) from quaternions (..., 4) xyzw (normalised first)."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape == (4,):  # one (a TF message's): in floats, the same values in a tenth of the time
        x, y, z, w = q.tolist()
        norm = math.sqrt(x * x + y * y + z * z + w * w)
        if not (math.isfinite(norm) and norm > 1e-12):
            raise ValueError(_ZERO_QUAT)
        return np.array(_rotation(x / norm, y / norm, z / norm, w / norm)).reshape(3, 3)
    r = np.stack(_rotation(*np.moveaxis(quat_normalize(q), -1, 0)), axis=-1)
    return r.reshape(r.shape[:-1] + (3, 3))


def _rotation(x, y, z, w):
    """The rotation matrix of unit quaternion(s), row-major: nine floats or arrays (each product
    made once: interpolate_pose_rows calls it per block of LiDAR points)."""
    xx, yy, zz, xy, xz, yz, xw, yw, zw = x * x, y * y, z * z, x * y, x * z, y * z, x * w, y * w, z * w
    return [
        1 - 2 * (yy + zz), 2 * (xy - zw), 2 * (xz + yw),
        2 * (xy + zw), 1 - 2 * (xx + zz), 2 * (yz - xw),
        2 * (xz - yw), 2 * (yz + xw), 1 - 2 * (xx + yy),
    ]


def matrix_to_quat(r):
    """Unit quaternions (..., 4) xyzw with w >= 0 from rotation matrices (..., 3, 3).

    Shepperd's method: the quaternion is built from whichever of w, x, y, z has the largest
    magnitude, so no division by a small number happens for any rotation.
    """
    r = np.asarray(r, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    s10, s02, s21 = r[..., 1, 0] + r[..., 0, 1], r[..., 0, 2] + r[..., 2, 0], r[..., 2, 1] + r[..., 1, 2]
    # Each row is 4*c*q for the pivot component c: (x, y, z, w).
    cand = np.stack(
        [
            np.stack([1 + m00 - m11 - m22, s10, s02, d21], axis=-1),
            np.stack([s10, 1 - m00 + m11 - m22, s21, d02], axis=-1),
            np.stack([s02, s21, 1 - m00 - m11 + m22, d10], axis=-1),
            np.stack([d21, d02, d10, 1 + m00 + m11 + m22], axis=-1),
        ],
        axis=-2,
    )
    pivot = np.argmax(np.stack([m00, m11, m22, m00 + m11 + m22], axis=-1), axis=-1)
    q = np.take_along_axis(cand, pivot[..., None, None], axis=-2)[..., 0, :]
    return quat_canonical(quat_normalize(q))


def quat_multiply(a, b):
    """Hamilton product a * b of quaternions (..., 4) xyzw (rotation b first, then a)."""
    ax, ay, az, aw = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bx, by, bz, bw = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack(
        [
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
            aw * bw - ax * bx - ay * by - az * bz,
        ],
        axis=-1,
    )


def quat_inverse(q):
    """Inverse quaternions (..., 4) xyzw: conjugate divided by the squared norm."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([-1.0, -1.0, -1.0, 1.0]) / np.sum(q * q, axis=-1, keepdims=True)


def quat_angle(a, b):
    """Rotation angle (radians, in [0, pi]) between the rotations of quaternions a and b."""
    dot = np.abs(np.sum(quat_normalize(a) * quat_normalize(b), axis=-1))
    return 2.0 * np.arccos(np.clip(dot, 0.0, 1.0))


def slerp(q0, q1, t):
    """Spherical linear interpolation of unit quaternions (xyzw) along the shorter arc.

    t = 0 gives q0, t = 1 gives q1 (up to sign); t outside [0, 1] extrapolates at the same
    constant angular speed. q0, q1 (..., 4) and t (...) broadcast. Returns (..., 4), w >= 0.
    """
    q0, q1 = quat_normalize(q0), quat_normalize(q1)
    t = np.asarray(t, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    small = sin_theta < 1e-9
    safe = np.where(small, 1.0, sin_theta)
    w0 = np.where(small, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    w1 = np.where(small, t, np.sin(t * theta) / safe)
    return quat_canonical(quat_normalize(w0 * q0 + w1 * q1))


def pose_from_quat_trans(q, t):
    """4x4 poses (..., 4, 4) from quaternions (..., 4) xyzw and translations (..., 3)."""
    r = quat_to_matrix(q)
    t = np.asarray(t, dtype=np.float64)
    shape = np.broadcast_shapes(r.shape[:-2], t.shape[:-1])
    pose = np.zeros(shape + (4, 4))
    pose[..., :3, :3] = r
    pose[..., :3, 3] = t
    pose[..., 3, 3] = 1.0
    return pose


def quat_trans_from_pose(pose):
    """(quaternions (..., 4) xyzw with w >= 0, translations (..., 3)) of 4x4 poses."""
    pose = np.asarray(pose, dtype=np.float64)
    return matrix_to_quat(pose[..., :3, :3]), pose[..., :3, 3].copy()


def se3_inverse(pose):
    """Inverse of rigid transforms (..., 4, 4): b_from_a from a_from_b."""
    pose = np.asarray(pose, dtype=np.float64)
    rt = np.swapaxes(pose[..., :3, :3], -1, -2)
    inv = np.zeros_like(pose)
    inv[..., :3, :3] = rt
    inv[..., :3, 3] = -(rt @ pose[..., :3, 3:4])[..., 0]
    inv[..., 3, 3] = 1.0
    return inv


def se3_compose(*poses):
    """Product of rigid transforms left to right: se3_compose(a_from_b, b_from_c) = a_from_c."""
    out = np.asarray(poses[0], dtype=np.float64)
    for p in poses[1:]:
        out = out @ np.asarray(p, dtype=np.float64)
    return out


def transform_points(pose, points):
    """Apply a_from_b (..., 4, 4) to points (..., N, 3) in frame b; returns points in frame a."""
    pose = np.asarray(pose, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)
    # einsum rather than matmul: no BLAS threads for this (N, 3) x (3, 3) product, several times faster.
    return np.einsum("...ij,...nj->...ni", pose[..., :3, :3], points) + pose[..., None, :3, 3]


def relative_pose(ref_world_from_cam, world_from_cam):
    """ref_from_cam: the pose of a camera in the reference camera's frame (what the model takes)."""
    return se3_compose(se3_inverse(ref_world_from_cam), world_from_cam)


def interpolate_pose(t_ns, t0_ns, pose0, t1_ns, pose1, *, extrapolate=False):
    """Poses (..., 4, 4) at times t_ns (int ns, any shape) between pose0 at t0_ns and pose1 at t1_ns.

    Rotation by slerp, translation linearly, both in the common parent frame of pose0/pose1
    (i.e. constant angular and linear velocity between the two samples). Times outside
    [t0_ns, t1_ns] raise ValueError unless `extrapolate=True`, which continues the same
    constant velocities. Equal t0_ns and t1_ns only allow t_ns == t0_ns.
    """
    t = np.asarray(t_ns)
    rows = interpolate_pose_rows(t.reshape(-1), t0_ns, pose0, t1_ns, pose1, extrapolate=extrapolate)
    pose = np.zeros((rows.shape[2], 4, 4))
    pose[:, :3] = rows.transpose(2, 0, 1)
    pose[:, 3, 3] = 1.0
    return pose.reshape(t.shape + (4, 4))


def interpolate_pose_rows(t_ns, t0_ns, pose0, t1_ns, pose1, *, extrapolate=False):
    """The top three rows (3, 4, N) of interpolate_pose at times t_ns (N,), one contiguous array
    per matrix entry (for per-point transforms).

    Computed as slerp (w >= 0), quat_normalize and pose_from_quat_trans would, operation by
    operation, on one 1-D array per component; the sign canonicalisation is left out as it
    cannot change a rotation matrix (every entry is a product of two components).
    """
    t = np.asarray(t_ns).reshape(-1)
    t0, t1 = int(t0_ns), int(t1_ns)
    if t1 < t0:
        raise ValueError(f"t1_ns ({t1}) is before t0_ns ({t0})")
    if not extrapolate and (np.any(t < t0) or np.any(t > t1)):
        raise ValueError(f"time outside [{t0}, {t1}] ns and extrapolate=False")
    if t1 == t0:
        if np.any(t != t0):
            raise ValueError("t0_ns == t1_ns: cannot interpolate to another time")
        rows = np.asarray(pose0, dtype=np.float64)[:3, :, None]
        return np.repeat(rows, t.size, axis=2)
    # Subtract in integers first so nanosecond stamps keep their precision.
    if np.issubdtype(t.dtype, np.integer):
        frac = (t.astype(np.int64) - t0).astype(np.float64) / float(t1 - t0)
    else:
        frac = (t.astype(np.float64) - t0) / float(t1 - t0)
    q0, p0 = quat_trans_from_pose(pose0)
    q1, p1 = quat_trans_from_pose(pose1)
    q0, q1 = quat_normalize(q0), quat_normalize(q1)
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)
    theta = np.arccos(np.clip(np.abs(dot), -1.0, 1.0))
    sin_theta = np.sin(theta)
    small = sin_theta[0] < 1e-9
    rows = np.empty((3, 4, frac.size))
    for s in range(0, frac.size, _BLOCK):  # blocks keep the temporaries in cache
        f = frac[s:s + _BLOCK]
        if small:
            w0, w1 = 1.0 - f, f
        else:
            w0, w1 = np.sin((1.0 - f) * theta[0]) / sin_theta[0], np.sin(f * theta[0]) / sin_theta[0]
        q = [w0 * q0[c] + w1 * q1[c] for c in range(4)]
        for _ in range(2):  # slerp's quat_normalize, then quat_to_matrix's (np.linalg.norm's order)
            n = np.sqrt(((q[0] * q[0] + q[1] * q[1]) + q[2] * q[2]) + q[3] * q[3])
            if not np.all(np.isfinite(n) & (n > 1e-12)):
                raise ValueError(_ZERO_QUAT)
            q = [c / n for c in q]
        r = rows[:, :, s:s + _BLOCK]
        for k, entry in enumerate(_rotation(*q)):
            r[k // 3, k % 3] = entry
        for i in range(3):
            r[i, 3] = p0[i] + f * (p1[i] - p0[i])
    return rows
