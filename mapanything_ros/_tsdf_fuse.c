/* The per-voxel fusion loop of mapping/tsdf.py (TsdfMap._fuse), compiled, with the projection of
 * each voxel centre into the view's model pixels (geometry.ModelPixels) done in the same pass.
 *
 * Built by CMakeLists.txt (colcon, and tools/dev's environment) as mapanything_ros._tsdf_fuse.
 * tsdf.py runs the same steps in numpy when this module is missing; test_tsdf.py checks that both
 * give the same map, and that project() gives the lens models' pixels (geometry/distortion.py).
 *
 * fuse(tsdf, weight, rgb, looks, free, slots, corners, offsets, lens, pixel, ranges, weights, colors, width,
 *      (truncation, ratio, voxel_size, max_weight, max_range, spread, free_level, min_weight), color_looks)
 *      -> int
 *   tsdf, weight  writable float32 pools (VOXELS = 64 per block slot, flat); rgb writable uint8 (3 per
 *                 voxel); looks writable uint8 (1 per voxel: the colour's looks in the low 7 bits, at most
 *                 color_looks, 1 to 127; bit 7 set once an observation put the voxel in front of the
 *                 surface, within the band); free writable bool (1 per slot)
 *   slots         int32 (m,): the pool slots to fuse (unique)
 *   corners       float32 (m * 3): each slot's camera-frame offset (m); a voxel's centre in the camera
 *                 frame is its slot's corner plus its own offset
 *   offsets       float32 (64 * 3): the voxels' offsets within a block, rotated into the camera frame
 *   lens          (kind, (8 coefficients), limit): distortion.<lens>.spec()
 *   pixel         (fx, skew, cx, fy, cy, grid offset, sx, sy, crop x, crop y): K (binning and ROI in),
 *                 then the resize to the model image (geometry.ModelPixels.projection)
 *   ranges        float32 (height * width): metres along the rays, 0 = none
 *   weights       float32 (height * width): each pixel's observation weight
 *   colors        uint8 (height * width * 3) RGB, or (height * width * 4) RGB and a byte not read
 *   max_range <= 0: no limit.
 * Voxels the lens does not see or outside (-0.5, width - 0.5) x (-0.5, height - 0.5) are not
 * observed. After a slot's voxels, free[slot] says whether all of them are at or above free_level
 * with a weight of at least min_weight. Returns the number of voxels updated. The GIL is released
 * while the pools are written.
 *
 * SIMD: "avx2" or "baseline", the build of the loop that fuse() runs (fuse_baseline, fuse_avx2 below).
 *
 * project(cam, lens, pixel) -> (col, row, valid): the same projection of float32 (n * 3) camera-frame
 * points, as float32, float32 and bool arrays (n,) (for the tests).
 *
 * ray_keys(dirs, lo, hi, counts, rot, origin, size) -> bytearray of int64: the unique packed
 * keys (unsorted) of the blocks that samples along rays fall in: counts[i] (int64) evenly spaced
 * from lo[i] to hi[i] (float64, metres) along each float32 camera-frame direction dirs[i] (n * 3),
 * rot (9, row-major) and origin (3) the camera's world pose (TsdfMap._ray_keys, which runs the same in
 * numpy when this module is missing; test_tsdf.py checks that both give the same keys).
 *
 * The projection follows distortion.py step by step, in single precision where numpy computes in
 * single precision (the voxel centres are float32) and in double where NumPy 2 does (K and the
 * resize); built without fused multiply-adds (CMakeLists.txt). With NumPy 2 it gives the same
 * pixels bit for bit for pinhole and radial-tangential lenses. For the fisheye, numpy's float32
 * arctan2 is neither libm's atan2f nor correctly rounded (it differs from the correctly rounded
 * angle in about 40 % of cases, by up to 3 ulps); atan2_f here is closer (its comment), not the
 * same, so the pixels differ from numpy's by up to about 1.2e-3 px (4 M random directions, 2.9 % of
 * them by more than 1e-4 px; both are within 1.3e-3 px of the float64 projection: the float32 steps
 * around the angle err more than it).
 *
 * Per candidate, as tsdf.py documents: the nearest pixel's range r; near the surface the bilinear
 * range in inverse depth when the four pixels around agree within `spread`; T = max(truncation,
 * ratio * r); sdf = r - dist; skipped without a range, behind -T or beyond max_range; observation
 * min(sdf, T) / T with weight w * (truncation / T)^2 (in front of the band, sdf >= T: T at the voxel's
 * own distance, max(truncation, ratio * dist)), falling linearly to 0 from one voxel behind
 * the surface to -T; weighted mean into tsdf, weight capped at max_weight; within the band the
 * colour is the mean of the last color_looks looks; looks' bit 7 set where 0 <= sdf < T.
 *
 * Why compiled code: the numpy version makes about fifty passes over the voxels (several hundred
 * thousand per keyframe), each a temporary array; this is one pass (docs/performance.md#map-fusion).
 * Within it, each block's 64 voxels go through loops without branches (projection, then the
 * update), which the compiler vectorises: their operations and order are the scalar ones, so the
 * bits are too. Built with -fno-trapping-math and -fno-math-errno (CMakeLists.txt), which change
 * no value (the loops never trap nor read errno) but let the compiler evaluate both arms of a
 * select and inline sqrt; without them the loops stay scalar, about 1.8x slower.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_buffers.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The per-voxel loops are inlined into fuse_all, whose two builds (fuse_baseline, fuse_avx2) then compile
 * them for their instruction sets. */
