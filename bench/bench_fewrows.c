/* Decode-step products of a few rows against sgemm: for each weight shape of GPT-2 124M and
 * SmolLM2-135M's decode step, C[M, n] = A[M, k] W with W float32 stored [k, n] (GPT-2's Conv1D)
 * or [n, k] (Linear, the tied LM heads), by cblas_sgemm (what float32 decode steps used before;
 * for --rows 1 cblas_sgemv, what steps of one request used before) and by sp__gemm_few
 * (src/model/fewrows.c, what they use now). The weights come from memory, as
 * in a decode step: each product reads the next of as many copies of W as fill --mib MiB.
 *
 *   bench_fewrows [--rows 16] [--threads N] [--reps 5] [--mib 256]
 *
 * Prints per shape "metric fewrows_<name>_<sgemm|sgemv|few>_ms V ms" (median over --reps passes
 * over the copies, per product), "..._gflops", "..._speedup" (sgemm time / few time) and the
 * largest difference between the two relative to the largest |C| ("..._rel_diff"). */
#include <cblas.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/flags.h"
#include "model/kernels.h"
#include "softprompt/rng.h"
#include "util/clock.h"

typedef struct options {
    int rows, threads, reps, mib;
} options;

#define AT(f) offsetof(options, f)

static const sp__flag FLAGS[] = {
    SP_OPT_INT("rows", AT(rows), "M", 1, SP_FEW_ROWS, "rows of A: requests in the step (16)"),
    SP_OPT_INT("threads", AT(threads), "N", 0, 4096, "threads (0: OpenBLAS's default)"),
    SP_OPT_INT("reps", AT(reps), "R", 1, 1000, "timed passes over the copies (5)"),
    SP_OPT_INT("mib", AT(mib), "M", 1, 1 << 16, "MiB of weight copies per shape (256)"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = "bench_fewrows",
    .program = "bench_fewrows",
    .usage = "usage: bench_fewrows [options]\n",
    .flags = FLAGS,
};

typedef struct shape {
    const char *name;
    int k, n, wt; /* wt: W stored [n, k] */
} shape;

static const shape SHAPES[] = {
    {"gpt2_qkv_kn", 768, 2304, 0},      {"gpt2_attn_proj_kn", 768, 768, 0},
    {"gpt2_fc_kn", 768, 3072, 0},       {"gpt2_mlp_proj_kn", 3072, 768, 0},
    {"gpt2_qkv_nk", 768, 2304, 1},      {"gpt2_attn_proj_nk", 768, 768, 1},
    {"gpt2_fc_nk", 768, 3072, 1},       {"gpt2_mlp_proj_nk", 3072, 768, 1},
    {"gpt2_lm_head_nk", 768, 50257, 1}, {"smollm2_q_o_nk", 576, 576, 1},
    {"smollm2_k_v_nk", 576, 192, 1},    {"smollm2_gate_up_nk", 576, 1536, 1},
    {"smollm2_down_nk", 1536, 576, 1},  {"smollm2_lm_head_nk", 576, 49152, 1},
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void product(int few, int m, const shape *s, const float *a, const float *w, float *c) {
    int ldw = s->wt ? s->k : s->n;
    if (few)
        sp__gemm_few(m, s->n, s->k, a, s->k, w, ldw, s->wt, 0, 0.0f, c, s->n);
    else if (m == 1) /* what a decode step of one request used before */
        cblas_sgemv(CblasRowMajor, s->wt ? CblasNoTrans : CblasTrans, s->wt ? s->n : s->k,
                    s->wt ? s->k : s->n, 1.0f, w, ldw, a, 1, 0.0f, c, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, s->wt ? CblasTrans : CblasNoTrans, m, s->n, s->k,
                    1.0f, a, s->k, w, ldw, 0.0f, c, s->n);
}

/* Median seconds per product over reps passes over the copies (after one untimed pass). */
static double time_products(int few, int m, const shape *s, const float *a, const float *pool,
                            int copies, int reps, float *c) {
    size_t per = (size_t)s->k * s->n;
    double *t = malloc((size_t)reps * sizeof *t), med;
    if (!t) return 0;
    for (int r = -1; r < reps; r++) {
        double t0 = sp__now();
        for (int i = 0; i < copies; i++) product(few, m, s, a, pool + (size_t)i * per, c);
        if (r >= 0) t[r] = (sp__now() - t0) / copies;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    med = t[reps / 2];
    free(t);
    return med;
}

static double rel_diff(const float *x, const float *y, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)x[i] - y[i]));
        den = fmax(den, fabs((double)y[i]));
    }
    return den > 0 ? num / den : num;
}

