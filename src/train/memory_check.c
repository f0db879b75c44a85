/* Refuses up front a run that would not fit in memory, instead of being OOM-killed halfway:
 * the peak memory of one rank is estimated from the model and the worst micro-batch the data
 * can produce, and compared with what this rank may use (MemAvailable of the node, or the
 * cgroup limit Slurm puts the job in, shared by the ranks of the node; or SP_MAX_MEMORY). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/family.h"
#include "softprompt/engine.h"
#include "softprompt/generate.h"
#include "train/internal.h"

#define GIB (1024.0 * 1024.0 * 1024.0)
/* Libraries, MPI buffers, the allocator's slack: not modelled, a fixed allowance. */
#define OVERHEAD_BYTES (128.0 * 1024 * 1024)

static int cmp_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* The largest micro-batch of ds: the sum of the k longest examples' tokens and the k largest
 * target counts (an upper bound: both may not come from the same examples), and the longest
 * example. */
static int worst_batch(sp_dataset *ds, int k, int64_t *tokens, int64_t *targets, int64_t *longest,
                       sp_error *err) {
    int64_t n = sp_dataset_n_examples(ds);
    int64_t *len = malloc((size_t)(n > 0 ? n : 1) * sizeof *len);
    int64_t *tgt = malloc((size_t)(n > 0 ? n : 1) * sizeof *tgt);
    if (!len || !tgt) {
        free(len), free(tgt);
        return sp_fail(err, "out of memory estimating the memory a batch needs");
    }
    for (int64_t i = 0; i < n; i++)
        len[i] = sp_dataset_example_length(ds, i), tgt[i] = sp_dataset_example_targets(ds, i);
    qsort(len, (size_t)n, sizeof *len, cmp_desc);
    qsort(tgt, (size_t)n, sizeof *tgt, cmp_desc);
    *tokens = *targets = 0;
    for (int64_t i = 0; i < n && i < k; i++) *tokens += len[i], *targets += tgt[i];
    *longest = n > 0 ? len[0] : 0;
    free(len), free(tgt);
    return 0;
}

/* A value of /proc/meminfo in bytes, or -1. */
static double meminfo(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    double kib = -1;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, n) == 0 && line[n] == ':') {
            kib = strtod(line + n + 1, NULL);
            break;
        }
    if (f) fclose(f);
    return kib < 0 ? -1 : kib * 1024;
}

/* memory.max - memory.current of this process's cgroup (v2), or -1 without a limit. */
static double cgroup_room(void) {
    char line[4096], path[4200];
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (!f) return -1;
    const char *rel = NULL;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "0::", 3) == 0) {
            line[strcspn(line, "\n")] = 0;
            rel = line + 3;
            break;
        }
    fclose(f);
    if (!rel) return -1;
    double val[2] = {-1, -1};
    const char *names[2] = {"memory.max", "memory.current"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "/sys/fs/cgroup%s/%s", rel, names[i]);
        FILE *g = fopen(path, "r");
        char buf[64] = "";
        if (g && fgets(buf, sizeof buf, g) && strncmp(buf, "max", 3) != 0)
            val[i] = strtod(buf, NULL);
        if (g) fclose(g);
    }
    return val[0] < 0 ? -1 : val[0] - (val[1] > 0 ? val[1] : 0);
}

/* SP_MAX_MEMORY: bytes with an optional K, M or G suffix (powers of 1024); -1 when unset. */
static int max_memory_env(double *out, sp_error *err) {
    const char *s = getenv("SP_MAX_MEMORY");
    *out = -1;
    if (!s || !*s) return 0;
    char *end;
    double v = strtod(s, &end);
    double mul = *end == 'K' ? 1024.0 : *end == 'M' ? 1024.0 * 1024 : *end == 'G' ? GIB : 1;
    if (mul != 1) end++;
    if (end == s || *end || !(v > 0))
        return sp_fail(err, "SP_MAX_MEMORY='%s': expected a number of bytes, e.g. 4G or 512M", s);
    *out = v * mul;
    return 0;
}

