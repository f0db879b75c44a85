/* Strict .npy reading and writing of 2-D float arrays (npy.h). */
#include "io/npy.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/dtype.h"

static const unsigned char MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* ---- the header's dict ---------------------------------------------------------------------- */

typedef struct header {
    const char *p, *end;
    char descr[16];
    int fortran, have_descr, have_fortran, have_shape, ndim;
    long long shape[8];
} header;

static void skip_space(header *h) {
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\t')) h->p++;
}

static int expect(header *h, char c) {
    skip_space(h);
    if (h->p >= h->end || *h->p != c) return -1;
    h->p++;
    return 0;
}

/* A quoted Python string (no escapes) into out. */
static int quoted(header *h, char *out, size_t cap) {
    skip_space(h);
    if (h->p >= h->end || (*h->p != '\'' && *h->p != '"')) return -1;
    char q = *h->p++;
    size_t n = 0;
    while (h->p < h->end && *h->p != q) {
        if (*h->p == '\\' || n + 1 >= cap) return -1;
        out[n++] = *h->p++;
    }
    if (h->p >= h->end) return -1;
    h->p++;
    out[n] = '\0';
    return 0;
}

static int word(header *h, const char *w) {
    skip_space(h);
    size_t n = strlen(w);
    if ((size_t)(h->end - h->p) < n || memcmp(h->p, w, n) != 0) return -1;
    h->p += n;
    return 0;
}

/* (n, d) or (n,) or () ; sizes non-negative decimal integers. */
static int shape(header *h) {
    if (expect(h, '(')) return -1;
    h->ndim = 0;
    for (;;) {
        skip_space(h);
        if (h->p < h->end && *h->p == ')') return h->p++, 0;
        if (h->ndim == 8) return -1;
        char *e;
        long long v = strtoll(h->p, &e, 10);
        if (e == h->p || e > h->end || v < 0 || *h->p == '-' || *h->p == '+') return -1;
        h->shape[h->ndim++] = v, h->p = e;
        skip_space(h);
        if (h->p < h->end && *h->p == ',')
            h->p++;
        else if (h->p >= h->end || *h->p != ')')
            return -1;
    }
}

static int entry(header *h) {
    char key[32];
    if (quoted(h, key, sizeof key) || expect(h, ':')) return -1;
    if (!strcmp(key, "descr") && !h->have_descr)
        return h->have_descr = 1, quoted(h, h->descr, sizeof h->descr);
    if (!strcmp(key, "fortran_order") && !h->have_fortran) {
        h->have_fortran = 1;
        if (word(h, "False") == 0) return h->fortran = 0, 0;
        return word(h, "True") == 0 ? (h->fortran = 1, 0) : -1;
    }
    if (!strcmp(key, "shape") && !h->have_shape) return h->have_shape = 1, shape(h);
    return -1;
}

/* {'descr': ..., 'fortran_order': ..., 'shape': (...), } then spaces and '\n'. */
static int parse_dict(header *h) {
    if (expect(h, '{')) return -1;
    for (;;) {
        skip_space(h);
        if (h->p < h->end && *h->p == '}') break;
        if (entry(h)) return -1;
        skip_space(h);
        if (h->p < h->end && *h->p == ',')
            h->p++;
        else if (h->p >= h->end || *h->p != '}')
            return -1;
    }
    h->p++;
    while (h->p < h->end && (*h->p == ' ' || *h->p == '\n')) h->p++;
    return h->p == h->end && h->have_descr && h->have_fortran && h->have_shape ? 0 : -1;
}

/* ---- reading ------------------------------------------------------------------------------- */

/* The element size of an accepted descr, or 0 (err says why not). */
static size_t element(const char *descr, const char *what, sp_error *err) {
    if (!strcmp(descr, "<f4")) return 4;
    if (!strcmp(descr, "<f2")) return 2;
    if (!strcmp(descr, "<f8")) return 8;
    if (strchr(descr, 'O'))
        sp_fail(err,
                "%s: an object array (dtype '%s'): loading it needs allow_pickle, which can run "
                "arbitrary code, so it is refused. Convert it once, in Python, if you trust it: "
                "numpy.save(PATH, numpy.load(PATH, allow_pickle=True).astype(numpy.float32))",
                what, descr);
    else
        sp_fail(err,
                "%s: dtype '%s': expected little-endian floats '<f4' (or '<f2', '<f8'); convert "
                "with numpy.save(PATH, x.astype('<f4'))",
                what, descr);
    return 0;
}

