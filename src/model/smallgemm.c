/* Float32 products of attention's shapes with AVX-512 (sp__sgemm_small, kernels.h): the scores
 * Q K^T and dO V^T, the outputs P V and dS K, the gradients P^T dO and dS^T Q, one query block
 * and one head at a time. They are small (64 query rows, a head's 64-256 columns, the keys of the
 * block) and many: OpenBLAS spends more on its copies and calls than on the arithmetic there, and
 * with OPENBLAS_CORETYPE=Haswell its kernel runs 8 lanes wide. Here:
 *
 *   C[m, n] = alpha op(A)[m, k] op(B)[k, n] + beta C,   op(A) = A or A^T,  op(B) = B or B^T,
 *
 * in register tiles of SG_MR rows x SG_NV vectors of 16 columns, each element of op(A) broadcast
 * from where it lies (A or A^T alike), each row of op(B) loaded in whole vectors (the last one
 * under a mask). op(B) = B^T (Q K^T: keys are rows) is transposed first, SG_NC columns at a time,
 * into a panel [SG_KC][SG_NC] on the stack, by 16 x 16 blocks in registers. k is taken SG_KC
 * rows at a time, so that the part of op(B) a tile runs over stays in cache (an LM head's k is
 * the vocabulary).
 *
 * Each element of C is one chain of FMAs over the first SG_KC values of p in order, times alpha,
 * plus beta C (C is not read when beta is 0); each further part of SG_KC is another such chain
 * times alpha added to C. The same for any m, n, tile or panel an element falls in, so a result
 * does not depend on the batch or the block around it. Without AVX-512, and for A^T with B^T,
 * cblas_sgemm computes it. */
#include <cblas.h>
#include <stddef.h>

#include "model/kernels.h"
#include "model/simd.h"

#define SG_MR 6            /* rows of C per register tile */
#define SG_NV 4            /* vectors of 16 columns per register tile */
#define SG_NC (16 * SG_NV) /* columns of C per tile, and of a transposed panel */
#define SG_KC 256          /* rows of k per part (B^T: a panel of 64 KiB on the stack) */

#if SP_SIMD_BUILD

#define TGT __attribute__((target("avx512f,fma")))

/* op(A)[i][p] = a[i * ai + p * ap]; op(B)[p][j] = b[p * ldb + j]. */
typedef struct sg_op {
    const float *a, *b;
    size_t ai, ap, ldb, ldc;
    float *c;
    int k;
    float alpha, beta;
} sg_op;

/* C[i0 .. i0 + mr, c0 .. c0 + 16 nv] from op(B)'s columns j0 .. (the last vector's lanes under
 * last). mr and nv are constants where it is inlined: the tile lives in registers. */
TGT static SP_SIMD_INLINE void sg_tile(const sg_op *o, int i0, int j0, int c0, int mr, int nv,
                                       __mmask16 last) {
    __m512 acc[SG_MR][SG_NV];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) acc[i][v] = _mm512_setzero_ps();
    const float *a = o->a + (size_t)i0 * o->ai, *b = o->b + j0;
    size_t off[SG_MR], ap = o->ap, ldb = o->ldb; /* row i of op(A) at a + off[i] */
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) off[i] = (size_t)i * o->ai;
    for (int p = 0, k = o->k; p < k; p++, a += ap, b += ldb) {
        __m512 bv[SG_NV];
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++)
            bv[v] =
                v < nv - 1 ? _mm512_loadu_ps(b + 16 * v) : _mm512_maskz_loadu_ps(last, b + 16 * v);
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            __m512 x = _mm512_set1_ps(a[off[i]]);
#pragma GCC unroll 4
            for (int v = 0; v < nv; v++) acc[i][v] = _mm512_fmadd_ps(x, bv[v], acc[i][v]);
        }
    }
    __m512 alpha = _mm512_set1_ps(o->alpha), beta = _mm512_set1_ps(o->beta);
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        float *c = o->c + (size_t)(i0 + i) * o->ldc + c0;
#pragma GCC unroll 4
        for (int v = 0; v < nv; v++) {
            __mmask16 mk = v < nv - 1 ? (__mmask16)0xffff : last;
            __m512 r = _mm512_mul_ps(acc[i][v], alpha);
            if (o->beta != 0.0f)
                r = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mk, c + 16 * v), r);
            _mm512_mask_storeu_ps(c + 16 * v, mk, r);
        }
    }
}

