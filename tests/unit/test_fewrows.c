/* Products of a few rows with the weight read in place (src/model/fewrows.c, sp__gemm_few):
 * float32 and BF16 weights, stored [k, n] and [n, k], against float64 references, for 1 to 16
 * rows (every register tile shape), columns and k not multiples of the tiles (masked tails), k
 * past one row block, beta 0 and 1, row strides wider than the rows; each row of C bitwise the
 * same whatever the number of rows computed with it and the number of threads (deterministic). */
#include <cblas.h>
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

static const shape SHAPES[] = {{1, 1, 1},   {2, 47, 15},    {3, 49, 17},   {4, 96, 64},
                               {5, 3, 33},  {8, 100, 65},   {9, 145, 130}, {13, 7, 200},
                               {16, 50, 9}, {16, 1031, 96}, {1, 4099, 70}, {1, 100, 577}};

typedef struct operands {
    int lda, ldc, ldw, wrows;
    float *a, *c, *c0, *wf;
    uint16_t *wb;
} operands;

static operands make(shape s, int wt, uint64_t seed) {
    operands o = {
        .lda = s.k + 3, .ldc = s.n + 5, .ldw = (wt ? s.k : s.n) + 2, .wrows = wt ? s.n : s.k};
    size_t nw = (size_t)o.wrows * o.ldw;
    o.a = malloc((size_t)s.m * o.lda * sizeof *o.a);
    o.c = malloc((size_t)s.m * o.ldc * sizeof *o.c);
    o.c0 = malloc((size_t)s.m * o.ldc * sizeof *o.c0);
    o.wf = malloc(nw * sizeof *o.wf);
    o.wb = malloc(nw * sizeof *o.wb);
    ck_assert(o.a && o.c && o.c0 && o.wf && o.wb);
    sp_rng r;
    sp_rng_seed(&r, seed);
    for (int i = 0; i < s.m * o.lda; i++) o.a[i] = (float)sp_rng_normal(&r);
    for (size_t i = 0; i < nw; i++) o.wf[i] = (float)sp_rng_normal(&r);
    for (size_t i = 0; i < nw; i++) o.wb[i] = sp_f32_to_bf16(o.wf[i]);
    for (int i = 0; i < s.m * o.ldc; i++) o.c0[i] = (float)sp_rng_normal(&r);
    return o;
}

static void drop(operands *o) {
    free(o->a), free(o->c), free(o->c0), free(o->wf), free(o->wb);
}

static double weight(const operands *o, int wt, int bf16, int q, int j) {
    size_t at = wt ? (size_t)j * o->ldw + q : (size_t)q * o->ldw + j;
    return bf16 ? sp_bf16_to_f32(o->wb[at]) : o->wf[at];
}

/* max |C - ref| / max |ref| of one product. */
static double rel_err(shape s, int wt, int bf16, float beta, uint64_t seed) {
    operands o = make(s, wt, seed);
    memcpy(o.c, o.c0, (size_t)s.m * o.ldc * sizeof *o.c);
    sp__gemm_few(s.m, s.n, s.k, o.a, o.lda, bf16 ? (const void *)o.wb : (const void *)o.wf, o.ldw,
                 wt, bf16, beta, o.c, o.ldc);
    double num = 0, den = 0;
    for (int i = 0; i < s.m; i++) {
        ck_assert(o.c[(size_t)i * o.ldc + s.n] == o.c0[(size_t)i * o.ldc + s.n]); /* past n */
        for (int j = 0; j < s.n; j++) {
            double ref = beta != 0.0f ? o.c0[(size_t)i * o.ldc + j] : 0.0;
            for (int q = 0; q < s.k; q++)
                ref += (double)o.a[(size_t)i * o.lda + q] * weight(&o, wt, bf16, q, j);
            double e = fabs(o.c[(size_t)i * o.ldc + j] - ref);
            num = e > num || isnan(e) ? (isnan(e) ? INFINITY : e) : num;
            den = fabs(ref) > den ? fabs(ref) : den;
        }
    }
    drop(&o);
    return den > 0 ? num / den : num;
}

START_TEST(matches_float64) {
    if (!sp__gemm_few_ok(1)) {
        printf("  (no AVX-512 here: sp__gemm_few is not used)\n");
        return;
    }
    for (size_t si = 0; si < sizeof SHAPES / sizeof *SHAPES; si++)
        for (int v = 0; v < 8; v++) {
            int wt = v & 1, bf16 = (v >> 1) & 1, beta = v >> 2;
            double e = rel_err(SHAPES[si], wt, bf16, (float)beta, si * 8 + (size_t)v + 1);
            ck_assert_msg(e <= 1e-5, "m %d n %d k %d wt %d bf16 %d beta %d: rel err %.3e",
                          SHAPES[si].m, SHAPES[si].n, SHAPES[si].k, wt, bf16, beta, e);
        }
}
END_TEST

/* Row i of 16 rows computed together, on 1 and on 2 threads, equals row i computed alone, on 1
 * and on 2 threads; but for one row of a narrow float32 [n, k] weight (below
 * SP_FEW_NK_ROW_MIN rows: sums in lanes along k), which only the threads do not change. */
