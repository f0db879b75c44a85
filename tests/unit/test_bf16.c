/* Products with BF16 weights (src/model/bf16.c, sp__gemm_bf16) against float64 references, on
 * both paths: AVX512-BF16 (when the CPU has it) and the float32 path (forced). Shapes with every
 * edge: rows not a multiple of the register tile, columns not a multiple of the panel, odd k,
 * k and n past one packed block, beta 0 and 1, B stored [k, n] and [n, k], row strides wider
 * than the rows; and (AVX512-BF16) each row of C independent of how many rows are computed with
 * it. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "softprompt/dtype.h"
#include "softprompt/rng.h"
#include "testutil.h"

typedef struct shape {
    int m, n, k;
} shape;

static const shape SHAPES[] = {{1, 1, 1},     {1, 33, 7},     {5, 31, 2},    {12, 32, 64},
                               {13, 65, 257}, {37, 100, 513}, {200, 48, 30}, {3, 1100, 40},
                               {2, 8200, 34},  /* n past two packed blocks of columns (4096) */
                               {7, 40, 1601}}; /* k past two packed blocks (768), odd */

static float bf16_round(float x) {
    return sp_bf16_to_f32(sp_f32_to_bf16(x));
}

/* Runs one case and returns max |C - ref| / max |ref| with ref in float64 over the BF16 weights
 * and (round_a) the BF16-rounded activations. */
static double run_case(shape s, int bt, float beta, int round_a, uint64_t seed) {
    int lda = s.k + 3, ldc = s.n + 5, ldb = (bt ? s.k : s.n) + 2;
    int brows = bt ? s.n : s.k;
    float *a = malloc((size_t)s.m * lda * sizeof *a);
    float *c = malloc((size_t)s.m * ldc * sizeof *c);
    uint16_t *b = malloc((size_t)brows * ldb * sizeof *b);
    double *ref = malloc((size_t)s.m * s.n * sizeof *ref);
    ck_assert(a && b && c && ref);
    sp_rng r;
    sp_rng_seed(&r, seed);
    for (int i = 0; i < s.m * lda; i++) a[i] = (float)sp_rng_normal(&r);
    for (int i = 0; i < brows * ldb; i++) b[i] = sp_f32_to_bf16((float)sp_rng_normal(&r));
    for (int i = 0; i < s.m * ldc; i++) c[i] = (float)sp_rng_normal(&r);
    double den = 0, num = 0;
    for (int i = 0; i < s.m; i++)
        for (int j = 0; j < s.n; j++) {
            double sum = beta != 0.0f ? c[(size_t)i * ldc + j] : 0.0;
            for (int q = 0; q < s.k; q++) {
                float x = a[(size_t)i * lda + q];
                uint16_t w = bt ? b[(size_t)j * ldb + q] : b[(size_t)q * ldb + j];
                sum += (double)(round_a ? bf16_round(x) : x) * sp_bf16_to_f32(w);
            }
            ref[(size_t)i * s.n + j] = sum;
            if (fabs(sum) > den) den = fabs(sum);
        }
    float guard = c[(size_t)(s.m - 1) * ldc + s.n]; /* past the last column: must stay */
    sp__gemm_bf16(s.m, s.n, s.k, a, lda, b, ldb, bt, 0, beta, c, ldc);
    ck_assert(c[(size_t)(s.m - 1) * ldc + s.n] == guard);
    for (int i = 0; i < s.m; i++)
        for (int j = 0; j < s.n; j++) {
            double e = fabs(c[(size_t)i * ldc + j] - ref[(size_t)i * s.n + j]);
            if (!(e <= num)) num = isnan(e) ? INFINITY : e;
        }
    free(a), free(b), free(c), free(ref);
    return den > 0 ? num / den : num;
}

/* Both layouts, both betas, every shape; tol relative to the largest entry. */
static void check_all(int round_a, double tol) {
    int n_shapes = (int)(sizeof SHAPES / sizeof SHAPES[0]);
    for (int si = 0; si < n_shapes; si++)
        for (int bt = 0; bt < 2; bt++)
            for (int beta = 0; beta < 2; beta++) {
                double e = run_case(SHAPES[si], bt, (float)beta, round_a,
                                    (uint64_t)(si * 4 + bt * 2 + beta + 1));
                ck_assert_msg(e <= tol,
                              "%s path: m %d n %d k %d bt %d beta %d: rel err %.3e > %.1e",
                              round_a ? "bf16" : "float32", SHAPES[si].m, SHAPES[si].n,
                              SHAPES[si].k, bt, beta, e, tol);
            }
}

START_TEST(native_path_matches_float64) {
    sp__bf16_force_float32(0);
    if (!sp__bf16_native()) {
        printf("no AVX512-BF16 on this CPU: the native path is not tested here\n");
        return;
    }
    /* float32 sums of exact products of BF16 values: only the sums round */
    check_all(1, 1e-5);
}
END_TEST

START_TEST(float32_path_matches_float64) {
    sp__bf16_force_float32(1);
    ck_assert(!sp__bf16_native());
    check_all(0, 1e-5);
    sp__bf16_force_float32(0);
}
END_TEST