/* sg_tile with mr (1..SG_MR) and nv (1..SG_NV) made constants. */
TGT static void sg_tile_any(const sg_op *o, int i0, int j0, int c0, int mr, int nv,
                            __mmask16 last) {
    switch (nv * 8 + mr) {
#define SG_CASE(R, V)                                                                              \
    case V * 8 + R:                                                                                \
        sg_tile(o, i0, j0, c0, R, V, last);                                                        \
        return;
#define SG_ROWS(V)                                                                                 \
    SG_CASE(1, V) SG_CASE(2, V) SG_CASE(3, V) SG_CASE(4, V) SG_CASE(5, V) SG_CASE(6, V)
        SG_ROWS(1)
        SG_ROWS(2)
        SG_ROWS(3)
        SG_ROWS(4)
#undef SG_ROWS
#undef SG_CASE
    }
}

/* C's columns c0 .. c0 + nc (nc <= SG_NC) over all m rows, from op(B)'s columns j0 .. */
TGT static void sg_columns(const sg_op *o, int m, int j0, int c0, int nc) {
    int nv = (nc + 15) / 16;
    __mmask16 last = sp__lanes(nc - 16 * (nv - 1));
    for (int i0 = 0; i0 < m; i0 += SG_MR)
        sg_tile_any(o, i0, j0, c0, m - i0 < SG_MR ? m - i0 : SG_MR, nv, last);
}

/* panel[p][j] = B[j0 + j][p] for p < k, j < nc (B is [n, k] at row stride ldb): blocks of 16
 * rows of B, 16 of their columns at a time, transposed in registers; lanes past nc are 0. */
TGT static void sg_pack_bt(float *panel, const float *b, size_t ldb, int j0, int nc, int k) {
    for (int t = 0; t < (nc + 15) / 16; t++)
        for (int q = 0; q < k; q += 16) {
            __mmask16 mk = sp__lanes(k - q);
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = 16 * t + i < nc
                           ? _mm512_maskz_loadu_ps(mk, b + (size_t)(j0 + 16 * t + i) * ldb + q)
                           : _mm512_setzero_ps();
            sp__transpose16(r);
            for (int u = 0; u < 16 && q + u < k; u++)
                _mm512_storeu_ps(panel + (size_t)(q + u) * SG_NC + 16 * t, r[u]);
        }
}

/* Rows k0 .. of k: the part of o for them (at most SG_KC), adding to C after the first. */
static int sg_part(sg_op *o, const float *a, float beta, int k, int k0) {
    o->a = a + (size_t)k0 * o->ap, o->beta = k0 == 0 ? beta : 1.0f;
    return o->k = k - k0 < SG_KC ? k - k0 : SG_KC;
}

TGT static void sg_run(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                       const float *a, int lda, const float *b, int ldb, float beta, float *c,
                       int ldc) {
    sg_op o = {.b = b, .ldb = (size_t)ldb, .ldc = (size_t)ldc, .c = c, .alpha = alpha};
    o.ai = ta == CblasTrans ? 1 : (size_t)lda, o.ap = ta == CblasTrans ? (size_t)lda : 1;
    if (tb == CblasNoTrans) { /* op(B) = B: its rows k0.. as they lie */
        for (int k0 = 0; k0 < k || k0 == 0; k0 += SG_KC) {
            sg_part(&o, a, beta, k, k0);
            o.b = b + (size_t)k0 * ldb;
            for (int j0 = 0; j0 < n; j0 += SG_NC)
                sg_columns(&o, m, j0, j0, n - j0 < SG_NC ? n - j0 : SG_NC);
        }
        return;
    }
    float panel[SG_KC * SG_NC] __attribute__((aligned(64))); /* op(B) = B^T: transposed here */
    o.b = panel, o.ldb = SG_NC;
    for (int j0 = 0; j0 < n; j0 += SG_NC) {
        int nc = n - j0 < SG_NC ? n - j0 : SG_NC;
        for (int k0 = 0; k0 < k || k0 == 0; k0 += SG_KC) {
            sg_pack_bt(panel, b + k0, (size_t)ldb, j0, nc, sg_part(&o, a, beta, k, k0));
            sg_columns(&o, m, 0, j0, nc);
        }
    }
}

#endif

void sp__sgemm_small(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, float alpha,
                     const float *a, int lda, const float *b, int ldb, float beta, float *c,
                     int ldc) {
    if (m <= 0 || n <= 0) return;
#if SP_SIMD_BUILD
    if (!(ta == CblasTrans && tb == CblasTrans) && sp__vmath_ok()) {
        sg_run(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return;
    }
#endif
    cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
