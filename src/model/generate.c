/* Prefill and decode over a key/value cache (softprompt/generate.h): the blocks of engine.c run
 * forward over the new rows of a batch of sequences, each behind its own cached rows.
 *
 * One step: embed the new rows at their positions (the number of rows before them in their
 * sequence's past), then in every layer norm 1 and the q|k|v projection over all N new rows
 * (one sgemm), the rotation of q and k by each row's angles, attention per sequence (its new
 * keys and values appended to its own cache), the output projection, norm 2 and the MLP over all
 * rows; in the top layer, after attention, only each sequence's last row (the one whose logits
 * are wanted; none when no logits are asked for). Every layer reuses the same buffers (the
 * activation table for one layer, worker.c); nothing is kept for a backward pass. */
#include <stdlib.h>
#include <string.h>

#include "model/family.h"
#include "model/kernels.h"
#include "model/steps.h"
#include "model/worker.h"
#include "softprompt/generate.h"

struct sp_kv_cache {
    const sp_model *m;
    int cap, width, n_layer;
    float *mem;
    sp__kv_cache *layer; /* [n_layer] views into mem, each cap rows of keys then of values */
};

sp_kv_cache *sp_kv_cache_new(const sp_model *m, int capacity) {
    if (capacity < 0) return NULL;
    sp_kv_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    const sp_model_config *cfg = &m->cfg;
    c->m = m, c->cap = capacity, c->n_layer = cfg->n_layer;
    c->width = sp_config_kv_heads(cfg) * sp_config_head_dim(cfg);
    size_t rows = (size_t)capacity * (size_t)c->width;
    c->mem = malloc(sp_model_kv_cache_bytes(m, (size_t)capacity) + sizeof(float));
    c->layer = calloc((size_t)c->n_layer, sizeof *c->layer);
    if (!c->mem || !c->layer) {
        sp_kv_cache_free(c);
        return NULL;
    }
    for (int l = 0; l < c->n_layer; l++)
        c->layer[l] = (sp__kv_cache){c->mem + 2 * (size_t)l * rows,
                                     c->mem + (2 * (size_t)l + 1) * rows, 0, capacity, c->width};
    return c;
}

void sp_kv_cache_free(sp_kv_cache *c) {
    if (!c) return;
    free(c->mem);
    free(c->layer);
    free(c);
}

int sp_kv_cache_len(const sp_kv_cache *c) {
    return c->n_layer > 0 ? c->layer[0].len : 0;
}

int sp_kv_cache_capacity(const sp_kv_cache *c) {
    return c->cap;
}

void sp_kv_cache_clear(sp_kv_cache *c) {
    for (int l = 0; l < c->n_layer; l++) c->layer[l].len = 0;
}

int sp_kv_cache_load_prefix(sp_kv_cache *c, const float *kv_prefix, int n_rows, sp_error *err) {
    if (sp_kv_cache_len(c) != 0)
        return sp_fail(err, "key/value prefix: the cache already holds %d rows",
                       sp_kv_cache_len(c));
    if (n_rows < 0 || n_rows > c->cap)
        return sp_fail(err, "key/value prefix: %d rows, the cache has room for %d", n_rows, c->cap);
    size_t per = (size_t)n_rows * (size_t)c->width;
    for (int l = 0; l < c->n_layer; l++) {
        const float *k = kv_prefix + 2 * (size_t)l * per;
        sp__kv_past rows = {k, k + per, n_rows, c->width};
        sp__kv_append(&c->layer[l], &rows); /* fits: checked above */
    }
    return 0;
}

/* ---- what generation runs ------------------------------------------------------------------ */

/* The block and head steps generate.c runs are engine.c's for the family's norm, q/k/v, positions
 * and MLP kinds; the kinds below it does not run yet (a new value must be decided here: -Wswitch).
 * NULL when m can generate, else the feature, for the message. */
