/* The machine's sgemm peak with the OpenBLAS and thread count the engine uses: the median
 * GFLOP/s of repeated row-major products C[M,N] = A[M,K] B[K,N] for a few large shapes, the best
 * shape being the peak that scripts/bench divides by (MFU).
 *
 *   bench_sgemm [--threads N] [--reps 5] [MxNxK ...]   (default: 2048x2048x2048, and GPT-2's
 *                                                        c_fc and c_proj at 1184 rows)
 * Prints "metric sgemm_<M>x<N>x<K>_gflops V GFLOP/s" per shape and "metric sgemm_peak_gflops". */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/clock.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
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

int main(int argc, char **argv) {
    int threads = 0, reps = 5, first = 1;
    while (first < argc && argv[first][0] == '-') {
        if (first + 1 < argc && !strcmp(argv[first], "--threads"))
            threads = atoi(argv[first + 1]);
        else if (first + 1 < argc && !strcmp(argv[first], "--reps"))
            reps = atoi(argv[first + 1]);
        else {
            fprintf(stderr, "usage: bench_sgemm [--threads N] [--reps R] [MxNxK ...]\n");
            return 2;
        }
        first += 2;
    }
    if (threads > 0) openblas_set_num_threads(threads);
    const char *defaults[] = {"2048x2048x2048", "1184x3072x768", "1184x768x3072"};
    int n = argc - first > 0 ? argc - first : 3;
    double peak = 0;
    for (int i = 0; i < n; i++) {
        const char *shape = argc - first > 0 ? argv[first + i] : defaults[i];
        int M, N, K;
        if (sscanf(shape, "%dx%dx%d", &M, &N, &K) != 3 || M < 1 || N < 1 || K < 1) {
            fprintf(stderr, "bench_sgemm: '%s' is not MxNxK\n", shape);
            return 2;
        }
        double g = measure(M, N, K, reps < 1 ? 1 : reps);
        printf("metric sgemm_%dx%dx%d_gflops %.1f GFLOP/s\n", M, N, K, g);
        if (g > peak) peak = g;
    }
    printf("metric sgemm_peak_gflops %.1f GFLOP/s\n", peak);
    printf("# OpenBLAS threads %d (%s)\n", openblas_get_num_threads(), openblas_get_config());
    return 0;
}
