/* Products of a few rows (generation's decode steps, sp__gemm_few): C[m, n] = beta C + A[m, k] W
 * with the weight read in place, float32 or BF16 (converted exactly in registers), [k, n] or
 * [n, k]. sgemm copies the whole weight into its blocked layout at every call, which for a few
 * rows costs as much as the product itself (perf of a batch-16 GPT-2 decode step: 40% of the
 * time in OpenBLAS's copies); here the weight is read once from memory and never copied.
 *
 * Float32 weights: the m <= 16 rows of A are the 16 lanes of a vector. A is transposed once per
 * call into A^T [k][16], and each weight element, broadcast, is multiplied with the row of A^T
 * it meets: one FMA per weight element for all the rows, no horizontal sums. An [n, k] weight is
 * read F_NK rows at a time, each row in order (a tile of C^T in F_NK registers); a [k, n] one
 * F_KB rows at a time across all the columns (F_KN columns per tile), with the partial sums of
 * C^T kept between the passes. One row of A (m = 1, a decode step of one request) has kernels of
 * its own that read the weight in whole vectors: a [k, n] one row by row, an [n, k] one of an
 * LM head's size in 16 x 16 blocks transposed in registers, each element the same chain of FMAs
 * as in the lanes; a narrower [n, k] one (a layer) by dot products along k, summed in 16 lanes
 * then across them (row_nk_dot: not the lanes' chain).
 * BF16 weights: register tiles of 8 rows of A, 8 x 48 over a [k, n] weight and 8 x 3 dot
 * products over an [n, k] one.
 *
 * Every element of C is one fixed sum over k in a fixed order: it does not depend on how the
 * columns are split over threads, nor (but for one row of a narrow [n, k] weight) on m or the
 * other rows, so results are deterministic. The columns are handed out in chunks to the threads
 * OpenBLAS was given (openblas_set_num_threads), a small pool started at the first product
 * (sp__few_run, which decode attention uses too; its threads spin briefly between jobs, as a
 * decode step posts one per product). Without AVX-512 (or for m above SP_FEW_ROWS) the callers
 * use their other paths (sp__gemm_few_ok). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "model/kernels.h"

#include "model/simd.h"
#define FEW_BUILD SP_SIMD_BUILD

typedef struct few_job {
    int m, n, k, lda, ldw, ldc, wt, bf16;
    const float *a;
    const void *w;
    float beta;
    float *c;
    const float *at; /* float32 weights: A^T [k][LANES], rows of A past m zero */
    float *ct;       /* float32 [k, n] weights: C^T [n][LANES], the partial sums */
} few_job;

#define MB 8  /* BF16: rows of A per tile */
#define NB 48 /* BF16: columns per [k, n] tile */
#define JB 3  /* BF16: weight rows per [n, k] tile */

#define LANES 16    /* float32: rows of A in the lanes of one vector */
#define F_NK 8      /* float32: weight rows per [n, k] tile */
#define F_KN 16     /* float32: columns per [k, n] tile */
#define F_KB 64     /* float32: rows of a [k, n] weight per pass over its columns */
#define F_PF_NK 512 /* bytes ahead on each row of an [n, k] tile (software prefetch) */
#define F_PF_KN 256 /* bytes ahead on each row of a [k, n] weight */
#define R_QB 8      /* float32, one row of A: rows of a [k, n] weight at a time */
#define R_KN 64     /* float32, one row of A: columns per [k, n] tile */
#define R_NT 2      /* float32, one row of A: tiles of 16 weight rows of an [n, k] weight */
#define R_DOT 8     /* float32, one row of A, a narrow [n, k] weight: its rows at a time */
_Static_assert(SP_FEW_ROWS <= LANES, "the float32 kernel holds SP_FEW_ROWS rows in one vector");

#if FEW_BUILD

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,fma")))
#define INLINE __attribute__((always_inline)) inline
#define NV 3 /* zmm of columns per [k, n] tile */
#ifndef PF_COLS
#define PF_COLS (4 * NB) /* the same row, two tiles ahead */
#endif

