/* PointCloud2 point interleaving for encode.pack_cloud, in one pass over the inputs.
 *
 * Built by CMakeLists.txt (colcon, and tools/dev's environment) as mapanything_ros._pack_cloud.
 * encode.py falls back to an OpenCV path with the same bytes when this module is missing.
 *
 * interleave(out, points, colors, confidence, stream_from) -> bool
 *   out         writable buffer of n * step bytes, step = 4 * (3 + has colours + has confidence)
 *   points      C-contiguous (n, 3) float32 or float64, host byte order; written as float32
 *   colors      None or C-contiguous (n, 3) uint8 RGB; written as the uint32 0x00RRGGBB
 *   confidence  None or C-contiguous (n,) float32
 *   stream_from out's size in bytes from which it is written with non-temporal stores (x86; the
 *               x, y, z, rgb, confidence layout only): all of it but the points before the first
 *               that starts on 16 bytes (out may be a part of a larger cloud; none where out's words
 *               do not lie on 4) and the last one to four
 * Each point becomes its words x, y, z[, rgb][, confidence] in host byte order. Returns whether
 * every written x, y, z is finite (a float64 beyond the float32 range becomes inf). The GIL is
 * released while the bytes are written.
 *
 * Why compiled code: interleaving three inputs into 20-byte points is store-bound; OpenCV's
 * mixChannels and numpy's strided copies store one 4-byte word at a time (about 1.6 ms per
 * million points here), while four points fit five 16-byte stores once their words are
 * shuffled in registers (GCC / Clang vector extensions, which compile to SSE2 on x86-64 and NEON
 * on AArch64). Other compilers and the other field layouts use the word-by-word loop.
 * An output larger than the caches is written with non-temporal stores on x86 (no read of each
 * destination line before it is overwritten), as glibc's memcpy does above its own threshold.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_buffers.h"

#include <stdint.h>
#include <string.h>

#define EXPONENT 0x7f800000u /* float32 exponent bits: all set for inf and NaN */

#if defined(__GNUC__) || defined(__clang__)
#define INLINE static inline __attribute__((always_inline)) /* specialised per constant f64 */
#else
#define INLINE static inline
#endif

/* The buffers may lie at any address (np.ascontiguousarray keeps an unaligned array as it is, and
 * any writable buffer may be the output): their words are accessed through these types of
 * alignment 1, since a misaligned float, double or uint32_t access is undefined behaviour. On x86
 * and AArch64 they compile to the same plain loads and stores. */
#if defined(__GNUC__) || defined(__clang__)
typedef float float_any __attribute__((aligned(1)));
typedef double double_any __attribute__((aligned(1)));
typedef uint32_t uint32_any __attribute__((aligned(1)));
#else
typedef float float_any;
typedef double double_any;
typedef uint32_t uint32_any;
#endif

/* Point coordinate j of xyz (float64 when f64, else float32) as float32 bits. */
INLINE uint32_t coordinate(const void *xyz, Py_ssize_t j, int f64)
{
    const float v = f64 ? (float)((const double_any *)xyz)[j] : ((const float_any *)xyz)[j];
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
}

INLINE uint32_t rgb_word(const uint8_t *rgb)
{
    return ((uint32_t)rgb[0] << 16) | ((uint32_t)rgb[1] << 8) | rgb[2];
}

/* Points [begin, n) word by word, any layout (rgb / conf NULL when absent); returns whether all
 * their x, y, z are finite. */
INLINE int wordwise(uint32_any *out, const void *xyz, int f64, const uint8_t *rgb, const float_any *conf,
                    Py_ssize_t begin, Py_ssize_t n)
{
    const Py_ssize_t step = 3 + (rgb != NULL) + (conf != NULL);
    uint32_t nonfinite = 0;
    for (Py_ssize_t i = begin; i < n; i++) {
        uint32_any *o = out + step * i;
        for (int k = 0; k < 3; k++) {
            o[k] = coordinate(xyz, 3 * i + k, f64);
            nonfinite |= (o[k] & EXPONENT) == EXPONENT;
        }
        if (rgb != NULL) o[3] = rgb_word(rgb + 3 * i);
        if (conf != NULL) memcpy(o + step - 1, conf + i, 4);
    }
    return !nonfinite;
}

