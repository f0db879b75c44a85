/* Elementwise kernels. With AVX-512 the exponentials and tanh (GELU, SwiGLU, softmax rows) go
 * to vmath.c (every element through one vector code, whatever its position). Otherwise, and for
 * the rest, compiled with -O3 -ffast-math (CMakeLists.txt) so that GCC vectorises the
 * loops and calls glibc's vector math library (libmvec) for tanhf and expf: the GELU of every
 * MLP row, the softmax rows of attention and the cross-entropy over the vocabulary. Nothing here
 * tests for NaN/Inf; sums are vectorised (reassociated), so they are deterministic for a given
 * binary but not bitwise equal to a sequential loop. */
#include <math.h>
#include <stddef.h>

#include "model/kernels.h"

#define GELU_SCALE 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_CUBIC 0.044715f

/* The values an activation keeps for backward (the tanh of the GELUs, SwiGLU's sigmoid) are
 * saved when the caller gives a buffer, else computed CHUNK elements at a time into one on the
 * stack: forward writes them there (keep_chunk), backward recomputes them (aux_chunk). */
#define CHUNK 256
typedef void (*aux_fill)(float *restrict out, const float *restrict x, size_t n);

static void gelu_tanh(float *restrict th, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        th[i] = tanhf(GELU_SCALE * (v + GELU_CUBIC * v * v * v));
    }
}

static void sigmoid(float *restrict s, const float *restrict g, size_t n) {
    for (size_t i = 0; i < n; i++) s[i] = 1.0f / (1.0f + expf(-g[i]));
}

/* Forward: elements i0..i0+m-1 of the kept values, fill's of x written to the caller's buffer
 * (kept) when it gave one, else to buf. */
static float *keep_chunk(float *kept, float *buf, aux_fill fill, const float *x, size_t i0,
                         size_t m) {
    float *out = kept ? kept + i0 : buf;
    fill(out, x + i0, m);
    return out;
}

/* Backward: elements i0..i0+m-1 of the kept values: the saved ones, or fill's of x into buf. */
static const float *aux_chunk(const float *saved, float *buf, aux_fill fill, const float *x,
                              size_t i0, size_t m) {
    if (saved) return saved + i0;
    fill(buf, x + i0, m);
    return buf;
}

void sp__gelu_forward(float *restrict out, float *restrict t, const float *restrict x, size_t n) {
    if (sp__vmath_ok()) {
        sp__vmath_gelu_forward(out, t, x, n);
        return;
    }
    float buf[CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        const float *th = keep_chunk(t, buf, gelu_tanh, x, i0, m);
        for (size_t j = 0; j < m; j++) out[i0 + j] = 0.5f * x[i0 + j] * (1.0f + th[j]);
    }
}

/* d gelu(v) / dv from th = tanh(u(v)) */
static inline float gelu_grad(float v, float th) {
    float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBIC * v * v);
    return 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * du;
}

void sp__gelu_backward(float *dx, const float *dout, const float *restrict x,
                       const float *restrict t, size_t n) {
    if (!t && sp__vmath_ok()) {
        sp__vmath_gelu_backward(dx, dout, x, n);
        return;
    }
    float buf[CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        const float *th = aux_chunk(t, buf, gelu_tanh, x, i0, m);
        for (size_t j = 0; j < m; j++) dx[i0 + j] = dout[i0 + j] * gelu_grad(x[i0 + j], th[j]);
    }
}

#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

void sp__gelu_erf_forward(float *restrict out, float *restrict cdf, const float *restrict x,
                          size_t n) {
    for (size_t i = 0; i < n; i++) {
        float c = 0.5f * (1.0f + erff(x[i] * INV_SQRT2));
        cdf[i] = c;
        out[i] = x[i] * c;
    }
}

void sp__gelu_erf_backward(float *dx, const float *dout, const float *restrict x,
                           const float *restrict cdf, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        dx[i] = dout[i] * (cdf[i] + v * INV_SQRT_2PI * expf(-0.5f * v * v));
    }
}

