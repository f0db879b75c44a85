/* Matrix products with BF16 weights (sp__gemm_bf16, kernels.h): C = beta C + A B with A float32
 * activations and B a BF16 weight as it is stored, [k, n] or [n, k].
 *
 * Two paths, chosen once per process (sp__bf16_native):
 * - AVX512-BF16 (vdpbf16ps): A is rounded to BF16 (round to nearest even) as it is packed, each
 *   instruction multiplies 16 pairs of BF16 values and adds them to 16 float32 sums. Blocked as
 *   GotoBLAS: for each KC rows of B, all of B's rows are packed into panels of NR columns, k in
 *   pairs ([kc/2][NR][2]); for each MC rows of A, A is packed as BF16 pairs per MR rows; an MR x NR
 *   register tile (24 zmm accumulators) runs over the panel. Every row of C is computed the same
 *   way whatever the number of rows, so results do not depend on how rows are batched.
 * - float32: tiles of B are converted to float32 (exactly) and multiplied by sp__sgemm_small; A
 *   is not rounded. For CPUs without the instruction, and forced by SP_CPU_NO_BF16=1 in the
 *   environment (tests). The weights still take half the memory; the compute is float32. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "model/kernels.h"
#include "util/bigalloc.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define SP_HAVE_AVX512BF16_BUILD 1
#include <immintrin.h>
#else
#define SP_HAVE_AVX512BF16_BUILD 0
#endif

/* ---- which path ---------------------------------------------------------------------------- */

static pthread_once_t path_once = PTHREAD_ONCE_INIT;
static int path_native;

static void path_choose(void) {
    const char *off = getenv("SP_CPU_NO_BF16");
    int forced_off = off && *off && strcmp(off, "0") != 0;
#if SP_HAVE_AVX512BF16_BUILD
    __builtin_cpu_init();
    path_native = !forced_off && __builtin_cpu_supports("avx512f") &&
                  __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512bf16");
#else
    (void)forced_off;
    path_native = 0;
#endif
}

int sp__bf16_native(void) {
    pthread_once(&path_once, path_choose);
    return path_native;
}

void sp__bf16_force_float32(int on) {
    pthread_once(&path_once, path_choose);
    if (on)
        path_native = 0;
    else
        path_choose();
}

const char *sp__bf16_path_name(void) {
    return sp__bf16_native() ? "avx512-bf16" : "float32 (bf16 converted per tile)";
}

/* ---- scratch ------------------------------------------------------------------------------- */

/* Each thread's packing buffer, allocated at its first product and freed when the thread ends
 * (its size is bounded: 7 MiB of packed blocks, never a whole weight; blocks of 768 k rather than
 * 256 made the products 1.25-1.35x faster per CPU second on GPT-2's shapes, as C is loaded and
 * stored once per 768 k instead of three times). */
#define SCRATCH_BYTES ((size_t)7 << 20)
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_ok;

static void scratch_key_make(void) {
    scratch_ok = pthread_key_create(&scratch_key, free) == 0;
}

/* SCRATCH_BYTES bytes aligned to 64 (huge pages where offered), or NULL when memory is short. */
static void *scratch(void) {
    pthread_once(&scratch_once, scratch_key_make);
    if (!scratch_ok) return NULL;
    void *p = pthread_getspecific(scratch_key);
    if (p) return p;
    p = sp__big_alloc(SCRATCH_BYTES);
    if (p && pthread_setspecific(scratch_key, p) != 0) free(p), p = NULL;
    return p;
}

static inline float bf16_value(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Without scratch memory: plain loops, in float32 (slow, never used unless allocation fails). */
static void gemm_plain(int m, int n, int k, const float *a, int lda, const uint16_t *b, int ldb,
                       int bt, float beta, float *c, int ldc) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            float s = 0.0f;
            for (int q = 0; q < k; q++)
                s += a[(size_t)i * lda + q] *
                     bf16_value(bt ? b[(size_t)j * ldb + q] : b[(size_t)q * ldb + j]);
            float *cij = &c[(size_t)i * ldc + j];
            *cij = beta != 0.0f ? *cij * beta + s : s;
        }
}