#if defined(__GNUC__) || defined(__clang__)
#if defined(__SSE2__)
#include <emmintrin.h>
#endif
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef float v4f __attribute__((vector_size(16)));
typedef double v4d __attribute__((vector_size(32)));
#if defined(__clang__)
#define SHUFFLE(a, b, i, j, k, l) __builtin_shufflevector(a, b, i, j, k, l)
#else
#define SHUFFLE(a, b, i, j, k, l) __builtin_shuffle(a, b, (v4u){i, j, k, l})
#endif

/* Coordinates j..j+3 of xyz as float32 bits. */
INLINE v4u coordinates(const void *xyz, Py_ssize_t j, int f64)
{
    if (f64) {
        v4d v;
        memcpy(&v, (const double_any *)xyz + j, 32);
        return (v4u)__builtin_convertvector(v, v4f);
    }
    v4u v;
    memcpy(&v, (const float_any *)xyz + j, 16);
    return v;
}

/* The rgb words of four points from their 12 colour bytes (reads 13). */
INLINE v4u rgb_words(const uint8_t *c)
{
    uint32_t w[4];
    for (int k = 0; k < 4; k++) memcpy(w + k, c + 3 * k, 4);
    const v4u v = {w[0], w[1], w[2], w[3]};
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__ /* v: r | g << 8 | b << 16 | next << 24 */
    const v4u byte = {0xff, 0xff, 0xff, 0xff};
    return ((v & byte) << 16) | (v & (byte << 8)) | ((v >> 16) & byte);
#else /* v: r << 24 | g << 16 | b << 8 | next */
    return v >> 8;
#endif
}

/* Five words of o to out (16-byte aligned when stream), non-temporally when stream (x86). */
INLINE void store5(uint32_any *out, const v4u *o, int stream)
{
#if defined(__SSE2__)
    if (stream) {
        for (int k = 0; k < 5; k++) _mm_stream_si128((__m128i *)(void *)out + k, (__m128i)o[k]);
        return;
    }
#endif
    (void)stream;
    memcpy(out, o, 5 * sizeof *o);
}

/* x, y, z, rgb, confidence (five words a point), four points at a time from point `begin` (before
 * which nothing is written):
 *   in   p0 = x0 y0 z0 x1   p1 = y1 z1 x2 y2   p2 = z2 x3 y3 z3   cs = c0..c3   f = f0..f3
 *   out  x0 y0 z0 c0 | f0 x1 y1 z1 | c1 f1 x2 y2 | z2 c2 f2 x3 | y3 z3 c3 f3
 * The last one to four points go word by word (rgb_words reads a byte past its fourth point). */
INLINE int full(uint32_any *out, const void *xyz, int f64, const uint8_t *rgb, const float_any *conf,
                Py_ssize_t begin, Py_ssize_t n, int stream)
{
    const v4u exponent = {EXPONENT, EXPONENT, EXPONENT, EXPONENT};
    v4u nonfinite = {0, 0, 0, 0};
    Py_ssize_t i = begin;
    for (; i + 4 < n; i += 4) {
        /* 128 points ahead (float64 input took 10 % less time); an address, not a pointer into
         * xyz, since it may lie past its end (a prefetch never faults) */
        __builtin_prefetch((const void *)((uintptr_t)xyz + (uintptr_t)(3 * i + 384) * (f64 ? 8 : 4)));
        const v4u p0 = coordinates(xyz, 3 * i, f64), p1 = coordinates(xyz, 3 * i + 4, f64),
                  p2 = coordinates(xyz, 3 * i + 8, f64), cs = rgb_words(rgb + 3 * i);
        v4u f;
        memcpy(&f, conf + i, 16);
        nonfinite |= ((p0 & exponent) == exponent) | ((p1 & exponent) == exponent) | ((p2 & exponent) == exponent);
        const v4u cf12 = SHUFFLE(cs, f, 1, 5, 2, 6);  /* c1 f1 c2 f2 */
        const v4u cf3 = SHUFFLE(cs, f, 3, 7, 3, 7);   /* c3 f3 c3 f3 */
        const v4u xyz1 = SHUFFLE(p0, p1, 3, 4, 5, 5); /* x1 y1 z1 z1 */
        const v4u o[5] = {SHUFFLE(p0, cs, 0, 1, 2, 4), SHUFFLE(f, xyz1, 0, 4, 5, 6), SHUFFLE(cf12, p1, 0, 1, 6, 7),
                          SHUFFLE(p2, cf12, 0, 6, 7, 1), SHUFFLE(p2, cf3, 2, 3, 4, 5)};
        store5(out + 5 * i, o, stream);
    }
#if defined(__SSE2__)
    if (stream) _mm_sfence(); /* non-temporal stores are weakly ordered: done before others read */
#endif
    const int finite = !(nonfinite[0] | nonfinite[1] | nonfinite[2] | nonfinite[3]);
    return wordwise(out, xyz, f64, rgb, conf, i, n) && finite;
}
#define HAVE_FULL 1
#endif