/* What this rank may use, and a description of where the figure comes from. */
static int available(int local_ranks, double *bytes, char *why, size_t why_len, sp_error *err) {
    double cap;
    if (max_memory_env(&cap, err)) return -1;
    if (cap > 0) {
        *bytes = cap;
        snprintf(why, why_len, "SP_MAX_MEMORY");
        return 0;
    }
    double node = meminfo("MemAvailable"), cg = cgroup_room();
    const char *src = "MemAvailable of the node";
    if (cg >= 0 && (node < 0 || cg < node)) node = cg, src = "the cgroup's memory.max";
    if (node < 0) {
        *bytes = -1; /* nothing to compare with: no check */
        return 0;
    }
    *bytes = node / (local_ranks > 0 ? local_ranks : 1);
    snprintf(why, why_len, "%.2f GiB from %s / %d rank(s) on this node", node / GIB, src,
             local_ranks);
    return 0;
}

/* The model's share of this rank: its mapped bytes are shared by the ranks of the node, its
 * converted copies too when they were made once per node (sp_model_load_shared). */
static double model_bytes(const sp_model *m, int ranks) {
    double shared = (double)m->bytes_in_place + (m->copies_shared ? (double)m->bytes_converted : 0);
    return shared / ranks + (m->copies_shared ? 0 : (double)m->bytes_converted);
}

int sp__train_check_memory(const sp_model *m, sp_dataset *const *sets, int n_sets, int micro_batch,
                           int local_ranks, sp_error *err) {
    int64_t tokens = 0, targets = 0, longest = 0;
    for (int i = 0; i < n_sets; i++) {
        int64_t t = 0, g = 0, l = 0;
        if (!sets[i]) continue;
        if (worst_batch(sets[i], micro_batch, &t, &g, &l, err)) return -1;
        tokens = t > tokens ? t : tokens;
        targets = g > targets ? g : targets;
        longest = l > longest ? l : longest;
    }
    int ranks = local_ranks > 0 ? local_ranks : 1;
    double model = model_bytes(m, ranks);
    double act = (double)tokens * (double)sp_model_activation_bytes_per_token(m, (int)longest) +
                 (double)targets * m->cfg.vocab_size * sizeof(float);
    double need = model + act + OVERHEAD_BYTES, have;
    char why[160] = "";
    if (available(ranks, &have, why, sizeof why, err)) return -1;
    if (have < 0 || need <= have) return 0;
    return sp_fail(err,
                   "this run needs about %.2f GiB per rank (model %.2f GiB, activations %.2f GiB "
                   "for a micro-batch of up to %lld tokens, sequences up to %lld tokens), but "
                   "only %.2f GiB is available (%s); lower --micro-batch, prepare with a smaller "
                   "--max-length, or run fewer ranks per node",
                   need / GIB, model / GIB, act / GIB, (long long)tokens, (long long)longest,
                   have / GIB, why);
}

/* The micro_batch longest examples of ex: their tokens, and the longest. */
static int64_t worst_examples(const sp_examples *ex, int micro_batch, int64_t *longest) {
    int64_t *len = malloc((size_t)(ex->n > 0 ? ex->n : 1) * sizeof *len), tokens = 0;
    if (!len) return -1;
    for (int64_t i = 0; i < ex->n; i++) len[i] = ex->start[i + 1] - ex->start[i];
    qsort(len, (size_t)ex->n, sizeof *len, cmp_desc);
    for (int64_t i = 0; i < ex->n && i < micro_batch; i++) tokens += len[i];
    *longest = ex->n > 0 ? len[0] : 0;
    free(len);
    return tokens;
}

