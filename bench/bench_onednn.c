/* oneDNN's BF16 matrix product on the shapes bench_sgemm --bf16 measures, for the comparison in
 * docs/performance.md ("What computes the products"): C[M,N] float32 = A[M,K] B[K,N] with A
 * float32 activations (converted to BF16 by a oneDNN reorder inside the timed region, as
 * sp__gemm_bf16 converts them while packing) and B a BF16 weight, either as stored ([N,K],
 * nn.Linear's layout, like bench_sgemm's BF16 products) or reordered once, untimed, into the
 * blocked layout oneDNN's matmul chooses for itself (a second, packed copy of the weight).
 *
 *   bench_onednn [--reps 5] [MxNxK ...]   (default: bench_sgemm's three shapes)
 * Prints "metric onednn_{stored,packed}_<M>x<N>x<K>_gflops[_cpu] V GFLOP/s" (median after one
 * warm-up; per second and per CPU second of the process, as bench_sgemm) and the ISA oneDNN
 * dispatched to. Built only where oneDNN's headers are installed (libdnnl-dev; not a dependency
 * of softprompt). Threads: oneDNN's OpenMP runtime, OMP_NUM_THREADS (scripts/bench sets 1). */
#include <dnnl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/flags.h"
#include "softprompt/dtype.h"
#include "util/clock.h"

#define CHECK(call)                                                                                \
    do {                                                                                           \
        dnnl_status_t st_ = (call);                                                                \
        if (st_ != dnnl_success) {                                                                 \
            fprintf(stderr, "bench_onednn: %s failed (status %d)\n", #call, (int)st_);             \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct ctx {
    dnnl_engine_t eng;
    dnnl_stream_t stream;
} ctx;

static dnnl_memory_t memory(const ctx *c, const dnnl_memory_desc_t *md, void *data) {
    dnnl_memory_t m;
    CHECK(dnnl_memory_create(&m, md, c->eng, data ? data : DNNL_MEMORY_ALLOCATE));
    return m;
}

static dnnl_primitive_t reorder(const ctx *c, const dnnl_memory_desc_t *from,
                                const dnnl_memory_desc_t *to) {
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t p;
    CHECK(dnnl_reorder_primitive_desc_create(&pd, from, c->eng, to, c->eng, NULL));
    CHECK(dnnl_primitive_create(&p, pd));
    CHECK(dnnl_primitive_desc_destroy(pd));
    return p;
}

static void run2(const ctx *c, dnnl_primitive_t p, dnnl_memory_t from, dnnl_memory_t to) {
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    CHECK(dnnl_primitive_execute(p, c->stream, 2, args));
}

/* Median GFLOP/s per second and per CPU second of reps products (after one warm-up), weights as
 * stored (packed 0) or in oneDNN's own layout (packed 1). */
static void measure(const ctx *c, int M, int N, int K, int packed, int reps, double out[2]) {
    dnnl_memory_desc_t a32, a16, w_stored, w_any, dst;
    dnnl_dims_t da = {M, K}, dw = {K, N}, dc = {M, N};
    CHECK(dnnl_memory_desc_init_by_tag(&a32, 2, da, dnnl_f32, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&a16, 2, da, dnnl_bf16, dnnl_ab));
    CHECK(dnnl_memory_desc_init_by_tag(&w_stored, 2, dw, dnnl_bf16, dnnl_ba)); /* [N, K] */
    CHECK(dnnl_memory_desc_init_by_tag(&w_any, 2, dw, dnnl_bf16, dnnl_format_tag_any));
    CHECK(dnnl_memory_desc_init_by_tag(&dst, 2, dc, dnnl_f32, dnnl_ab));
    dnnl_matmul_desc_t md;
    CHECK(dnnl_matmul_desc_init(&md, &a16, packed ? &w_any : &w_stored, NULL, &dst));
    dnnl_primitive_desc_t pd;
    CHECK(dnnl_primitive_desc_create(&pd, &md, NULL, c->eng, NULL));
    dnnl_primitive_t mm;
    CHECK(dnnl_primitive_create(&mm, pd));
    const dnnl_memory_desc_t *w_md = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);

    float *a = malloc((size_t)M * K * 4);
    uint16_t *w = malloc((size_t)K * N * 2);
    if (!a || !w) exit(1);
    for (size_t i = 0; i < (size_t)M * K; i++) a[i] = (float)(i % 7) * 0.1f;
    for (size_t i = 0; i < (size_t)K * N; i++) w[i] = sp_f32_to_bf16((float)(i % 5) * 0.1f);
    dnnl_memory_t m_a32 = memory(c, &a32, a), m_a16 = memory(c, &a16, NULL);
    dnnl_memory_t m_ws = memory(c, &w_stored, w), m_w = m_ws, m_dst = memory(c, &dst, NULL);
    dnnl_primitive_t to_bf16 = reorder(c, &a32, &a16), pack = NULL;
    if (packed) { /* the weight's packed copy, made once */
        m_w = memory(c, w_md, NULL);
        pack = reorder(c, &w_stored, w_md);
        run2(c, pack, m_ws, m_w);
        CHECK(dnnl_stream_wait(c->stream));
    }
    double *g = malloc((size_t)(reps + 1) * sizeof *g),
           *gc = malloc((size_t)(reps + 1) * sizeof *gc);
    for (int r = 0; r <= reps; r++) {
        double t0 = sp__now(), c0 = sp__cpu_now();
        run2(c, to_bf16, m_a32, m_a16);
        dnnl_exec_arg_t args[3] = {
            {DNNL_ARG_SRC, m_a16}, {DNNL_ARG_WEIGHTS, m_w}, {DNNL_ARG_DST, m_dst}};
        CHECK(dnnl_primitive_execute(mm, c->stream, 3, args));
        CHECK(dnnl_stream_wait(c->stream));
        g[r] = 2.0 * M * N * K / (sp__now() - t0) * 1e-9;
        gc[r] = 2.0 * M * N * K / (sp__cpu_now() - c0) * 1e-9;
    }
    qsort(g + 1, (size_t)reps, sizeof *g, cmp_double);
    qsort(gc + 1, (size_t)reps, sizeof *gc, cmp_double);
    out[0] = g[1 + reps / 2];
    out[1] = gc[1 + reps / 2];
    free(g), free(gc);
    if (pack) dnnl_primitive_destroy(pack), dnnl_memory_destroy(m_w);
    dnnl_primitive_destroy(to_bf16), dnnl_primitive_destroy(mm), dnnl_primitive_desc_destroy(pd);
    dnnl_memory_destroy(m_a32), dnnl_memory_destroy(m_a16), dnnl_memory_destroy(m_ws);
    dnnl_memory_destroy(m_dst);
    free(a), free(w);
}

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
    case dnnl_cpu_isa_avx2:
        return "avx2";
    case dnnl_cpu_isa_avx512_core:
        return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni:
        return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16:
        return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx:
        return "avx512_core_amx";
    default:
        return "other";
    }
}