#if defined(__GNUC__) || defined(__clang__)
#define INLINE inline __attribute__((always_inline))
#else
#define INLINE inline
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define WIDE_SIMD 1
#else
#define WIDE_SIMD 0
#endif

typedef struct {
    float truncation, ratio, voxel, max_weight, max_range, spread, free_level, min_weight;
    int color_looks, color_step; /* color_step: bytes per pixel of colors, 3 or 4 */
} Params;

enum { PINHOLE = 0, RADTAN = 1, EQUIDISTANT = 2 }; /* distortion.py's spec() kinds */

typedef struct {
    int kind;
    float k[8];   /* RADTAN: k1..k6, p1, p2; EQUIDISTANT: k1..k4 */
    float limit;  /* RADTAN: max_radius²; EQUIDISTANT: max_angle */
    double fx, skew, cx, fy, cy, offset, sx, sy, crop_x, crop_y;
} Projection;

/* fmaxf, fminf and nearbyintf are library calls unless NaN and rounding-mode rules are relaxed;
 * these are inlined. The values here are never NaN, and round_half_up takes values >= -0.5 (pixel
 * coordinates inside the image). */
static inline float max_f(float a, float b) { return a > b ? a : b; }
static inline float min_f(float a, float b) { return a < b ? a : b; }
static inline Py_ssize_t round_half_up(float x) { return (Py_ssize_t)(x + 0.5f); }

#define VOXELS 64
#define LOOKS 0x7f /* a voxel's looks byte: the colour's looks (mapping/tsdf.py: LOOKS, FRONT) */
#define FRONT 0x80 /* and whether it was seen in front of a surface, within the band */

static inline int finite_f(float x) { return fabsf(x) <= FLT_MAX; } /* isfinite, in a form loops vectorise */

/* hypotf as glibc computes it (the products of floats are exact in double, one rounding of their sum,
 * one of its square root, one to float), in a form loops vectorise. */
static inline float hypot_f(float x, float y) { return (float)sqrt((double)x * x + (double)y * y); }

/* atan2f(y, x) for y >= 0 (an angle in [0, pi]) in float, in a form loops vectorise, for |x|, y up
 * to 1e38 (lo + hi below must not overflow; the fusion's coordinates are metres): atan of min/max
 * in [0, 1], reduced to |u| <= tan(pi/8) by atan(a) = pi/4 + atan((a - 1) / (a + 1)) (one division
 * either way: u = (lo - hi) / (lo + hi) or lo / hi), then atan(u) = u + u^3 P(u^2), P a near-minimax
 * fit of (atan(u) - u) / u^3 on that interval (Lawson iterations; relative error 2.9e-9), and pi/4
 * as a float plus its remainder. Within 2 ulps of the true angle (4 M random directions: 1.9 ulps at
 * most, 2.2 % more than one ulp off; beside the reduction's cut 2.0 and 6 %), closer than numpy's
 * own float32 arctan2 (3.3 ulps, 6 %; 2.4 and 16 %). In double (two divisions, eleven terms) the
 * fisheye's fusion took 1.4x as long (docs/performance.md#rigs). */
static inline float atan2_f(float y, float x)
{
    const float ax = fabsf(x), lo = y < ax ? y : ax, hi = y < ax ? ax : y;
    const int big = lo > 0.41421356f * hi; /* tan(pi/8) */
    const float num = big ? lo - hi : lo, den = big ? lo + hi : hi;
    const float u = hi > 0 ? num / den : 0.0f, u2 = u * u;
    float p = -0.060782205f;
    p = 0.10593814f + u2 * p;
    p = -0.14243533f + u2 * p;
    p = 0.19998471f + u2 * p;
    p = -0.33333316f + u2 * p;
    const float tail = big ? -2.1855695e-08f : 0.0f;                      /* pi/4 - (float)(pi/4) */
    const float at = (big ? 0.78539819f : 0.0f) + (u + (u * u2 * p + tail)); /* atan(lo / hi) */
    const float first = y > ax ? 1.57079633f - at : at;                   /* atan2(y, |x|) */
    return x < 0 ? 3.14159265f - first : first;
}

