/* Attention's small products (src/model/smallgemm.c, sp__sgemm_small) against float64: every
 * transpose case it computes (A B, A B^T, A^T B) over shapes around its tile sizes (rows 1..13
 * around 6, columns around 16 and 64, k from 1 to 256 and past it), strides wider than the
 * matrices, alpha and beta as attention uses them; beta 0 never reads C (NaN there stays out);
 * an element of C is the same bits whatever m and n it is computed in; and the cblas path (the
 * CPU without AVX-512, forced) agrees. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "softprompt/rng.h"
#include "testutil.h"

typedef struct mats {
    float *a, *b, *c;
    int lda, ldb, ldc;
} mats;

static float *random_matrix(sp_rng *r, size_t n) {
    float *x = malloc(n * sizeof *x);
    ck_assert(x);
    for (size_t i = 0; i < n; i++) x[i] = (float)sp_rng_normal(r);
    return x;
}

/* A, B and C for op(A)[m, k] op(B)[k, n] with 3 spare columns in each row. */
static mats make(sp_rng *r, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k) {
    mats x;
    int ar = ta == CblasTrans ? k : m, ac = ta == CblasTrans ? m : k;
    int br = tb == CblasTrans ? n : k, bc = tb == CblasTrans ? k : n;
    x.lda = ac + 3, x.ldb = bc + 3, x.ldc = n + 3;
    x.a = random_matrix(r, (size_t)ar * x.lda);
    x.b = random_matrix(r, (size_t)br * x.ldb);
    x.c = random_matrix(r, (size_t)m * x.ldc);
    return x;
}

static void drop(mats *x) {
    free(x->a), free(x->b), free(x->c);
}

static double op(const float *x, int ld, CBLAS_TRANSPOSE t, int i, int j) {
    return t == CblasTrans ? x[(size_t)j * ld + i] : x[(size_t)i * ld + j];
}

/* C (as computed) against alpha op(A) op(B) + beta C0 in float64: each element within 1e-5 of
 * the scale of its terms (sum of |terms|), and the 3 spare columns untouched. */
static void check(const mats *x, const float *c0, CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m,
                  int n, int k, float alpha, float beta) {
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double s = 0, mag = 0;
            for (int p = 0; p < k; p++) {
                double t = op(x->a, x->lda, ta, i, p) * op(x->b, x->ldb, tb, p, j);
                s += t, mag += fabs(t);
            }
            double ref = alpha * s + (beta != 0 ? beta * c0[(size_t)i * x->ldc + j] : 0.0);
            mag = fabs(alpha) * mag + fabs(beta * c0[(size_t)i * x->ldc + j]) + 1e-30;
            double got = x->c[(size_t)i * x->ldc + j];
            ck_assert_msg(fabs(got - ref) <= 1e-5 * mag,
                          "%c%c m=%d n=%d k=%d: C[%d][%d] = %.9g, float64 %.9g",
                          ta == CblasTrans ? 'T' : 'N', tb == CblasTrans ? 'T' : 'N', m, n, k, i, j,
                          got, ref);
        }
        for (int j = n; j < x->ldc; j++)
            ck_assert(x->c[(size_t)i * x->ldc + j] == c0[(size_t)i * x->ldc + j]);
    }
}

static const CBLAS_TRANSPOSE cases[3][2] = {
    {CblasNoTrans, CblasNoTrans}, {CblasNoTrans, CblasTrans}, {CblasTrans, CblasNoTrans}};

