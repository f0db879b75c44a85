/* T5 generation (sp_generate_extend of an encoder-decoder; the cache's layout is in t5.h): the
 * encoder runs once per request (t5.c's blocks, one layer's buffers), every decoder layer's
 * cross-attention keys and values of its output are computed once into the request's cache, and
 * each decoder step runs its new rows through the decoder's blocks as t5.c's forward does:
 * self-attention over a key/value prefix (the sequence's shared rows: prefix tuning, positions
 * 0..P-1), the cached rows and the new ones (the causal relative position bias of each key's
 * decoder position, the decoder's from P), cross-attention over the cached encoder rows (no
 * bias), the MLP, the final norm and the head (scaled by d_model^-0.5 when tied) at each
 * sequence's last row. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "model/steps.h"
#include "model/t5.h"
#include "model/worker.h"

/* Sizes of one step: R decoder rows, nl logit rows, attention over at most keys keys. */
typedef struct gen_dims {
    size_t R, nl, keys;
    int d, F, qd, gated;
} gen_dims;

/* The step's buffers. Decoder rows are packed by sequence; row r is sequence seq[r]'s decoder
 * position pos[r]. */
struct sp__t5_gen {
    float *mem;
    size_t cap; /* floats */
    int *ints;
    size_t int_cap;
    float *x, *y;             /* [R, d] the residual stream (two, swapped) */
    float *ln, *rstd;         /* [R, d], [R] a norm's output */
    float *q, *k, *v;         /* [R, qd] */
    float *att;               /* [R, qd] */
    float *fc, *up, *aux;     /* [R, F] (up, aux: gated) */
    float *act;               /* [R, F] */
    float *scores;            /* [keys] one head's scores of one row */
    float *top, *lnf, *lnf_r; /* [nl, d], [nl, d], [nl] */
    int *seq, *pos, *bk;      /* [R], [R], [keys] */
};

static size_t layout(sp__t5_gen *g, const gen_dims *z, float *base) {
    size_t at = 0, R = z->R, d = (size_t)z->d, F = (size_t)z->F, qd = (size_t)z->qd;
#define TAKE(n) (at += (n), base ? base + at - (n) : NULL)
    float *x = TAKE(R * d), *y = TAKE(R * d), *ln = TAKE(R * d), *rstd = TAKE(R);
    float *q = TAKE(R * qd), *k = TAKE(R * qd), *v = TAKE(R * qd), *att = TAKE(R * qd);
    float *fc = TAKE(R * F), *up = z->gated ? TAKE(R * F) : NULL;
    float *aux = z->gated ? TAKE(R * F) : NULL, *act = TAKE(R * F);
    float *scores = TAKE(z->keys);
    float *top = TAKE(z->nl * d), *lnf = TAKE(z->nl * d), *lnf_r = TAKE(z->nl);
#undef TAKE
    if (base) {
        g->x = x, g->y = y, g->ln = ln, g->rstd = rstd, g->q = q, g->k = k, g->v = v;
        g->att = att, g->fc = fc, g->up = up, g->aux = aux, g->act = act, g->scores = scores;
        g->top = top, g->lnf = lnf, g->lnf_r = lnf_r;
    }
    return at;
}

static size_t layout_ints(const gen_dims *z) {
    return 2 * z->R + z->keys;
}

static gen_dims dims_of(const sp_model *m, size_t R, size_t nl, size_t keys) {
    const sp_model_config *c = &m->cfg;
    return (gen_dims){R,          nl > 0 ? nl : 1, keys > 0 ? keys : 1,
                      c->d_model, c->d_ff,         c->n_head * sp_config_head_dim(c),
                      c->ff_gated};
}

size_t sp__t5_generate_bytes(const sp_model *m, size_t n_rows, size_t n_logits, int max_new,
                             int max_past) {
    gen_dims z = dims_of(m, n_rows, n_logits, (size_t)max_past + (size_t)max_new + 1);
    return sp__t5_encode_bytes(m, n_rows, max_new) + layout(NULL, &z, NULL) * sizeof(float) +
           layout_ints(&z) * sizeof(int) + sizeof(sp__t5_gen);
}

void sp__t5_gen_free(sp__t5_gen *g) {
    if (!g) return;
    free(g->mem), free(g->ints);
    free(g);
}

size_t sp__t5_gen_bytes(const sp__t5_gen *g) {
    return g ? g->cap * sizeof(float) + g->int_cap * sizeof(int) + sizeof *g : 0;
}

