/* Elementwise math (src/model/vmath.c with AVX-512, activations.c's libm loops otherwise) against
 * float64: exp to a few ulp and its special values, the tanh GELU and GeGLU, SwiGLU's sigmoid, the
 * softmax exponentials and their sum; on both paths (the AVX-512 one when the CPU has it, the
 * libm one forced). And what the AVX-512 code is for: an element's result is the same bits at
 * every position of arrays of every length (no scalar tail that rounds differently). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "softprompt/rng.h"
#include "testutil.h"

#define N_VALUES 4099 /* not a multiple of 16: the masked tail is exercised */

static float *random_values(uint64_t seed, double scale) {
    float *x = malloc(N_VALUES * sizeof *x);
    ck_assert(x);
    sp_rng r;
    sp_rng_seed(&r, seed);
    for (int i = 0; i < N_VALUES; i++) x[i] = (float)(scale * sp_rng_normal(&r));
    return x;
}

static double gelu_ref(double v, double *th) {
    *th = tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v));
    return 0.5 * v * (1.0 + *th);
}

/* exp: relative error within 4 ulp where the result is normal; specials as libm. */
START_TEST(exp_matches_float64) {
    if (!sp__vmath_ok()) return;
    float *x = random_values(1, 30.0), *y = malloc(N_VALUES * sizeof *y);
    ck_assert(y);
    for (int i = 0; i < 200; i++) x[i] = -87.0f + 175.0f * (float)i / 199.0f; /* a grid too */
    sp__vmath_exp(y, x, N_VALUES);
    for (int i = 0; i < N_VALUES; i++) {
        double ref = exp((double)x[i]);
        if (ref < 1.2e-38 || ref > 3.4e38) continue;
        ck_assert_msg(fabs(y[i] - ref) <= 4 * 0x1p-24 * ref, "exp(%.9g) = %.9g, float64 %.9g",
                      (double)x[i], (double)y[i], ref);
    }
    float sx[] = {-INFINITY, INFINITY, NAN, -200.0f, 200.0f, 0.0f, -100.0f, 88.5f};
    float sy[8];
    sp__vmath_exp(sy, sx, 8);
    ck_assert(sy[0] == 0.0f && sy[1] == INFINITY && isnan(sy[2]) && sy[3] == 0.0f);
    ck_assert(sy[4] == INFINITY && sy[5] == 1.0f);
    ck_assert(fabs(sy[6] - exp(-100.0)) <= 1e-45 + 1e-6 * exp(-100.0)); /* subnormal */
    ck_assert(fabs(sy[7] - exp(88.5)) <= 4 * 0x1p-24 * exp(88.5));
    free(x), free(y);
}
END_TEST

/* GELU, GeGLU and SwiGLU forward, and the softmax exponentials, against float64 on the path the
 * CPU takes (force_off 0) or the libm path (1). */
