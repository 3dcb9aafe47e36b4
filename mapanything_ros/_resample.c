/* The native-resolution depth of a model-resolution map through a geometry.resample.Stencil, in one
 * pass over the native pixels (mapping/reconstruction.py's _to_native, "bilinear" mode, numpy).
 *
 * Built by CMakeLists.txt (colcon, and tools/dev's environment) as mapanything_ros._resample.
 * reconstruction.py runs the same steps in numpy (and in torch on a device) when this module is
 * missing; test_reconstruction.py checks that both give the same bits.
 *
 * native(inv, conf, index, weight, cell, sides, across, down, width, depth, confidence) -> None
 *   inv, conf     float32 (n,): the model map's inverse z-depth and confidence (NaN = none), flat
 *   index         intp (3 * m): the stencil's three model pixels of each native pixel (Stencil.index)
 *   weight        float32 (3 * m): their weights (Stencil.weight; NaN where the pixel gets no value)
 *   cell, sides   intp (m), uint8 (m): each native pixel's model cell and the cell sides whose
 *                 discontinuities count there (Stencil.cell, Stencil.sides)
 *   across, down  None, or bool (n + 1) each: the model map's discontinuities (geometry.resize.
 *                 edge_jumps, False past the last column / row); a native pixel whose counting
 *                 sides jump gets NaN (Stencil.cut_at)
 *   width         the model map's width
 *   depth, confidence  writable float32 (m): the native z-depth 1 / (sum of weight * inv), NaN where
 *                 that is not > 0 or cut; the confidence resampled likewise, NaN wherever the depth is
 * An index or cell outside the model map (not made by a Stencil) gives NaN (a cell: where its sides count).
 * The sums are those of Stencil.apply on the complex64 map inv + i conf, with numpy's complex64
 * arithmetic: (a + ib)(w + 0i) = (a w - b 0) + i(a 0 + b w), so a NaN or infinite confidence makes
 * the depth NaN there as it does in numpy. The GIL is released while the outputs are written.
 *
 * Why compiled code: the numpy path makes three gathers of complex64 values and a dozen passes over
 * the native pixels (3.8 ms a 640x480 view; docs/performance.md).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "_buffers.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

static void resample(const float *inv, const float *conf, Py_ssize_t n, const Py_ssize_t *index,
                     const float *weight, const Py_ssize_t *cell, const uint8_t *sides, const uint8_t *across,
                     const uint8_t *down, Py_ssize_t width, Py_ssize_t m, float *depth, float *confidence)
{
    const float zero = 0.0f;
    for (Py_ssize_t k = 0; k < m; k++) {
        float re = 0, im = 0;
        int inside = 1;
        for (int j = 0; j < 3; j++) {
            const Py_ssize_t i = index[j * m + k];
            inside &= (size_t)i < (size_t)n;
            const float w = weight[j * m + k], a = inside ? inv[i] : NAN, b = inside ? conf[i] : NAN;
            const float tr = a * w - b * zero, ti = a * zero + b * w;
            if (j == 0) {
                re = tr;
                im = ti;
            } else {
                re += tr;
                im += ti;
            }
        }
        const Py_ssize_t c = cell[k];
        if (across != NULL) { /* the cell's sides: bit 0 top, 1 bottom, 2 left, 3 right (Stencil.cut_at) */
            const unsigned jump = (size_t)c >= (size_t)n ? 15u
                                  : (unsigned)across[c] | (c < n - width ? (unsigned)across[c + width] << 1 : 0u) |
                                        (unsigned)down[c] << 2 | (c < n - 1 ? (unsigned)down[c + 1] << 3 : 0u);
            if (jump & sides[k]) re = NAN;
        }
        const float z = 1 / re;
        const int ok = z > 0;
        depth[k] = ok ? z : NAN;
        confidence[k] = ok ? im : NAN;
    }
}

static PyObject *native(PyObject *self, PyObject *args)
{
    enum { N = 10 };
    PyObject *o[N];
    Py_buffer b[N];
    Py_ssize_t width;
    (void)self;
    memset(b, 0, sizeof b);
    if (!PyArg_ParseTuple(args, "OOOOOOOOnOO:native", &o[0], &o[1], &o[2], &o[3], &o[4], &o[5], &o[6], &o[7],
                          &width, &o[8], &o[9]))
        return NULL;
    const int cut = o[6] != Py_None;
    int ok = get(o[0], &b[0], "inv", "f", -1, 0) == 0 && get(o[4], &b[4], "cell", "n", -1, 0) == 0;
    const Py_ssize_t n = ok ? b[0].len / 4 : 0, m = ok ? b[4].len / (Py_ssize_t)sizeof(Py_ssize_t) : 0;
    ok = ok && get(o[1], &b[1], "conf", "f", n, 0) == 0 && get(o[2], &b[2], "index", "n", 3 * m, 0) == 0 &&
         get(o[3], &b[3], "weight", "f", 3 * m, 0) == 0 && get(o[5], &b[5], "sides", "B", m, 0) == 0 &&
         (!cut || (get(o[6], &b[6], "across", "?", n + 1, 0) == 0 && get(o[7], &b[7], "down", "?", n + 1, 0) == 0)) &&
         get(o[8], &b[8], "depth", "f", m, 1) == 0 && get(o[9], &b[9], "confidence", "f", m, 1) == 0;
    if (ok && (width <= 0 || n % width != 0)) {
        PyErr_SetString(PyExc_ValueError, "width: not the width of the model map");
        ok = 0;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        resample(b[0].buf, b[1].buf, n, b[2].buf, b[3].buf, b[4].buf, b[5].buf, cut ? b[6].buf : NULL,
                 cut ? b[7].buf : NULL, width, m, b[8].buf, b[9].buf);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < N; i++)
        if (b[i].obj != NULL) PyBuffer_Release(&b[i]);
    if (!ok) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"native", native, METH_VARARGS,
     "native(inv, conf, index, weight, cell, sides, across, down, width, depth, confidence) -> None: the native "
     "z-depth and confidence of a model map of inverse depth and confidence through a stencil (see _resample.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, .m_name = "_resample", .m_size = -1, .m_methods = methods,
};

PyMODINIT_FUNC PyInit__resample(void) { return PyModule_Create(&module); }