/* The worker's step buffers for z (grown, never shrunk); NULL when out of memory. */
static sp__t5_gen *reserve(sp_worker *w, const gen_dims *z) {
    if (!w->t5gen && !(w->t5gen = calloc(1, sizeof *w->t5gen))) return NULL;
    sp__t5_gen *g = w->t5gen;
    size_t need = layout(NULL, z, NULL), ints = layout_ints(z);
    if (need > g->cap) {
        free(g->mem);
        g->mem = malloc(need * sizeof(float));
        g->cap = g->mem ? need : 0;
    }
    if (ints > g->int_cap) {
        free(g->ints);
        g->ints = malloc(ints * sizeof(int));
        g->int_cap = g->ints ? ints : 0;
    }
    if (!g->mem || !g->ints) return NULL;
    layout(g, z, g->mem);
    g->seq = g->ints, g->pos = g->ints + z->R, g->bk = g->ints + 2 * z->R;
    return g;
}

/* ---- the encoder and the cross-attention rows ------------------------------------------------ */

/* Runs the encoder over the sequences whose caches are empty (their tokens) and writes every
 * decoder layer's cross-attention keys and values of its output as their caches' first rows.
 * -1 when out of memory (nothing appended). */
static int prefill_encoder(sp_worker *w, const sp_gen_seq *seqs, int n_seq,
                           const int32_t *seq_start, const int32_t *tokens) {
    const sp_model *m = w->m;
    int n_enc = 0;
    size_t n_tok = 0;
    for (int s = 0; s < n_seq; s++)
        if (sp_kv_cache_len(seqs[s].own) == 0)
            n_enc++, n_tok += (size_t)(seq_start[s + 1] - seq_start[s]);
    if (n_enc == 0) return 0;
    int32_t *start = malloc(((size_t)n_enc + 1) * sizeof *start);
    int32_t *tok = malloc(n_tok * sizeof *tok);
    const float **prompts = malloc((size_t)n_enc * sizeof *prompts);
    int rc = start && tok && prompts ? 0 : -1;
    if (rc == 0) start[0] = 0;
    for (int s = 0, e = 0; rc == 0 && s < n_seq; s++) {
        if (sp_kv_cache_len(seqs[s].own) != 0) continue;
        int len = seq_start[s + 1] - seq_start[s];
        memcpy(tok + start[e], tokens + seq_start[s], (size_t)len * sizeof *tok);
        start[e + 1] = start[e] + len;
        prompts[e++] = seqs[s].prompt;
    }
    sp_batch b = {.n_seq = n_enc, .seq_start = start, .tokens = tok};
    const float *enc = rc == 0 ? sp__t5_encode(w, &b, prompts) : NULL;
    int L = m->cfg.n_layer, d = m->cfg.d_model;
    for (int s = 0, e = 0; enc && s < n_seq; s++) {
        sp_kv_cache *c = seqs[s].own;
        if (sp_kv_cache_len(c) != 0) continue;
        int len = start[e + 1] - start[e];
        const float *rows = enc + (size_t)start[e++] * d;
        for (int l = 0; l < L; l++) {
            const sp_layer *p = &m->layers[L + l];
            sp__linear_fwd(c->layer[l].k, c->width, rows, d, &p->xk, len);
            sp__linear_fwd(c->layer[l].v, c->width, rows, d, &p->xv, len);
            c->layer[l].len = len;
        }
        c->enc = len;
    }
    free(start), free(tok), free(prompts);
    return enc ? 0 : -1;
}

/* ---- decoder steps --------------------------------------------------------------------------- */

/* Keys and values an attention reads: n0 rows of K0, V0 (a prefix; 0: none), then n rows of K,
 * V, all rows of width ld. */
typedef struct gen_keys {
    const float *K0, *V0, *K, *V;
    int n0, n, ld;
} gen_keys;

/* out [qd] = attention of query row q [qd] over the keys and values of kv for every head; self:
 * the decoder's causal bias of the query over keys 0..n0+n-1 (g->bk holds their buckets), else
 * none (cross-attention). */
