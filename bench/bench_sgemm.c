/* The machine's sgemm peak with the OpenBLAS and thread count the engine uses: the median
 * GFLOP/s of repeated row-major products C[M,N] = A[M,K] B[K,N] for a few large shapes, the best
 * shape being the peak that scripts/bench divides by (MFU).
 *
 *   bench_sgemm [--threads N] [--reps 5] [--bf16] [MxNxK ...]   (default: 2048x2048x2048, and
 *                                          GPT-2's c_fc and c_proj at 1184 rows)
 * Prints "metric sgemm_<M>x<N>x<K>_gflops V GFLOP/s" per shape and "metric sgemm_peak_gflops";
 * with --bf16 also the BF16-weight products (bf16gemm_*, bf16_peak_gflops, single-threaded as
 * the engine runs them) and the vdpbf16ps instruction's peak (bf16_instruction_peak_gflops).
 * The BF16 figures are also given per CPU second of the (single) thread (*_gflops_cpu): a shared
 * machine's other jobs lower the others, not these. */
#include <cblas.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/flags.h"
#include "model/kernels.h"
#include "softprompt/dtype.h"
#include "util/clock.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct rate {
    double wall, cpu; /* GFLOP/s per second, per CPU second */
} rate;

/* ---- BF16 (--bf16) ---------------------------------------------------------------------------
 * The same for products with BF16 weights as the engine computes them (sp__gemm_bf16: float32 A,
 * BF16 B, float32 C), and the instruction's own peak: vdpbf16ps on 16 independent accumulators
 * in registers (no memory), 64 FLOP per instruction (32 multiply-adds of BF16 pairs). */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define DP16(X)                                                                                    \
    X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define DECL(i) __m512 a##i = _mm512_set1_ps((float)i);
#define STEP(i) a##i = _mm512_dpbf16_ps(a##i, x, y);
#define SUM(i) sum += _mm512_reduce_add_ps(a##i);
__attribute__((target("avx512f,avx512bf16"))) static double dpbf16_loop(long iters) {
    DP16(DECL)
    __m512bh x = (__m512bh)_mm512_set1_epi32(0x3f803f80), y = x;
    for (long it = 0; it < iters; it++) {
        DP16(STEP)
        __asm__ volatile("" : "+v"(x));
    }
    float sum = 0;
    DP16(SUM)
    return sum;
}

/* GFLOP/s of the loop (median of 5 runs of ~0.2 s) per second and per CPU second, 0 without the
 * instruction. */
static rate bf16_instruction_peak(void) {
    rate z = {0, 0};
    if (!sp__bf16_native()) return z;
    long iters = 4000000;
    double g[5], gc[5], sink = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = sp__now(), c0 = sp__cpu_now();
        sink += dpbf16_loop(iters);
        g[r] = 64.0 * 16 * iters / (sp__now() - t0) * 1e-9;
        gc[r] = 64.0 * 16 * iters / (sp__cpu_now() - c0) * 1e-9;
    }
    qsort(g, 5, sizeof *g, cmp_double);
    qsort(gc, 5, sizeof *gc, cmp_double);
    if (sink == 1234.5) printf("#\n"); /* keeps the loop */
    return (rate){g[2], gc[2]};
}
#else
static rate bf16_instruction_peak(void) {
    return (rate){0, 0};
}
#endif

/* Median GFLOP/s (per second, per CPU second) of reps products C[M,N] = A[M,K] B[K,N] with B
 * BF16 [N,K] (nn.Linear's layout) after one warm-up. */
static rate measure_bf16(int M, int N, int K, int reps) {
    float *a = malloc((size_t)M * K * 4), *c = malloc((size_t)M * N * 4);
    uint16_t *b = malloc((size_t)K * N * 2);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = sp_f32_to_bf16((float)(i % 5) * 0.1f);
    double *g = malloc((size_t)(reps + 1) * sizeof *g),
           *gc = malloc((size_t)(reps + 1) * sizeof *gc);
    for (int r = 0; r <= reps; r++) {
        double t0 = sp__now(), c0 = sp__cpu_now();
        sp__gemm_bf16(M, N, K, a, K, b, K, 1, 0, 0.0f, c, N);
        g[r] = 2.0 * M * N * K / (sp__now() - t0) * 1e-9;
        gc[r] = 2.0 * M * N * K / (sp__cpu_now() - c0) * 1e-9;
    }
    qsort(g + 1, (size_t)reps, sizeof *g, cmp_double);
    qsort(gc + 1, (size_t)reps, sizeof *gc, cmp_double);
    rate med = {g[1 + reps / 2], gc[1 + reps / 2]};
    free(a), free(b), free(c), free(g), free(gc);
    return med;
}