/* ---- float32 path ------------------------------------------------------------------------- */

#define FB_ROWS 256  /* rows of a converted tile */
#define FB_COLS 1024 /* columns of a converted tile: FB_ROWS * FB_COLS * 4 <= SCRATCH_BYTES */

static void bf16_tile_to_f32(float *dst, const uint16_t *src, int rows, int cols, int ld) {
    for (int r = 0; r < rows; r++) {
        const uint16_t *s = src + (size_t)r * ld;
        float *d = dst + (size_t)r * cols;
        for (int j = 0; j < cols; j++) d[j] = bf16_value(s[j]);
    }
}

static void gemm_f32_path(float *t, int m, int n, int k, const float *a, int lda, const uint16_t *b,
                          int ldb, int bt, float beta, float *c, int ldc) {
    if (!bt) { /* B [k, n]: tiles of [kc, nc], each adding to C[:, n0..] */
        for (int n0 = 0; n0 < n; n0 += FB_COLS) {
            int nc = n - n0 < FB_COLS ? n - n0 : FB_COLS;
            for (int k0 = 0; k0 < k; k0 += FB_ROWS) {
                int kc = k - k0 < FB_ROWS ? k - k0 : FB_ROWS;
                bf16_tile_to_f32(t, b + (size_t)k0 * ldb + n0, kc, nc, ldb);
                sp__sgemm_small(CblasNoTrans, CblasNoTrans, m, nc, kc, 1.0f, a + k0, lda, t, nc,
                                k0 == 0 ? beta : 1.0f, c + n0, ldc);
            }
        }
    } else { /* B^T stored [n, k]: tiles of [nc, kc] */
        for (int n0 = 0; n0 < n; n0 += FB_ROWS) {
            int nc = n - n0 < FB_ROWS ? n - n0 : FB_ROWS;
            for (int k0 = 0; k0 < k; k0 += FB_COLS) {
                int kc = k - k0 < FB_COLS ? k - k0 : FB_COLS;
                bf16_tile_to_f32(t, b + (size_t)n0 * ldb + k0, nc, kc, ldb);
                sp__sgemm_small(CblasNoTrans, CblasTrans, m, nc, kc, 1.0f, a + k0, lda, t, kc,
                                k0 == 0 ? beta : 1.0f, c + n0, ldc);
            }
        }
    }
}

/* ---- AVX512-BF16 path --------------------------------------------------------------------- */

#if SP_HAVE_AVX512BF16_BUILD

#ifndef MR
#define MR 12 /* rows of the register tile */
#define NV 2  /* zmm of 16 float32 columns in the register tile */
#endif
#define NR (16 * NV) /* columns of the register tile */
#define KC 768       /* k per packed block (even) */
#define MC 192       /* rows of A per packed block (a multiple of MR) */
#define NC 4096      /* columns of B per packed block (a multiple of NR): A is packed once per NC */
_Static_assert(((size_t)NC * KC + (size_t)MC * KC) * 2 <= SCRATCH_BYTES, "packing fits scratch");

#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* Pairs of 32 bits from 16 rows (r[i], i < 16) -> 16 columns: out[q] = (r[0][q], ..., r[15][q]).
 * The usual three-stage 16 x 16 transpose (pairs, quads, 128-bit lanes twice). */
