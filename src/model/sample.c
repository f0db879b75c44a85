/* Choosing the next token from a row of logits (softprompt/generate.h, sp_sample_token), with
 * the semantics of transformers' logits processors, applied in the order generate() applies
 * them: RepetitionPenaltyLogitsProcessor, then (sampling only) TemperatureLogitsWarper,
 * TopKLogitsWarper and TopPLogitsWarper, then a draw from the softmax of what is left. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "softprompt/generate.h"

void sp_sampling_default(sp_sampling *s) {
    *s = (sp_sampling){
        .do_sample = 0, .temperature = 1.0, .top_k = 0, .top_p = 1.0, .repetition_penalty = 1.0};
}

int sp_sampling_check(const sp_sampling *s, sp_error *err) {
    if (!(s->temperature > 0) || !isfinite(s->temperature))
        return sp_fail(err, "sampling: temperature %g, expected > 0", s->temperature);
    if (s->top_k < 0) return sp_fail(err, "sampling: top_k %d, expected >= 0", s->top_k);
    if (!(s->top_p > 0 && s->top_p <= 1))
        return sp_fail(err, "sampling: top_p %g, expected in (0, 1]", s->top_p);
    if (!(s->repetition_penalty > 0) || !isfinite(s->repetition_penalty))
        return sp_fail(err, "sampling: repetition_penalty %g, expected > 0", s->repetition_penalty);
    return 0;
}

/* Each vocabulary id of the context once: a positive logit is divided by the penalty, a
 * negative one multiplied. mark [vocab] is zero on entry and on return. */
static void repetition_penalty(float *logits, int vocab, float penalty, const int32_t *context,
                               size_t n, unsigned char *mark) {
    for (size_t i = 0; i < n; i++) {
        int32_t id = context[i];
        if (id < 0 || id >= vocab || mark[id]) continue;
        mark[id] = 1;
        float v = logits[id];
        logits[id] = v < 0 ? v * penalty : v / penalty;
    }
    for (size_t i = 0; i < n; i++)
        if (context[i] >= 0 && context[i] < vocab) mark[context[i]] = 0;
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* A candidate token and its logit, sorted by decreasing logit (ties: smaller id first). */
typedef struct cand {
    float logit;
    int32_t id;
} cand;

static int cmp_cand(const void *a, const void *b) {
    const cand *x = a, *y = b;
    if (x->logit != y->logit) return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

/* The k-th largest of x [n] (1 <= k <= n), by selection on a copy (tmp [n]). */
static float kth_largest(const float *x, int n, int k, float *tmp) {
    memcpy(tmp, x, (size_t)n * sizeof *tmp);
    int lo = 0, hi = n - 1, want = k - 1; /* index in decreasing order */
    while (lo < hi) {
        float pivot = tmp[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (tmp[i] > pivot) i++;
            while (tmp[j] < pivot) j--;
            if (i <= j) {
                float t = tmp[i];
                tmp[i] = tmp[j], tmp[j] = t;
                i++, j--;
            }
        }
        if (want <= j)
            hi = j;
        else if (want >= i)
            lo = i;
        else
            break;
    }
    return tmp[want];
}

/* The candidates with a logit >= floor, sorted; their count. */
static int collect(const float *x, int n, float floor, cand *c) {
    int k = 0;
    for (int i = 0; i < n; i++)
        if (x[i] >= floor) c[k++] = (cand){x[i], i};
    qsort(c, (size_t)k, sizeof *c, cmp_cand);
    return k;
}

/* The sorted candidates that top-k and top-p keep; their count. Without top-p only the top-k
 * floor matters; with it, candidates are collected within a logit window below the maximum
 * that widens until their probability mass reaches top_p (tokens outside the window are less
 * likely than every token inside, so the kept ones are among them), instead of sorting the
 * whole vocabulary. */
static int keep(const float *x, int n, const sp_sampling *s, float *tmp, cand *c) {
    float top = sp__max(x, n);
    float floor = s->top_k > 0 && s->top_k < n ? kth_largest(x, n, s->top_k, tmp) : -INFINITY;
    if (s->top_p >= 1) return collect(x, n, floor, c);
    double z = 0; /* the softmax's normaliser over the top-k set */
    for (int i = 0; i < n; i++)
        if (x[i] >= floor) z += exp((double)x[i] - top);
    for (float window = 16;; window *= 2) {
        float lo = top - window > floor ? top - window : floor;
        int k = collect(x, n, lo, c);
        double mass = 0;
        for (int j = 0; j < k; j++) mass += exp((double)c[j].logit - top) / z;
        if (mass >= s->top_p || lo == floor || !isfinite(lo)) {
            /* transformers removes a token when the mass of the tokens not above it is <=
             * 1 - top_p: keep while the mass before it is < top_p, at least one */
            double before = 0;
            int kept = 0;
            while (kept < k && (kept == 0 || before < s->top_p))
                before += exp((double)c[kept++].logit - top) / z;
            return kept;
        }
    }
}

/* A draw from the softmax over c [k] (sorted). */
static int32_t draw(const cand *c, int k, sp_rng *rng) {
    double total = 0;
    for (int j = 0; j < k; j++) total += exp((double)c[j].logit - c[0].logit);
    double u = sp_rng_uniform(rng) * total, acc = 0;
    for (int j = 0; j < k; j++) {
        acc += exp((double)c[j].logit - c[0].logit);
        if (u < acc) return c[j].id;
    }
    return c[k - 1].id;
}

int32_t sp_sample_token(float *logits, int vocab, const sp_sampling *s, const int32_t *context,
                        size_t n_context, sp_rng *rng, sp_error *err) {
    if (s->repetition_penalty != 1.0 && n_context > 0) {
        unsigned char *mark = calloc((size_t)vocab, 1);
        if (!mark) return sp_fail(err, "out of memory applying the repetition penalty");
        repetition_penalty(logits, vocab, (float)s->repetition_penalty, context, n_context, mark);
        free(mark);
    }
    if (!isfinite(sp__max(logits, vocab)))
        return sp_fail(err, "sampling: the logits are not finite (largest %g)",
                       (double)sp__max(logits, vocab));
    if (!s->do_sample) return argmax(logits, vocab);
    if (s->temperature != 1.0)
        for (int i = 0; i < vocab; i++) logits[i] = logits[i] / (float)s->temperature;
    float *tmp = malloc((size_t)vocab * sizeof *tmp);
    cand *c = malloc((size_t)vocab * sizeof *c);
    int32_t id = -1;
    if (tmp && c) id = draw(c, keep(logits, vocab, s, tmp, c), rng);
    free(tmp);
    free(c);
    return id >= 0 ? id : sp_fail(err, "out of memory sampling a token");
}