static PyObject *interleave(PyObject *self, PyObject *args)
{
    PyObject *points_obj, *rgb_obj, *conf_obj, *result = NULL;
    Py_buffer out, points = {0}, rgb = {0}, conf = {0};
    Py_ssize_t stream_from;
    (void)self;
    if (!PyArg_ParseTuple(args, "w*OOOn:interleave", &out, &points_obj, &rgb_obj, &conf_obj, &stream_from))
        return NULL;
    if (PyObject_GetBuffer(points_obj, &points, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) goto done;
    const char *f = native_format(&points);
    const int f64 = strcmp(f, "d") == 0;
    if ((!f64 && strcmp(f, "f") != 0) || points.ndim != 2 || points.shape[1] != 3) {
        PyErr_SetString(PyExc_ValueError, "points: expected C-contiguous (n, 3) float32 or float64");
        goto done;
    }
    const Py_ssize_t n = points.shape[0];
    const int has_rgb = rgb_obj != Py_None, has_conf = conf_obj != Py_None;
    if (has_rgb && get(rgb_obj, &rgb, "colors", "B", 3 * n, 0) < 0) goto done;
    if (has_conf && get(conf_obj, &conf, "confidence", "f", n, 0) < 0) goto done;
    const Py_ssize_t step = 4 * (3 + has_rgb + has_conf);
    if (out.len != n * step) {
        PyErr_Format(PyExc_ValueError, "out: expected %zd bytes, got %zd", n * step, out.len);
        goto done;
    }
    const uint8_t *c = has_rgb ? rgb.buf : NULL;
    const float_any *k = has_conf ? conf.buf : NULL;
    int finite;
    Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_FULL
    if (has_rgb && has_conf) {
        /* Streamed from the first point whose 20 bytes start on 16 (one of the first four when out's
         * words lie on 4: a part of a larger cloud); the points before it word by word. */
        Py_ssize_t lead = 0;
        while (lead < 4 && lead < n && ((uintptr_t)out.buf + 20 * (uintptr_t)lead) % 16 != 0) lead++;
        const int stream = out.len >= stream_from && lead < 4 && lead < n;
        if (!stream) lead = 0;
        const int head = wordwise(out.buf, points.buf, f64, c, k, 0, lead);
        const int body = f64 ? full(out.buf, points.buf, 1, c, k, lead, n, stream)
                             : full(out.buf, points.buf, 0, c, k, lead, n, stream);
        finite = head & body; /* both written, whatever the first points hold */
    } else
#endif
        finite = f64 ? wordwise(out.buf, points.buf, 1, c, k, 0, n) : wordwise(out.buf, points.buf, 0, c, k, 0, n);
    Py_END_ALLOW_THREADS
    result = PyBool_FromLong(finite);
done: /* PyBuffer_Release ignores a view that holds no object */
    PyBuffer_Release(&conf);
    PyBuffer_Release(&rgb);
    PyBuffer_Release(&points);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"interleave", interleave, METH_VARARGS,
     "interleave(out, points, colors, confidence, stream_from) -> bool: write the PointCloud2 points "
     "into out; "
     "True when every x, y, z is finite (see _pack_cloud.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_pack_cloud", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__pack_cloud(void) { return PyModule_Create(&module); }