/* Model pixels (col, row), distances and lens validity of n <= VOXELS camera-frame points, corner +
 * (ox, oy, oz)[o]: distortion.py's projection of each, in loops without branches (see the file comment).
 * ok: the lens sees the point; col and row are then its model pixel (when not, anything). */
static INLINE void project_block(const Projection *q, const float *corner, const float *ox, const float *oy,
                                 const float *oz, int n, float *col, float *row, float *dist, int *ok)
{
    float xd[VOXELS], yd[VOXELS];
    const float cx = corner[0], cy = corner[1], cz = corner[2];
    if (q->kind == EQUIDISTANT) {
        const float *k = q->k, limit = q->limit;
        for (int o = 0; o < n; o++) {
            const float x = cx + ox[o], y = cy + oy[o], z = cz + oz[o];
            const float rho = hypot_f(x, y), theta = atan2_f(rho, z), t2 = theta * theta;
            ok[o] = finite_f(x) & finite_f(y) & finite_f(z) & (theta < limit) & ((rho > 0) | (z > 0));
            const float poly = 1 + t2 * (k[0] + t2 * (k[1] + t2 * (k[2] + t2 * k[3])));
            const float scaled = theta * poly / rho, scale = rho > 0 ? scaled : 0.0f;
            xd[o] = x * scale;
            yd[o] = y * scale;
            dist[o] = sqrtf(x * x + y * y + z * z);
        }
    } else {
        for (int o = 0; o < n; o++) {
            const float x = cx + ox[o], y = cy + oy[o], z = cz + oz[o];
            xd[o] = x / z;
            yd[o] = y / z;
            ok[o] = finite_f(x) & finite_f(y) & finite_f(z) & (z > 0);
            dist[o] = sqrtf(x * x + y * y + z * z);
        }
        if (q->kind == RADTAN) {
            const float *k = q->k, p1 = k[6], p2 = k[7], limit = q->limit;
            for (int o = 0; o < n; o++) {
                const float xn = xd[o], yn = yd[o];
                const float s = xn * xn + yn * yn;
                ok[o] &= finite_f(xn) & finite_f(yn) & (s <= limit);
                const float g = (1 + s * (k[0] + s * (k[1] + s * k[2]))) / (1 + s * (k[3] + s * (k[4] + s * k[5])));
                xd[o] = xn * g + (2 * p1) * xn * yn + p2 * (s + 2 * xn * xn);
                yd[o] = yn * g + p1 * (s + 2 * yn * yn) + (2 * p2) * xn * yn;
            }
        }
    }
    const double fx = q->fx, skew = q->skew, ccx = q->cx, fy = q->fy, ccy = q->cy, off = q->offset, sx = q->sx,
                 sy = q->sy, crx = q->crop_x, cry = q->crop_y;
    for (int o = 0; o < n; o++) {
        const double u = fx * (double)xd[o] + skew * (double)yd[o] + ccx, v = fy * (double)yd[o] + ccy;
        col[o] = (float)((u - off + 0.5) * sx - 0.5 - crx);
        row[o] = (float)((v - off + 0.5) * sy - 0.5 - cry);
        ok[o] &= finite_f(col[o]) & finite_f(row[o]); /* u or v too large for a float, or not finite */
    }
}

/* Fuse a block's voxels (pool indices base + o) seen at model pixels (col, row) at distances dist, where
 * visible: the steps of the file comment for each. In three passes, written without branches on a voxel
 * (every value any voxel needs is computed for all 64, then selected): the nearest pixels' ranges and
 * weights and the four pixels around gathered; each voxel's update computed and written where it
 * applies (the longest pass, which the compiler vectorises); the colours of the voxels in the band.
 * (gcc keeps the first and last scalar; with a branch on each voxel's visibility and band they took
 * 3-5 % more time.) Returns the number of voxels updated. */
