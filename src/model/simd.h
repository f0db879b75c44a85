/* AVX-512 pieces shared by the engine's own kernels (fewrows.c, smallgemm.c). Include only
 * where SP_SIMD_BUILD is 1; each function carries its own target, so a caller compiled for a
 * superset of it inlines it. */
#ifndef SP_MODEL_SIMD_H
#define SP_MODEL_SIMD_H

#if defined(__x86_64__) && defined(__GNUC__)
#define SP_SIMD_BUILD 1
#include <immintrin.h>

#define SP_SIMD_INLINE __attribute__((always_inline)) inline

/* The first left lanes (0..16, clamped). */
static inline __mmask16 sp__lanes(int left) {
    return left >= 16 ? (__mmask16)0xffff : left <= 0 ? 0 : (__mmask16)((1u << left) - 1);
}

/* The 16 x 16 block r[i][u] (vector i, lane u) transposed in place: r[u][i]. */
__attribute__((target("avx512f"))) static SP_SIMD_INLINE void sp__transpose16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) { /* pairs of rows interleaved, in each 128-bit lane */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) { /* r[4i + e], lane L: rows 4i..4i+3 of column 4L + e */
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    __m512 a[16];
#pragma GCC unroll 4
    for (int e = 0; e < 4; e++) { /* the 4 x 4 blocks of 128-bit lanes transposed */
        __m512 u0 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88);
        __m512 u1 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xdd);
        __m512 u2 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88);
        __m512 u3 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xdd);
        a[e] = _mm512_shuffle_f32x4(u0, u2, 0x88);      /* column e */
        a[8 + e] = _mm512_shuffle_f32x4(u0, u2, 0xdd);  /* column 8 + e */
        a[4 + e] = _mm512_shuffle_f32x4(u1, u3, 0x88);  /* column 4 + e */
        a[12 + e] = _mm512_shuffle_f32x4(u1, u3, 0xdd); /* column 12 + e */
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) r[i] = a[i];
}

#else
#define SP_SIMD_BUILD 0
#endif

#endif