TGT static void transpose16(__m512i r[16]) {
    __m512i t[16], u[16], v[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* u[i + j] holds column 4L + j of rows i..i+3 in lane L */
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int h = 0; h < 2; h++)       /* v[8h + j]: lanes (j, j + 8) of rows 8h..8h+7 for j < 4; */
        for (int j = 0; j < 4; j++) { /* v[8h + 4 + j]: (j + 4, j + 12) */
            v[8 * h + j] = _mm512_shuffle_i32x4(u[8 * h + j], u[8 * h + 4 + j], 0x88);
            v[8 * h + 4 + j] = _mm512_shuffle_i32x4(u[8 * h + j], u[8 * h + 4 + j], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_i32x4(v[j], v[8 + j], 0x88);
        r[j + 8] = _mm512_shuffle_i32x4(v[j], v[8 + j], 0xdd);
    }
}

/* B stored [n, k] (rows are columns of the product): nr rows from src (k from k0 on, kc of them,
 * left = k - k0 >= kc) -> one panel [kc/2][NR][2], rows past nr zero. Pairs of k are 32-bit units,
 * so 16 rows x 16 pairs are one 32-bit transpose; the last odd k and short blocks go one by one. */
TGT static void pack_b_rows(uint16_t *p, const uint16_t *src, int ldb, int nr, int kc, int left) {
    int kp = (kc + 1) / 2, full = kc < left ? kp : kc / 2; /* pairs with both k inside */
    int q = 0;
    for (; q + 16 <= full; q += 16)
        for (int c0 = 0; c0 < NR; c0 += 16) {
            __m512i r[16];
            for (int i = 0; i < 16; i++)
                r[i] = c0 + i < nr ? _mm512_loadu_si512(src + (size_t)(c0 + i) * ldb + 2 * q)
                                   : _mm512_setzero_si512();
            transpose16(r);
            for (int j = 0; j < 16; j++)
                _mm512_storeu_si512(p + ((size_t)(q + j) * NR + c0) * 2, r[j]);
        }
    for (int c = 0; c < NR; c++) {
        const uint16_t *row = c < nr ? src + (size_t)c * ldb : NULL;
        for (int qq = q; qq < kp; qq++) {
            uint16_t *o = p + ((size_t)qq * NR + c) * 2;
            o[0] = row ? row[2 * qq] : 0;
            o[1] = row && 2 * qq + 1 < left ? row[2 * qq + 1] : 0;
        }
    }
}

/* B rows k0..k0+kc of all n columns -> panels [n/NR][kc/2][NR][2] (zero padded). */
TGT static void pack_b(uint16_t *dst, const uint16_t *b, int ldb, int bt, int k0, int kc, int k,
                       int n) {
    int kp = (kc + 1) / 2;
    for (int j0 = 0; j0 < n; j0 += NR) {
        uint16_t *p = dst + (size_t)(j0 / NR) * kp * NR * 2;
        int nr = n - j0 < NR ? n - j0 : NR;
        if (bt) {
            pack_b_rows(p, b + (size_t)j0 * ldb + k0, ldb, nr, kc, k - k0);
            continue;
        }
        for (int q = 0; q < kp; q++) { /* rows ka, kb: 16 columns at a time, as 32-bit pairs */
            int ka = k0 + 2 * q, kb = ka + 1;
            uint32_t *o = (uint32_t *)(void *)(p + (size_t)q * NR * 2);
            for (int v = 0; v < NR; v += 16) {
                int left = nr - v;
                __mmask16 mask = left >= 16  ? 0xffff
                                 : left <= 0 ? 0
                                             : (__mmask16)((1u << left) - 1);
                __m512i r0 = _mm512_cvtepu16_epi32(
                    _mm256_maskz_loadu_epi16(mask, b + (size_t)ka * ldb + j0 + v));
                __m512i r1 = kb < k ? _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(
                                          mask, b + (size_t)kb * ldb + j0 + v))
                                    : _mm512_setzero_si512();
                _mm512_storeu_si512(o + v, _mm512_or_si512(r0, _mm512_slli_epi32(r1, 16)));
            }
        }
    }
}

/* One row of A, kc float32 values from x, -> kp pairs of BF16 (rounded to nearest even) in o[q]
 * (a last odd column pairs with zero). */