START_TEST(rows_and_threads_do_not_change_results) {
    if (!sp__gemm_few_ok(1)) return;
    shape s = {16, 1031, 130};
    for (int v = 0; v < 4; v++) {
        int wt = v & 1, bf16 = v >> 1, narrow_row = wt && !bf16 && s.n < SP_FEW_NK_ROW_MIN;
        operands o = make(s, wt, 77 + (uint64_t)v);
        const void *w = bf16 ? (const void *)o.wb : (const void *)o.wf;
        size_t bytes = (size_t)s.m * o.ldc * sizeof *o.c;
        float *alone = malloc(bytes), *alone2 = malloc(bytes), *two = malloc(bytes);
        ck_assert(alone && alone2 && two);
        for (int t = 1; t <= 2; t++) {
            openblas_set_num_threads(t);
            for (int i = 0; i < s.m; i++)
                sp__gemm_few(1, s.n, s.k, o.a + (size_t)i * o.lda, o.lda, w, o.ldw, wt, bf16, 0.0f,
                             (t == 1 ? alone : alone2) + (size_t)i * o.ldc, o.ldc);
        }
        openblas_set_num_threads(1);
        sp__gemm_few(s.m, s.n, s.k, o.a, o.lda, w, o.ldw, wt, bf16, 0.0f, o.c, o.ldc);
        openblas_set_num_threads(2);
        sp__gemm_few(s.m, s.n, s.k, o.a, o.lda, w, o.ldw, wt, bf16, 0.0f, two, o.ldc);
        for (int i = 0; i < s.m; i++) {
            size_t at = (size_t)i * o.ldc, n = (size_t)s.n * sizeof(float);
            ck_assert_msg(memcmp(alone2 + at, alone + at, n) == 0, "1 row, 2 threads: wt %d row %d",
                          wt, i);
            ck_assert_msg(memcmp(two + at, o.c + at, n) == 0, "2 threads: wt %d row %d", wt, i);
            ck_assert_msg(narrow_row || memcmp(o.c + at, alone + at, n) == 0,
                          "wt %d bf16 %d row %d", wt, bf16, i);
        }
        free(alone), free(alone2), free(two);
        drop(&o);
    }
    openblas_set_num_threads(1);
}
END_TEST

/* A float32 linear layer's product in a decode step (sp__linear_single_row_gemv on) of 1..16
 * rows is sp__gemm_few's, bitwise, in both layouts (with the bias added first); outside decode
 * steps, and for 17 rows, it is sgemm's (training's products unchanged). */
START_TEST(decode_products_of_float32_weights_read_in_place) {
    if (!sp__gemm_few_ok(1)) return;
    shape s = {17, 259, 130};
    for (int wt = 0; wt < 2; wt++) {
        operands o = make(s, wt, 91 + (uint64_t)wt);
        float *bias = o.c0, *want = malloc((size_t)s.m * s.n * sizeof *want);
        int ldw = wt ? s.k : s.n, rows[] = {1, 2, 16, 17}; /* the layer's rows: no padding */
        ck_assert(want);
        sp_linear W = {o.wf, bias, s.k, s.n, wt ? SP_W_OUT_IN : SP_W_IN_OUT, SP_WSTORE_F32, 0};
        for (int r = 0; r < 4; r++) {
            int m = rows[r];
            for (int i = 0; i < m; i++) memcpy(want + (size_t)i * s.n, bias, s.n * sizeof *want);
            if (m <= SP_FEW_ROWS)
                sp__gemm_few(m, s.n, s.k, o.a, o.lda, o.wf, ldw, wt, 0, 1.0f, want, s.n);
            else
                cblas_sgemm(CblasRowMajor, CblasNoTrans, wt ? CblasTrans : CblasNoTrans, m, s.n,
                            s.k, 1.0f, o.a, o.lda, o.wf, ldw, 1.0f, want, s.n);
            sp__linear_single_row_gemv(1);
            sp__linear_fwd(o.c, s.n, o.a, o.lda, &W, m);
            sp__linear_single_row_gemv(0);
            ck_assert_msg(memcmp(o.c, want, (size_t)m * s.n * sizeof *want) == 0,
                          "decode step, wt %d, %d rows: not the expected product", wt, m);
        }
        /* outside a decode step: sgemm */
        for (int i = 0; i < 16; i++) memcpy(want + (size_t)i * s.n, bias, s.n * sizeof *want);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, wt ? CblasTrans : CblasNoTrans, 16, s.n, s.k, 1.0f,
                    o.a, o.lda, o.wf, ldw, 1.0f, want, s.n);
        sp__linear_fwd(o.c, s.n, o.a, o.lda, &W, 16);
        ck_assert_msg(memcmp(o.c, want, (size_t)16 * s.n * sizeof *want) == 0,
                      "training, wt %d: not sgemm's product", wt);
        free(want);
        drop(&o);
    }
    /* one row and an [n, k] weight of SP_FEW_NK_ROW_MIN rows (an LM head): the in-place kernel */
    shape h = {1, SP_FEW_NK_ROW_MIN, 20};
    operands o = make(h, 1, 97);
    float *want = malloc((size_t)h.n * sizeof *want);
    ck_assert(want);
    sp_linear W = {o.wf, NULL, h.k, h.n, SP_W_OUT_IN, SP_WSTORE_F32, 0};
    sp__gemm_few(1, h.n, h.k, o.a, o.lda, o.wf, h.k, 1, 0, 0.0f, want, h.n);
    sp__linear_single_row_gemv(1);
    sp__linear_fwd(o.c, h.n, o.a, o.lda, &W, 1);
    sp__linear_single_row_gemv(0);
    ck_assert_msg(
        memcmp(o.c, want, (size_t)h.n * sizeof *want) == 0,
        "decode step, head-sized [n, k] weight, 1 row: not the in-place kernel's product");
    free(want);
    drop(&o);
}
END_TEST

int main(void) {
    const TTest *tests[] = {matches_float64, rows_and_threads_do_not_change_results,
                            decode_products_of_float32_weights_read_in_place, NULL};
    return tu_main("fewrows", tests, NULL, NULL);
}
