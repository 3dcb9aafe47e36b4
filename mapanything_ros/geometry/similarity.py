"""Similarity transforms Sim(3): fit (weighted Umeyama, and a robust wrapper), build, split, invert.

A similarity `b_from_a` is a 4x4 float64 matrix [[s·R, t], [0, 1]] with scale s > 0, rotation R
and translation t: it maps a point x in frame a to s·R·x + t in frame b. Being a plain affine
matrix, it is applied to points with transforms.transform_points and composed with matrix
products (transforms.se3_compose), exactly like a rigid pose. What differs from SE(3) is the
inverse (similarity_inverse) and how a camera pose is carried into the new frame
(similarity_pose: the camera stays a rigid pose, only its centre is scaled).

Fit: Umeyama, "Least-squares estimation of transformation parameters between two point
patterns", IEEE TPAMI 13(4), 1991 (the closed form, with the reflection fix), here with
per-point weights. Its scale regresses dst on src, so noise in src shrinks it (regression
dilution); `symmetric_scale` replaces it with Horn's symmetric scale, the ratio of the two point
sets' RMS spreads (Horn, "Closed-form solution of absolute orientation using unit quaternions",
JOSA A 4(4), 1987, Sec. 2.D), which treats both sides alike. Robust fit: least median of squares over random minimal samples (Rousseeuw
1984), then a weighted refit on the inliers it finds; no threshold to tune, up to 50% outliers.
"""

import numpy as np

MIN_SPREAD = 1e-9  # second singular value / first of the centred source: below it, a line (rotation undefined)
LMEDS_SIGMA = 1.4826  # robust standard deviation = 1.4826 · median |residual| for Gaussian noise
INLIER_SIGMAS = 2.5


def similarity(scale, rotation, translation):
    """4x4 float64 similarity [[scale·rotation, translation], [0, 1]]."""
    out = np.eye(4)
    out[:3, :3] = float(scale) * np.asarray(rotation, dtype=np.float64)
    out[:3, 3] = translation
    return out


def similarity_parts(transform):
    """(scale, rotation 3x3, translation (3,)) of a 4x4 similarity."""
    transform = np.asarray(transform, dtype=np.float64)
    scale = float(np.cbrt(np.linalg.det(transform[:3, :3])))
    return scale, transform[:3, :3] / scale, transform[:3, 3].copy()


def similarity_inverse(transform):
    """a_from_b of a 4x4 similarity b_from_a: [[R^T / s, -R^T t / s], [0, 1]]."""
    scale, rot, trans = similarity_parts(transform)
    return similarity(1.0 / scale, rot.T, -rot.T @ trans / scale)