/* 16 weights from p (float32 or BF16) under mask, as float32. */
TGT static INLINE __m512 load_w(const void *p, size_t at, int bf16, __mmask16 mask) {
    if (!bf16) return _mm512_maskz_loadu_ps(mask, (const float *)p + at);
    __m256i h = _mm256_maskz_loadu_epi16(mask, (const uint16_t *)p + at);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Row i of a tile of mb rows: rows past mb repeat the last one (computed, not stored), so the
 * register tile is always MB x NV and fully unrolled. */
static inline const float *tile_row(const few_job *J, int i0, int mb, int i) {
    return J->a + (size_t)(i0 + (i < mb ? i : mb - 1)) * J->lda;
}

/* ---- float32 weights: the rows of A in the lanes ------------------------------------------- */

/* C^T [jb][LANES] (acc) of rows j0..j0+jb of an [n, k] weight: each weight element broadcast
 * times the row of A^T it meets, summed over k in order. Tile rows past jb repeat the last. */
TGT static INLINE void f32_nk_tile(const few_job *J, int j0, int jb, __m512 acc[F_NK]) {
    const float *p[F_NK], *at = J->at;
#pragma GCC unroll 8
    for (int j = 0; j < F_NK; j++) {
        p[j] = (const float *)J->w + (size_t)(j0 + (j < jb ? j : jb - 1)) * J->ldw;
        acc[j] = _mm512_setzero_ps();
    }
    int q = 0;
    for (; q + 16 <= J->k; q += 16) {
#pragma GCC unroll 8
        for (int j = 0; j < F_NK; j++)
            _mm_prefetch((const char *)(p[j] + q) + F_PF_NK, _MM_HINT_T0);
#pragma GCC unroll 16
        for (int u = 0; u < 16; u++) {
            __m512 x = _mm512_loadu_ps(at + (size_t)(q + u) * LANES);
#pragma GCC unroll 8
            for (int j = 0; j < F_NK; j++)
                acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(p[j][q + u]), x, acc[j]);
        }
    }
    for (; q < J->k; q++) {
        __m512 x = _mm512_loadu_ps(at + (size_t)q * LANES);
#pragma GCC unroll 8
        for (int j = 0; j < F_NK; j++) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(p[j][q]), x, acc[j]);
    }
}

/* C[i, j0 + j] (+)= ct[j][i] for the m rows and nc columns of a tile of C^T. */
static void f32_store(const few_job *J, int j0, int nc, const float *ct) {
    for (int i = 0; i < J->m; i++) {
        float *c = J->c + (size_t)i * J->ldc + j0;
        for (int j = 0; j < nc; j++)
            c[j] = J->beta != 0.0f ? c[j] + ct[j * LANES + i] : ct[j * LANES + i];
    }
}

/* Rows q0..q1 of a [k, n] weight into C^T [j0..j0+nc][LANES] (J->ct): the first pass starts
 * from 0, later ones from the partial sums. tail: nc < F_KN (columns past nc repeat the last). */
TGT static INLINE void f32_kn_tile(const few_job *J, int q0, int q1, int j0, int nc,
                                   const int tail) {
    __m512 acc[F_KN];
    float *ct = J->ct + (size_t)j0 * LANES;
#pragma GCC unroll 16
    for (int j = 0; j < F_KN; j++)
        acc[j] = q0 > 0 ? _mm512_loadu_ps(ct + j * LANES) : _mm512_setzero_ps();
    const float *w = (const float *)J->w + (size_t)q0 * J->ldw + j0, *at = J->at;
    for (int q = q0; q < q1; q++, w += J->ldw) {
        __m512 x = _mm512_loadu_ps(at + (size_t)q * LANES);
        _mm_prefetch((const char *)w + F_PF_KN, _MM_HINT_T0);
#pragma GCC unroll 16
        for (int j = 0; j < F_KN; j++)
            acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(w[tail && j >= nc ? nc - 1 : j]), x, acc[j]);
    }
#pragma GCC unroll 16
    for (int j = 0; j < F_KN; j++) _mm512_storeu_ps(ct + j * LANES, acc[j]);
}

/* One row of A (m = 1) and a [k, n] weight: rows q..q+rows of it into the partial sums
 * ct[j0..j1] (the first rows from 0). The weight's rows are read in order, each across the
 * columns, while the partial sums stay in the cache; each column's sum is the same chain of FMAs
 * over k as f32_kn_tile's lane (a row's result does not depend on m). */