TGT static void row_pairs(uint32_t *o, const float *x, int kc) {
    int j = 0;
    for (; j + 32 <= kc; j += 32) {
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + j + 16), _mm512_loadu_ps(x + j));
        _mm512_storeu_si512(o + j / 2, (__m512i)v);
    }
    if (j < kc) {
        int left = kc - j;
        __mmask16 m_lo = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
        __mmask16 m_hi = left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
        __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(m_hi, x + j + 16),
                                         _mm512_maskz_loadu_ps(m_lo, x + j));
        __mmask16 keep = (__mmask16)((1u << ((left + 1) / 2)) - 1);
        _mm512_mask_storeu_epi32(o + j / 2, keep, (__m512i)v);
    }
}

/* A rows of one block -> [mc/MR tiles][MR][kc/2] pairs of BF16 (rows past m are zero). Row-major
 * within a tile: a k-major micro-panel made the tile no faster and the packing 4x slower. */
TGT static void pack_a(uint16_t *dst, const float *a, int lda, int m0, int mc, int m, int k0,
                       int kc) {
    int kp = (kc + 1) / 2, rows = (mc + MR - 1) / MR * MR;
    uint32_t *d32 = (uint32_t *)(void *)dst;
    for (int r = 0; r < rows; r++) {
        uint32_t *o = d32 + (size_t)r * kp;
        if (m0 + r >= m)
            memset(o, 0, (size_t)kp * 4);
        else
            row_pairs(o, a + (size_t)(m0 + r) * lda + k0, kc);
    }
}

/* C[mr rows, nr columns] (+)= the MR x NR tile of packed a (MR rows of kp pairs) times the packed
 * panel b ([kp][NR] pairs). */
/* What the first block of k adds its products to (the later blocks add to C): C itself (beta 1),
 * nothing (beta 0 and no start), or the start, res + bias, read where C is written. */
typedef struct tile_start {
    int add_c;
    const float *bias, *res; /* at the tile's first column (bias) and first row and column (res) */
    int ldres;
} tile_start;

TGT static void tile(float *c, int ldc, const uint16_t *a, const uint16_t *b, int kp, int mr,
                     int nr, const tile_start *st) {
    __m512 acc[MR][NV];
#pragma GCC unroll 16
    for (int r = 0; r < MR; r++)
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    const uint32_t *ap = (const uint32_t *)(const void *)a;
    for (int q = 0; q < kp; q++) {
        __m512bh bv[NV];
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++)
            bv[v] = (__m512bh)_mm512_loadu_si512(b + (size_t)q * NR * 2 + 32 * v);
#pragma GCC unroll 16
        for (int r = 0; r < MR; r++) {
            __m512bh x = (__m512bh)_mm512_set1_epi32((int)ap[(size_t)r * kp + q]);
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], x, bv[v]);
        }
    }
    __mmask16 mask[NV];
    for (int v = 0; v < NV; v++) {
        int left = nr - 16 * v;
        mask[v] = left >= 16 ? 0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
    }
    for (int r = 0; r < mr; r++) {
        float *cr = c + (size_t)r * ldc;
        const float *rr = st->res ? st->res + (size_t)r * st->ldres : NULL;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            __m512 x = acc[r][v];
            if (st->add_c) {
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], cr + 16 * v));
            } else if (rr || st->bias) { /* x + (res + bias): the order the unfused code had */
                __m512 s = rr ? _mm512_maskz_loadu_ps(mask[v], rr + 16 * v) : _mm512_setzero_ps();
                if (st->bias) {
                    __m512 b = _mm512_maskz_loadu_ps(mask[v], st->bias + 16 * v);
                    s = rr ? _mm512_add_ps(s, b) : b;
                }
                x = _mm512_add_ps(x, s);
            }
            _mm512_mask_storeu_ps(cr + 16 * v, mask[v], x);
        }
    }
}

