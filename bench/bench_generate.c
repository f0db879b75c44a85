/* Times generation with the key/value cache (softprompt/generate.h): prefill and greedy decode of
 * B requests, each P soft tokens (one prefix cache, computed once per run) followed by T random
 * text tokens, then N decode steps of one token per request (one sgemm over the B rows per linear
 * layer), and the memory-bandwidth limit of decoding.
 *
 *   bench_generate --model DIR [--name NAME] [--batch 1] [--seq 64] [--prompt 20] [--new 32]
 *                  [--steps 3] [--warmup 1] [--threads N] [--dump-batch FILE] [--ids FILE]
 *                  [--stream-mib 256]
 *
 * Prints "metric NAME_<what> <value> <unit>":
 *   prefill_tokens_per_s  B * (P + T) / (building the prefix cache + the prefill of the B
 *                         requests, with the logits of each last token)
 *   decode_tokens_per_s   B * N / (N decode steps: the model over B new rows, argmax)
 *   weight_bytes_per_token  bytes of weights one decode step reads (every linear layer and
 *                         the LM head, float32), whatever B
 *   stream_copy_gb_per_s  a STREAM-like copy (a[i] = b[i] over --stream-mib MiB arrays, on
 *                         --threads threads, bytes read + written / time, best of 2) after
 *                         each timed run, the median
 *   decode_bw_limit_tokens_per_s  B * stream / weight bytes per step: decoding cannot be faster
 *                         while every step reads every weight once from memory
 *   decode_bw_fraction    decode tokens/s over that limit run by run (each against the copy
 *                         that followed it, under the same load), the median
 * With --dump-batch the requests are written as bench/pytorch_peer.py reads them (SPBENCH1:
 * B, T, P, K = N, d, tokens, prompt); with --ids the greedy ids [B, N + 1] (int32) of the last
 * run, for the peer to compare. Medians over --steps runs. */
#include <cblas.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/flags.h"
#include "softprompt/generate.h"
#include "softprompt/rng.h"
#include "util/clock.h"

typedef struct options {
    const char *model, *name, *dump, *ids;
    int B, T, P, N, steps, warmup, threads, stream_mib;
    sp_weights weights; /* --weights auto|f32|bf16 (default auto) */
} options;

#define AT(f) offsetof(options, f)
#define BIG 1000000

static const sp__flag FLAGS[] = {
    SP_OPT_STR("model", AT(model), "DIR", "model directory", .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("name", AT(name), "NAME", "prefix of the metric names (gen)"),
    SP_OPT_INT("batch", AT(B), "B", 1, BIG, "requests (1)"),
    SP_OPT_INT("seq", AT(T), "T", 1, BIG, "text tokens per request (64)"),
    SP_OPT_INT("prompt", AT(P), "P", 0, BIG, "soft tokens before the text (20)"),
    SP_OPT_INT("new", AT(N), "N", 1, BIG, "decode steps (32)"),
    SP_OPT_INT("steps", AT(steps), "S", 1, BIG, "timed runs (3)"),
    SP_OPT_INT("warmup", AT(warmup), "W", 0, BIG, "untimed runs first (1)"),
    SP_OPT_INT("threads", AT(threads), "N", 0, 4096, "threads (0: OpenBLAS's default)"),
    SP_OPT_STR("ids", AT(ids), "FILE", "write the greedy ids of the last run"),
    SP_OPT_STR("dump-batch", AT(dump), "FILE", "write the requests for bench/pytorch_peer.py"),
    SP_OPT_INT("stream-mib", AT(stream_mib), "M", 1, 1 << 20, "MiB per array of the copy (256)"),
    SP_OPT_WEIGHTS(AT(weights)),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = "bench_generate",
    .program = "bench_generate",
    .usage = "usage: bench_generate --model DIR [options]\n",
    .flags = FLAGS,
};

static void metric(const options *o, const char *what, double v, const char *unit) {
    printf("metric %s_%s %.6g %s\n", o->name, what, v, unit);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ---- the memory-bandwidth limit ------------------------------------------------------------ */

typedef struct copy_part {
    float *a;
    const float *b;
    size_t n;
} copy_part;

static void *copy_run(void *arg) {
    copy_part *p = arg;
    memcpy(p->a, p->b, p->n * sizeof(float));
    return NULL;
}

/* STREAM's copy a[i] = b[i] over n floats on threads threads: bytes read + written per second
 * (best of reps, after one untimed pass), right after a timed run: the same load. */
static double stream_copy(float *a, const float *b, size_t n, int threads, int reps) {
    pthread_t tid[256];
    copy_part part[256];
    threads = threads < 1 ? 1 : threads > 256 ? 256 : threads;
    double best = 0;
    for (int rep = 0; rep < reps + 1; rep++) {
        double t = sp__now();
        for (int k = 0; k < threads; k++) {
            size_t lo = n * k / threads, hi = n * (k + 1) / threads;
            part[k] = (copy_part){a + lo, b + lo, hi - lo};
            pthread_create(&tid[k], NULL, copy_run, &part[k]);
        }
        for (int k = 0; k < threads; k++) pthread_join(tid[k], NULL);
        double bw = 2.0 * (double)n * sizeof(float) / (sp__now() - t);
        if (rep > 0 && bw > best) best = bw;
    }
    return best;
}

/* Bytes of a linear layer's weight in its storage. */
static double linear_bytes(const sp_linear *w) {
    if (!w->w) return 0;
    switch (w->store) {
    case SP_WSTORE_F32:
        return (double)w->in * w->out * 4;
    case SP_WSTORE_BF16:
        return (double)w->in * w->out * 2;
    }
    return 0;
}

/* Bytes of weights a decode step reads: every linear layer of every block and the LM head (the
 * embedding rows and norms are negligible), in their storage (float32 or BF16). */
static double weight_bytes(const sp_model *m) {
    double sum = linear_bytes(&m->lm_head);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        const sp_layer *y = &m->layers[l];
        const sp_linear *lin[] = {&y->qkv, &y->q,      &y->k,      &y->v,
                                  &y->o,   &y->mlp_in, &y->mlp_up, &y->mlp_out};
        for (int i = 0; i < 8; i++) sum += linear_bytes(lin[i]);
    }
    return sum;
}

/* ---- the requests -------------------------------------------------------------------------- */

typedef struct bench {
    const options *o;
    const sp_model *m;
    sp_worker *w;
    const float *prompt;
    int32_t *text;     /* [B, T] */
    int32_t *ids;      /* [B, N + 1] greedy ids of the last run */
    float *logits;     /* [B, V] */
    sp_kv_cache **own; /* [B] */
    sp_gen_seq *seq;   /* [B] */
    int32_t *start, *tok;
} bench;

static void die(const char *what, const sp_error *err) {
    fprintf(stderr, "bench_generate: %s: %s\n", what, err ? err->msg : "out of memory");
    exit(1);
}

static int32_t argmax(const float *x, int n) {
    int32_t k = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[k]) k = i;
    return k;
}