static INLINE Py_ssize_t fuse_block(float *tsdf, float *weight, uint8_t *rgb, uint8_t *looks, int64_t base,
                                    const float *col, const float *row, const float *dist, const int *visible,
                                    const float *ranges, const float *pw, const uint8_t *colors, Py_ssize_t w,
                                    Py_ssize_t h, const Params *p)
{
    float rn[VOXELS], wp[VOXELS], a[VOXELS], b[VOXELS], c[VOXELS], d[VOXELS], fc[VOXELS], fr[VOXELS], x[VOXELS],
        y[VOXELS];
    Py_ssize_t pix[VOXELS];
    int band[VOXELS]; /* 0: not in the band; AHEAD: in it, in front of the surface; BEHIND: behind it */
    enum { AHEAD = 1, BEHIND = 2 };
    /* An invisible voxel reads pixel (0, 0): its values are never used (ok below is 0) */
    for (int o = 0; o < VOXELS; o++) {
        x[o] = visible[o] ? col[o] : 0.0f; /* within (-0.5, w - 0.5) x (-0.5, h - 0.5) */
        y[o] = visible[o] ? row[o] : 0.0f;
        pix[o] = round_half_up(y[o]) * w + round_half_up(x[o]);
        rn[o] = ranges[pix[o]];
        wp[o] = pw[pix[o]];
    }
    if (w >= 2 && h >= 2) {
        for (int o = 0; o < VOXELS; o++) {
            /* floor, clamped to the image: truncation gives the same for x, y > -0.5 */
            Py_ssize_t c0 = (Py_ssize_t)x[o], r0 = (Py_ssize_t)y[o];
            c0 = c0 > w - 2 ? w - 2 : c0;
            r0 = r0 > h - 2 ? h - 2 : r0;
            const float u = x[o] - (float)c0, v = y[o] - (float)r0;
            fc[o] = u < 0 ? 0 : (u > 1 ? 1 : u);
            fr[o] = v < 0 ? 0 : (v > 1 ? 1 : v);
            const float *q = ranges + r0 * w + c0;
            a[o] = q[0];
            b[o] = q[1];
            c[o] = q[w];
            d[o] = q[w + 1];
        }
    } else {
        for (int o = 0; o < VOXELS; o++) a[o] = b[o] = c[o] = d[o] = fc[o] = fr[o] = 0;
    }
    const float trunc = p->truncation, ratio = p->ratio, spread = p->spread, voxel = p->voxel,
                max_range = p->max_range, max_weight = p->max_weight;
    float *ts = tsdf + base, *wg = weight + base;
    int updated = 0;
    for (int o = 0; o < VOXELS; o++) {
        const float r0 = rn[o], dd = dist[o];
        const float t0 = max_f(trunc, ratio * r0);
        const float lo = min_f(min_f(a[o], b[o]), min_f(c[o], d[o])), hi = max_f(max_f(a[o], b[o]), max_f(c[o], d[o]));
        const float bil = 1 / ((1 - fr[o]) * ((1 - fc[o]) / a[o] + fc[o] / b[o]) +
                               fr[o] * ((1 - fc[o]) / c[o] + fc[o] / d[o]));
        const int near = fabsf(r0 - dd) < t0 + spread * r0, smooth = (lo > 0) & (hi <= lo * (1 + spread));
        const float range = near & smooth ? bil : r0;
        const float t = max_f(trunc, ratio * range);
        const float sdf = range - dd;
        const float t_own = max_f(trunc, ratio * dd); /* in front of the band: T at the voxel's own distance */
        const float q = trunc / (sdf >= t ? t_own : t);
        const float drop = (t + sdf) / (t - voxel), full = wp[o] * q * q, dropped = full * drop;
        const float wt = sdf < -voxel ? dropped : full;
        const int ok = visible[o] & (r0 > 0) & (sdf >= -t) & !((max_range > 0) & (dd > max_range)) & (wt > 0);
        const float ob = (sdf < t ? sdf : t) / t;
        const float old = wg[o], before = ts[o], total = old + wt;
        const float fused = (before * old + ob * wt) / total, capped = total < max_weight ? total : max_weight;
        ts[o] = ok ? fused : before;
        wg[o] = ok ? capped : old;
        band[o] = (ok & (sdf < t)) * (sdf >= 0 ? AHEAD : BEHIND);
        updated += ok;
    }
    const int step = p->color_step, most = p->color_looks;
    for (int o = 0; o < VOXELS; o++) {
        const int64_t v = base + o;
        const int all = looks[v], seen = all & LOOKS, in = band[o] != 0;
        const float f = 1.0f / (float)(seen + 1);
        const uint8_t *from = colors + step * pix[o];
        for (int k = 0; k < 3; k++) {
            const uint8_t mixed = (uint8_t)(int)((float)rgb[3 * v + k] * (1 - f) + (float)from[k] * f + 0.5f);
            rgb[3 * v + k] = in ? mixed : rgb[3 * v + k];
        }
        looks[v] = (uint8_t)((in ? (seen + 1 < most ? seen + 1 : most) : seen) | (all & FRONT) |
                             (band[o] == AHEAD ? FRONT : 0));
    }
    return updated;
}