static void check_activations(int force_off) {
    sp__vmath_force_off(force_off);
    float *x = random_values(2, 3.0), *up = random_values(3, 1.0);
    float *out = malloc(N_VALUES * sizeof *out), *t = malloc(N_VALUES * sizeof *t);
    ck_assert(out && t);
    const char *path = force_off ? "libm" : "avx-512";
    sp__gelu_forward(out, t, x, N_VALUES);
    for (int i = 0; i < N_VALUES; i++) {
        double th, ref = gelu_ref(x[i], &th);
        ck_assert_msg(fabs(t[i] - th) <= 2.5e-7, "%s: tanh at %.9g: %.9g vs %.9g", path,
                      (double)x[i], (double)t[i], th);
        ck_assert_msg(fabs(out[i] - ref) <= 3e-7 * fmax(1.0, fabs(x[i])),
                      "%s: gelu(%.9g) = %.9g vs %.9g", path, (double)x[i], (double)out[i], ref);
    }
    sp__geglu_forward(out, t, x, up, N_VALUES);
    for (int i = 0; i < N_VALUES; i++) {
        double th, ref = gelu_ref(x[i], &th) * up[i];
        ck_assert_msg(fabs(out[i] - ref) <= 3e-7 * fmax(1.0, fabs(x[i] * up[i])),
                      "%s: geglu at %d: %.9g vs %.9g", path, i, (double)out[i], ref);
    }
    sp__swiglu_forward(out, t, x, up, N_VALUES);
    for (int i = 0; i < N_VALUES; i++) {
        double s = 1.0 / (1.0 + exp(-(double)x[i]));
        ck_assert_msg(fabs(t[i] - s) <= 4e-7 * s, "%s: sigmoid(%.9g) = %.9g vs %.9g", path,
                      (double)x[i], (double)t[i], s);
        ck_assert(fabs(out[i] - x[i] * s * up[i]) <= 4e-7 * fmax(1e-30, fabs(x[i] * s * up[i])));
    }
    /* backward, from the saved tanh / sigmoid and recomputing it (t NULL), against float64 */
    float *dx = malloc(N_VALUES * sizeof *dx), *dup = malloc(N_VALUES * sizeof *dup);
    ck_assert(dx && dup);
    for (int saved = 0; saved < 2; saved++) {
        sp__gelu_forward(out, t, x, N_VALUES);
        sp__gelu_backward(dx, up, x, saved ? t : NULL, N_VALUES);
        for (int i = 0; i < N_VALUES; i++) {
            double v = x[i], th, u = sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v);
            gelu_ref(v, &th);
            double du = sqrt(2.0 / M_PI) * (1 + 3 * 0.044715 * v * v);
            double d = 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * du, ref = up[i] * d;
            (void)u;
            ck_assert_msg(fabs(dx[i] - ref) <= 1e-6 * fmax(1.0, fabs(up[i]) * (1 + fabs(v) * du)),
                          "%s saved %d: gelu' at %.9g: %.9g vs %.9g", path, saved, v, (double)dx[i],
                          ref);
        }
        sp__swiglu_forward(out, t, x, up, N_VALUES);
        sp__swiglu_backward(dx, dup, up, x, saved ? t : NULL, up, N_VALUES);
        for (int i = 0; i < N_VALUES; i++) {
            double g = x[i], sg = 1.0 / (1.0 + exp(-g)), da = up[i];
            double rdup = da * g * sg, rdg = da * up[i] * sg * (1 + g * (1 - sg));
            ck_assert_msg(fabs(dup[i] - rdup) <= 1e-6 * fmax(1.0, fabs(rdup)) &&
                              fabs(dx[i] - rdg) <= 1e-6 * fmax(1.0, fabs(rdg)),
                          "%s saved %d: swiglu' at %.9g", path, saved, g);
        }
        sp__geglu_forward(out, t, x, up, N_VALUES);
        sp__geglu_backward(dx, dup, up, x, saved ? t : NULL, up, N_VALUES);
        for (int i = 0; i < N_VALUES; i++) {
            double v = x[i], th, gl = gelu_ref(v, &th), da = up[i];
            double du = sqrt(2.0 / M_PI) * (1 + 3 * 0.044715 * v * v);
            double rdg = da * up[i] * (0.5 * (1 + th) + 0.5 * v * (1 - th * th) * du);
            /* (1 - t^2) of a float t near +-1 carries t's absolute error: scale by the terms */
            double scale = fabs(da * up[i]) * (1 + fabs(v) * du);
            ck_assert_msg(fabs(dup[i] - da * gl) <= 1e-6 * fmax(1.0, fabs(da * gl)) &&
                              fabs(dx[i] - rdg) <= 1e-6 * fmax(1.0, scale),
                          "%s saved %d: geglu' at %.9g: dup %.9g vs %.9g, dg %.9g vs %.9g", path,
                          saved, v, (double)dup[i], da * gl, (double)dx[i], rdg);
        }
    }
    /* forward without saving gives the same outputs */
    float *out2 = malloc(N_VALUES * sizeof *out2);
    ck_assert(out2);
    sp__gelu_forward(out, t, x, N_VALUES);
    sp__gelu_forward(out2, NULL, x, N_VALUES);
    ck_assert(memcmp(out, out2, N_VALUES * sizeof *out) == 0);
    sp__swiglu_forward(out, t, x, up, N_VALUES);
    sp__swiglu_forward(out2, NULL, x, up, N_VALUES);
    ck_assert(memcmp(out, out2, N_VALUES * sizeof *out) == 0);
    sp__geglu_forward(out, t, x, up, N_VALUES);
    sp__geglu_forward(out2, NULL, x, up, N_VALUES);
    ck_assert(memcmp(out, out2, N_VALUES * sizeof *out) == 0);
    free(dx), free(dup), free(out2);
    float mx = sp__max(x, N_VALUES);
    memcpy(out, x, N_VALUES * sizeof *out);
    double ref_sum = 0;
    for (int i = 0; i < N_VALUES; i++)
        ref_sum += exp((double)(x[i] - mx)); /* as the argument rounds */
    float sum = sp__exp_shift_sum(out, N_VALUES, mx);
    ck_assert_msg(fabs(sum - ref_sum) <= 1e-5 * ref_sum, "%s: sum %.9g vs %.9g", path, (double)sum,
                  ref_sum);
    for (int i = 0; i < N_VALUES; i++) {
        double e = exp((double)(x[i] - mx));
        ck_assert_msg(fabs(out[i] - e) <= 4 * 0x1p-24 * e + 1e-44, "%s: exp(%.9g) = %.9g vs %.9g",
                      path, (double)(x[i] - mx), (double)out[i], e);
    }
    free(x), free(up), free(out), free(t);
    sp__vmath_force_off(0);
}

START_TEST(activations_match_float64) {
    check_activations(1);
    if (sp__vmath_ok()) check_activations(0);
}
END_TEST