TGT static INLINE void row_kn_rows(const few_job *J, int q, int j0, int j1, const int rows) {
    const float *w = (const float *)J->w + (size_t)q * J->ldw;
    float *ct = J->ct;
    __m512 x[R_QB];
#pragma GCC unroll 8
    for (int u = 0; u < rows; u++) x[u] = _mm512_set1_ps(J->a[q + u]);
    int j = j0;
    for (; j + 16 <= j1; j += 16) { /* whole vectors: masked stores are slow on some CPUs */
        __m512 acc = q > 0 ? _mm512_loadu_ps(ct + j) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int u = 0; u < rows; u++)
            acc = _mm512_fmadd_ps(_mm512_loadu_ps(w + (size_t)u * J->ldw + j), x[u], acc);
        _mm512_storeu_ps(ct + j, acc);
    }
    if (j < j1) {
        __mmask16 mk = sp__lanes(j1 - j);
        __m512 acc = q > 0 ? _mm512_maskz_loadu_ps(mk, ct + j) : _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int u = 0; u < rows; u++)
            acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(mk, w + (size_t)u * J->ldw + j), x[u], acc);
        _mm512_mask_storeu_ps(ct + j, mk, acc);
    }
}

/* Columns [j0, j1) of C for one row and a [k, n] weight. */
TGT static void row_cols_kn(const few_job *J, int j0, int j1) {
    int q = 0;
    for (; q + R_QB <= J->k; q += R_QB) row_kn_rows(J, q, j0, j1, R_QB);
    for (; q < J->k; q++) row_kn_rows(J, q, j0, j1, 1);
    float *c = J->c;
    for (int j = j0; j < j1; j++) c[j] = J->beta != 0.0f ? c[j] + J->ct[j] : J->ct[j];
}

/* One row of A (m = 1) and an [n, k] weight: C[j0 .. j0 + 16 * R_NT] (jb of them stored; weight
 * rows past jb repeat the last), the weight's rows in the lanes: blocks of 16 x 16 weights are
 * read row by row and transposed in registers, so that each column of C is the same chain of FMAs
 * over k as f32_nk_tile's (a row's result does not depend on m). */
TGT static INLINE void row_nk_tile(const few_job *J, int j0, int jb) {
    const float *p[16 * R_NT];
    __m512 acc[R_NT];
#pragma GCC unroll 32
    for (int j = 0; j < 16 * R_NT; j++)
        p[j] = (const float *)J->w + (size_t)(j0 + (j < jb ? j : jb - 1)) * J->ldw;
#pragma GCC unroll 2
    for (int t = 0; t < R_NT; t++) acc[t] = _mm512_setzero_ps();
    for (int q = 0; q < J->k; q += 16) {
        int left = J->k - q < 16 ? J->k - q : 16;
        __mmask16 mk = sp__lanes(left);
#pragma GCC unroll 2
        for (int t = 0; t < R_NT; t++) {
            __m512 r[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++) {
                _mm_prefetch((const char *)(p[16 * t + i] + q) + F_PF_NK, _MM_HINT_T0);
                r[i] = _mm512_maskz_loadu_ps(mk, p[16 * t + i] + q);
            }
            sp__transpose16(r);
            if (left == 16) {
#pragma GCC unroll 16
                for (int u = 0; u < 16; u++)
                    acc[t] = _mm512_fmadd_ps(r[u], _mm512_set1_ps(J->a[q + u]), acc[t]);
            } else {
                for (int u = 0; u < left; u++)
                    acc[t] = _mm512_fmadd_ps(r[u], _mm512_set1_ps(J->a[q + u]), acc[t]);
            }
        }
    }
    float ct[16 * R_NT] __attribute__((aligned(64)));
#pragma GCC unroll 2
    for (int t = 0; t < R_NT; t++) _mm512_store_ps(ct + 16 * t, acc[t]);
    float *c = J->c + j0;
    for (int j = 0; j < jb; j++) c[j] = J->beta != 0.0f ? c[j] + ct[j] : ct[j];
}

/* Columns [j0, j1) of C (j0 a multiple of the tile width), float32 weight. A [k, n] weight is
 * read F_KB rows at a time across all the columns, so that its rows stream through memory (a
 * tile of all k rows would touch a new page at every row). */
/* One row of A and weight rows j0 .. j0 + jb of an [n, k] weight narrower than
 * SP_FEW_NK_ROW_MIN rows (a layer, not an LM head): each weight row read in whole vectors along
 * k, R_DOT rows at a time (R_DOT sequential streams), its products summed in 16 lanes, then
 * across them. A row's sum is fixed by k alone, whatever the threads or the rows beside it, but
 * it is not the chain over k that 2..16 rows get (f32_nk_tile): for a narrow layer the
 * transposes of row_nk_tile cost more than they save (see SP_FEW_NK_ROW_MIN). */