/* fuse_all's parameters, and the same names as arguments: the loop is compiled twice (below) */
#define FUSE_PARAMS                                                                                                  \
    float *tsdf, float *weight, uint8_t *rgb, uint8_t *looks, uint8_t *free_, const int32_t *slots, Py_ssize_t m,   \
        const float *corners, const float *offsets, const Projection *q, const float *ranges, const float *pw,      \
        const uint8_t *colors, Py_ssize_t w, Py_ssize_t h, Params p
#define FUSE_ARGS tsdf, weight, rgb, looks, free_, slots, m, corners, offsets, q, ranges, pw, colors, w, h, p

static INLINE Py_ssize_t fuse_all(FUSE_PARAMS)
{
    Py_ssize_t updated = 0;
    const float wmin = p.min_weight > 1e-12f ? p.min_weight : 1e-12f, fw = (float)w - 0.5f, fh = (float)h - 0.5f;
    float col[VOXELS], row[VOXELS], dist[VOXELS], ox[VOXELS], oy[VOXELS], oz[VOXELS];
    int visible[VOXELS];
    for (int o = 0; o < VOXELS; o++) {
        ox[o] = offsets[3 * o];
        oy[o] = offsets[3 * o + 1];
        oz[o] = offsets[3 * o + 2];
    }
    for (Py_ssize_t s = 0; s < m; s++) {
        const int64_t base = (int64_t)slots[s] * VOXELS;
        project_block(q, corners + 3 * s, ox, oy, oz, VOXELS, col, row, dist, visible);
        for (int o = 0; o < VOXELS; o++)
            visible[o] &= (col[o] > -0.5f) & (col[o] < fw) & (row[o] > -0.5f) & (row[o] < fh);
        if (w > 0 && h > 0) /* an image without pixels sees nothing, and fuse_block reads pixel (0, 0) */
            updated += fuse_block(tsdf, weight, rgb, looks, base, col, row, dist, visible, ranges, pw, colors, w, h,
                                  &p);
        int all_free = 1;
        for (int o = 0; o < VOXELS; o++)
            all_free &= (tsdf[base + o] >= p.free_level) & (weight[base + o] >= wmin);
        free_[slots[s]] = (uint8_t)all_free;
    }
    return updated;
}

/* fuse_all for any CPU of the target (x86-64: SSE2, four lanes) and, on x86-64, for CPUs with AVX2 (eight
 * lanes; about 17 % less time for the keyframes of a four-camera window, docs/performance.md#rigs). Both run the
 * same operations in the same order (no fused multiply-adds: -ffp-contract=off), so they give the same
 * bits; test_tsdf.py compares them. PyInit picks one: AVX2 where the CPU has it, unless the environment
 * variable MAPANYTHING_ROS_SIMD is "baseline". */
static Py_ssize_t fuse_baseline(FUSE_PARAMS) { return fuse_all(FUSE_ARGS); }

#if WIDE_SIMD
__attribute__((target("avx2"))) static Py_ssize_t fuse_avx2(FUSE_PARAMS) { return fuse_all(FUSE_ARGS); }
#endif

static Py_ssize_t (*fuse_chosen)(FUSE_PARAMS) = fuse_baseline;

/* A Projection from the (kind, (8 coefficients), limit) and 10-number pixel tuples; 0 on error. */
static int parse_projection(PyObject *lens, PyObject *pixel, Projection *q)
{
    double k[8], limit;
    if (!PyArg_ParseTuple(lens, "i(dddddddd)d;lens: (kind, (8 coefficients), limit)", &q->kind, &k[0], &k[1], &k[2],
                          &k[3], &k[4], &k[5], &k[6], &k[7], &limit) ||
        !PyArg_ParseTuple(pixel, "dddddddddd;pixel: (fx, skew, cx, fy, cy, offset, sx, sy, crop_x, crop_y)", &q->fx,
                          &q->skew, &q->cx, &q->fy, &q->cy, &q->offset, &q->sx, &q->sy, &q->crop_x, &q->crop_y))
        return 0;
    if (q->kind != PINHOLE && q->kind != RADTAN && q->kind != EQUIDISTANT) {
        PyErr_Format(PyExc_ValueError, "lens: unknown kind %d", q->kind);
        return 0;
    }
    for (int i = 0; i < 8; i++) q->k[i] = (float)k[i];
    q->limit = (float)limit;
    return 1;
}