/* Median GFLOP/s of reps products after one warm-up. */
static double measure(int M, int N, int K, int reps) {
    float *a = malloc((size_t)M * K * 4), *b = malloc((size_t)K * N * 4),
          *c = malloc((size_t)M * N * 4);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) b[i] = (float)(i % 5) * 0.1f;
    double *g = malloc((size_t)(reps + 1) * sizeof *g);
    for (int r = 0; r <= reps; r++) {
        double t0 = sp__now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c,
                    N);
        g[r] = 2.0 * M * N * K / (sp__now() - t0) * 1e-9;
    }
    qsort(g + 1, (size_t)reps, sizeof *g, cmp_double);
    double med = g[1 + reps / 2];
    free(a), free(b), free(c), free(g);
    return med;
}

typedef struct options {
    int threads, reps, bf16;
} options;

#define AT(f) offsetof(options, f)

static const sp__flag FLAGS[] = {
    SP_OPT_INT("threads", AT(threads), "N", 0, 4096, "OpenBLAS threads (0: its default)"),
    SP_OPT_INT("reps", AT(reps), "R", 1, 1000, "timed products per shape (5)"),
    SP_OPT_SWITCH("bf16", AT(bf16), 1, "also the BF16-weight products and peaks"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = "bench_sgemm",
    .program = "bench_sgemm",
    .usage = "usage: bench_sgemm [--threads N] [--reps R] [--bf16] [MxNxK ...]\n",
    .flags = FLAGS,
    .positional = "MxNxK",
    .min_positional = 0,
    .max_positional = -1,
};

int main(int argc, char **argv) {
    options o = {0, 5, 0};
    char **shapes = calloc((size_t)argc + 1, sizeof *shapes);
    int n_shapes = 0, status;
    if (!shapes) return 1;
    if (sp__flags_program(&SPEC, argc, argv, &o, shapes, &n_shapes, &status)) {
        free(shapes);
        return status;
    }
    int threads = o.threads, reps = o.reps, bf16 = o.bf16;
    if (threads > 0) openblas_set_num_threads(threads);
    const char *defaults[] = {"2048x2048x2048", "1184x3072x768", "1184x768x3072"};
    int n = n_shapes > 0 ? n_shapes : 3;
    double peak = 0;
    rate bf16_peak = {0, 0};
    for (int i = 0; i < n; i++) {
        const char *shape = n_shapes > 0 ? shapes[i] : defaults[i];
        int M, N, K, end = 0;
        if (sscanf(shape, "%9dx%9dx%9d%n", &M, &N, &K, &end) != 3 || shape[end] || M < 1 || N < 1 ||
            K < 1) {
            sp__flags_error(&SPEC, "'%s': expected MxNxK, three positive integers", shape);
            free(shapes);
            return 2;
        }
        double g = measure(M, N, K, reps);
        printf("metric sgemm_%dx%dx%d_gflops %.1f GFLOP/s\n", M, N, K, g);
        if (g > peak) peak = g;
        if (!bf16) continue;
        rate b = measure_bf16(M, N, K, reps);
        printf("metric bf16gemm_%dx%dx%d_gflops %.1f GFLOP/s\n", M, N, K, b.wall);
        printf("metric bf16gemm_%dx%dx%d_gflops_cpu %.1f GFLOP/s\n", M, N, K, b.cpu);
        if (b.wall > bf16_peak.wall) bf16_peak.wall = b.wall;
        if (b.cpu > bf16_peak.cpu) bf16_peak.cpu = b.cpu;
    }
    printf("metric sgemm_peak_gflops %.1f GFLOP/s\n", peak);
    if (bf16) {
        rate ins = bf16_instruction_peak();
        printf("metric bf16_peak_gflops %.1f GFLOP/s\n", bf16_peak.wall);
        printf("metric bf16_peak_gflops_cpu %.1f GFLOP/s\n", bf16_peak.cpu);
        printf("metric bf16_instruction_peak_gflops %.1f GFLOP/s\n", ins.wall);
        printf("metric bf16_instruction_peak_gflops_cpu %.1f GFLOP/s\n", ins.cpu);
        printf("# bf16 products: %s (one thread)\n", sp__bf16_path_name());
    }
    printf("# OpenBLAS threads %d (%s)\n", openblas_get_num_threads(), openblas_get_config());
    free(shapes);
    return 0;
}