static void attend(float *out, const float *q, const gen_keys *kv, const sp_model *m,
                   const sp__t5_gen *g, int self) {
    int H = m->cfg.n_head, hd = sp_config_head_dim(&m->cfg), n0 = kv->n0, n = n0 + kv->n;
    for (int h = 0; h < H; h++) {
        float *sc = g->scores;
        if (n0) /* q kᵀ, not scaled */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n0, hd, 1.0f, kv->K0 + h * hd, kv->ld,
                        q + h * hd, 1, 0.0f, sc, 1);
        cblas_sgemv(CblasRowMajor, CblasNoTrans, kv->n, hd, 1.0f, kv->K + h * hd, kv->ld,
                    q + h * hd, 1, 0.0f, sc + n0, 1);
        if (self)
            for (int j = 0; j < n; j++) sc[j] += m->dec_rel_bias[(size_t)g->bk[j] * H + h];
        float mx = sp__max(sc, n), inv = 1.0f / sp__exp_shift_sum(sc, n, mx);
        for (int j = 0; j < n; j++) sc[j] *= inv;
        cblas_sgemv(CblasRowMajor, CblasTrans, kv->n, hd, 1.0f, kv->V + h * hd, kv->ld, sc + n0, 1,
                    0.0f, out + h * hd, 1);
        if (n0)
            cblas_sgemv(CblasRowMajor, CblasTrans, n0, hd, 1.0f, kv->V0 + h * hd, kv->ld, sc, 1,
                        1.0f, out + h * hd, 1);
    }
}

/* Self-attention of the R new rows of layer l: their keys and values appended to each
 * sequence's cache, then each row over its sequence's key/value prefix (shared rows, positions
 * 0..P-1) and its decoder rows up to its own position (P + pos). */
static void self_attention(const sp_model *m, sp__t5_gen *g, const sp_gen_seq *seqs, int l,
                           size_t R) {
    const sp_model_config *c = &m->cfg;
    int qd = c->n_head * sp_config_head_dim(c);
    for (size_t r = 0; r < R; r++) {
        sp_kv_cache *cache = seqs[g->seq[r]].own;
        sp__kv_past row = {g->k + r * qd, g->v + r * qd, 1, qd};
        sp__kv_append(&cache->layer[l], &row); /* fits: validated */
    }
    int last_pos = -1, last_pre = -1;
    for (size_t r = 0; r < R; r++) {
        const sp_gen_seq *sq = &seqs[g->seq[r]];
        const sp__kv_cache *lc = &sq->own->layer[l];
        const sp__kv_cache *pc = sq->shared ? &sq->shared->layer[l] : NULL;
        int pos = g->pos[r], pre = pc ? pc->len : 0, n = pre + pos + 1;
        if (pos != last_pos || pre != last_pre) /* buckets of keys 0..pre+pos seen from pre+pos */
            for (int j = 0; j < n; j++)
                g->bk[j] = sp__t5_bucket(j - pre - pos, 0, c->rel_buckets, c->rel_max_distance);
        last_pos = pos, last_pre = pre;
        size_t at = (size_t)sq->own->enc * qd;
        gen_keys kv = {
            pc ? pc->k : NULL, pc ? pc->v : NULL, lc->k + at, lc->v + at, pre, pos + 1, qd};
        attend(g->att + r * qd, g->q + r * qd, &kv, m, g, 1);
    }
}

static void cross_attention(const sp_model *m, sp__t5_gen *g, const sp_gen_seq *seqs, int l,
                            size_t R) {
    int qd = m->cfg.n_head * sp_config_head_dim(&m->cfg);
    for (size_t r = 0; r < R; r++) {
        const sp_kv_cache *cache = seqs[g->seq[r]].own;
        const sp__kv_cache *lc = &cache->layer[l];
        gen_keys kv = {NULL, NULL, lc->k, lc->v, 0, cache->enc, qd};
        attend(g->att + r * qd, g->q + r * qd, &kv, m, g, 0);
    }
}