static PyObject *fuse(PyObject *self, PyObject *args)
{
    enum { N = 11 };
    PyObject *o[N], *lens, *pixel, *result = NULL;
    Py_buffer b[N];
    memset(b, 0, sizeof b);
    Py_ssize_t width;
    double tr, ra, vx, mw, mr, sp, fl, mn;
    int color_looks;
    Projection q;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOn(dddddddd)i:fuse", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6],
                          &o[7], &lens, &pixel, &o[8], &o[9], &o[10], &width, &tr, &ra, &vx, &mw, &mr, &sp, &fl, &mn,
                          &color_looks) ||
        !parse_projection(lens, pixel, &q))
        return NULL;
    if (color_looks < 1 || color_looks > LOOKS) {
        PyErr_Format(PyExc_ValueError, "color_looks: expected 1 to %d, got %d", LOOKS, color_looks);
        return NULL;
    }
    static const char *names[N] = {"tsdf", "weight", "rgb", "looks", "free", "slots", "corners", "offsets",
                                   "ranges", "weights", "colors"};
    if (get(o[0], &b[0], names[0], "f", -1, 1) < 0) goto done;
    const Py_ssize_t pool = b[0].len / 4;
    if (pool % VOXELS != 0) {
        PyErr_SetString(PyExc_ValueError, "tsdf: not a whole number of blocks");
        goto done;
    }
    if (get(o[1], &b[1], names[1], "f", pool, 1) < 0 || get(o[2], &b[2], names[2], "B", 3 * pool, 1) < 0 ||
        get(o[3], &b[3], names[3], "B", pool, 1) < 0 || get(o[4], &b[4], names[4], "?", pool / VOXELS, 1) < 0 ||
        get(o[5], &b[5], names[5], "i", -1, 0) < 0)
        goto done;
    const Py_ssize_t m = b[5].len / 4;
    if (get(o[6], &b[6], names[6], "f", 3 * m, 0) < 0 || get(o[7], &b[7], names[7], "f", 3 * VOXELS, 0) < 0 ||
        get(o[8], &b[8], names[8], "f", -1, 0) < 0)
        goto done;
    const Py_ssize_t pixels = b[8].len / 4;
    if (width <= 0 || pixels % width != 0) {
        PyErr_SetString(PyExc_ValueError, "ranges: not a whole number of rows of `width`");
        goto done;
    }
    if (get(o[9], &b[9], names[9], "f", pixels, 0) < 0 || get(o[10], &b[10], names[10], "B", -1, 0) < 0)
        goto done;
    if (b[10].len != 3 * pixels && b[10].len != 4 * pixels) {
        PyErr_Format(PyExc_ValueError, "colors: expected 3 or 4 bytes for each of %zd pixels, got %zd bytes", pixels,
                     b[10].len);
        goto done;
    }
    const int32_t *slots = b[5].buf;
    for (Py_ssize_t s = 0; s < m; s++)
        if (slots[s] < 0 || slots[s] >= pool / VOXELS) {
            PyErr_SetString(PyExc_IndexError, "slots: a slot outside the pools");
            goto done;
        }
    Params p = {(float)tr, (float)ra, (float)vx, (float)mw, (float)mr, (float)sp, (float)fl, (float)mn, color_looks,
                b[10].len == 4 * pixels ? 4 : 3};
    Py_ssize_t updated;
    Py_BEGIN_ALLOW_THREADS
    updated = fuse_chosen(b[0].buf, b[1].buf, b[2].buf, b[3].buf, b[4].buf, slots, m, b[6].buf, b[7].buf, &q,
                          b[8].buf, b[9].buf, b[10].buf, width, pixels / width, p);
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(updated);
done:
    for (int k = 0; k < N; k++) PyBuffer_Release(&b[k]);
    return result;
}

static PyObject *project(PyObject *self, PyObject *args)
{
    PyObject *cam_obj, *lens, *pixel;
    Py_buffer cam;
    Projection q;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOO:project", &cam_obj, &lens, &pixel) || !parse_projection(lens, pixel, &q))
        return NULL;
    if (get(cam_obj, &cam, "cam", "f", -1, 0) < 0) return NULL;
    if (cam.len % 12 != 0) {
        PyErr_SetString(PyExc_ValueError, "cam: not a whole number of (x, y, z) float32 points");
        PyBuffer_Release(&cam);
        return NULL;
    }
    const Py_ssize_t n = cam.len / 12;
    PyObject *col = PyByteArray_FromStringAndSize(NULL, 4 * n), *row = PyByteArray_FromStringAndSize(NULL, 4 * n),
             *valid = PyByteArray_FromStringAndSize(NULL, n), *result = NULL;
    if (col != NULL && row != NULL && valid != NULL) {
        const float *x = cam.buf, zero[3] = {0, 0, 0};
        float *c = (float *)PyByteArray_AS_STRING(col), *r = (float *)PyByteArray_AS_STRING(row);
        char *valid_out = PyByteArray_AS_STRING(valid);
        float px[VOXELS], py[VOXELS], pz[VOXELS], dist[VOXELS];
        int ok[VOXELS];
        for (Py_ssize_t start = 0; start < n; start += VOXELS) {
            const int count = n - start < VOXELS ? (int)(n - start) : VOXELS;
            for (int o = 0; o < count; o++) {
                px[o] = x[3 * (start + o)];
                py[o] = x[3 * (start + o) + 1];
                pz[o] = x[3 * (start + o) + 2];
            }
            project_block(&q, zero, px, py, pz, count, c + start, r + start, dist, ok);
            for (int o = 0; o < count; o++) valid_out[start + o] = (char)ok[o];
        }
        result = Py_BuildValue("OOO", col, row, valid);
    }
    Py_XDECREF(col);
    Py_XDECREF(row);
    Py_XDECREF(valid);
    PyBuffer_Release(&cam);
    return result;
}