/* LayerNorm and RMSNorm, forward and backward (dx accumulated), against float64 on both paths,
 * rows of widths that are and are not multiples of 16; an offset row (mean 50) checks that the
 * variance does not cancel. */
static void check_norms(int force_off, int d) {
    sp__vmath_force_off(force_off);
    enum { N = 5 };
    float *x = random_values(6, 1.0), *w = random_values(7, 1.0), *b = random_values(8, 1.0);
    float *g = random_values(9, 1.0), *out = malloc(N * d * sizeof *out);
    float *dx = malloc(N * d * sizeof *dx), mean[N], rstd[N];
    ck_assert(out && dx);
    for (int j = 0; j < d; j++) x[j] += 50.0f;
    const char *path = force_off ? "libm" : "avx-512";
    for (int rms = 0; rms < 2; rms++) {
        if (rms)
            sp__rmsnorm_forward(out, rstd, x, w, N, d, 1e-5f);
        else
            sp__layernorm_forward(out, mean, rstd, x, w, b, N, d, 1e-5f);
        for (int i = 0; i < N * d; i++) dx[i] = 0.25f;
        if (rms)
            sp__rmsnorm_backward(dx, g, x, rstd, w, N, d);
        else
            sp__layernorm_backward(dx, g, x, mean, rstd, w, N, d);
        for (int i = 0; i < N; i++) {
            const float *xi = x + i * d, *gi = g + i * d;
            double m = 0, v = 0, sg = 0, sgx = 0;
            for (int j = 0; j < d; j++) m += rms ? 0.0 : xi[j];
            m /= d;
            for (int j = 0; j < d; j++) v += (xi[j] - m) * (xi[j] - m);
            double r = 1.0 / sqrt(v / d + 1e-5);
            for (int j = 0; j < d; j++) {
                double xh = (xi[j] - m) * r, gw = (double)gi[j] * w[j];
                sg += gw, sgx += gw * xh;
            }
            for (int j = 0; j < d; j++) {
                double xh = (xi[j] - m) * r, gw = (double)gi[j] * w[j];
                double o = xh * w[j] + (rms ? 0.0 : b[j]);
                double ddx = 0.25 + r * (gw - (rms ? 0.0 : sg / d) - xh * sgx / d);
                ck_assert_msg(fabs(out[i * d + j] - o) <= 2e-5 * (1 + fabs(o)),
                              "%s %s d %d: out[%d][%d] %.9g vs %.9g", path, rms ? "rms" : "ln", d,
                              i, j, (double)out[i * d + j], o);
                ck_assert_msg(fabs(dx[i * d + j] - ddx) <= 2e-5 * (1 + fabs(ddx)),
                              "%s %s d %d: dx[%d][%d] %.9g vs %.9g", path, rms ? "rms" : "ln", d, i,
                              j, (double)dx[i * d + j], ddx);
            }
        }
    }
    free(x), free(w), free(b), free(g), free(out), free(dx);
    sp__vmath_force_off(0);
}

START_TEST(norms_match_float64) {
    int widths[] = {1, 7, 16, 37, 768};
    for (int i = 0; i < 5; i++) {
        check_norms(1, widths[i]);
        if (sp__vmath_ok()) check_norms(0, widths[i]);
    }
}
END_TEST

/* Each element of x computed at every offset of arrays of lengths 1..40 gives the bits it gives
 * alone: GELU (out and tanh), SwiGLU and the softmax exponentials. */
START_TEST(results_do_not_depend_on_position_or_length) {
    if (!sp__vmath_ok()) return;
    float *x = random_values(4, 3.0), *up = random_values(5, 1.0);
    float one_out[64], one_t[64], out[64], t[64], row[64];
    for (int n = 1; n <= 40; n++)
        for (int start = 0; start + n <= 200; start += 23) {
            const float *xs = x + start, *us = up + start;
            sp__gelu_forward(out, t, xs, (size_t)n);
            for (int i = 0; i < n; i++) {
                sp__gelu_forward(one_out, one_t, xs + i, 1);
                ck_assert_msg(out[i] == one_out[0] && t[i] == one_t[0],
                              "gelu: element %d of %d differs from alone", i, n);
            }
            sp__swiglu_forward(out, t, xs, us, (size_t)n);
            for (int i = 0; i < n; i++) {
                sp__swiglu_forward(one_out, one_t, xs + i, us + i, 1);
                ck_assert(out[i] == one_out[0] && t[i] == one_t[0]);
            }
            memcpy(row, xs, (size_t)n * sizeof *row);
            sp__exp_shift(row, n, 1.5f);
            for (int i = 0; i < n; i++) {
                float e = xs[i];
                sp__exp_shift(&e, 1, 1.5f);
                ck_assert(row[i] == e);
            }
        }
    free(x), free(up);
}
END_TEST

int main(void) {
    const TTest *tests[] = {exp_matches_float64, activations_match_float64,
                            results_do_not_depend_on_position_or_length, norms_match_float64, NULL};
    return tu_main("vmath", tests, NULL, NULL);
}