/* Decoder block l over the R rows of g->x (the output replaces it). */
static void block(const sp_model *m, sp__t5_gen *g, const sp_gen_seq *seqs, int l, size_t R,
                  const gen_dims *z) {
    const sp_layer *p = &m->layers[m->cfg.n_layer + l];
    int d = z->d, qd = z->qd, n = (int)R;
    float eps = m->cfg.ln_eps;
    sp__rmsnorm_forward(g->ln, g->rstd, g->x, p->ln1.w, n, d, eps);
    sp__linear_fwd(g->q, qd, g->ln, d, &p->q, n);
    sp__linear_fwd(g->k, qd, g->ln, d, &p->k, n);
    sp__linear_fwd(g->v, qd, g->ln, d, &p->v, n);
    self_attention(m, g, seqs, l, R);
    sp__linear_fwd_residual(g->y, g->x, g->att, qd, &p->o, n);
    sp__rmsnorm_forward(g->ln, g->rstd, g->y, p->ln_cross.w, n, d, eps);
    sp__linear_fwd(g->q, qd, g->ln, d, &p->xq, n);
    cross_attention(m, g, seqs, l, R);
    sp__linear_fwd_residual(g->x, g->y, g->att, qd, &p->xo, n);
    sp__rmsnorm_forward(g->ln, g->rstd, g->x, p->ln2.w, n, d, eps);
    sp__linear_fwd(g->fc, z->F, g->ln, d, &p->mlp_in, n);
    if (z->gated) {
        sp__linear_fwd(g->up, z->F, g->ln, d, &p->mlp_up, n);
        sp__geglu_forward(g->act, g->aux, g->fc, g->up, R * (size_t)z->F);
    } else {
        sp__relu_forward(g->act, g->fc, R * (size_t)z->F);
    }
    sp__linear_fwd_residual(g->y, g->x, g->act, z->F, &p->mlp_out, n);
    float *t = g->x; /* the output is the next block's input */
    g->x = g->y, g->y = t;
}

/* The logits [n_seq, V] at each sequence's last row (last[s]). */
static void head(const sp_model *m, sp__t5_gen *g, const int *last, int n_seq, float *logits) {
    int d = m->cfg.d_model;
    for (int s = 0; s < n_seq; s++)
        memcpy(g->top + (size_t)s * d, g->x + (size_t)last[s] * d, (size_t)d * sizeof(float));
    sp__rmsnorm_forward(g->lnf, g->lnf_r, g->top, m->lnf.w, n_seq, d, m->cfg.ln_eps);
    if (m->cfg.tied) { /* sequence_output * model_dim ** -0.5, as t5.c */
        float k = (float)pow((double)d, -0.5);
        for (size_t i = 0; i < (size_t)n_seq * d; i++) g->lnf[i] *= k;
    }
    sp__linear_fwd(logits, m->cfg.vocab_size, g->lnf, d, &m->lm_head, n_seq);
}

/* The decoder's new rows: decoder_start for a sequence whose encoder ran in this step (its
 * cache holds only the encoder's rows), else its tokens; their sequences and positions. Returns
 * the row count; last[s] is sequence s's last row. */
static size_t decoder_rows(const sp_model *m, sp__t5_gen *g, const sp_gen_seq *seqs, int n_seq,
                           const int32_t *seq_start, const int32_t *tokens, int *last) {
    size_t R = 0;
    int d = m->cfg.d_model;
    for (int s = 0; s < n_seq; s++) {
        const sp_kv_cache *c = seqs[s].own;
        int past = sp_kv_cache_len(c) - c->enc, first = past == 0;
        int n = first ? 1 : seq_start[s + 1] - seq_start[s];
        for (int i = 0; i < n; i++, R++) {
            int32_t tok = first ? m->cfg.decoder_start : tokens[seq_start[s] + i];
            sp_model_embedding_row(m, tok, g->x + R * d);
            g->seq[R] = s, g->pos[R] = past + i;
        }
        last[s] = (int)R - 1;
    }
    return R;
}

int sp__t5_extend(sp_worker *w, const sp_gen_seq *seqs, int n_seq, const int32_t *seq_start,
                  const int32_t *tokens, float *logits) {
    const sp_model *m = w->m;
    size_t R = 0, keys = 1;
    for (int s = 0; s < n_seq; s++) {
        const sp_kv_cache *c = seqs[s].own;
        int len = seq_start[s + 1] - seq_start[s], empty = sp_kv_cache_len(c) == 0;
        size_t n = empty ? 1 : (size_t)len, k = empty ? (size_t)len + 1 : (size_t)c->layer[0].len;
        k += seqs[s].shared ? (size_t)sp_kv_cache_len(seqs[s].shared) : 0; /* a prefix's keys */
        R += n, keys = k + n > keys ? k + n : keys;
    }
    gen_dims z = dims_of(m, R, logits ? (size_t)n_seq : 0, keys);
    int *last = malloc((size_t)n_seq * sizeof *last);
    sp__t5_gen *g = last ? reserve(w, &z) : NULL;
    if (!g || prefill_encoder(w, seqs, n_seq, seq_start, tokens)) {
        free(last);
        return -1;
    }
    R = decoder_rows(m, g, seqs, n_seq, seq_start, tokens, last);
    for (int l = 0; l < m->cfg.n_layer; l++) block(m, g, seqs, l, R, &z);
    if (logits) head(m, g, last, n_seq, logits);
    free(last);
    return 0;
}