typedef struct options {
    int reps;
} options;

static const sp__flag FLAGS[] = {
    SP_OPT_INT("reps", offsetof(options, reps), "R", 1, 1000, "timed products per shape (5)"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = "bench_onednn",
    .program = "bench_onednn",
    .usage = "usage: bench_onednn [--reps R] [MxNxK ...]\n",
    .flags = FLAGS,
    .positional = "MxNxK",
    .min_positional = 0,
    .max_positional = -1,
};

int main(int argc, char **argv) {
    options o = {5};
    char **shapes = calloc((size_t)argc + 1, sizeof *shapes);
    int n_shapes = 0, status;
    if (!shapes) return 1;
    if (sp__flags_program(&SPEC, argc, argv, &o, shapes, &n_shapes, &status)) {
        free(shapes);
        return status;
    }
    ctx c;
    CHECK(dnnl_engine_create(&c.eng, dnnl_cpu, 0));
    CHECK(dnnl_stream_create(&c.stream, c.eng, dnnl_stream_default_flags));
    const char *defaults[] = {"2048x2048x2048", "1184x3072x768", "1184x768x3072"};
    int n = n_shapes > 0 ? n_shapes : 3;
    double peak[2][2] = {{0, 0}, {0, 0}};
    for (int i = 0; i < n; i++) {
        const char *shape = n_shapes > 0 ? shapes[i] : defaults[i];
        int M, N, K, end = 0;
        if (sscanf(shape, "%9dx%9dx%9d%n", &M, &N, &K, &end) != 3 || shape[end] || M < 1 || N < 1 ||
            K < 1) {
            sp__flags_error(&SPEC, "'%s': expected MxNxK, three positive integers", shape);
            free(shapes);
            return 2;
        }
        for (int packed = 0; packed < 2; packed++) {
            double r[2];
            const char *how = packed ? "packed" : "stored";
            measure(&c, M, N, K, packed, o.reps, r);
            printf("metric onednn_%s_%dx%dx%d_gflops %.1f GFLOP/s\n", how, M, N, K, r[0]);
            printf("metric onednn_%s_%dx%dx%d_gflops_cpu %.1f GFLOP/s\n", how, M, N, K, r[1]);
            for (int j = 0; j < 2; j++)
                if (r[j] > peak[packed][j]) peak[packed][j] = r[j];
        }
    }
    printf("metric onednn_stored_peak_gflops %.1f GFLOP/s\n", peak[0][0]);
    printf("metric onednn_stored_peak_gflops_cpu %.1f GFLOP/s\n", peak[0][1]);
    printf("metric onednn_packed_peak_gflops %.1f GFLOP/s\n", peak[1][0]);
    printf("metric onednn_packed_peak_gflops_cpu %.1f GFLOP/s\n", peak[1][1]);
    const dnnl_version_t *v = dnnl_version();
    printf("# oneDNN %d.%d.%d, ISA %s\n", v->major, v->minor, v->patch,
           isa_name(dnnl_get_effective_cpu_isa()));
    dnnl_stream_destroy(c.stream);
    dnnl_engine_destroy(c.eng);
    free(shapes);
    return 0;
}