static const char *unsupported(const sp_model *m) {
    const sp__family *f = sp__family_for(&m->cfg);
    const sp_model_config *c = &m->cfg;
    switch (f->block) {
    case SP_BLOCK_PRE_NORM:
        break;
    case SP_BLOCK_SANDWICH:
        return "norms after attention and the MLP (sandwich blocks)";
    case SP_BLOCK_PARALLEL:
        return "attention and MLP in parallel (use_parallel_residual)";
    }
    if (sp_config_rotary_dim(c) != sp_config_head_dim(c))
        return "rotary embeddings over part of each head (rotary_pct, partial_rotary_factor)";
    switch (f->embed) {
    case SP_EMBED_PLAIN:
        break;
    case SP_EMBED_SQRT_D:
        return "embeddings scaled by sqrt(hidden_size)";
    }
    switch (f->qk_norm) {
    case SP_QKNORM_NONE:
        break;
    case SP_QKNORM_PER_HEAD:
        return "per-head q/k norms";
    }
    if (c->sliding_window > 0) return "a sliding attention window (sliding_window)";
    if (c->attn_softcap > 0 || c->logit_softcap > 0) return "soft-capped attention or logits";
    if (c->query_scale > 0) return "a query scale other than 1/sqrt(head_dim)";
    if (m->rope_inv_freq_local) return "local rotary bases";
    return NULL;
}

int sp_generate_supported(const sp_model *m, sp_error *err) {
    const char *what = unsupported(m);
    if (!what) return 0;
    return sp_fail(err,
                   "%s: generation does not support %s yet (model_type %s); train, eval and "
                   "predict do",
                   m->dir ? m->dir : "model", what, sp_arch_model_type(m->cfg.arch));
}

/* ---- validation ---------------------------------------------------------------------------- */

static int shared_len(const sp_gen_seq *q) {
    return q->shared ? sp_kv_cache_len(q->shared) : 0;
}

/* The caches of sequence s: made for m, an own cache, not used twice in the call. */
static int check_caches(const sp_model *m, const sp_gen_seq *seqs, int s, sp_error *err) {
    const sp_gen_seq *q = &seqs[s];
    if (!q->own) return sp_fail(err, "generate: sequence %d has no cache of its own", s);
    if (q->own->m != m || (q->shared && q->shared->m != m))
        return sp_fail(err, "generate: sequence %d: a cache made for another model", s);
    for (int r = 0; r < s; r++)
        if (seqs[r].own == q->own)
            return sp_fail(err, "generate: sequences %d and %d share one own cache", r, s);
    for (int r = 0; r < s; r++)
        if (seqs[r].shared == (const sp_kv_cache *)q->own || q->shared == seqs[r].own)
            return sp_fail(err,
                           "generate: sequences %d and %d: one's own cache is the other's "
                           "shared rows",
                           r, s);
    return 0;
}

static int check_tokens(const sp_model *m, const sp_gen_seq *q, int s, const int32_t *tok, int len,
                        sp_error *err) {
    for (int t = 0; t < len; t++) {
        int32_t id = tok[t];
        if (SP_IS_SOFT(id) ? SP_SOFT_INDEX(id) < q->n_prompt && q->prompt : id < m->cfg.vocab_size)
            continue;
        if (SP_IS_SOFT(id))
            return sp_fail(err, "generate: sequence %d, new token %d is soft token %d, but %s", s,
                           t, SP_SOFT_INDEX(id),
                           q->prompt ? "the prompt has fewer rows" : "it has no prompt");
        return sp_fail(err, "generate: sequence %d, new token %d is id %d, expected < %d", s, t, id,
                       m->cfg.vocab_size);
    }
    return 0;
}