void sp__relu_forward(float *restrict out, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void sp__relu_backward(float *dx, const float *dout, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) dx[i] = x[i] > 0.0f ? dout[i] : 0.0f;
}

void sp__geglu_forward(float *restrict act, float *restrict t, const float *restrict gate,
                       const float *restrict up, size_t n) {
    if (sp__vmath_ok()) {
        sp__vmath_geglu_forward(act, t, gate, up, n);
        return;
    }
    float buf[CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        const float *ti = keep_chunk(t, buf, gelu_tanh, gate, i0, m);
        for (size_t j = 0; j < m; j++) {
            float v = gate[i0 + j];
            act[i0 + j] = 0.5f * v * (1.0f + ti[j]) * up[i0 + j];
        }
    }
}

void sp__geglu_backward(float *dgate, float *restrict dup, const float *dact,
                        const float *restrict gate, const float *restrict t,
                        const float *restrict up, size_t n) {
    if (!t && sp__vmath_ok()) {
        sp__vmath_geglu_backward(dgate, dup, dact, gate, up, n);
        return;
    }
    float buf[CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        const float *th = aux_chunk(t, buf, gelu_tanh, gate, i0, m);
        for (size_t j = 0; j < m; j++) {
            size_t i = i0 + j;
            float v = gate[i], da = dact[i];
            dup[i] = da * 0.5f * v * (1.0f + th[j]);
            dgate[i] = da * up[i] * gelu_grad(v, th[j]);
        }
    }
}

void sp__exp_shift(float *restrict row, int n, float shift) {
    if (sp__vmath_ok()) {
        sp__vmath_exp_shift(row, (size_t)n, shift);
        return;
    }
    for (int j = 0; j < n; j++) row[j] = expf(row[j] - shift);
}

float sp__exp_shift_sum(float *restrict row, int n, float shift) {
    if (sp__vmath_ok()) return sp__vmath_exp_shift_sum(row, (size_t)n, shift);
    float sum = 0.0f;
    for (int j = 0; j < n; j++) sum += (row[j] = expf(row[j] - shift));
    return sum;
}

double sp__exp_shift_sum_f64(float *restrict row, int n, float shift) {
    double sum = 0.0;
    for (int j = 0; j < n; j++) {
        float e = expf(row[j] - shift);
        row[j] = e;
        sum += e;
    }
    return sum;
}

float sp__max(const float *restrict row, int n) {
    float mx = row[0];
    for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    return mx;
}

void sp__swiglu_forward(float *restrict act, float *restrict sig, const float *restrict gate,
                        const float *restrict up, size_t n) {
    if (sp__vmath_ok()) {
        sp__vmath_swiglu_forward(act, sig, gate, up, n);
        return;
    }
    float buf[CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        const float *s = keep_chunk(sig, buf, sigmoid, gate, i0, m);
        for (size_t j = 0; j < m; j++) act[i0 + j] = gate[i0 + j] * s[j] * up[i0 + j];
    }
}

void sp__swiglu_backward(float *dgate, float *restrict dup, const float *dact,
                         const float *restrict gate, const float *restrict sig,
                         const float *restrict up, size_t n) {
    if (!sig && sp__vmath_ok()) {
        sp__vmath_swiglu_backward(dgate, dup, dact, gate, up, n);
        return;
    }
    float buf[CHUNK];
    for (size_t i0 = 0; i0 < n; i0 += CHUNK) {
        size_t m = n - i0 < CHUNK ? n - i0 : CHUNK;
        const float *si = aux_chunk(sig, buf, sigmoid, gate, i0, m);
        for (size_t j = 0; j < m; j++) {
            size_t i = i0 + j;
            float g = gate[i], s = si[j], da = dact[i];
            dup[i] = da * g * s;
            dgate[i] = da * up[i] * s * (1.0f + g * (1.0f - s)); /* silu'(g) = s (1 + g (1 - s)) */
        }
    }
}
