/* sp_prompt_inspect: nearest vocabulary embeddings and norms of a prompt's soft tokens;
 * sp_prefix_inspect: the same for a key/value prefix, through the first layer's keys and values. */
#include "softprompt/inspect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/engine.h"

void sp_prompt_view_free(sp_prompt_view *v) {
    free(v->norm), free(v->norm_rank), free(v->nearest), free(v->cosine);
    memset(v, 0, sizeof *v);
}

static double norm_of(const float *x, int d) {
    double s = 0;
    for (int j = 0; j < d; j++) s += (double)x[j] * x[j];
    return sqrt(s);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* NumPy's percentile (linear) of sorted x [n]. */
static double percentile(const double *x, size_t n, double p) {
    double pos = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    return x[lo] + (pos - lo) * (x[hi] - x[lo]);
}

/* The percent of sorted [n] below x. */
static double rank_of(const double *sorted, size_t n, double x) {
    size_t lo = 0, hi = n; /* the first element >= x */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sorted[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 100.0 * (double)lo / (double)n;
}

static void stats(const double *sorted, size_t n, sp_norm_stats *s) {
    double sum = 0, sq = 0;
    for (size_t i = 0; i < n; i++) sum += sorted[i];
    s->mean = sum / (double)n;
    for (size_t i = 0; i < n; i++) sq += (sorted[i] - s->mean) * (sorted[i] - s->mean);
    s->std = sqrt(sq / (double)n), s->min = sorted[0], s->max = sorted[n - 1];
    s->p1 = percentile(sorted, n, 1), s->p5 = percentile(sorted, n, 5);
    s->p25 = percentile(sorted, n, 25), s->p50 = percentile(sorted, n, 50);
    s->p75 = percentile(sorted, n, 75), s->p95 = percentile(sorted, n, 95);
    s->p99 = percentile(sorted, n, 99);
}

/* One candidate of a best-first list: its score and, for a prefix, the two cosines. */
typedef struct near {
    int32_t id;
    double score, key, value;
} near;

/* Inserts c into the best-first list of length k (ties keep the lower id first, as ids come in
 * ascending order). */
static void insert(near *list, int k, int *have, near c) {
    if (*have == k && !(c.score > list[k - 1].score)) return;
    int at = *have < k ? (*have)++ : k - 1;
    while (at > 0 && c.score > list[at - 1].score) list[at] = list[at - 1], at--;
    list[at] = c;
}

static double cosine(const float *x, double xn, const float *y, double yn, int d) {
    double dot = 0;
    for (int j = 0; j < d; j++) dot += (double)x[j] * y[j];
    return xn > 0 && yn > 0 ? dot / (xn * yn) : 0;
}

/* Row p's nearest vocabulary rows by cosine (wnorm: the rows' norms; e: scratch of d). */
static void nearest(const sp_model *m, const double *wnorm, const float *x, double xn, int top,
                    int32_t *ids, double *cos, float *e, near *list) {
    int d = sp_config_embed_dim(&m->cfg), have = 0;
    for (int32_t v = 0; v < m->cfg.vocab_size; v++) {
        sp_model_input_row(m, v, e);
        insert(list, top, &have, (near){v, cosine(e, wnorm[v], x, xn, d), 0, 0});
    }
    for (int k = 0; k < top; k++) ids[k] = list[k].id, cos[k] = list[k].score;
}

int sp_prompt_inspect(const sp_model *m, const float *prompt, int n_prompt, int top,
                      sp_prompt_view *out, sp_error *err) {
    int V = m->cfg.vocab_size, d = sp_config_embed_dim(&m->cfg); /* the table's width */
    memset(out, 0, sizeof *out);
    if (top < 1 || top > V) return sp_fail(err, "--top %d: expected 1..%d", top, V);
    double *wnorm = malloc((size_t)V * sizeof *wnorm), *sorted = malloc((size_t)V * sizeof *sorted);
    float *e = malloc((size_t)d * sizeof *e);
    near *list = malloc((size_t)top * sizeof *list);
    out->norm = malloc((size_t)n_prompt * sizeof *out->norm);
    out->norm_rank = malloc((size_t)n_prompt * sizeof *out->norm_rank);
    out->nearest = malloc((size_t)n_prompt * top * sizeof *out->nearest);
    out->cosine = malloc((size_t)n_prompt * top * sizeof *out->cosine);
    if (!wnorm || !sorted || !e || !list || !out->norm || !out->norm_rank || !out->nearest ||
        !out->cosine) {
        free(wnorm), free(sorted), free(e), free(list), sp_prompt_view_free(out);
        return sp_fail(err, "out of memory");
    }
    out->n_prompt = n_prompt, out->top = top;
    for (int v = 0; v < V; v++) {
        sp_model_input_row(m, v, e);
        sorted[v] = wnorm[v] = norm_of(e, d);
    }
    qsort(sorted, (size_t)V, sizeof *sorted, cmp_double);
    stats(sorted, V, &out->vocab);
    for (int p = 0; p < n_prompt; p++) {
        const float *x = prompt + (size_t)p * d;
        double xn = out->norm[p] = norm_of(x, d);
        out->norm_rank[p] = rank_of(sorted, V, xn);
        nearest(m, wnorm, x, xn, top, out->nearest + (size_t)p * top, out->cosine + (size_t)p * top,
                e, list);
    }
    free(wnorm), free(sorted), free(e), free(list);
    return 0;
}

/* ---- a key/value prefix ---------------------------------------------------------------------- */

void sp_prefix_view_free(sp_prefix_view *v) {
    free(v->key_norm), free(v->value_norm), free(v->key_rank), free(v->value_rank);
    free(v->nearest), free(v->score), free(v->key_cosine), free(v->value_cosine);
    memset(v, 0, sizeof *v);
}

/* The vocabulary at the prefix's positions, a chunk of tokens at a time. Where positions enter
 * before the first norm (learned positions) sequence t of a chunk is its token repeated span =
 * n_prefix times, so position j holds the token's layer-0 key and value at position j. Where a
 * position only turns the key (rotary) or nothing (ALiBi), span is 1: every token once at
 * position 0, compared with the prefix's keys turned back to position 0 (a rotation keeps
 * cosines and norms). */
typedef struct vocab_pass {
    sp_worker *w;
    int P, kvd, span, chunk; /* tokens per engine call */
    int32_t *tokens, *start;
    float *kv; /* [2, chunk * span, kvd]: a chunk's keys, then its values */
} vocab_pass;

static int vocab_chunk(vocab_pass *vp, int32_t first, int n, sp_error *err) {
    for (int t = 0; t < n; t++) {
        vp->start[t + 1] = (t + 1) * vp->span;
        for (int j = 0; j < vp->span; j++) vp->tokens[t * vp->span + j] = first + t;
    }
    vp->start[0] = 0;
    sp_batch b = {n, vp->start, vp->tokens, 0, NULL, NULL, NULL, NULL};
    return sp_engine_first_kv(vp->w, &b, vp->kv, err);
}

static int prefix_view_alloc(sp_prefix_view *out, int L, int P, int top) {
    size_t lp = (size_t)L * P, pt = (size_t)P * top;
    out->key_norm = malloc(lp * sizeof *out->key_norm);
    out->value_norm = malloc(lp * sizeof *out->value_norm);
    out->key_rank = malloc((size_t)P * sizeof *out->key_rank);
    out->value_rank = malloc((size_t)P * sizeof *out->value_rank);
    out->nearest = malloc(pt * sizeof *out->nearest);
    out->score = malloc(pt * sizeof *out->score);
    out->key_cosine = malloc(pt * sizeof *out->key_cosine);
    out->value_cosine = malloc(pt * sizeof *out->value_cosine);
    return out->key_norm && out->value_norm && out->key_rank && out->value_rank && out->nearest &&
                   out->score && out->key_cosine && out->value_cosine
               ? 0
               : -1;
}

/* Every token's layer-0 key and value at each position j, scored against row j of first [2, P,
 * kvd] (the prefix's layer 0, keys turned back when span is 1), whose norms are pk_norm /
 * pv_norm [P]; the tokens' norms into knorm / vnorm [V * span]. */
static int vocab_scan(vocab_pass *vp, const sp_model *m, const float *first, const double *pk_norm,
                      const double *pv_norm, int top, near *lists, int *have, double *knorm,
                      double *vnorm, sp_error *err) {
    int V = m->cfg.vocab_size, P = vp->P, kvd = vp->kvd, span = vp->span;
    for (int32_t t0 = 0; t0 < V; t0 += vp->chunk) {
        int n = V - t0 < vp->chunk ? V - t0 : vp->chunk;
        if (vocab_chunk(vp, t0, n, err)) return -1;
        size_t rows = (size_t)n * span; /* the chunk's keys, then its values */
        for (int t = 0; t < n; t++)
            for (int j = 0; j < P; j++) {
                size_t row = (size_t)t * span + (span > 1 ? j : 0);
                const float *k = vp->kv + row * kvd, *v = vp->kv + (rows + row) * kvd;
                const float *pk = first + (size_t)j * kvd, *pv = first + ((size_t)P + j) * kvd;
                size_t at = (size_t)t0 * span + row;
                double kn = knorm[at] = norm_of(k, kvd), vn = vnorm[at] = norm_of(v, kvd);
                near c = {t0 + t, 0, cosine(k, kn, pk, pk_norm[j], kvd),
                          cosine(v, vn, pv, pv_norm[j], kvd)};
                c.score = (c.key + c.value) / 2;
                insert(lists + (size_t)j * top, top, &have[j], c);
            }
    }
    return 0;
}

int sp_prefix_inspect(const sp_model *m, const float *prefix, int n_layer, int n_prefix, int kv_dim,
                      int top, sp_prefix_view *out, sp_error *err) {
    const sp_model_config *c = &m->cfg;
    int V = c->vocab_size, P = n_prefix, L = n_layer, kvd = kv_dim;
    memset(out, 0, sizeof *out);
    if (top < 1 || top > V) return sp_fail(err, "--top %d: expected 1..%d", top, V);
    if (L != c->n_layer || kvd != sp_config_kv_heads(c) * sp_config_head_dim(c) || P < 1 ||
        P >= c->n_ctx)
        return sp_fail(err,
                       "a key/value prefix of %d layers x %d rows x %d: the model has %d layers "
                       "of kv_dim %d and %d positions",
                       L, P, kvd, c->n_layer, sp_config_kv_heads(c) * sp_config_head_dim(c),
                       c->n_ctx);
    vocab_pass vp = {.P = P, .kvd = kvd, .span = sp_engine_first_kv_turns(m) ? 1 : P};
    vp.chunk = vp.span < 4096 ? 4096 / vp.span : 1;
    size_t vp_rows = (size_t)V * vp.span;
    vp.w = sp_worker_new(m);
    vp.tokens = malloc((size_t)vp.chunk * vp.span * sizeof *vp.tokens);
    vp.start = malloc(((size_t)vp.chunk + 1) * sizeof *vp.start);
    vp.kv = malloc((size_t)vp.chunk * vp.span * 2 * kvd * sizeof *vp.kv);
    near *lists = malloc((size_t)P * top * sizeof *lists);
    int *have = calloc((size_t)P, sizeof *have), rc = -1;
    double *knorm = malloc(vp_rows * sizeof *knorm), *vnorm = malloc(vp_rows * sizeof *vnorm);
    float *first = malloc((size_t)P * 2 * kvd * sizeof *first); /* layer 0 [2, P, kvd] */
    if (!vp.w || !vp.tokens || !vp.start || !vp.kv || !lists || !have || !knorm || !vnorm ||
        !first || prefix_view_alloc(out, L, P, top)) {
        sp_fail(err, "out of memory");
        goto done;
    }
    memcpy(first, prefix, (size_t)P * 2 * kvd * sizeof *first);
    if (vp.span == 1 && sp_engine_first_keys_unturn(vp.w, first, P, err)) goto done;
    out->n_layer = L, out->n_prefix = P, out->kv_dim = kvd, out->top = top;
    for (int l = 0; l < L; l++) /* each row's key and value norms (a turn keeps them) */
        for (int j = 0; j < P; j++) {
            const float *k = prefix + ((size_t)l * 2 * P + j) * kvd;
            out->key_norm[(size_t)l * P + j] = norm_of(k, kvd);
            out->value_norm[(size_t)l * P + j] = norm_of(k + (size_t)P * kvd, kvd);
        }
    if (vocab_scan(&vp, m, first, out->key_norm, out->value_norm, top, lists, have, knorm, vnorm,
                   err))
        goto done;
    for (size_t i = 0; i < (size_t)P * top; i++) {
        out->nearest[i] = lists[i].id, out->score[i] = lists[i].score;
        out->key_cosine[i] = lists[i].key, out->value_cosine[i] = lists[i].value;
    }
    qsort(knorm, vp_rows, sizeof *knorm, cmp_double);
    qsort(vnorm, vp_rows, sizeof *vnorm, cmp_double);
    stats(knorm, vp_rows, &out->vocab_key);
    stats(vnorm, vp_rows, &out->vocab_value);
    for (int j = 0; j < P; j++) {
        out->key_rank[j] = rank_of(knorm, vp_rows, out->key_norm[j]);
        out->value_rank[j] = rank_of(vnorm, vp_rows, out->value_norm[j]);
    }
    rc = 0;
done:
    if (rc) sp_prefix_view_free(out);
    sp_worker_free(vp.w);
    free(vp.tokens), free(vp.start), free(vp.kv), free(lists), free(have), free(knorm);
    free(vnorm), free(first);
    return rc;
}
