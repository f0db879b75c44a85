/* Times prompt-tuning steps of the engine (forward + backward to the prompt) on a model directory,
 * alone or under mpirun (data parallel: each rank takes its share of the batch's sequences and
 * the prompt gradient is summed over ranks every step, as the trainer does).
 *
 *   bench_engine --model DIR [--name NAME] [--batch 8] [--seq 128] [--prompt 20] [--targets 1]
 *                [--steps 5] [--warmup 1] [--threads N] [--dump-batch FILE] [--kv-prefix N]
 *                [--weights auto|f32|bf16]
 *
 * Each sequence is P soft tokens followed by T random text tokens; the last K text tokens are
 * labelled (K = 1: classification, one loss position per sequence; K = 16: generation), so the
 * logits at the K positions before them are scored. tokens/s counts text tokens (B * T).
 * Prints "metric NAME_<what> <value> <unit>" lines (docs/performance.md describes each) and,
 * with --dump-batch, writes the batch in the layout bench/pytorch_peer.py reads:
 * "SPBENCH1", int32 B, T, P, K, d, int32 tokens[B*T], float32 prompt[P*d] (little-endian). */
#include <cblas.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cli/flags.h"
#include "softprompt/dist.h"
#include "softprompt/engine.h"
#include "softprompt/team.h"
#include "softprompt/rng.h"
#include "util/clock.h"

typedef struct options {
    const char *model, *name, *dump;
    int B, T, P, K, steps, warmup, threads;
    int kv; /* --kv-prefix: rows of a per-layer key/value prefix (prefix tuning), 0 none */
    sp_weights weights; /* --weights auto|f32|bf16 (default auto) */
} options;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define AT(f) offsetof(options, f)
#define BIG 1000000

static const sp__flag FLAGS[] = {
    SP_OPT_STR("model", AT(model), "DIR", "model directory", .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("name", AT(name), "NAME", "prefix of the metric names (softprompt)"),
    SP_OPT_INT("batch", AT(B), "B", 1, BIG, "sequences per step (8)"),
    SP_OPT_INT("seq", AT(T), "T", 2, BIG, "text tokens per sequence (128)"),
    SP_OPT_INT("prompt", AT(P), "P", 0, BIG, "soft tokens before the text (20)"),
    SP_OPT_INT("targets", AT(K), "K", 1, BIG, "labelled tokens per sequence, < T (1)"),
    SP_OPT_INT("steps", AT(steps), "S", 1, BIG, "timed steps (5)"),
    SP_OPT_INT("warmup", AT(warmup), "W", 0, BIG, "untimed steps first (1)"),
    SP_OPT_INT("threads", AT(threads), "N", 0, 4096, "threads per rank (0: the cores per rank)"),
    SP_OPT_STR("dump-batch", AT(dump), "FILE", "write the batch for bench/pytorch_peer.py"),
    SP_OPT_INT("kv-prefix", AT(kv), "N", 0, BIG, "rows of a per-layer key/value prefix (0)"),
    SP_OPT_WEIGHTS(AT(weights)),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = "bench_engine",
    .program = "bench_engine",
    .usage = "usage: bench_engine --model DIR [options]   (alone or under mpirun)\n",
    .flags = FLAGS,
};

/* The required floating-point work of one step (docs/performance.md, "FLOPs"): forward and
 * activation-gradient products of every layer over the rows it must process (all N rows, except
 * that the top block after attention only needs the target rows), causal attention, and the
 * vocabulary projection at the targets. */
/* Multiply-adds per row of the linear layers given (those the family does not have are zero). */
static double macs(const sp_linear *const *lin, int n) {
    double sum = 0;
    for (int i = 0; i < n; i++) sum += (double)lin[i]->in * lin[i]->out * (lin[i]->w != NULL);
    return sum;
}

static double step_flops(const sp_model *m, const options *o, double *attention_part) {
    const sp_model_config *c = &m->cfg;
    const sp_layer *y = &m->layers[0];
    double V = c->vocab_size, L = c->n_layer, d = c->d_model;
    double qd = (double)c->n_head * sp_config_head_dim(c);
    double S = o->T + o->P, N = o->B * S, n_tgt = (double)o->B * o->K;
    const sp_linear *before[] = {&y->qkv, &y->q, &y->k, &y->v};
    const sp_linear *after[] = {&y->o, &y->mlp_in, &y->mlp_up, &y->mlp_out};
    double qkv = 2 * 2 * N * macs(before, 4); /* fwd + dX */
    /* per row: output projection and the MLP */
    double post = 2 * 2 * macs(after, 4);
    /* causal: QK^T, PV and 4 products back; a key/value prefix adds kv columns to every row */
    double attention = o->B * 6 * S * (S + 2.0 * o->kv) * qd;
    double head = 2 * 2 * n_tgt * V * d;
    *attention_part = L * attention;
    return L * (qkv + attention) + ((L - 1) * N + n_tgt) * post + head;
}

static void dump_batch(const options *o, int d, const int32_t *tok, const float *prompt) {
    FILE *f = fopen(o->dump, "wb");
    if (!f) {
        perror(o->dump);
        exit(1);
    }
    int32_t hdr[5] = {o->B, o->T, o->P, o->K, d};
    fwrite("SPBENCH1", 1, 8, f);
    fwrite(hdr, sizeof hdr, 1, f);
    for (int s = 0; s < o->B; s++) fwrite(tok + (size_t)s * (o->T + o->P) + o->P, 4, o->T, f);
    fwrite(prompt, sizeof(float), (size_t)o->P * d, f);
    if (fclose(f)) {
        perror(o->dump);
        exit(1);
    }
}

/* Proportional set size of this process in MiB: shared pages (the model's file mapping) count
 * divided by the number of processes mapping them, so the sum over ranks is the node's memory. */
static double pss_mib(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    double kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "Pss: %lf kB", &kib) == 1) break;
    if (f) fclose(f);
    return kib / 1024.0;
}