static void sweep(void) {
    static const int ms[] = {1, 5, 6, 7, 13, 64}, ns[] = {1, 15, 16, 17, 64, 65, 148};
    static const int ks[] = {1, 7, 16, 64, 100, 256, 300};
    sp_rng r;
    sp_rng_seed(&r, 11);
    for (int c = 0; c < 3; c++)
        for (size_t mi = 0; mi < sizeof ms / sizeof *ms; mi++)
            for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++)
                for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
                    int m = ms[mi], n = ns[ni], k = ks[ki];
                    float alpha = (ki & 1) ? 0.125f : 1.0f, beta = (float)((mi + ni) & 1);
                    mats x = make(&r, cases[c][0], cases[c][1], m, n, k);
                    size_t cn = (size_t)m * x.ldc;
                    float *c0 = malloc(cn * sizeof *c0);
                    ck_assert(c0);
                    memcpy(c0, x.c, cn * sizeof *c0);
                    sp__sgemm_small(cases[c][0], cases[c][1], m, n, k, alpha, x.a, x.lda, x.b,
                                    x.ldb, beta, x.c, x.ldc);
                    check(&x, c0, cases[c][0], cases[c][1], m, n, k, alpha, beta);
                    free(c0), drop(&x);
                }
}

START_TEST(products_match_float64) {
    sweep();
}
END_TEST

START_TEST(products_match_float64_on_the_cblas_path) {
    sp__vmath_force_off(1);
    sweep();
    sp__vmath_force_off(0);
}
END_TEST

/* beta 0: whatever C held (NaN here) does not reach the result. */
START_TEST(beta_zero_does_not_read_c) {
    sp_rng r;
    sp_rng_seed(&r, 12);
    for (int c = 0; c < 3; c++) {
        mats x = make(&r, cases[c][0], cases[c][1], 9, 37, 64);
        for (int i = 0; i < 9; i++)
            for (int j = 0; j < 37; j++) x.c[(size_t)i * x.ldc + j] = NAN;
        sp__sgemm_small(cases[c][0], cases[c][1], 9, 37, 64, 1.0f, x.a, x.lda, x.b, x.ldb, 0.0f,
                        x.c, x.ldc);
        for (int i = 0; i < 9; i++)
            for (int j = 0; j < 37; j++) ck_assert(isfinite(x.c[(size_t)i * x.ldc + j]));
        drop(&x);
    }
}
END_TEST

/* Element (i, j) of a 13 x 70 product is the bits of the 1 x 1 product of row i and column j
 * alone, and of the rows i.. with the columns j.. (other tile positions and tails). */
START_TEST(an_element_does_not_depend_on_the_shape_around_it) {
    if (!sp__vmath_ok()) return;
    sp_rng r;
    sp_rng_seed(&r, 13);
    int m = 13, n = 70, k = 300; /* two parts of k */
    for (int c = 0; c < 3; c++) {
        CBLAS_TRANSPOSE ta = cases[c][0], tb = cases[c][1];
        mats x = make(&r, ta, tb, m, n, k);
        sp__sgemm_small(ta, tb, m, n, k, 0.125f, x.a, x.lda, x.b, x.ldb, 0.0f, x.c, x.ldc);
        for (int i = 0; i < m; i += 4)
            for (int j = 0; j < n; j += 9) {
                const float *ai = ta == CblasTrans ? x.a + i : x.a + (size_t)i * x.lda;
                const float *bj = tb == CblasTrans ? x.b + (size_t)j * x.ldb : x.b + j;
                float one, part[13 * 70];
                sp__sgemm_small(ta, tb, 1, 1, k, 0.125f, ai, x.lda, bj, x.ldb, 0.0f, &one, 1);
                sp__sgemm_small(ta, tb, m - i, n - j, k, 0.125f, ai, x.lda, bj, x.ldb, 0.0f, part,
                                n - j);
                ck_assert_msg(one == x.c[(size_t)i * x.ldc + j] && part[0] == one,
                              "case %d: C[%d][%d] depends on the shape", c, i, j);
            }
        drop(&x);
    }
}
END_TEST

int main(void) {
    const TTest *tests[] = {products_match_float64, products_match_float64_on_the_cblas_path,
                            beta_zero_does_not_read_c,
                            an_element_does_not_depend_on_the_shape_around_it, NULL};
    return tu_main("smallgemm", tests, NULL, NULL);
}