/* Unique packed keys (mapping/keys.py: 21 bits an axis, offset 2^20) of the cells of size
 * `size` that samples along rays fall in, computed as TsdfMap._ray_keys computes them: ray i (float32
 * camera-frame direction d) takes counts[i] samples t_k = lo + k s, s = (hi - lo) / max(counts[i] - 1, 1)
 * metres along d (k = 0 .. counts[i] - 1); its world direction is e_a = ((d_x r_a0 + d_y r_a1) + d_z r_a2)
 * and a sample's world point e t_k + origin, its cell floor(w (1 / size)), all in double. Samples whose
 * cell is out of the packable range or not finite are left out. Deduplicated as they come (a
 * ray's consecutive samples mostly share a block: compared with the last key first), then in an
 * open-addressing hash set; in the order first seen (numpy's sort of them is faster than qsort). */
#define KEY_BITS 21
#define KEY_OFFSET (1 << (KEY_BITS - 1))

typedef struct {
    int64_t *table, *out;
    Py_ssize_t slots, count;
    int shift;
} KeySet;

static const int64_t EMPTY_KEY = -1; /* packed keys are >= 0 */

static Py_ssize_t key_slot(const KeySet *set, int64_t key)
{
    Py_ssize_t h = (Py_ssize_t)(((uint64_t)key * 0x9E3779B97F4A7C15ull) >> set->shift); /* Fibonacci hashing */
    while (set->table[h] != EMPTY_KEY && set->table[h] != key) h = (h + 1) & (set->slots - 1);
    return h;
}

/* Adds a key; the table doubles when half full (kept small, it stays in cache), and the list of
 * keys (room for slots / 2) with it. 0 when out of memory. */
static int key_add(KeySet *set, int64_t key)
{
    Py_ssize_t h = key_slot(set, key);
    if (set->table[h] == key) return 1;
    set->table[h] = key;
    set->out[set->count++] = key;
    if (2 * set->count < set->slots) return 1;
    if (set->slots > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(int64_t)) return 0;
    int64_t *table = PyMem_RawMalloc((size_t)(2 * set->slots) * sizeof(int64_t));
    int64_t *out = PyMem_RawRealloc(set->out, (size_t)set->slots * sizeof(int64_t));
    if (out != NULL) set->out = out;
    if (table == NULL || out == NULL) {
        PyMem_RawFree(table);
        return 0;
    }
    PyMem_RawFree(set->table);
    set->table = table;
    set->slots *= 2;
    set->shift--; /* slots = 2^(64 - shift): the product's top bits */
    memset(set->table, 0xff, (size_t)set->slots * sizeof(int64_t)); /* EMPTY_KEY */
    for (Py_ssize_t i = 0; i < set->count; i++) set->table[key_slot(set, set->out[i])] = set->out[i];
    return 1;
}

static int ray_cells(const float *dirs, const double *lo, const double *hi, const int64_t *counts, Py_ssize_t n,
                     const double *rot, const double *origin, double size, KeySet *set)
{
    const double inverse = 1 / size;
    int64_t last = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        const double x = dirs[3 * i], y = dirs[3 * i + 1], z = dirs[3 * i + 2];
        double e[3];
        for (int a = 0; a < 3; a++) e[a] = (x * rot[3 * a] + y * rot[3 * a + 1]) + z * rot[3 * a + 2];
        const int64_t c = counts[i];
        const double step = (hi[i] - lo[i]) / (double)(c > 1 ? c - 1 : 1);
        for (int64_t k = 0; k < c; k++) {
            const double t = lo[i] + (double)k * step;
            int64_t key = 0;
            int ok = 1;
            for (int a = 0; a < 3; a++) {
                const double q = (e[a] * t + origin[a]) * inverse;
                ok &= q >= -KEY_OFFSET && q < KEY_OFFSET; /* floor(q) in range; NaN fails */
                int64_t cell = ok ? (int64_t)q : 0;       /* floor: truncation, one less below zero */
                cell -= (double)cell > q;
                key = (key << KEY_BITS) | (cell + KEY_OFFSET);
            }
            if (!ok || key == last) continue;
            last = key;
            if (!key_add(set, key)) return 0;
        }
    }
    return 1;
}