/* One run: the prefix cache, the prefill of B requests, N decode steps; times in t[0], t[1]. */
static void run_once(bench *b, double t[2]) {
    const options *o = b->o;
    int V = b->m->cfg.vocab_size;
    sp_error err = {0};
    double t0 = sp__now();
    sp_kv_cache *shared = o->P ? sp_kv_cache_new(b->m, o->P) : NULL;
    if (o->P) {
        int32_t soft[4096], st[2] = {0, o->P};
        for (int k = 0; k < o->P; k++) soft[k] = SP_SOFT(k);
        sp_gen_seq q = {NULL, shared, b->prompt, o->P};
        if (sp_generate_extend(b->w, &q, 1, st, soft, NULL, &err)) die("prefix cache", &err);
    }
    for (int s = 0; s < o->B; s++) {
        sp_kv_cache_clear(b->own[s]);
        b->seq[s] = (sp_gen_seq){shared, b->own[s], b->prompt, o->P};
        b->start[s + 1] = (s + 1) * o->T;
    }
    if (sp_generate_extend(b->w, b->seq, o->B, b->start, b->text, b->logits, &err))
        die("prefill", &err);
    for (int s = 0; s < o->B; s++)
        b->ids[(size_t)s * (o->N + 1)] = argmax(b->logits + (size_t)s * V, V);
    double t1 = sp__now();
    for (int k = 0; k < o->N; k++) {
        for (int s = 0; s < o->B; s++)
            b->tok[s] = b->ids[(size_t)s * (o->N + 1) + k], b->start[s + 1] = s + 1;
        if (sp_generate_extend(b->w, b->seq, o->B, b->start, b->tok, b->logits, &err))
            die("decode", &err);
        for (int s = 0; s < o->B; s++)
            b->ids[(size_t)s * (o->N + 1) + k + 1] = argmax(b->logits + (size_t)s * V, V);
    }
    t[0] = t1 - t0, t[1] = sp__now() - t1;
    sp_kv_cache_free(shared);
}

static void setup(bench *b, const options *o, const sp_model *m) {
    int V = m->cfg.vocab_size, d = sp_config_embed_dim(&m->cfg); /* the prompt's width */
    b->o = o, b->m = m;
    b->w = sp_worker_new(m);
    b->text = malloc((size_t)o->B * o->T * sizeof *b->text);
    b->ids = malloc((size_t)o->B * (o->N + 1) * sizeof *b->ids);
    b->logits = malloc((size_t)o->B * V * sizeof *b->logits);
    b->own = calloc((size_t)o->B, sizeof *b->own);
    b->seq = calloc((size_t)o->B, sizeof *b->seq);
    b->start = calloc((size_t)o->B + 1, sizeof *b->start);
    b->tok = calloc((size_t)o->B, sizeof *b->tok);
    float *prompt = malloc((size_t)(o->P > 0 ? o->P : 1) * d * sizeof *prompt);
    if (!b->w || !b->text || !b->ids || !b->logits || !b->own || !b->seq || !b->start || !b->tok ||
        !prompt)
        die("setup", NULL);
    sp_rng r;
    sp_rng_seed(&r, 1);
    for (size_t i = 0; i < (size_t)o->B * o->T; i++) b->text[i] = (int32_t)sp_rng_below(&r, V);
    for (int k = 0; k < o->P; k++) /* rows of wte at random ids (PEFT's SAMPLE_VOCAB) */
        sp_model_embedding_row(m, sp_rng_below(&r, V), prompt + (size_t)k * d);
    b->prompt = prompt;
    for (int s = 0; s < o->B; s++) {
        b->own[s] = sp_kv_cache_new(m, o->T + o->N);
        if (!b->own[s]) die("caches", NULL);
    }
}