static void metric(const options *o, const char *what, double v, const char *unit) {
    printf("metric %s_%s %.9g %s\n", o->name, what, v, unit);
}

int main(int argc, char **argv) {
    sp_dist dist;
    if (sp_dist_init(&dist, &argc, &argv)) return 1;
    options o = {NULL, "softprompt", NULL, 8, 128, 20, 1, 5, 1, 0, 0, SP_WEIGHTS_AUTO};
    int status, stop = sp__flags_program(&SPEC, argc, argv, &o, NULL, NULL, &status);
    if (!stop && o.K >= o.T)
        stop = 1,
        status = sp__flags_error(&SPEC, "--targets %d: expected fewer than --seq %d", o.K, o.T);
    if (stop) {
        sp_dist_finalize();
        return status;
    }
    int capped = 0, threads = sp_dist_threads(&dist, o.threads, &capped);
    openblas_set_num_threads(threads);
    sp_model m;
    sp_error err;
    if (sp_model_load_shared(&m, o.model, o.weights, sp_dist_model_share(), &err)) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    int d = sp_config_embed_dim(&m.cfg), V = m.cfg.vocab_size, S = o.T + o.P; /* d: the prompt's */
    if (dist.size > o.B) {
        fprintf(stderr, "bench_engine: %d ranks for %d sequences\n", dist.size, o.B);
        return 2;
    }
    /* The whole batch is generated identically on every rank; rank r runs sequences
     * [r*B/size, (r+1)*B/size). */
    int32_t *start = malloc((o.B + 1) * sizeof *start), *tok = malloc((size_t)o.B * S * 4);
    int32_t *pos = malloc((size_t)o.B * o.K * 4), *ids = malloc((size_t)o.B * o.K * 4);
    /* the gradient the ranks sum: the prompt's, then the key/value prefix's [L, 2, kv, kv_dim] */
    size_t np = (size_t)o.P * d, nkv = (size_t)m.cfg.n_layer * 2 * o.kv *
                                       sp_config_kv_heads(&m.cfg) * sp_config_head_dim(&m.cfg);
    size_t ng = np + nkv;
    float *prompt = malloc(np * 4 + 4), *grad = calloc(ng + 1, 4), *kv = malloc(nkv * 4 + 4);
    double *grad_sum = calloc(ng + 2, sizeof(double));
    sp_rng r;
    sp_rng_seed(&r, 1);
    for (int s = 0; s < o.B; s++)
        for (int t = 0; t < S; t++)
            tok[s * S + t] = t < o.P ? SP_SOFT(t) : (int32_t)sp_rng_below(&r, (uint64_t)V);
    for (int i = 0; i < o.P * d; i++) prompt[i] = 0.02f * (float)sp_rng_normal(&r);
    for (size_t i = 0; i < nkv; i++) kv[i] = (float)sp_rng_normal(&r);
    if (o.dump && dist.rank == 0) dump_batch(&o, d, tok, prompt);
    int s0 = dist.rank * o.B / dist.size, s1 = (dist.rank + 1) * o.B / dist.size;
    for (int s = s0; s <= s1; s++) start[s - s0] = (s - s0) * S;
    for (int s = s0; s < s1; s++)
        for (int k = 0; k < o.K; k++) { /* logits at position t score the token at t + 1 */
            int j = (s - s0) * o.K + k, t = S - 1 - o.K + k;
            pos[j] = (s - s0) * S + t;
            ids[j] = tok[s * S + t + 1];
        }
    sp_batch b = {s1 - s0, start, tok + (size_t)s0 * S, (s1 - s0) * o.K, pos, ids, NULL, NULL};
    sp_pass pass = {.prompt = prompt,
                    .n_prompt = o.P,
                    .grad = o.P ? grad : NULL,
                    .kv_prefix = o.kv ? kv : NULL,
                    .n_kv_prefix = o.kv,
                    .kv_prefix_grad = o.kv ? grad + np : NULL};
    sp_team *team = sp_team_new(&m, threads); /* as the trainer runs a rank's threads */
    if (!team) {
        fprintf(stderr, "bench_engine: cannot start %d threads\n", threads);
        return 1;
    }
    double *times = malloc((size_t)(o.steps + o.warmup) * sizeof *times), first_loss = 0;
    double *cpu = malloc((size_t)(o.steps + o.warmup) * sizeof *cpu);
    for (int i = 0; i < o.warmup + o.steps; i++) {
        double t0 = sp__now(), c0 = sp__cpu_now(), loss;
        memset(grad, 0, ng * sizeof *grad);
        if (sp_team_run(team, &b, &pass, &loss, &err)) {
            fprintf(stderr, "bench_engine: %s\n", err.msg);
            sp_dist_abort(1);
        }
        /* what the trainer does with the gradient: a sum over ranks (in double, with the loss) */
        for (size_t j = 0; j < ng; j++) grad_sum[j] = grad[j];
        grad_sum[ng] = loss;
        sp_dist_sum_double(grad_sum, ng + 1);
        times[i] = sp__now() - t0;
        cpu[i] = sp__cpu_now() - c0;
        if (i == 0) first_loss = grad_sum[ng] / ((double)o.B * o.K);
    }
    /* The gradient sum makes the ranks wait for each other, so their step times agree: average. */
    sp_dist_sum_double(times, (size_t)(o.warmup + o.steps));
    for (int i = 0; i < o.warmup + o.steps; i++) times[i] /= dist.size;
    qsort(times + o.warmup, (size_t)o.steps, sizeof *times, cmp_double);
    double med = times[o.warmup + o.steps / 2];
    /* CPU seconds of a step per thread (the mean over ranks): what the step costs when no other
     * job takes the cores; on an idle machine it equals step_s */
    sp_dist_sum_double(cpu, (size_t)(o.warmup + o.steps));
    for (int i = 0; i < o.warmup + o.steps; i++) cpu[i] /= (double)dist.size * threads;
    qsort(cpu + o.warmup, (size_t)o.steps, sizeof *cpu, cmp_double);
    double cpu_med = cpu[o.warmup + o.steps / 2];
    /* The per-step message alone: the same sum, 50 times (median), on the node's transport. */
    double ar[50];
    for (int i = 0; i < 50; i++) {
        double t0 = sp__now();
        sp_dist_sum_double(grad_sum, ng + 1);
        ar[i] = sp__now() - t0;
    }
    qsort(ar, 50, sizeof *ar, cmp_double);
    sp_dist_sum_double(&ar[25], 1);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double attention_flops, flops = step_flops(&m, &o, &attention_flops);
    double rss = ru.ru_maxrss / 1024.0;
    double pss = pss_mib();      /* every rank still holds its model and buffers here */
    sp_dist_sum_double(&rss, 1); /* mean over ranks (RSS counts the shared model in each) */
    sp_dist_sum_double(&pss, 1);
    if (dist.rank == 0) {
        metric(&o, "step_s", med, "s");
        metric(&o, "tokens_per_s", (double)o.B * o.T / med, "tokens/s");
        metric(&o, "flops_per_step", flops, "FLOP");
        metric(&o, "gflops", flops / med * 1e-9, "GFLOP/s");
        metric(&o, "step_cpu_s", cpu_med, "s");
        metric(&o, "gflops_cpu", flops / cpu_med * 1e-9, "GFLOP/s");
        metric(&o, "attention_flop_share", attention_flops / flops, "fraction");
        metric(&o, "loss_first", first_loss, "nats");
        metric(&o, "peak_rss_mib", rss / dist.size, "MiB");
        metric(&o, "node_pss_mib", pss, "MiB");
        if (dist.size > 1) metric(&o, "allreduce_s", ar[25] / dist.size, "s");
        metric(&o, "allreduce_bytes", (double)(ng + 1) * sizeof(double), "bytes"); /* a step */
        metric(&o, "activation_kib_per_token",
               sp_team_bytes(team) / 1024.0 / ((double)(s1 - s0) * S), "KiB");
        metric(&o, "worker_mib", sp_team_bytes(team) / 1048576.0, "MiB");
        metric(&o, "weights_mib", m.bytes_matrices / 1048576.0, "MiB"); /* the blocks' matrices */
        printf("# %s: weights %s (bf16 compute: %s)\n", o.name, sp_weights_name(m.weights),
               sp_bf16_compute());
        printf("# %s: ranks %d, B=%d T=%d P=%d K=%d kv-prefix %d, median of %d steps %.4f s\n",
               o.name, dist.size, o.B, o.T, o.P, o.K, o.kv, o.steps, med);
    }
    sp_team_free(team);
    sp_model_free(&m);
    free(start), free(tok), free(pos), free(ids), free(prompt), free(grad), free(grad_sum),
        free(kv);
    free(times), free(cpu);
    sp_dist_finalize();
    return 0;
}