TGT static void row_nk_dot(const few_job *J, int j0, int jb) {
    const float *x = J->a;
    int k = J->k, kv = k / 16 * 16;
    __mmask16 tail = sp__lanes(k - kv);
    for (int j = j0; j < j0 + jb; j += R_DOT) {
        int nr = j0 + jb - j < R_DOT ? j0 + jb - j : R_DOT;
        const float *w[R_DOT];
        __m512 acc[R_DOT];
#pragma GCC unroll 8
        for (int r = 0; r < R_DOT; r++) {
            w[r] = (const float *)J->w + (size_t)(j + (r < nr ? r : nr - 1)) * J->ldw;
            acc[r] = _mm512_setzero_ps();
        }
        for (int q = 0; q < kv; q += 16) {
            __m512 xv = _mm512_loadu_ps(x + q);
#pragma GCC unroll 8
            for (int r = 0; r < R_DOT; r++)
                acc[r] = _mm512_fmadd_ps(_mm512_loadu_ps(w[r] + q), xv, acc[r]);
        }
        if (kv < k) {
            __m512 xv = _mm512_maskz_loadu_ps(tail, x + kv);
#pragma GCC unroll 8
            for (int r = 0; r < R_DOT; r++)
                acc[r] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w[r] + kv), xv, acc[r]);
        }
        float *c = J->c + j;
        for (int r = 0; r < nr; r++) {
            float sum = _mm512_reduce_add_ps(acc[r]);
            c[r] = J->beta != 0.0f ? c[r] + sum : sum;
        }
    }
}

TGT static void few_cols_f32(const few_job *J, int j0, int j1) {
    if (J->wt && J->m == 1 && J->n < SP_FEW_NK_ROW_MIN) {
        row_nk_dot(J, j0, j1 - j0);
        return;
    }
    if (J->wt && J->m == 1) {
        for (int j = j0; j < j1; j += 16 * R_NT)
            row_nk_tile(J, j, j1 - j < 16 * R_NT ? j1 - j : 16 * R_NT);
        return;
    }
    if (J->wt) {
        float ct[F_NK * LANES] __attribute__((aligned(64)));
        for (int j = j0; j < j1; j += F_NK) {
            int jb = j1 - j < F_NK ? j1 - j : F_NK;
            __m512 acc[F_NK];
            f32_nk_tile(J, j, jb, acc);
#pragma GCC unroll 8
            for (int t = 0; t < F_NK; t++) _mm512_store_ps(ct + t * LANES, acc[t]);
            f32_store(J, j, jb, ct);
        }
        return;
    }
    if (J->m == 1) {
        row_cols_kn(J, j0, j1);
        return;
    }
    for (int q = 0; q < J->k; q += F_KB) {
        int q1 = J->k - q < F_KB ? J->k : q + F_KB;
        for (int j = j0; j < j1; j += F_KN) {
            if (j1 - j >= F_KN)
                f32_kn_tile(J, q, q1, j, F_KN, 0);
            else
                f32_kn_tile(J, q, q1, j, j1 - j, 1);
        }
    }
    for (int j = j0; j < j1; j += F_KN)
        f32_store(J, j, j1 - j < F_KN ? j1 - j : F_KN, J->ct + (size_t)j * LANES);
}

/* ---- BF16 weights: register tiles of rows of A ----------------------------------------------- */

/* W [k, n]: rows q0..q1 of W into C[i0.., j0..j0+nc] for mb <= MB rows, nc <= NB columns: the
 * first block (first) starts from beta C, later ones add to C's partial sums. */