static void metric(const char *name, const char *what, double v, const char *unit) {
    printf("metric fewrows_%s_%s %.6g %s\n", name, what, v, unit);
}

static int bench_shape(const options *o, const shape *s, float *pool, size_t pool_n) {
    size_t per = (size_t)s->k * s->n;
    int copies = pool_n / per > 0 ? (int)(pool_n / per) : 1, m = o->rows;
    float *a = malloc((size_t)m * s->k * sizeof *a);
    float *c0 = malloc((size_t)m * s->n * sizeof *c0), *c1 = malloc((size_t)m * s->n * sizeof *c1);
    if (!a || !c0 || !c1 || per > pool_n) {
        free(a), free(c0), free(c1);
        fprintf(stderr, "bench_fewrows: out of memory for %s\n", s->name);
        return 1;
    }
    sp_rng r;
    sp_rng_seed(&r, 2);
    for (size_t i = 0; i < (size_t)m * s->k; i++) a[i] = (float)sp_rng_normal(&r);
    double ts = time_products(0, m, s, a, pool, copies, o->reps, c0);
    double tf = time_products(1, m, s, a, pool, copies, o->reps, c1);
    double flop = 2.0 * m * (double)per;
    char base[32];
    snprintf(base, sizeof base, "%s_ms", m == 1 ? "sgemv" : "sgemm");
    metric(s->name, base, ts * 1e3, "ms");
    metric(s->name, "few_ms", tf * 1e3, "ms");
    snprintf(base, sizeof base, "%s_gflops", m == 1 ? "sgemv" : "sgemm");
    metric(s->name, base, flop / ts * 1e-9, "GFLOP/s");
    metric(s->name, "few_gflops", flop / tf * 1e-9, "GFLOP/s");
    metric(s->name, "speedup", ts / tf, "ratio");
    metric(s->name, "rel_diff", rel_diff(c1, c0, (size_t)m * s->n), "ratio");
    free(a), free(c0), free(c1);
    return 0;
}

int main(int argc, char **argv) {
    options o = {16, 0, 5, 256};
    int status;
    if (sp__flags_program(&SPEC, argc, argv, &o, NULL, NULL, &status)) return status;
    if (o.threads > 0) openblas_set_num_threads(o.threads);
    if (!sp__gemm_few_ok(o.rows)) {
        printf("# no AVX-512 here: decode products use sgemm, sp__gemm_few is not used\n");
        return 0;
    }
    size_t pool_n = (size_t)o.mib << 18, largest = 0; /* floats */
    for (size_t i = 0; i < sizeof SHAPES / sizeof *SHAPES; i++) {
        size_t per = (size_t)SHAPES[i].k * SHAPES[i].n;
        largest = per > largest ? per : largest;
    }
    pool_n = pool_n > largest ? pool_n : largest;
    float *pool = malloc(pool_n * sizeof *pool);
    if (!pool) {
        fprintf(stderr, "bench_fewrows: out of memory for %zu MiB of weights\n", pool_n >> 18);
        return 1;
    }
    sp_rng r;
    sp_rng_seed(&r, 1);
    for (size_t i = 0; i < pool_n; i++) pool[i] = (float)(sp_rng_uniform(&r) - 0.5);
    printf("# %d rows, %d thread(s), weights from %zu MiB of copies\n", o.rows,
           openblas_get_num_threads(), pool_n >> 18);
    for (size_t i = 0; i < sizeof SHAPES / sizeof *SHAPES; i++)
        if (bench_shape(&o, &SHAPES[i], pool, pool_n)) return 1;
    free(pool);
    return 0;
}