static int header_of(const unsigned char *buf, size_t len, const char *what, header *h,
                     size_t *data_at, sp_error *err) {
    if (len < 10 || memcmp(buf, MAGIC, 6) != 0)
        return sp_fail(err, "%s: not a NumPy .npy file (no \\x93NUMPY magic)", what);
    int major = buf[6];
    size_t hlen, at;
    if (major == 1)
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8, at = 10;
    else if ((major == 2 || major == 3) && len >= 12)
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24,
        at = 12;
    else
        return sp_fail(err, "%s: .npy format version %d.%d: expected 1.0, 2.0 or 3.0", what, major,
                       buf[7]);
    if (hlen > len - at) return sp_fail(err, "%s: truncated .npy header", what);
    *h = (header){.p = (const char *)buf + at, .end = (const char *)buf + at + hlen};
    if (memchr(h->p, '\0', hlen) || parse_dict(h))
        return sp_fail(err,
                       "%s: the .npy header is not NumPy's {'descr': ..., 'fortran_order': ..., "
                       "'shape': (...)} dict",
                       what);
    *data_at = at + hlen;
    return 0;
}

static int check_array(const header *h, const char *what, size_t size, size_t avail,
                       sp_error *err) {
    if (h->fortran)
        return sp_fail(err,
                       "%s: fortran_order True: expected C order (numpy.save(PATH, "
                       "numpy.ascontiguousarray(x)))",
                       what);
    if (h->ndim != 2)
        return sp_fail(err, "%s: a %d-D array: expected 2-D [n_tokens, d_model]", what, h->ndim);
    if (h->shape[0] < 1 || h->shape[1] < 1 || h->shape[0] > (1 << 24) || h->shape[1] > (1 << 24))
        return sp_fail(err, "%s: shape (%lld, %lld): expected positive sizes", what, h->shape[0],
                       h->shape[1]);
    size_t need = (size_t)h->shape[0] * (size_t)h->shape[1] * size;
    if (avail != need)
        return sp_fail(err,
                       "%s: %zu bytes of data for shape (%lld, %lld) of %zu-byte values: "
                       "expected %zu",
                       what, avail, h->shape[0], h->shape[1], size, need);
    return 0;
}

static float value(const unsigned char *p, size_t size) {
    if (size == 2) return sp_f16_to_f32((uint16_t)(p[0] | p[1] << 8));
    uint64_t bits = 0;
    for (size_t i = 0; i < size; i++) bits |= (uint64_t)p[i] << (8 * i);
    if (size == 4) {
        uint32_t b = (uint32_t)bits;
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    double x;
    memcpy(&x, &bits, 8);
    return (float)x;
}

int sp__npy_parse(const unsigned char *buf, size_t len, const char *what, float **out, int *rows,
                  int *cols, sp_error *err) {
    *out = NULL;
    header h;
    size_t at = 0, size = 0;
    if (header_of(buf, len, what, &h, &at, err) || !(size = element(h.descr, what, err)) ||
        check_array(&h, what, size, len - at, err))
        return -1;
    size_t n = (size_t)h.shape[0] * (size_t)h.shape[1];
    float *x = malloc(n * sizeof *x);
    if (!x) return sp_fail(err, "%s: out of memory", what);
    for (size_t i = 0; i < n; i++) {
        x[i] = value(buf + at + i * size, size);
        if (!isfinite(x[i])) {
            double bad = x[i];
            free(x);
            return sp_fail(err, "%s: element [%zu, %zu] is %g: expected finite values", what,
                           i / (size_t)h.shape[1], i % (size_t)h.shape[1], bad);
        }
    }
    *out = x, *rows = (int)h.shape[0], *cols = (int)h.shape[1];
    return 0;
}

/* ---- writing ------------------------------------------------------------------------------- */

int sp__npy_write(const float *x, int rows, int cols, unsigned char **out, size_t *len) {
    char dict[128];
    int n = snprintf(dict, sizeof dict,
                     "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }", rows, cols);
    size_t hlen = (size_t)n + 1, total_head = 10 + hlen;
    total_head = (total_head + 63) / 64 * 64, hlen = total_head - 10;
    size_t data = (size_t)rows * (size_t)cols * 4;
    unsigned char *b = malloc(total_head + data);
    if (!b) return -1;
    memcpy(b, MAGIC, 6);
    b[6] = 1, b[7] = 0, b[8] = (unsigned char)(hlen & 0xff), b[9] = (unsigned char)(hlen >> 8);
    memset(b + 10, ' ', hlen);
    memcpy(b + 10, dict, (size_t)n);
    b[total_head - 1] = '\n';
    for (size_t i = 0; i < (size_t)rows * (size_t)cols; i++) {
        uint32_t v;
        memcpy(&v, &x[i], 4);
        for (int k = 0; k < 4; k++) b[total_head + i * 4 + k] = (unsigned char)(v >> (8 * k));
    }
    *out = b, *len = total_head + data;
    return 0;
}