TGT static INLINE void tile_kn(const few_job *J, int i0, int mb, int j0, int nc, int q0, int q1,
                               int first, int bf16) {
    __m512 acc[MB][NV];
    __mmask16 mk[NV];
    const float *a[MB];
    float *c[MB];
    int from_c = !first || J->beta != 0.0f;
#pragma GCC unroll 8
    for (int i = 0; i < MB; i++) a[i] = tile_row(J, i0, mb, i);
#pragma GCC unroll 8
    for (int i = 0; i < MB; i++) c[i] = J->c + (size_t)(i0 + (i < mb ? i : mb - 1)) * J->ldc + j0;
#pragma GCC unroll 3
    for (int v = 0; v < NV; v++) mk[v] = sp__lanes(nc - 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < MB; i++)
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++)
            acc[i][v] = from_c ? _mm512_maskz_loadu_ps(mk[v], c[i] + 16 * v) : _mm512_setzero_ps();
    const size_t ldw = (size_t)J->ldw;
    size_t row = (size_t)q0 * ldw + (size_t)j0;
    for (int q = q0; q < q1; q++, row += ldw) {
        __m512 b[NV];
        const char *ahead = (const char *)J->w + (row + PF_COLS) * (bf16 ? 2 : 4);
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) _mm_prefetch(ahead + 64 * v, _MM_HINT_T0);
#pragma GCC unroll 3
        for (int v = 0; v < NV; v++) b[v] = load_w(J->w, row + 16 * v, bf16, mk[v]);
#pragma GCC unroll 8
        for (int i = 0; i < MB; i++) {
            __m512 x = _mm512_set1_ps(a[i][q]);
#pragma GCC unroll 3
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(x, b[v], acc[i][v]);
        }
    }
    for (int i = 0; i < mb; i++)
        for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(c[i] + 16 * v, mk[v], acc[i][v]);
}

/* W [n, k]: C[i0.., j0..j0+jb] for mb <= rows <= MB rows of A (rows a constant once inlined:
 * 1, 2, 4 or 8) and jb <= JB weight rows (dot products over k in 16 lanes, summed across lanes
 * at the end; weight rows past jb repeat the first, rows of A past mb the last). */
TGT static INLINE void tile_nk(const few_job *J, int i0, int mb, int j0, int jb, int bf16,
                               const int rows) {
    __m512 acc[MB][JB];
    const float *a[MB];
    size_t wr[JB];
#pragma GCC unroll 8
    for (int i = 0; i < rows; i++) a[i] = tile_row(J, i0, mb, i);
#pragma GCC unroll 3
    for (int j = 0; j < JB; j++) wr[j] = (size_t)(j0 + (j < jb ? j : 0)) * J->ldw;
#pragma GCC unroll 8
    for (int i = 0; i < rows; i++)
#pragma GCC unroll 3
        for (int j = 0; j < JB; j++) acc[i][j] = _mm512_setzero_ps();
    for (int q = 0; q < J->k; q += 16) {
        __mmask16 mk = sp__lanes(J->k - q);
        __m512 b[JB];
#pragma GCC unroll 3
        for (int j = 0; j < JB; j++) b[j] = load_w(J->w, wr[j] + q, bf16, mk);
#pragma GCC unroll 8
        for (int i = 0; i < rows; i++) {
            __m512 x = _mm512_maskz_loadu_ps(mk, a[i] + q);
#pragma GCC unroll 3
            for (int j = 0; j < JB; j++) acc[i][j] = _mm512_fmadd_ps(x, b[j], acc[i][j]);
        }
    }
    for (int i = 0; i < mb; i++) {
        float *c = J->c + (size_t)(i0 + i) * J->ldc + j0;
        for (int j = 0; j < jb; j++) {
            float r = _mm512_reduce_add_ps(acc[i][j]);
            c[j] = J->beta != 0.0f ? c[j] + r : r;
        }
    }
}

/* tile_nk with the register tile fitted to mb. */
TGT static INLINE void tile_nk_fit(const few_job *J, int i0, int mb, int j0, int jb, int bf16) {
    if (mb == 1)
        tile_nk(J, i0, mb, j0, jb, bf16, 1);
    else if (mb == 2)
        tile_nk(J, i0, mb, j0, jb, bf16, 2);
    else if (mb <= 4)
        tile_nk(J, i0, mb, j0, jb, bf16, 4);
    else
        tile_nk(J, i0, mb, j0, jb, bf16, 8);
}

/* Columns [j0, j1) of C (j0 a multiple of the tile width), BF16 weight, read KB rows at a time
 * across the columns as the float32 one is. */