int sp__predict_check_memory(const sp_model *m, const sp_examples *ex, int micro_batch,
                             int seqs_per_example, int logit_rows, int max_prefix, int prefix_rows,
                             int local_ranks, sp_error *err) {
    int64_t longest, tokens = worst_examples(ex, micro_batch, &longest);
    if (tokens < 0) return sp_fail(err, "out of memory estimating the memory a batch needs");
    int ranks = local_ranks > 0 ? local_ranks : 1;
    double V4 = (double)m->cfg.vocab_size * sizeof(float);
    double rows = (double)tokens * seqs_per_example, seqs = (double)micro_batch * seqs_per_example;
    double model = model_bytes(m, ranks);
    /* the worker's buffers (one target per sequence) and predict's own logits */
    double act = rows * (double)sp_model_activation_bytes_per_token(m, (int)longest + max_prefix) +
                 seqs * V4 + (double)logit_rows * V4;
    double prefix = (double)sp_model_kv_cache_bytes(m, (size_t)prefix_rows);
    double need = model + act + prefix + OVERHEAD_BYTES, have;
    char why[160] = "";
    if (available(ranks, &have, why, sizeof why, err)) return -1;
    if (have < 0 || need <= have) return 0;
    return sp_fail(err,
                   "predicting needs about %.2f GiB per rank (model %.2f GiB, activations %.2f "
                   "GiB for micro-batches of up to %.0f tokens, sequences up to %lld tokens, "
                   "key/value prefixes %.2f GiB), but only %.2f GiB is available (%s); lower "
                   "--micro-batch or --max-length, or run fewer ranks per node",
                   need / GIB, model / GIB, act / GIB, rows, (long long)longest, prefix / GIB,
                   have / GIB, why);
}

/* The most rows a request's own cache holds (generator.c's own_rows): its tokens and what it
 * generates, within n_positions; an encoder-decoder's encoder rows and at most n_positions
 * decoder rows. */
static size_t own_cache_rows(const sp_model *m, int max_tokens, int max_new_tokens) {
    size_t n_ctx = (size_t)m->cfg.n_ctx, tok = (size_t)max_tokens, gen = (size_t)max_new_tokens;
    if (sp__family_of(m->cfg.arch)->mask == SP_MASK_SEQ2SEQ)
        return tok + (gen < n_ctx ? gen : n_ctx);
    return tok + gen < n_ctx ? tok + gen : n_ctx;
}

int sp_generate_check_memory(const sp_model *m, int batch, int max_tokens, int max_new_tokens,
                             int n_prompts, int max_shared, int local_ranks, sp_error *err) {
    int ranks = local_ranks > 0 ? local_ranks : 1;
    size_t B = (size_t)(batch > 0 ? batch : 1), V = (size_t)m->cfg.vocab_size;
    int past = max_shared + max_tokens + max_new_tokens;
    double model = model_bytes(m, ranks);
    /* the worker's buffers for the prefill (the largest step), the batch's logits and the
     * sampler's scratch (a candidate and a float per vocabulary entry) */
    double act = (double)sp_model_generate_bytes(m, B * (size_t)max_tokens, B, max_tokens, past) +
                 (double)(B * V * sizeof(float) + V * 12);
    /* a request's own cache: its rows and the generated ones, at most n_positions in all (T5:
     * every decoder layer's cross-attention rows of its encoder input and a self-attention row
     * per generated token, at most n_positions of those, L x 2 x rows x kv_dim floats alike); a
     * prompt's shared rows (T5: its key/value prefix alone; its encoder is bidirectional, so no
     * encoder row is shared, and max_shared counts the prompt's rows too: an overestimate) */
    double cache =
        (double)B * sp_model_kv_cache_bytes(m, own_cache_rows(m, max_tokens, max_new_tokens)) +
        (double)n_prompts * sp_model_kv_cache_bytes(m, (size_t)max_shared);
    double need = model + act + cache + OVERHEAD_BYTES, have;
    char why[160] = "";
    if (available(ranks, &have, why, sizeof why, err)) return -1;
    if (have < 0 || need <= have) return 0;
    return sp_fail(err,
                   "generating needs about %.2f GiB per rank (model %.2f GiB, activations %.2f "
                   "GiB, key/value caches %.2f GiB for %zu requests of up to %d + %d tokens), but "
                   "only %.2f GiB is available (%s); lower --batch or --max-new-tokens",
                   need / GIB, model / GIB, act / GIB, cache / GIB, B, max_tokens, max_new_tokens,
                   have / GIB, why);
}