static PyObject *ray_keys(PyObject *self, PyObject *args)
{
    PyObject *o[4], *result = NULL;
    Py_buffer b[4];
    memset(b, 0, sizeof b);
    double rot[9], origin[3], size;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOOO(ddddddddd)(ddd)d:ray_keys", &o[0], &o[1], &o[2], &o[3], &rot[0], &rot[1],
                          &rot[2], &rot[3], &rot[4], &rot[5], &rot[6], &rot[7], &rot[8], &origin[0], &origin[1],
                          &origin[2], &size))
        return NULL;
    if (!(size > 0)) {
        PyErr_SetString(PyExc_ValueError, "size: not a positive number of metres");
        return NULL;
    }
    if (get(o[3], &b[3], "counts", "q", -1, 0) < 0) return NULL;
    const Py_ssize_t n = b[3].len / 8;
    int ok = get(o[0], &b[0], "dirs", "f", 3 * n, 0) == 0 && get(o[1], &b[1], "lo", "d", n, 0) == 0 &&
             get(o[2], &b[2], "hi", "d", n, 0) == 0;
    KeySet set = {NULL, NULL, 1024, 0, 54}; /* 1024 = 2^(64 - 54) slots to begin with */
    for (Py_ssize_t i = 0; ok && i < n; i++) {
        if (((const int64_t *)b[3].buf)[i] < 0) {
            PyErr_SetString(PyExc_ValueError, "counts: negative");
            ok = 0;
        }
    }
    if (ok) {
        set.table = PyMem_RawMalloc((size_t)set.slots * sizeof(int64_t));
        set.out = PyMem_RawMalloc((size_t)(set.slots / 2) * sizeof(int64_t));
        if (set.table == NULL || set.out == NULL) {
            PyErr_NoMemory();
        } else {
            Py_BEGIN_ALLOW_THREADS
            memset(set.table, 0xff, (size_t)set.slots * sizeof(int64_t)); /* EMPTY_KEY */
            ok = ray_cells(b[0].buf, b[1].buf, b[2].buf, b[3].buf, n, rot, origin, size, &set);
            Py_END_ALLOW_THREADS
            result = ok ? PyByteArray_FromStringAndSize((const char *)set.out, set.count * (Py_ssize_t)sizeof(int64_t))
                        : PyErr_NoMemory();
        }
    }
    PyMem_RawFree(set.table);
    PyMem_RawFree(set.out);
    for (int i = 0; i < 4; i++)
        if (b[i].obj != NULL) PyBuffer_Release(&b[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"fuse", fuse, METH_VARARGS,
     "fuse(tsdf, weight, rgb, looks, free, slots, corners, offsets, lens, pixel, ranges, weights, colors, width, "
     "(truncation, ratio, voxel_size, max_weight, max_range, spread, free_level, min_weight), color_looks) -> int: "
     "fuse one keyframe into the pool slots `slots` (see _tsdf_fuse.c)."},
    {"project", project, METH_VARARGS,
     "project(cam, lens, pixel) -> (col, row, valid) as bytearrays of float32, float32 and bool: the projection "
     "fuse() makes, of float32 camera-frame points (n, 3)."},
    {"ray_keys", ray_keys, METH_VARARGS,
     "ray_keys(dirs, lo, hi, counts, rot, origin, size) -> bytearray of int64: the unique packed keys of the "
     "cells of `size` metres that counts[i] samples from lo[i] to hi[i] metres along each ray dirs[i] fall in, "
     "the rays' camera pose rot (row-major) and origin (see _tsdf_fuse.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_tsdf_fuse", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__tsdf_fuse(void)
{
    const char *wanted = getenv("MAPANYTHING_ROS_SIMD");
#if WIDE_SIMD
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && !(wanted != NULL && strcmp(wanted, "baseline") == 0)) fuse_chosen = fuse_avx2;
    const char *simd = fuse_chosen == fuse_avx2 ? "avx2" : "baseline";
#else
    (void)wanted;
    const char *simd = "baseline";
#endif
    PyObject *mod = PyModule_Create(&module);
    if (mod != NULL && PyModule_AddStringConstant(mod, "SIMD", simd) < 0) Py_CLEAR(mod);
    return mod;
}
