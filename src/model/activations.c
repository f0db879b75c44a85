/* Elementwise activations, compiled with -O3 -ffast-math (CMakeLists.txt) so that GCC
 * vectorises the loops and calls glibc's vector math library (libmvec) for tanhf: the GELU of
 * every MLP row was the largest cost after the matrix products. Nothing here depends on strict
 * IEEE semantics (no NaN/Inf tests, no order-sensitive sums); results are deterministic for a
 * given binary. */
#include <math.h>
#include <stddef.h>

#include "model/kernels.h"

#define GELU_SCALE 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_CUBIC 0.044715f

void sp_gelu_forward(float *restrict out, float *restrict t, const float *restrict x, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float th = tanhf(GELU_SCALE * (v + GELU_CUBIC * v * v * v));
        t[i] = th;
        out[i] = 0.5f * v * (1.0f + th);
    }
}

void sp_gelu_backward(float *dx, const float *dout, const float *restrict x,
                      const float *restrict t, size_t n) {
    for (size_t i = 0; i < n; i++) {
        float v = x[i], th = t[i];
        float du = GELU_SCALE * (1.0f + 3.0f * GELU_CUBIC * v * v);
        dx[i] = dout[i] * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * du);
    }
}

void sp_exp_shift(float *restrict row, int n, float shift) {
    for (int j = 0; j < n; j++) row[j] = expf(row[j] - shift);
}

float sp_exp_shift_sum(float *restrict row, int n, float shift) {
    float sum = 0.0f;
    for (int j = 0; j < n; j++) sum += (row[j] = expf(row[j] - shift));
    return sum;
}
