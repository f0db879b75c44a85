/* Times one prompt-tuning forward+backward of the engine on a model directory.
 * usage: bench_engine MODEL_DIR [B] [T] [P] [targets_per_seq] [steps]
 * Defaults: B=8 sequences x T=128 tokens, P=20 soft tokens prepended, 1 target per sequence
 * (classification), 5 timed steps after 1 warm-up. Prints the median step time, tokens/s and
 * the achieved GFLOP/s of the work the engine must do (docs/design.md, "Cost per token"). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "softprompt/engine.h"
#include "softprompt/rng.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [B] [T] [P] [targets_per_seq] [steps]\n", argv[0]);
        return 2;
    }
    int B = argc > 2 ? atoi(argv[2]) : 8, T = argc > 3 ? atoi(argv[3]) : 128;
    int P = argc > 4 ? atoi(argv[4]) : 20, K = argc > 5 ? atoi(argv[5]) : 1;
    int steps = argc > 6 ? atoi(argv[6]) : 5;
    sp_model m;
    sp_error err;
    if (sp_model_load(&m, argv[1], &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    int d = m.cfg.d_model, V = m.cfg.vocab_size;
    int32_t *start = malloc((B + 1) * sizeof *start), *tok = malloc((size_t)B * T * sizeof *tok);
    int32_t *pos = malloc((size_t)B * K * sizeof *pos), *ids = malloc((size_t)B * K * sizeof *ids);
    float *prompt = malloc((size_t)P * d * sizeof *prompt), *grad = calloc((size_t)P * d, 4);
    sp_rng r;
    sp_rng_seed(&r, 1);
    for (int s = 0; s <= B; s++) start[s] = s * T;
    for (int s = 0; s < B; s++)
        for (int t = 0; t < T; t++)
            tok[s * T + t] = t < P ? SP_SOFT(t) : (int32_t)sp_rng_below(&r, (uint64_t)V);
    for (int s = 0; s < B; s++)
        for (int k = 0; k < K; k++) {
            pos[s * K + k] = s * T + T - K + k;
            ids[s * K + k] = (int32_t)sp_rng_below(&r, (uint64_t)V);
        }
    for (int i = 0; i < P * d; i++) prompt[i] = 0.5f * (float)sp_rng_normal(&r);
    sp_batch b = {B, start, tok, B * K, pos, ids};
    sp_pass pass = {.prompt = prompt, .n_prompt = P, .grad = grad};
    sp_worker *w = sp_worker_new(&m);
    double *t = malloc((size_t)(steps + 1) * sizeof *t), loss = 0;
    for (int i = 0; i <= steps; i++) {
        double t0 = now();
        if (sp_engine_run(w, &b, &pass, &loss, &err)) {
            fprintf(stderr, "bench_engine: %s\n", err.msg);
            return 1;
        }
        t[i] = now() - t0;
    }
    qsort(t + 1, (size_t)steps, sizeof *t, cmp_double);
    double med = t[1 + steps / 2];
    double L = m.cfg.n_layer, F = m.cfg.d_ff, N = (double)B * T;
    double body = L * (4.0 * d * d + 2.0 * d * F);
    double flops = N * 4 * body + L * 12.0 * B * (double)T * T * d + B * K * 4.0 * V * d;
    printf("B=%d T=%d P=%d targets/seq=%d: median step %.3f s, %.0f tokens/s, %.1f GFLOP/s, "
           "loss %.4f, worker %.1f MiB\n",
           B, T, P, K, med, N / med, flops / med * 1e-9, loss / (B * K),
           sp_worker_bytes(w) / 1048576.0);
    sp_worker_free(w);
    sp_model_free(&m);
    free(start), free(tok), free(pos), free(ids), free(prompt), free(grad), free(t);
    return 0;
}