static int validate(const sp_model *m, const sp_gen_seq *seqs, int n_seq, const int32_t *start,
                    const int32_t *tokens, sp_error *err) {
    if (n_seq < 0 || (n_seq > 0 && start[0] != 0))
        return sp_fail(err, "generate: %d sequences starting at %d", n_seq,
                       n_seq > 0 ? start[0] : 0);
    for (int s = 0; s < n_seq; s++) {
        const sp_gen_seq *q = &seqs[s];
        int len = start[s + 1] - start[s];
        if (len < 1) return sp_fail(err, "generate: sequence %d has %d new tokens", s, len);
        if (check_caches(m, seqs, s, err)) return -1;
        int own = sp_kv_cache_len(q->own), past = shared_len(q) + own;
        if (len > q->own->cap - own)
            return sp_fail(err, "generate: sequence %d: %d new rows after %d, the cache holds %d",
                           s, len, own, q->own->cap);
        if (len > m->cfg.n_ctx - past)
            return sp_fail(err,
                           "generate: sequence %d: %d new tokens after %d positions exceed the "
                           "model's %d (n_positions)",
                           s, len, past, m->cfg.n_ctx);
        if (check_tokens(m, q, s, tokens + start[s], len, err)) return -1;
    }
    return 0;
}

/* ---- one step ------------------------------------------------------------------------------ */

/* x [N, d]: each new row's embedding (the prompt's row for a soft token) at its position, and,
 * for rotary families, each row's angles in the rotary tables (one row each). */
static void embed_rows(const sp_worker *w, float *x, const sp_gen_seq *seqs, int n_seq,
                       const int32_t *start, const int32_t *tokens) {
    const sp_model *m = w->m;
    size_t d = (size_t)w->z.d;
    int half = w->z.hs.hd / 2;
    for (int s = 0; s < n_seq; s++) {
        int pos0 = shared_len(&seqs[s]) + sp_kv_cache_len(seqs[s].own);
        for (int t = start[s]; t < start[s + 1]; t++) {
            int32_t tok = tokens[t], pos = pos0 + t - start[s];
            const float *e = SP_IS_SOFT(tok) ? seqs[s].prompt + (size_t)SP_SOFT_INDEX(tok) * d
                                             : m->wte + (size_t)tok * d;
            float *xt = x + (size_t)t * d;
            memcpy(xt, e, d * sizeof(float));
            switch (w->f->pos) {
            case SP_POS_LEARNED:
                for (size_t j = 0; j < d; j++) xt[j] += m->wpe[(size_t)pos * d + j];
                break;
            case SP_POS_ROTARY:
                sp__rope_row(w->s.rope_cos + (size_t)t * half, w->s.rope_sin + (size_t)t * half,
                             m->rope_inv_freq, pos, half);
                break;
            }
        }
    }
}

/* q and k of every new row take their positions (rotary: the row's own angles). */
static void positions_rows(const sp_worker *w, float *qkv) {
    const sp__dims *z = &w->z;
    switch (w->f->pos) {
    case SP_POS_LEARNED: /* added to the input embedding */
        return;
    case SP_POS_ROTARY:
        sp__rope_rotate(qkv, z->wq, (int)z->N, z->hs.n_head + z->hs.n_kv_head, z->hs.hd,
                        w->s.rope_cos, w->s.rope_sin, 0);
        return;
    }
}

/* atty [N, qd]: each sequence's new rows attend to its shared rows, its own cached rows and
 * each other (causally); their keys and values are appended to its own cache of layer l. A
 * sequence whose own cache is empty runs the blocked kernel with the shared rows as its past;
 * the others attend over the cache itself. */
static void attention_rows(const sp_worker *w, float *atty, float *lse, const float *qkv,
                           const sp_gen_seq *seqs, int n_seq, const int32_t *start, int l) {
    const sp__dims *z = &w->z;
    for (int s = 0; s < n_seq; s++) {
        int len = start[s + 1] - start[s];
        const float *q = qkv + (size_t)start[s] * z->wq;
        float *out = atty + (size_t)start[s] * z->qd;
        sp__kv_cache *own = &seqs[s].own->layer[l];
        sp__kv_past shared = {NULL, NULL, 0, z->kvd};
        if (seqs[s].shared) shared = sp__kv_view(&seqs[s].shared->layer[l]);
        sp__kv_past rows = sp__kv_of_qkv(q, len, &z->hs);
        int base = own->len;
        sp__kv_append(own, &rows); /* fits: validated */
        if (base == 0) {
            sp__attention_forward(out, lse + (size_t)start[s] * z->hs.n_head, w->s.att, q, len,
                                  &z->hs, shared.n ? &shared : NULL);
        } else {
            sp__kv_past mine = sp__kv_view(own);
            sp__attention_cached(out, w->s.att, q, z->wq, len, &z->hs, shared.n ? &shared : NULL,
                                 &mine, base);
        }
    }
}