#define KB 64
TGT static INLINE void few_cols_as(const few_job *J, int j0, int j1, int bf16) {
    if (J->wt) {
        for (int j = j0; j < j1; j += JB)
            for (int i = 0; i < J->m; i += MB)
                tile_nk_fit(J, i, J->m - i < MB ? J->m - i : MB, j, j1 - j < JB ? j1 - j : JB,
                            bf16);
        return;
    }
    for (int q = 0; q < J->k; q += KB) {
        int q1 = J->k - q < KB ? J->k : q + KB;
        for (int j = j0; j < j1; j += NB)
            for (int i = 0; i < J->m; i += MB)
                tile_kn(J, i, J->m - i < MB ? J->m - i : MB, j, j1 - j < NB ? j1 - j : NB, q, q1,
                        q == 0, bf16);
    }
}

TGT static void few_cols_bf16(const few_job *J, int j0, int j1) {
    few_cols_as(J, j0, j1, 1);
}

static void few_cols(const few_job *J, int j0, int j1) {
    if (J->bf16)
        few_cols_bf16(J, j0, j1);
    else
        few_cols_f32(J, j0, j1);
}

#endif

/* ---- the threads ---------------------------------------------------------------------------- */

#define MAX_THREADS 64
static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER; /* one job at a time */
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_go = PTHREAD_COND_INITIALIZER, pool_done = PTHREAD_COND_INITIALIZER;
static int pool_started;
static atomic_int pool_pending;
static atomic_uint pool_generation;
static unsigned pool_first[MAX_THREADS]; /* the generation each worker was started at */
static void (*pool_fn)(void *, int);
static void *pool_arg;
static int pool_parts;

/* A decode step posts a job per product, tens of microseconds apart: the threads spin this many
 * pauses (some 50-100 us) for the next one, or for the others to finish, before they sleep on
 * the condition variable (whose wake-up costs about as much as a small product). */
#define POOL_SPIN 2000

static void pool_pause(void) {
#if FEW_BUILD
    _mm_pause();
#endif
}

static void *pool_worker(void *arg) {
    int p = (int)(intptr_t)arg;
    pthread_mutex_lock(&pool_lock);
    unsigned seen = pool_first[p]; /* not a job posted before it started */
    for (;;) {
        pthread_mutex_unlock(&pool_lock);
        for (int i = 0; i < POOL_SPIN && atomic_load(&pool_generation) == seen; i++) pool_pause();
        pthread_mutex_lock(&pool_lock);
        while (atomic_load(&pool_generation) == seen) pthread_cond_wait(&pool_go, &pool_lock);
        seen = atomic_load(&pool_generation);
        void (*fn)(void *, int) = pool_fn;
        void *fa = pool_arg;
        int parts = pool_parts;
        pthread_mutex_unlock(&pool_lock);
        if (p < parts) fn(fa, p);
        pthread_mutex_lock(&pool_lock);
        if (atomic_fetch_sub(&pool_pending, 1) == 1) pthread_cond_signal(&pool_done);
    }
    return NULL;
}

/* Starts workers 1..threads-1 once; returns how many parts the pool can run (1 without it). */
static int pool_threads(int threads) {
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    pthread_mutex_lock(&pool_lock);
    while (pool_started + 1 < threads) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        pool_first[pool_started + 1] = atomic_load(&pool_generation);
        int rc = pthread_create(&t, &at, pool_worker, (void *)(intptr_t)(pool_started + 1));
        pthread_attr_destroy(&at);
        if (rc != 0) break;
        pool_started++;
    }
    int n = pool_started + 1 < threads ? pool_started + 1 : threads;
    pthread_mutex_unlock(&pool_lock);
    return n;
}

int sp__few_threads(void) {
    int n = openblas_get_num_threads();
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : n;
}

void sp__few_run(int threads, void (*fn)(void *arg, int part), void *arg) {
    if (threads > 1 && pthread_mutex_trylock(&pool_busy) == 0) {
        int parts = pool_threads(threads);
        pthread_mutex_lock(&pool_lock);
        pool_fn = fn, pool_arg = arg, pool_parts = parts;
        atomic_store(&pool_pending, pool_started);
        atomic_fetch_add(&pool_generation, 1);
        pthread_cond_broadcast(&pool_go);
        pthread_mutex_unlock(&pool_lock);
        fn(arg, 0);
        for (int i = 0; i < POOL_SPIN && atomic_load(&pool_pending) > 0; i++) pool_pause();
        pthread_mutex_lock(&pool_lock);
        while (atomic_load(&pool_pending) > 0) pthread_cond_wait(&pool_done, &pool_lock);
        pthread_mutex_unlock(&pool_lock);
        pthread_mutex_unlock(&pool_busy);
        return;
    }
    fn(arg, 0);
}

