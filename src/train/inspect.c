/* sp_prompt_inspect: nearest vocabulary embeddings and norms of a prompt's soft tokens. */
#include "softprompt/inspect.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
static double percentile(const double *x, int n, double p) {
    double pos = p / 100.0 * (n - 1);
    int lo = (int)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    return x[lo] + (pos - lo) * (x[hi] - x[lo]);
}

static void stats(const double *sorted, int n, sp_norm_stats *s) {
    double sum = 0, sq = 0;
    for (int i = 0; i < n; i++) sum += sorted[i];
    s->mean = sum / n;
    for (int i = 0; i < n; i++) sq += (sorted[i] - s->mean) * (sorted[i] - s->mean);
    s->std = sqrt(sq / n), s->min = sorted[0], s->max = sorted[n - 1];
    s->p1 = percentile(sorted, n, 1), s->p5 = percentile(sorted, n, 5);
    s->p25 = percentile(sorted, n, 25), s->p50 = percentile(sorted, n, 50);
    s->p75 = percentile(sorted, n, 75), s->p95 = percentile(sorted, n, 95);
    s->p99 = percentile(sorted, n, 99);
}

/* Inserts (id, c) into the best-first list of length k (ties keep the lower id first). */
static void insert(int32_t *ids, double *cos, int k, int *have, int32_t id, double c) {
    if (*have == k && !(c > cos[k - 1])) return;
    int at = *have < k ? (*have)++ : k - 1;
    while (at > 0 && c > cos[at - 1]) ids[at] = ids[at - 1], cos[at] = cos[at - 1], at--;
    ids[at] = id, cos[at] = c;
}

/* Row p's nearest vocabulary rows by cosine (wnorm: the rows' norms; e: scratch of d). */
static void nearest(const sp_model *m, const double *wnorm, const float *x, double xn, int top,
                    int32_t *ids, double *cos, float *e) {
    int d = sp_config_embed_dim(&m->cfg), have = 0;
    for (int32_t v = 0; v < m->cfg.vocab_size; v++) {
        sp_model_input_row(m, v, e);
        double dot = 0;
        for (int j = 0; j < d; j++) dot += (double)e[j] * x[j];
        double c = wnorm[v] > 0 && xn > 0 ? dot / (wnorm[v] * xn) : 0;
        insert(ids, cos, top, &have, v, c);
    }
}

int sp_prompt_inspect(const sp_model *m, const float *prompt, int n_prompt, int top,
                      sp_prompt_view *out, sp_error *err) {
    int V = m->cfg.vocab_size, d = sp_config_embed_dim(&m->cfg); /* the table's width */
    memset(out, 0, sizeof *out);
    if (top < 1 || top > V) return sp_fail(err, "--top %d: expected 1..%d", top, V);
    double *wnorm = malloc((size_t)V * sizeof *wnorm), *sorted = malloc((size_t)V * sizeof *sorted);
    float *e = malloc((size_t)d * sizeof *e);
    out->norm = malloc((size_t)n_prompt * sizeof *out->norm);
    out->norm_rank = malloc((size_t)n_prompt * sizeof *out->norm_rank);
    out->nearest = malloc((size_t)n_prompt * top * sizeof *out->nearest);
    out->cosine = malloc((size_t)n_prompt * top * sizeof *out->cosine);
    if (!wnorm || !sorted || !e || !out->norm || !out->norm_rank || !out->nearest || !out->cosine) {
        free(wnorm), free(sorted), free(e), sp_prompt_view_free(out);
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
        int below = 0;
        while (below < V && sorted[below] < xn) below++;
        out->norm_rank[p] = 100.0 * below / V;
        nearest(m, wnorm, x, xn, top, out->nearest + (size_t)p * top, out->cosine + (size_t)p * top,
                e);
    }
    free(wnorm), free(sorted), free(e);
    return 0;
}