/* dst [n_seq, width] = the last new row of each sequence in src [N, width]. */
static void gather_last(float *dst, const float *src, const int32_t *start, int n_seq,
                        size_t width) {
    for (int s = 0; s < n_seq; s++)
        memcpy(dst + (size_t)s * width, src + (size_t)(start[s + 1] - 1) * width,
               width * sizeof(float));
}

/* One block over the new rows (engine.c's block_forward without what backward keeps); in the
 * top block only the last row of each sequence goes on after attention, and nothing does when
 * n_logits is 0. */
static void block_rows(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a,
                       const sp_gen_seq *seqs, int n_seq, const int32_t *start, int l, int top) {
    const sp__dims *z = &w->z;
    const sp__scratch *s = &w->s;
    int n = (int)z->N;
    sp__norm_forward(w, a->ln1, a->ln1_mean, a->ln1_rstd, a->x, &p->ln1, n);
    sp__qkv_project(w, p, a->qkv, a->ln1, n);
    positions_rows(w, a->qkv);
    attention_rows(w, a->atty, a->lse, a->qkv, seqs, n_seq, start, l);
    const float *x = a->x, *atty = a->atty;
    if (top) {
        if (z->n_tgt == 0) return; /* the caches were all that was asked for */
        gather_last(s->top_x, a->x, start, n_seq, (size_t)z->d);
        gather_last(s->top_atty, a->atty, start, n_seq, (size_t)z->qd);
        x = s->top_x, atty = s->top_atty, n = n_seq;
    }
    sp__linear_fwd_residual(a->xmid, x, atty, z->qd, &p->o, n);
    sp__norm_forward(w, a->ln2, a->ln2_mean, a->ln2_rstd, a->xmid, &p->ln2, n);
    sp__mlp_act_forward(w, p, a, s->mlp_act, n);
    sp__linear_fwd_residual(a->x_next, a->xmid, s->mlp_act, z->F, &p->mlp_out, n);
}

int sp_generate_extend(sp_worker *w, const sp_gen_seq *seqs, int n_seq, const int32_t *seq_start,
                       const int32_t *tokens, float *logits, sp_error *err) {
    const sp_model *m = w->m;
    if (sp_generate_supported(m, err) || validate(m, seqs, n_seq, seq_start, tokens, err))
        return -1;
    if (n_seq == 0) return 0;
    int max_new = 0, max_past = 0;
    for (int s = 0; s < n_seq; s++) {
        int len = seq_start[s + 1] - seq_start[s];
        int past = shared_len(&seqs[s]) + sp_kv_cache_len(seqs[s].own);
        max_new = len > max_new ? len : max_new;
        max_past = past > max_past ? past : max_past;
    }
    size_t N = (size_t)seq_start[n_seq], n_logits = logits ? (size_t)n_seq : 0;
    if (sp__worker_reserve_generate(w, N, n_logits, max_new, max_past))
        return sp_fail(err, "out of memory reserving activations for %zu new tokens", N);
    int L = m->cfg.n_layer;
    sp__layer_acts a = w->acts[0];
    sp__linear_single_row_gemv(1); /* a decode step of one request */
    embed_rows(w, a.x, seqs, n_seq, seq_start, tokens);
    for (int l = 0; l < L; l++) {
        block_rows(w, &m->layers[l], &a, seqs, n_seq, seq_start, l, l == L - 1);
        float *t = a.x; /* the next layer reads this one's output */
        a.x = a.x_next, a.x_next = t;
    }
    if (logits) {
        const sp__scratch *s = &w->s;
        sp__norm_forward(w, s->lnf, s->lnf_mean, s->lnf_rstd, a.x, &m->lnf, n_seq);
        sp__linear_fwd(logits, w->z.V, s->lnf, w->z.d, &m->lm_head, n_seq);
    }
    sp__linear_single_row_gemv(0);
    return 0;
}