/* A product's columns, handed out to the threads a chunk of whole tiles at a time as each asks
 * (a thread that is not descheduled takes more). An [n, k] weight's tiles read whole rows of it,
 * CHUNKS_NK chunks per thread; a [k, n] weight is read across the columns of a chunk, F_KB rows
 * at a time, so narrower chunks read it in shorter runs: one chunk per thread there (four cost
 * the float32 kernel 15-25% more CPU time in a GPT-2 batch-16 decode, perf). */
#define CHUNKS_NK 4
typedef struct few_run {
    const few_job *J;
    int width, tiles, chunk; /* columns per tile, tiles, tiles per chunk */
    atomic_int next;         /* the next chunk */
} few_run;

static void run_chunks(void *arg, int part) {
    few_run *r = arg;
    (void)part;
#if FEW_BUILD
    for (int c; (c = atomic_fetch_add(&r->next, 1)) * r->chunk < r->tiles;) {
        int j0 = c * r->chunk * r->width, j1 = j0 + r->chunk * r->width;
        few_cols(r->J, j0, j1 < r->J->n ? j1 : r->J->n);
    }
#endif
}

static void run_job(const few_job *J) {
    int threads = sp__few_threads();
    /* a part of at least ~64 columns of a large product each, else one thread */
    if ((int64_t)J->n * J->k < ((int64_t)1 << 15) * threads) threads = 1;
    int f32 = J->m == 1 ? (J->wt ? 16 * R_NT : R_KN) : J->wt ? F_NK : F_KN;
    few_run r = {J, J->bf16 ? (J->wt ? JB : NB) : f32, 0, 1, 0};
    r.tiles = (J->n + r.width - 1) / r.width;
    int chunks = threads * (J->wt ? CHUNKS_NK : 1);
    r.chunk = (r.tiles + chunks - 1) / chunks;
    atomic_init(&r.next, 0);
    sp__few_run(threads, run_chunks, &r);
}

/* ---- entry points ---------------------------------------------------------------------------- */

#if FEW_BUILD
static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static int cpu_ok;

static void cpu_probe(void) {
    __builtin_cpu_init();
    cpu_ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
}
#endif

int sp__gemm_few_ok(int m) {
#if FEW_BUILD
    if (m < 1 || m > SP_FEW_ROWS) return 0;
    pthread_once(&cpu_once, cpu_probe);
    return cpu_ok;
#else
    (void)m;
    return 0;
#endif
}

/* A^T [k][LANES] of A's m rows (the other lanes 0). */
static void transpose_a(float *at, const float *a, int lda, int m, int k) {
    memset(at, 0, (size_t)k * LANES * sizeof *at);
    for (int i = 0; i < m; i++)
        for (int q = 0; q < k; q++) at[(size_t)q * LANES + i] = a[(size_t)i * lda + q];
}

void sp__gemm_few(int m, int n, int k, const float *a, int lda, const void *w, int ldw, int wt,
                  int bf16, float beta, float *c, int ldc) {
    few_job J = {m, n, k, lda, ldw, ldc, wt, bf16, a, w, beta, c, NULL, NULL};
    if (m <= 0 || n <= 0) return;
    if (bf16) {
        run_job(&J);
        return;
    }
    /* A^T, and C^T's partial sums for a [k, n] weight: rows of LANES floats (64 bytes); one row
     * of A against a [k, n] weight is read in place, its partial sums a row of n floats */
    int row_kn = m == 1 && !wt;
    size_t at_rows = row_kn ? 0 : (size_t)k,
           ct_rows = wt       ? 0
                     : row_kn ? ((size_t)n + LANES - 1) / LANES
                              : ((size_t)n + F_KN - 1) / F_KN * F_KN; /* whole tiles */
    float *buf = aligned_alloc(64, (at_rows + ct_rows) * LANES * sizeof *buf);
    if (!buf) { /* out of memory: the same product by sgemm */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, wt ? CblasTrans : CblasNoTrans, m, n, k, 1.0f, a,
                    lda, w, ldw, beta, c, ldc);
        return;
    }
    if (!row_kn) transpose_a(buf, a, lda, m, k);
    J.at = buf, J.ct = wt ? NULL : buf + at_rows * LANES;
    run_job(&J);
    free(buf);
}