/* AVX512-BF16: row i of C is the same bits computed alone or among 300 rows (sgemm, and so the
 * float32 path, does not promise it: --deterministic does not need it, docs/design.md). */
START_TEST(rows_do_not_depend_on_the_batch) {
    sp__bf16_force_float32(0);
    if (!sp__bf16_native()) return;
    {
        int path = 0;
        int n = 70, k = 300, big = 300;
        float *a = malloc((size_t)big * k * sizeof *a), *c1 = malloc((size_t)n * sizeof *c1);
        float *c = malloc((size_t)big * n * sizeof *c);
        uint16_t *b = malloc((size_t)k * n * sizeof *b);
        ck_assert(a && b && c && c1);
        sp_rng r;
        sp_rng_seed(&r, 9);
        for (int i = 0; i < big * k; i++) a[i] = (float)sp_rng_normal(&r);
        for (int i = 0; i < k * n; i++) b[i] = sp_f32_to_bf16((float)sp_rng_normal(&r));
        for (int bt = 0; bt < 2; bt++) {
            sp__gemm_bf16(big, n, k, a, k, b, bt ? k : n, bt, 0, 0.0f, c, n);
            for (int i = 0; i < big; i += 37) {
                sp__gemm_bf16(1, n, k, a + (size_t)i * k, k, b, bt ? k : n, bt, 0, 0.0f, c1, n);
                ck_assert_msg(memcmp(c1, c + (size_t)i * n, (size_t)n * sizeof *c1) == 0,
                              "path %d bt %d: row %d differs computed alone", path, bt, i);
            }
        }
        free(a), free(b), free(c), free(c1);
    }
    sp__bf16_force_float32(0);
}
END_TEST

/* sp__gemm_bf16_start (the kernel adds residual + bias as it stores) gives the same bits as
 * forming residual + bias in C and adding the product with beta 1, on both paths, for every
 * shape (k past one block: the start is added once, by the first block) and every start. */
static void check_start(int force_float32) {
    sp__bf16_force_float32(force_float32);
    int n_shapes = (int)(sizeof SHAPES / sizeof SHAPES[0]);
    for (int si = 0; si < n_shapes; si++)
        for (int bt = 0; bt < 2; bt++)
            for (int what = 0; what < 4; what++) { /* none, bias, residual, both */
                shape s = SHAPES[si];
                int lda = s.k + 1, ldc = s.n + 3, ldr = s.n + 2, ldb = (bt ? s.k : s.n) + 2;
                size_t nb = (size_t)(bt ? s.n : s.k) * ldb;
                float *a = malloc((size_t)s.m * lda * sizeof *a),
                      *bias = malloc(s.n * sizeof *bias);
                float *res = malloc((size_t)s.m * ldr * sizeof *res);
                float *c1 = malloc((size_t)s.m * ldc * sizeof *c1);
                float *c2 = malloc((size_t)s.m * ldc * sizeof *c2);
                uint16_t *b = malloc(nb * sizeof *b);
                ck_assert(a && bias && res && c1 && c2 && b);
                sp_rng r;
                sp_rng_seed(&r, (uint64_t)(100 + si * 8 + bt * 4 + what));
                for (int i = 0; i < s.m * lda; i++) a[i] = (float)sp_rng_normal(&r);
                for (size_t i = 0; i < nb; i++) b[i] = sp_f32_to_bf16((float)sp_rng_normal(&r));
                for (int i = 0; i < s.n; i++) bias[i] = (float)sp_rng_normal(&r);
                for (int i = 0; i < s.m * ldr; i++) res[i] = (float)sp_rng_normal(&r);
                for (int i = 0; i < s.m * ldc; i++) c1[i] = c2[i] = (float)sp_rng_normal(&r);
                sp__gemm_start st = {what & 1 ? bias : NULL, what & 2 ? res : NULL, ldr};
                sp__gemm_bf16_start(s.m, s.n, s.k, a, lda, b, ldb, bt, 0, &st, c1, ldc);
                sp__gemm_start_fill(c2, ldc, s.m, s.n, &st);
                sp__gemm_bf16(s.m, s.n, s.k, a, lda, b, ldb, bt, 0, what ? 1.0f : 0.0f, c2, ldc);
                ck_assert_msg(memcmp(c1, c2, (size_t)s.m * ldc * sizeof *c1) == 0,
                              "%s path: m %d n %d k %d bt %d start %d: fused start differs",
                              force_float32 ? "float32" : "native", s.m, s.n, s.k, bt, what);
                free(a), free(bias), free(res), free(c1), free(c2), free(b);
            }
    sp__bf16_force_float32(0);
}

START_TEST(start_is_fill_then_add) {
    check_start(1);
    if (sp__bf16_native()) check_start(0);
}
END_TEST

int main(void) {
    const TTest *tests[] = {native_path_matches_float64, float32_path_matches_float64,
                            rows_do_not_depend_on_the_batch, start_is_fill_then_add, NULL};
    return tu_main("bf16", tests, NULL, NULL);
}