def similarity_pose(transform, pose):
    """A rigid pose a_from_camera (4x4) carried by the similarity b_from_a: the rigid b_from_camera
    (rotation R·R_pose, translation s·R·t_pose + t). Camera-frame lengths scale by s."""
    scale, rot, trans = similarity_parts(transform)
    pose = np.asarray(pose, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = rot @ pose[:3, :3]
    out[:3, 3] = scale * rot @ pose[:3, 3] + trans
    return out


def fit_similarity(src, dst, weights=None):
    """Weighted least-squares similarity dst_from_src minimising Σ w·|s·R·src + t − dst|² (Umeyama).

    src, dst (N, 3) corresponding points; weights (N,) >= 0 (default 1). Raises ValueError with
    fewer than 3 weighted points or when they lie on a line (the rotation about it is undefined).
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or w.shape != src.shape[:1]:
        raise ValueError(f"need (N, 3) src and dst and (N,) weights, got {src.shape}, {dst.shape}, {w.shape}")
    if np.count_nonzero(w > 0) < 3 or np.any(w < 0):
        raise ValueError("need at least 3 points with positive weight and no negative weight")
    sing, out = _umeyama(src[None], dst[None], w[None])
    if not sing[0, 1] > MIN_SPREAD * sing[0, 0]:
        raise ValueError("degenerate correspondences: the source points lie on a line or a point")
    return out[0]


def robust_similarity(src, dst, weights=None, samples=256, seed=0):
    """Similarity dst_from_src fitted robustly: (4x4, inliers (N,) bool).

    Least median of squares: `samples` random triples each give a similarity (Umeyama); the one
    with the smallest median weighted squared residual w·|T·src − dst|² wins. Inliers are the
    points within 2.5 robust standard deviations of it (never closer than 1e-9 of the spread of
    dst, so exact data keeps every point); the result is the weighted fit on them, refined until
    the inlier set stops changing. Weights are inverse variances (w·r² is a squared number of
    standard deviations). Deterministic for a given `seed`. Tolerates up to half the points wrong.
    """
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    best = fit_similarity(src, dst, w)  # validates; the plain fit also competes with the samples
    usable = np.flatnonzero(w > 0)
    if len(usable) > 3:
        rng = np.random.default_rng(seed)
        triples = usable[rng.integers(0, len(usable), (samples, 3))]
        triples = triples[(triples[:, 0] != triples[:, 1]) & (triples[:, 1] != triples[:, 2])
                          & (triples[:, 0] != triples[:, 2])]
        sing, fits = _umeyama(src[triples], dst[triples], w[triples])
        fits = np.concatenate([fits[sing[:, 1] > MIN_SPREAD * sing[:, 0]], best[None]])
        cost = np.median(_weighted_sq_residuals(fits, src[usable], dst[usable], w[usable]), axis=1)
        best = fits[np.argmin(cost)]
    spread = np.sqrt(np.average(np.sum((dst - np.average(dst, axis=0, weights=w)) ** 2, axis=1), weights=w))
    floor = (MIN_SPREAD * spread) ** 2 * w.max()
    inliers = None
    for _ in range(10):
        r2 = _weighted_sq_residuals(best[None], src, dst, w)[0]
        sigma2 = LMEDS_SIGMA ** 2 * (1 + 5 / max(len(usable) - 3, 1)) ** 2 * np.median(r2[w > 0])
        now = (w > 0) & (r2 <= max(INLIER_SIGMAS ** 2 * sigma2, floor))
        if inliers is not None and np.array_equal(now, inliers):
            break
        inliers = now
        best = fit_similarity(src[inliers], dst[inliers], w[inliers])
    return best, inliers


def symmetric_scale(transform, src, dst, weights=None):
    """The similarity dst_from_src `transform` with its scale replaced by Horn's symmetric scale
    sqrt(Σ w|dst − μd|² / Σ w|src − μs|²) (weighted means μ), rotation kept, translation refitted
    to the weighted centroids. src, dst (N, 3); weights (N,) >= 0 (default 1)."""
    src, dst = np.asarray(src, dtype=np.float64), np.asarray(dst, dtype=np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    mu_s, mu_d = np.average(src, axis=0, weights=w), np.average(dst, axis=0, weights=w)
    var_s = np.average(np.sum((src - mu_s) ** 2, axis=1), weights=w)
    var_d = np.average(np.sum((dst - mu_d) ** 2, axis=1), weights=w)
    if not var_s > 0:
        raise ValueError("degenerate correspondences: the source points coincide")
    scale = float(np.sqrt(var_d / var_s))
    _, rot, _ = similarity_parts(transform)
    return similarity(scale, rot, mu_d - scale * rot @ mu_s)


def _umeyama(src, dst, w):
    """Batched weighted Umeyama over leading axis K: (singular values (K, 3) of the centred
    source, similarities (K, 4, 4)). src, dst (K, N, 3); w (K, N)."""
    w = w / w.sum(axis=1, keepdims=True)
    mu_s = np.einsum("kn,kni->ki", w, src)
    mu_d = np.einsum("kn,kni->ki", w, dst)
    cs, cd = src - mu_s[:, None], dst - mu_d[:, None]
    cov = np.einsum("kn,kni,knj->kij", w, cd, cs)  # Σ w·(dst − μd)(src − μs)^T
    u, d, vt = np.linalg.svd(cov)
    flip = np.ones_like(d)
    flip[:, 2] = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    rot = u @ (flip[:, :, None] * vt)
    var = np.einsum("kn,kni,kni->k", w, cs, cs)
    scale = np.sum(d * flip, axis=1) / np.where(var > 0, var, 1.0)
    out = np.zeros(src.shape[:1] + (4, 4))
    out[:, :3, :3] = scale[:, None, None] * rot
    out[:, :3, 3] = mu_d - np.einsum("kij,kj->ki", out[:, :3, :3], mu_s)
    out[:, 3, 3] = 1.0
    spread = np.linalg.svd(np.sqrt(w)[:, :, None] * cs, compute_uv=False)
    return spread, out


def _weighted_sq_residuals(transforms, src, dst, w):
    """w·|T·src − dst|² for each of K transforms (K, 4, 4): (K, N)."""
    moved = src @ np.swapaxes(transforms[:, :3, :3], 1, 2) + transforms[:, None, :3, 3]  # batched BLAS, not einsum
    return w * np.sum((moved - dst) ** 2, axis=-1)