static void dump(const options *o, const bench *b, int d) {
    FILE *f = o->dump ? fopen(o->dump, "wb") : NULL;
    if (o->dump && !f) die(o->dump, NULL);
    if (f) {
        int32_t hdr[5] = {o->B, o->T, o->P > 0 ? o->P : 1, o->N, d};
        fwrite("SPBENCH1", 1, 8, f);
        fwrite(hdr, sizeof hdr, 1, f);
        fwrite(b->text, 4, (size_t)o->B * o->T, f);
        fwrite(b->prompt, sizeof(float), (size_t)(o->P > 0 ? o->P : 1) * d, f);
        if (fclose(f)) die(o->dump, NULL);
    }
    f = o->ids ? fopen(o->ids, "wb") : NULL;
    if (o->ids && !f) die(o->ids, NULL);
    if (f) {
        fwrite(b->ids, 4, (size_t)o->B * (o->N + 1), f);
        if (fclose(f)) die(o->ids, NULL);
    }
}

int main(int argc, char **argv) {
    options o = {NULL, "gen", NULL, NULL, 1, 64, 20, 32, 3, 1, 0, 256, SP_WEIGHTS_AUTO};
    int status;
    if (sp__flags_program(&SPEC, argc, argv, &o, NULL, NULL, &status)) return status;
    if (o.threads > 0) openblas_set_num_threads(o.threads);
    int threads = o.threads > 0 ? o.threads : openblas_get_num_threads();
    sp_model m;
    sp_error err = {0};
    if (sp_model_load_weights(&m, o.model, o.weights, &err)) die(o.model, &err);
    if (o.P + o.T + o.N > m.cfg.n_ctx) {
        fprintf(stderr, "bench_generate: P + T + N = %d exceeds n_positions %d\n", o.P + o.T + o.N,
                m.cfg.n_ctx);
        return 2;
    }
    bench b;
    setup(&b, &o, &m);
    /* each timed run is followed by a copy on the same cores, so that the ratio of decoding to
     * its bandwidth limit compares the two under the same load (the machine may be shared) */
    size_t n_copy = (size_t)o.stream_mib * 1024 * 1024 / sizeof(float);
    float *ca = calloc(n_copy, sizeof *ca), *cb = calloc(n_copy, sizeof *cb);
    double *pre = malloc((size_t)o.steps * sizeof *pre),
           *dec = malloc((size_t)o.steps * sizeof *dec);
    double *bws = malloc((size_t)o.steps * sizeof *bws),
           *frac = malloc((size_t)o.steps * sizeof *frac);
    if (!ca || !cb || !pre || !dec || !bws || !frac) die("timing", NULL);
    double wb = weight_bytes(&m);
    for (int i = 0; i < o.warmup + o.steps; i++) {
        double t[2];
        run_once(&b, t);
        if (i < o.warmup) continue;
        int k = i - o.warmup;
        pre[k] = t[0], dec[k] = t[1], bws[k] = stream_copy(ca, cb, n_copy, threads, 2);
        frac[k] = ((double)o.B * o.N / t[1]) / ((double)o.B * bws[k] / wb);
    }
    qsort(pre, (size_t)o.steps, sizeof *pre, cmp_double);
    qsort(dec, (size_t)o.steps, sizeof *dec, cmp_double);
    qsort(bws, (size_t)o.steps, sizeof *bws, cmp_double);
    qsort(frac, (size_t)o.steps, sizeof *frac, cmp_double);
    double tp = pre[o.steps / 2], td = dec[o.steps / 2], bw = bws[o.steps / 2];
    double decode = (double)o.B * o.N / td, limit = (double)o.B * bw / wb;
    printf("# %s: B=%d P=%d T=%d N=%d, %d thread(s), prefill %.4f s, decode %.4f s\n", o.model, o.B,
           o.P, o.T, o.N, threads, tp, td);
    metric(&o, "prefill_tokens_per_s", (double)o.B * (o.P + o.T) / tp, "tokens/s");
    metric(&o, "decode_tokens_per_s", decode, "tokens/s");
    metric(&o, "weight_bytes_per_token", wb, "bytes");
    metric(&o, "stream_copy_gb_per_s", bw / 1e9, "GB/s");
    metric(&o, "decode_bw_limit_tokens_per_s", limit, "tokens/s");
    metric(&o, "decode_bw_fraction", frac[o.steps / 2], "ratio");
    dump(&o, &b, sp_config_embed_dim(&m.cfg));
    return 0;
}