TGT static void gemm_native(void *scratch_mem, int m, int n, int k, const float *a, int lda,
                            const uint16_t *b, int ldb, int bt, float beta,
                            const sp__gemm_start *start, float *c, int ldc) {
    uint16_t *bp = scratch_mem, *apk = bp + (size_t)NC * KC;
    for (int n0 = 0; n0 < n; n0 += NC) {
        int nc = n - n0 < NC ? n - n0 : NC, panels = (nc + NR - 1) / NR;
        const uint16_t *bn = bt ? b + (size_t)n0 * ldb : b + n0;
        for (int k0 = 0; k0 < k; k0 += KC) {
            int kc = k - k0 < KC ? k - k0 : KC, kp = (kc + 1) / 2;
            pack_b(bp, bn, ldb, bt, k0, kc, k, nc);
            for (int m0 = 0; m0 < m; m0 += MC) {
                int mc = m - m0 < MC ? m - m0 : MC;
                pack_a(apk, a, lda, m0, mc, m, k0, kc);
                for (int j = 0; j < panels; j++) {
                    const uint16_t *panel = bp + (size_t)j * kp * NR * 2;
                    int nr = nc - j * NR < NR ? nc - j * NR : NR, col = n0 + j * NR;
                    for (int i = 0; i < mc; i += MR) {
                        tile_start st = {k0 > 0 || beta != 0.0f, NULL, NULL, 0};
                        if (!st.add_c && start) {
                            st.bias = start->bias ? start->bias + col : NULL;
                            st.res = start->res ? start->res + (size_t)(m0 + i) * start->ldres + col
                                                : NULL;
                            st.ldres = start->ldres;
                        }
                        tile(c + (size_t)(m0 + i) * ldc + col, ldc, apk + (size_t)i * kp * 2, panel,
                             kp, mc - i < MR ? mc - i : MR, nr, &st);
                    }
                }
            }
        }
    }
}

#endif

/* ---- entry point --------------------------------------------------------------------------- */

void sp__gemm_start_fill(float *c, int ldc, int m, int n, const sp__gemm_start *s) {
    for (int i = 0; i < m; i++) {
        float *ci = c + (size_t)i * ldc;
        if (s->res)
            memcpy(ci, s->res + (size_t)i * s->ldres, (size_t)n * sizeof *ci);
        else if (!s->bias)
            memset(ci, 0, (size_t)n * sizeof *ci);
        if (s->bias && s->res)
            for (int j = 0; j < n; j++) ci[j] += s->bias[j];
        else if (s->bias)
            memcpy(ci, s->bias, (size_t)n * sizeof *ci);
    }
}

static void gemm(int m, int n, int k, const float *a, int lda, const uint16_t *b, int ldb, int bt,
                 int exact, float beta, const sp__gemm_start *start, float *c, int ldc) {
    if (m <= 0 || n <= 0) return;
    void *t = scratch();
#if SP_HAVE_AVX512BF16_BUILD
    if (k > 0 && t && !exact && sp__bf16_native()) {
        gemm_native(t, m, n, k, a, lda, b, ldb, bt, beta, start, c, ldc);
        return;
    }
#endif
    if (start) { /* C = res + bias, then the product added to it */
        sp__gemm_start_fill(c, ldc, m, n, start);
        beta = 1.0f;
    }
    if (k <= 0 || !t)
        gemm_plain(m, n, k, a, lda, b, ldb, bt, beta, c, ldc);
    else
        gemm_f32_path(t, m, n, k, a, lda, b, ldb, bt, beta, c, ldc);
}

void sp__gemm_bf16(int m, int n, int k, const float *a, int lda, const uint16_t *b, int ldb, int bt,
                   int exact, float beta, float *c, int ldc) {
    gemm(m, n, k, a, lda, b, ldb, bt, exact, beta, NULL, c, ldc);
}

void sp__gemm_bf16_start(int m, int n, int k, const float *a, int lda, const uint16_t *b, int ldb,
                         int bt, int exact, const sp__gemm_start *start, float *c, int ldc) {
    gemm(m, n, k, a, lda, b, ldb, bt, exact, 0.0f, start, c, ldc);
}
