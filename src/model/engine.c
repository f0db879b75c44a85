/* The soft-prompt engine: forward over packed variable-length sequences, cross-entropy at
 * target positions, and backward of activation gradients down to the prompt embeddings, for
 * every model family (model/family.c describes each).
 *
 * Shapes: N = packed tokens of the batch, d = model width, F = d_ff, H / Hkv = query / key-value
 * heads of hd columns, qd = H hd, Wq = (H + 2 Hkv) hd (a qkv row), V = vocabulary, n_tgt =
 * target positions. Every linear layer runs once over all N packed rows (one sgemm), attention
 * runs per sequence, so no work is spent on padding.
 *
 * Reading order: sp_engine_run at the bottom; block_forward and block_backward (one
 * transformer block, any family); the head; the steps a block is made of, each switching on one
 * kind of the family (norm, positions, q/k/v projection, MLP). Buffers come from the worker
 * (worker.c): a layer's saved activations through sp__layer_acts, the rest through sp__scratch,
 * always passed to the functions that read or write them.
 *
 * Generation (sp__engine_extend, model/steps.h) runs the same embedding, block_forward and head
 * over the new rows of a step, each sequence behind its key/value caches instead of a prefix
 * (layer_prefix.seqs): only attention and the rows' positions differ. */
#include "softprompt/engine.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "model/steps.h"
#include "model/t5.h"
#include "model/worker.h"

/* Prefixes err with the file and example of sequence s (at position at within it, when >= 0)
 * when the batch names them. Returns -1. */
static int in_example(const sp_batch *b, int s, int at, sp_error *err) {
    if (!b->source || !b->example_ids || s < 0 || s >= b->n_seq) return -1;
    if (at < 0)
        return sp_fail_prefix(err, "%s: example %lld", b->source, (long long)b->example_ids[s]);
    return sp_fail_prefix(err, "%s: example %lld, position %d", b->source,
                          (long long)b->example_ids[s], at);
}

/* The sequence holding packed position pos (seq_start checked already). */
static int sequence_of(const sp_batch *b, int pos) {
    int lo = 0, hi = b->n_seq - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (b->seq_start[mid] <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static int validate_tokens(const sp_model_config *c, const sp_batch *b, int n_prompt,
                           sp_error *err) {
    for (int s = 0; s < b->n_seq; s++)
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            int32_t tok = b->tokens[t];
            if (SP_IS_SOFT(tok) ? SP_SOFT_INDEX(tok) < n_prompt : tok < c->vocab_size) continue;
            sp_fail(err, "batch: position %d holds %s %d, expected < %d", t,
                    SP_IS_SOFT(tok) ? "soft token" : "token id",
                    SP_IS_SOFT(tok) ? SP_SOFT_INDEX(tok) : tok,
                    SP_IS_SOFT(tok) ? n_prompt : c->vocab_size);
            return in_example(b, s, t - b->seq_start[s], err);
        }
    return 0;
}

int sp_engine_validate(const sp_model *m, const sp_batch *b, const sp_pass *pass, sp_error *err) {
    const sp_model_config *c = &m->cfg;
    int P = pass->n_kv_prefix;
    if (b->n_seq < 0 || b->n_targets < 0 || pass->n_prompt < 0 || P < 0)
        return sp_fail(err,
                       "batch: negative count (n_seq %d, n_targets %d, n_prompt %d, n_kv_prefix "
                       "%d)",
                       b->n_seq, b->n_targets, pass->n_prompt, P);
    if (P > 0 && !pass->kv_prefix)
        return sp_fail(err, "pass: a key/value prefix of %d rows without its values", P);
    if (pass->seq_prompts && pass->grad)
        return sp_fail(err, "pass: a prompt per sequence is forward only: no prompt gradient");
    if (P >= c->n_ctx)
        return sp_fail(err, "pass: a key/value prefix of %d rows leaves no position of the %d", P,
                       c->n_ctx);
    if (b->n_seq > 0 && b->seq_start[0] != 0)
        return sp_fail(err, "batch: seq_start[0] is %d, expected 0", b->seq_start[0]);
    for (int s = 0; s < b->n_seq; s++) {
        int len = b->seq_start[s + 1] - b->seq_start[s];
        /* T5: the encoder's and the decoder's parts are bounded apart (sp__t5_validate) */
        if (len >= 1 && (len <= c->n_ctx - P || c->arch == SP_ARCH_T5)) continue;
        if (P == 0)
            sp_fail(err, "batch: sequence %d has length %d, expected 1..%d (n_positions)", s, len,
                    c->n_ctx);
        else
            sp_fail(err,
                    "batch: sequence %d has length %d, expected 1..%d (n_positions %d less the "
                    "key/value prefix's %d)",
                    s, len, c->n_ctx - P, c->n_ctx, P);
        return in_example(b, s, -1, err);
    }
    if (validate_tokens(c, b, pass->n_prompt, err)) return -1;
    int n_tok = b->n_seq > 0 ? b->seq_start[b->n_seq] : 0;
    for (int j = 0; j < b->n_targets; j++) {
        int pos = b->target_pos[j], id = b->target_ids[j];
        if (pos < 0 || pos >= n_tok || (j > 0 && pos <= b->target_pos[j - 1])) {
            sp_fail(err,
                    "batch: target %d at position %d: positions must be strictly increasing "
                    "within 0..%d",
                    j, pos, n_tok - 1);
            return pos >= 0 && pos < n_tok ? in_example(b, sequence_of(b, pos), -1, err) : -1;
        }
        if (id < 0 || id >= c->vocab_size) {
            int s = sequence_of(b, pos);
            sp_fail(err, "batch: target %d has token id %d, expected 0..%d", j, id,
                    c->vocab_size - 1);
            return in_example(b, s, pos - b->seq_start[s], err);
        }
    }
    return c->arch == SP_ARCH_T5 ? sp__t5_validate(m, b, pass, err) : 0;
}

/* ---- the steps of a block, one kind of the family each ----------------------------------- */

/* out[n, d] = norm(x) over rows of d with gain and bias p; the statistics backward needs go to
 * mean (LayerNorm only) and rstd [n]. */
static void norm_rows_forward(const sp_worker *w, float *out, float *mean, float *rstd,
                              const float *x, const sp_normw *p, int n, int d) {
    float eps = w->m->cfg.ln_eps;
    switch (w->f->norm) {
    case SP_NORM_LAYERNORM:
        sp__layernorm_forward(out, mean, rstd, x, p->w, p->b, n, d, eps);
        return;
    case SP_NORM_RMSNORM:
        sp__rmsnorm_forward(out, rstd, x, p->w, n, d, eps);
        return;
    case SP_NORM_RMSNORM_PLUS1:
        sp__rmsnorm1p_forward(out, rstd, x, p->w, n, d, eps);
        return;
    }
}

/* dx[n, d] += the norm's gradient with respect to its input x, given dout [n, d]. */
static void norm_rows_backward(const sp_worker *w, float *dx, const float *dout, const float *x,
                               const float *mean, const float *rstd, const sp_normw *p, int n,
                               int d) {
    switch (w->f->norm) {
    case SP_NORM_LAYERNORM:
        sp__layernorm_backward(dx, dout, x, mean, rstd, p->w, n, d);
        return;
    case SP_NORM_RMSNORM:
        sp__rmsnorm_backward(dx, dout, x, rstd, p->w, n, d);
        return;
    case SP_NORM_RMSNORM_PLUS1:
        sp__rmsnorm1p_backward(dx, dout, x, rstd, p->w, n, d);
        return;
    }
}

/* The norms of the residual stream: rows of d. */
static void norm_forward(const sp_worker *w, float *out, float *mean, float *rstd, const float *x,
                         const sp_normw *p, int n) {
    norm_rows_forward(w, out, mean, rstd, x, p, n, w->z.d);
}

static void norm_backward(const sp_worker *w, float *dx, const float *dout, const float *x,
                          const float *mean, const float *rstd, const sp_normw *p, int n) {
    norm_rows_backward(w, dx, dout, x, mean, rstd, p, n, w->z.d);
}

/* A block's norm before attention or the MLP: the family's norm into out, or none in a
 * post-norm block. Returns what the step reads: out, or x itself (a post-norm block's ln1 / ln2
 * are x / xmid: the worker allocates no buffer; in generation x moves from layer to layer). */
static const float *pre_norm_forward(const sp_worker *w, float *out, float *mean, float *rstd,
                                     const float *x, const sp_normw *p, int n) {
    switch (w->f->block) {
    case SP_BLOCK_PRE_NORM:
    case SP_BLOCK_SANDWICH:
    case SP_BLOCK_PARALLEL:
    case SP_BLOCK_NORM_RESIDUAL:
        norm_forward(w, out, mean, rstd, x, p, n);
        return out;
    case SP_BLOCK_POST_NORM:
        return x;
    }
    return out;
}

/* dx[n, d] += the pre-norm's input gradient given dout (none: dout itself). */
static void pre_norm_backward(const sp_worker *w, float *dx, const float *dout, const float *x,
                              const float *mean, const float *rstd, const sp_normw *p, int n) {
    switch (w->f->block) {
    case SP_BLOCK_PRE_NORM:
    case SP_BLOCK_SANDWICH:
    case SP_BLOCK_PARALLEL:
    case SP_BLOCK_NORM_RESIDUAL:
        norm_backward(w, dx, dout, x, mean, rstd, p, n);
        return;
    case SP_BLOCK_POST_NORM:
        for (size_t i = 0; i < (size_t)n * w->z.d; i++) dx[i] += dout[i];
        return;
    }
}

/* cos, sin [hd / 2] of position times each rotary frequency, the angle rounded to float first as
 * Hugging Face computes it. */
static void rope_row(float *cos_row, float *sin_row, const float *inv_freq, int position,
                     int half) {
    for (int i = 0; i < half; i++) {
        float angle = (float)position * inv_freq[i];
        cos_row[i] = (float)cos((double)angle);
        sin_row[i] = (float)sin((double)angle);
    }
}

static void rope_tables(float *cos_t, float *sin_t, const float *inv_freq, int n_pos, int half) {
    for (int t = 0; t < n_pos; t++)
        rope_row(cos_t + (size_t)t * half, sin_t + (size_t)t * half, inv_freq, t, half);
}

/* Rows of the sequence's key/value caches before a step: the first new row's position. */
static int cached_len(const sp_gen_seq *q) {
    return (q->shared ? sp_kv_cache_len(q->shared) : 0) + sp_kv_cache_len(q->own);
}

/* A step behind caches: row t of the tables holds the angles of new row t, at its position in
 * its sequence (seqs: before the step appends anything). */
static void rope_tables_rows(float *cos_t, float *sin_t, const float *inv_freq, const sp_batch *b,
                             const sp_gen_seq *seqs, int half) {
    for (int s = 0; s < b->n_seq; s++) {
        int pos0 = cached_len(&seqs[s]) - b->seq_start[s];
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++)
            rope_row(cos_t + (size_t)t * half, sin_t + (size_t)t * half, inv_freq, pos0 + t, half);
    }
}

/* What the family's positions need once per batch (seqs: a step behind caches, one table row
 * per new row). */
static void positions_prepare(const sp_worker *w, const sp_batch *b, const sp_gen_seq *seqs) {
    const sp__dims *z = &w->z;
    int half = sp_config_rotary_dim(&w->m->cfg) / 2; /* the first 2 half columns of a head turn */
    switch (w->f->pos) {
    case SP_POS_LEARNED:
    case SP_POS_RELATIVE: /* T5 runs in t5.c */
    case SP_POS_ALIBI:    /* in the attention kernels */
        return;
    case SP_POS_ROTARY:
        if (seqs) {
            rope_tables_rows(w->s.rope_cos, w->s.rope_sin, w->m->rope_inv_freq, b, seqs, half);
            if (z->local_rope)
                rope_tables_rows(w->s.rope_cos_local, w->s.rope_sin_local,
                                 w->m->rope_inv_freq_local, b, seqs, half);
            return;
        }
        rope_tables(w->s.rope_cos, w->s.rope_sin, w->m->rope_inv_freq, z->n_past + z->max_len,
                    half);
        if (z->local_rope)
            rope_tables(w->s.rope_cos_local, w->s.rope_sin_local, w->m->rope_inv_freq_local,
                        z->n_past + z->max_len, half);
        return;
    }
}

/* q and k of qkv [N, Wq] take their positions, n_past + the position within the sequence
 * (rotary: rotated in place, with the windowed layers' tables when local and there are such;
 * inverse: the transpose, which maps gradients of the rotated values to the inputs'). A step
 * behind caches has a table row per new row (z->cached). */
static void positions_qk(const sp_worker *w, float *qkv, const sp_batch *b, int inverse,
                         int local) {
    const sp__dims *z = &w->z;
    int rot = sp_config_rotary_dim(&w->m->cfg); /* the first rot columns of each head turn */
    size_t half = (size_t)(rot / 2);
    int own = local && z->local_rope;
    const float *cos_t = own ? w->s.rope_cos_local : w->s.rope_cos;
    const float *sin_t = own ? w->s.rope_sin_local : w->s.rope_sin;
    switch (w->f->pos) {
    case SP_POS_LEARNED: /* added to the input embedding instead */
    case SP_POS_RELATIVE:
    case SP_POS_ALIBI: /* a bias on the scores instead (sp__heads.alibi) */
        return;
    case SP_POS_ROTARY:
        for (int s = 0; s < b->n_seq; s++) {
            size_t start = (size_t)b->seq_start[s];
            int len = b->seq_start[s + 1] - b->seq_start[s];
            size_t first = (z->cached ? start : (size_t)z->n_past) * half; /* row of the first */
            sp__rope_rotate_part(qkv + start * z->wq, z->wq, len, z->hs.n_head + z->hs.n_kv_head,
                                 z->hs.hd, rot, cos_t + first, sin_t + first, inverse);
        }
        return;
    }
}

/* The norm of each q and k head of qkv [N, Wq] in place (the family's norm over hd columns, gains
 * q_norm and k_norm), saving the heads before it (qk_raw) and their statistics. */
static void qk_norm_forward(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a,
                            float *qkv) {
    const sp__dims *z = &w->z;
    int H = z->hs.n_head, Hkv = z->hs.n_kv_head, hd = z->hs.hd, nh = H + Hkv;
    size_t qk = (size_t)nh * hd;
    switch (w->f->qk_norm) {
    case SP_QKNORM_NONE:
        return;
    case SP_QKNORM_PER_HEAD:
        for (size_t t = 0; t < z->N; t++) {
            float *row = qkv + t * z->wq, *raw = a->qk_raw + t * qk;
            float *mean = a->qk_mean + t * nh, *rstd = a->qk_rstd + t * nh;
            memcpy(raw, row, qk * sizeof *raw);
            norm_rows_forward(w, row, mean, rstd, raw, &p->q_norm, H, hd);
            norm_rows_forward(w, row + z->qd, mean + H, rstd + H, raw + z->qd, &p->k_norm, Hkv, hd);
        }
        return;
    }
}

/* The q and k columns of dqkv [N, Wq], gradients of the normed heads, become those of the heads
 * before the norm (scratch: dqk [N, (H + Hkv) hd]). */
static void qk_norm_backward(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a,
                             float *dqkv) {
    const sp__dims *z = &w->z;
    int H = z->hs.n_head, Hkv = z->hs.n_kv_head, hd = z->hs.hd, nh = H + Hkv;
    size_t qk = (size_t)nh * hd;
    switch (w->f->qk_norm) {
    case SP_QKNORM_NONE:
        return;
    case SP_QKNORM_PER_HEAD:
        for (size_t t = 0; t < z->N; t++) {
            float *row = dqkv + t * z->wq, *dn = w->s.dqk + t * qk;
            const float *raw = a->qk_raw + t * qk;
            const float *mean = a->qk_mean + t * nh, *rstd = a->qk_rstd + t * nh;
            memcpy(dn, row, qk * sizeof *dn);
            memset(row, 0, qk * sizeof *row);
            norm_rows_backward(w, row, dn, raw, mean, rstd, &p->q_norm, H, hd);
            norm_rows_backward(w, row + z->qd, dn + z->qd, raw + z->qd, mean + H, rstd + H,
                               &p->k_norm, Hkv, hd);
        }
        return;
    }
}

/* Rows [n, 3 H hd] between the per-head layout [H, 3, hd] (GPT-NeoX's query_key_value) and
 * q | k | v ([3, H, hd]): to_blocks copies heads into blocks, else back. */
static void interleave_rows(float *blocks, float *heads, int n, int H, int hd, int to_blocks) {
    size_t wq = (size_t)3 * H * hd, bytes = (size_t)hd * sizeof(float);
    for (size_t t = 0; t < (size_t)n; t++)
        for (int h = 0; h < H; h++)
            for (int j = 0; j < 3; j++) {
                float *b = blocks + t * wq + ((size_t)j * H + h) * hd;
                float *x = heads + t * wq + ((size_t)h * 3 + j) * hd;
                memcpy(to_blocks ? b : x, to_blocks ? x : b, bytes);
            }
}

/* qkv [N, Wq] = ln1 [N, d] . W_qkv + b, then q and k take their norms (if any) and positions. */
static void qkv_project(const sp_worker *w, const sp_layer *p, float *qkv, const float *ln1,
                        int n) {
    const sp__dims *z = &w->z;
    switch (w->f->qkv) {
    case SP_QKV_FUSED:
        sp__linear_fwd(qkv, z->wq, ln1, z->d, &p->qkv, n);
        return;
    case SP_QKV_INTERLEAVED: /* per head into scratch, then into the q | k | v blocks */
        sp__linear_fwd(w->s.qkv_heads, z->wq, ln1, z->d, &p->qkv, n);
        interleave_rows(qkv, w->s.qkv_heads, n, z->hs.n_head, z->hs.hd, 1);
        return;
    case SP_QKV_SEPARATE: /* into the q | k | v column blocks */
        sp__linear_fwd(qkv, z->wq, ln1, z->d, &p->q, n);
        sp__linear_fwd(qkv + z->qd, z->wq, ln1, z->d, &p->k, n);
        sp__linear_fwd(qkv + z->qd + z->kvd, z->wq, ln1, z->d, &p->v, n);
        return;
    }
}

static void qkv_forward(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a, float *qkv,
                        const float *ln1, const sp_batch *b, int local) {
    qkv_project(w, p, qkv, ln1, (int)w->z.N);
    qk_norm_forward(w, p, a, qkv);
    positions_qk(w, qkv, b, 0, local);
}

/* dln1 [N, d] = dqkv [N, Wq] . W_qkv^T, the positions and norms of dq and dk undone first (in
 * place). */
static void qkv_backward(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a,
                         float *dln1, float *dqkv, const sp_batch *b, int local) {
    const sp__dims *z = &w->z;
    int n = (int)z->N;
    positions_qk(w, dqkv, b, 1, local);
    qk_norm_backward(w, p, a, dqkv);
    switch (w->f->qkv) {
    case SP_QKV_FUSED:
        sp__linear_bwd(dln1, z->d, dqkv, z->wq, &p->qkv, n, 0);
        return;
    case SP_QKV_INTERLEAVED:
        interleave_rows(dqkv, w->s.qkv_heads, n, z->hs.n_head, z->hs.hd, 0);
        sp__linear_bwd(dln1, z->d, w->s.qkv_heads, z->wq, &p->qkv, n, 0);
        return;
    case SP_QKV_SEPARATE:
        sp__linear_bwd(dln1, z->d, dqkv, z->wq, &p->q, n, 0);
        sp__linear_bwd(dln1, z->d, dqkv + z->qd, z->wq, &p->k, n, 1);
        sp__linear_bwd(dln1, z->d, dqkv + z->qd + z->kvd, z->wq, &p->v, n, 1);
        return;
    }
}

/* What one layer's attention reads beyond qkv: its heads (with the layer's window, if any), its
 * key/value prefix (kv.n == 0: none) and where the prefix's gradient goes: sequence s's at
 * dk + s * seq_stride (seq_stride 0: all sequences add to the same); or, in a step behind
 * caches, each sequence's caches, layer l of them. */
typedef struct layer_prefix {
    sp__heads hs;
    sp__kv_past kv;
    float *dk, *dv; /* NULL: no gradient */
    size_t seq_stride;
    const sp_gen_seq *seqs; /* [n_seq] a step behind caches (NULL: none) */
    int layer;
} layer_prefix;

/* The ALiBi slopes of the heads (NULL: the family has other positions). */
static const float *alibi_of(const sp_worker *w) {
    switch (w->f->pos) {
    case SP_POS_LEARNED:
    case SP_POS_ROTARY:
    case SP_POS_RELATIVE: /* T5's bias: src/model/t5.c */
        return NULL;
    case SP_POS_ALIBI:
        return w->m->alibi_slopes;
    }
    return NULL;
}

/* Layer l's heads: its window, soft-cap, query scale and ALiBi slopes. */
static layer_prefix layer_heads(const sp_worker *w, int l) {
    const sp_model_config *c = &w->m->cfg;
    layer_prefix r = {w->z.hs, {NULL, NULL, 0, w->z.kvd}, NULL, NULL, 0, NULL, l};
    r.hs.window = sp_config_layer_window(c, l);
    r.hs.alibi = alibi_of(w);
    r.hs.softcap = c->attn_softcap, r.hs.scale = (float)c->query_scale;
    switch (w->f->mask) {
    case SP_MASK_CAUSAL:
        r.hs.full = 0;
        break;
    case SP_MASK_FULL:
    case SP_MASK_SEQ2SEQ: /* T5 runs in t5.c */
        r.hs.full = 1;
        break;
    }
    return r;
}

/* Layer l's heads and slices of the pass's prefix [L, 2, P, kv_dim] and of its gradient. */
static layer_prefix prefix_of(const sp_worker *w, const sp_pass *pass, int l) {
    size_t P = (size_t)pass->n_kv_prefix, kvd = (size_t)w->z.kvd, at = (size_t)l * 2 * P * kvd;
    layer_prefix r = layer_heads(w, l);
    if (P == 0) return r;
    r.kv = (sp__kv_past){pass->kv_prefix + at, pass->kv_prefix + at + P * kvd, (int)P, (int)kvd};
    if (pass->kv_prefix_grad) {
        r.dk = pass->kv_prefix_grad + at, r.dv = r.dk + P * kvd;
        r.seq_stride = pass->per_sequence_grad ? (size_t)w->z.L * 2 * P * kvd : 0;
    }
    return r;
}

/* Sequence s's caches of the layer: its shared rows (n = 0: none) and its own cache. */
static sp__kv_past shared_view(const layer_prefix *pre, int s, int kvd) {
    const sp_kv_cache *sh = pre->seqs[s].shared;
    return sh ? sp__kv_view(&sh->layer[pre->layer]) : (sp__kv_past){NULL, NULL, 0, kvd};
}

static sp__kv_cache *own_cache(const layer_prefix *pre, int s) {
    return &pre->seqs[s].own->layer[pre->layer];
}

/* Sequence s of a step behind caches: its new rows (qkv, len rows from row start) have their
 * keys and values appended to its own cache of the layer; with an empty own cache before, they
 * attend to its shared rows and each other (causally) by the blocked kernel here. Returns 1
 * when the own cache held rows before: the rows then attend to the cache itself
 * (cached_attention). */
static int append_rows(const sp_worker *w, float *atty, float *lse, const float *qkv,
                       const layer_prefix *pre, int start, int len, int s) {
    const sp__dims *z = &w->z;
    const float *q = qkv + (size_t)start * z->wq;
    sp__kv_cache *own = own_cache(pre, s);
    sp__kv_past shared = shared_view(pre, s, z->kvd), rows = sp__kv_of_qkv(q, len, &pre->hs);
    int base = own->len;
    sp__kv_append(own, &rows); /* fits: validated */
    if (base > 0) return 1;
    sp__attention_forward(atty + (size_t)start * z->qd, lse + (size_t)start * z->hs.n_head,
                          w->s.att, q, len, &pre->hs, shared.n ? &shared : NULL);
    return 0;
}

/* The parts of a step's attention over the caches: row r of the step and key/value head g, part
 * r * n_kv_head + g, handed out to the threads as they ask (each part writes its own columns of
 * atty, so the result does not depend on who computes what); each thread has its own slice of
 * the attention scratch. */
typedef struct cached_parts {
    const sp_worker *w;
    float *atty;
    const float *qkv;
    const layer_prefix *pre;
    const sp_batch *b;
    size_t slice; /* scratch floats per thread */
    int n_parts;
    atomic_int next;
} cached_parts;

/* The sequence of row r (seq_start ascending). */
static int seq_of_row(const sp_batch *b, int r) {
    int lo = 0, hi = b->n_seq - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (b->seq_start[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

static void cached_part(const cached_parts *c, float *scratch, int part) {
    const sp__dims *z = &c->w->z;
    int H = z->hs.n_kv_head, r = part / H, s = seq_of_row(c->b, r);
    int start = c->b->seq_start[s], len = c->b->seq_start[s + 1] - start;
    sp__kv_cache *own = own_cache(c->pre, s);
    int base = own->len - len; /* appended already */
    if (base == 0) return;     /* attended by append_rows */
    sp__kv_past shared = shared_view(c->pre, s, z->kvd), mine = sp__kv_view(own);
    sp__attention_cached_head(c->atty + (size_t)start * z->qd, scratch,
                              c->qkv + (size_t)start * z->wq, z->wq, r - start, part % H,
                              &c->pre->hs, shared.n ? &shared : NULL, &mine, base);
}

static void cached_thread(void *arg, int thread) {
    cached_parts *c = arg;
    float *scratch = c->w->s.att + (size_t)thread * c->slice;
    for (int p; (p = atomic_fetch_add(&c->next, 1)) < c->n_parts;) cached_part(c, scratch, p);
}

/* The rows of the sequences whose own caches held rows before the step, over the caches
 * (max_keys: the most rows any of them attends to). */
static void cached_attention(const sp_worker *w, float *atty, const float *qkv,
                             const layer_prefix *pre, const sp_batch *b, int max_keys) {
    const sp__heads *hs = &pre->hs;
    cached_parts c = {w,
                      atty,
                      qkv,
                      pre,
                      b,
                      SP_ATT_CACHED_HEAD_SCRATCH(hs, max_keys),
                      b->seq_start[b->n_seq] * hs->n_kv_head,
                      0};
    atomic_init(&c.next, 0);
    /* the worker's scratch, SP_ATT_FWD_SCRATCH(max_keys) floats at least, holds a slice each */
    int threads = sp__few_threads(), fit = SP_ATT_QBLOCK / SP_ATT_CACHED_GROUP(hs);
    if (threads > fit) threads = fit;
    if (threads > c.n_parts) threads = c.n_parts;
    sp__few_run(threads, cached_thread, &c);
}

/* atty [N, qd] and lse [N, H]: causal attention of each sequence over its rows of qkv, behind
 * the layer's prefix (or its caches). */
static void attention_forward(const sp_worker *w, float *atty, float *lse, const float *qkv,
                              const layer_prefix *pre, const sp_batch *b) {
    const sp__dims *z = &w->z;
    size_t H = (size_t)z->hs.n_head;
    if (pre->seqs) {
        int max_keys = 0; /* 0: no sequence's own cache held rows before the step */
        for (int s = 0; s < b->n_seq; s++) {
            int start = b->seq_start[s], len = b->seq_start[s + 1] - start;
            if (!append_rows(w, atty, lse, qkv, pre, start, len, s)) continue;
            int keys = shared_view(pre, s, z->kvd).n + own_cache(pre, s)->len;
            max_keys = keys > max_keys ? keys : max_keys;
        }
        if (max_keys) cached_attention(w, atty, qkv, pre, b, max_keys);
        return;
    }
    for (int s = 0; s < b->n_seq; s++) {
        size_t start = (size_t)b->seq_start[s];
        int len = b->seq_start[s + 1] - b->seq_start[s];
        sp__attention_forward(atty + start * z->qd, lse + start * H, w->s.att, qkv + start * z->wq,
                              len, &pre->hs, pre->kv.n ? &pre->kv : NULL);
    }
}

/* dqkv [N, Wq] (and the prefix's gradient, when asked for) from datty [N, qd] and the forward's
 * qkv, atty and lse of layer a. */
static void attention_backward(const sp_worker *w, float *dqkv, const float *datty,
                               const sp__layer_acts *a, const layer_prefix *pre,
                               const sp_batch *b) {
    const sp__dims *z = &w->z;
    size_t H = (size_t)z->hs.n_head;
    for (int s = 0; s < b->n_seq; s++) {
        size_t start = (size_t)b->seq_start[s], at = (size_t)s * pre->seq_stride;
        int len = b->seq_start[s + 1] - b->seq_start[s];
        sp__kv_grad g = {NULL, NULL, pre->kv.ld};
        if (pre->dk) g.dk = pre->dk + at, g.dv = pre->dv + at;
        sp__attention_backward(dqkv + start * z->wq, pre->dk ? &g : NULL, w->s.att,
                               datty + start * z->qd, a->atty + start * z->qd, a->lse + start * H,
                               a->qkv + start * z->wq, len, &pre->hs, pre->kv.n ? &pre->kv : NULL);
    }
}

/* act [n, F] = the MLP's activation of ln2 [n, d] (GELU: gelu(ln2 W_in + b); SwiGLU:
 * silu(ln2 W_gate) * ln2 W_up), saving in a what backward needs. */
static void mlp_act_forward(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a,
                            float *act, int n) {
    const sp__dims *z = &w->z;
    size_t nf = (size_t)n * z->F;
    switch (w->f->mlp) {
    case SP_MLP_GELU:
        sp__linear_fwd(a->fc, z->F, a->ln2, z->d, &p->mlp_in, n);
        sp__gelu_forward(act, NULL, a->fc, nf); /* tanh recomputed in backward */
        return;
    case SP_MLP_GELU_ERF:
        sp__linear_fwd(a->fc, z->F, a->ln2, z->d, &p->mlp_in, n);
        sp__gelu_erf_forward(act, a->fc_aux, a->fc, nf); /* Phi(x) saved */
        return;
    case SP_MLP_RELU:
        sp__linear_fwd(a->fc, z->F, a->ln2, z->d, &p->mlp_in, n);
        sp__relu_forward(act, a->fc, nf);
        return;
    case SP_MLP_SWIGLU:
        sp__linear_fwd(a->fc, z->F, a->ln2, z->d, &p->mlp_in, n); /* gate */
        sp__linear_fwd(a->up, z->F, a->ln2, z->d, &p->mlp_up, n);
        sp__swiglu_forward(act, NULL, a->fc, a->up, nf); /* sigmoid recomputed */
        return;
    case SP_MLP_GEGLU:
        sp__linear_fwd(a->fc, z->F, a->ln2, z->d, &p->mlp_in, n); /* gate */
        sp__linear_fwd(a->up, z->F, a->ln2, z->d, &p->mlp_up, n);
        sp__geglu_forward(act, NULL, a->fc, a->up, nf); /* tanh recomputed */
        return;
    }
}

/* dln2 [n, d] from dact [n, F] (overwritten: it becomes the gradient of the input projection;
 * dup [n, F] receives SwiGLU's up-projection gradient). */
static void mlp_act_backward(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a,
                             float *dln2, float *dact, float *dup, int n) {
    const sp__dims *z = &w->z;
    size_t nf = (size_t)n * z->F;
    switch (w->f->mlp) {
    case SP_MLP_GELU:
        sp__gelu_backward(dact, dact, a->fc, NULL, nf);
        sp__linear_bwd(dln2, z->d, dact, z->F, &p->mlp_in, n, 0);
        return;
    case SP_MLP_GELU_ERF:
        sp__gelu_erf_backward(dact, dact, a->fc, a->fc_aux, nf);
        sp__linear_bwd(dln2, z->d, dact, z->F, &p->mlp_in, n, 0);
        return;
    case SP_MLP_RELU:
        sp__relu_backward(dact, dact, a->fc, nf);
        sp__linear_bwd(dln2, z->d, dact, z->F, &p->mlp_in, n, 0);
        return;
    case SP_MLP_SWIGLU:
        sp__swiglu_backward(dact, dup, dact, a->fc, NULL, a->up, nf);
        sp__linear_bwd(dln2, z->d, dact, z->F, &p->mlp_in, n, 0);
        sp__linear_bwd(dln2, z->d, dup, z->F, &p->mlp_up, n, 1);
        return;
    case SP_MLP_GEGLU:
        sp__geglu_backward(dact, dup, dact, a->fc, NULL, a->up, nf);
        sp__linear_bwd(dln2, z->d, dact, z->F, &p->mlp_in, n, 0);
        sp__linear_bwd(dln2, z->d, dup, z->F, &p->mlp_up, n, 1);
        return;
    }
}

/* dst [n_tgt, width] = rows target_pos[j] of src [N, width]. */
static void gather_targets(float *dst, const float *src, const sp_batch *b, size_t width) {
    for (int j = 0; j < b->n_targets; j++)
        memcpy(dst + (size_t)j * width, src + (size_t)b->target_pos[j] * width,
               width * sizeof(float));
}

/* dst [N, width] = 0 except rows target_pos[j] = src row j. */
static void scatter_targets(float *dst, const float *src, const sp_batch *b, size_t N,
                            size_t width) {
    memset(dst, 0, N * width * sizeof(float));
    for (int j = 0; j < b->n_targets; j++)
        memcpy(dst + (size_t)b->target_pos[j] * width, src + (size_t)j * width,
               width * sizeof(float));
}

/* ---- the embedding ------------------------------------------------------------------------- */

/* Sequence s's prompt: a step's sequence's own (seqs), else its own with seq_prompts, else the
 * pass's. */
static const float *prompt_of(const sp_pass *pass, const sp_gen_seq *seqs, int s) {
    if (seqs) return seqs[s].prompt;
    const float *p = pass->seq_prompts ? pass->seq_prompts[s] : NULL;
    return p ? p : pass->prompt;
}

/* The position of sequence s's first row: after the key/value prefix, or its cached rows. */
static int first_position(const sp_worker *w, const sp_gen_seq *seqs, int s) {
    return seqs ? cached_len(&seqs[s]) : w->z.n_past;
}

/* BERT's embedding: x0 [N, d] += token_type_embeddings[0], then its LayerNorm (the sum kept in
 * emb for backward); BLOOM's: the LayerNorm alone (word_embeddings_layernorm of inputs_embeds,
 * the prompt's rows too); nothing for the other families. Every position is of type 0: a single
 * sequence, soft tokens included. */
static void embed_norm_forward(const sp_worker *w, float *x0) {
    const sp_model *m = w->m;
    size_t d = (size_t)w->z.d;
    switch (w->f->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_SQRT_D:
    case SP_EMBED_SQRT_D_TOKENS:
    case SP_EMBED_PROJECT:
        return;
    case SP_EMBED_TYPES_NORM:
        for (size_t t = 0; t < w->z.N; t++)
            for (size_t j = 0; j < d; j++) w->s.emb[t * d + j] = x0[t * d + j] + m->wtt[j];
        sp__layernorm_forward(x0, w->s.emb_mean, w->s.emb_rstd, w->s.emb, m->emb_ln.w, m->emb_ln.b,
                              (int)w->z.N, (int)d, m->cfg.ln_eps);
        return;
    case SP_EMBED_NORM:
        memcpy(w->s.emb, x0, w->z.N * d * sizeof(float));
        sp__layernorm_forward(x0, w->s.emb_mean, w->s.emb_rstd, w->s.emb, m->emb_ln.w, m->emb_ln.b,
                              (int)w->z.N, (int)d, m->cfg.ln_eps);
        return;
    }
}

/* The gradient of the embedding sum from dx0 [N, d]: dx0 itself, or through BERT's embedding
 * norm (into dln). */
static const float *embed_norm_backward(const sp_worker *w, const float *dx0) {
    const sp_model *m = w->m;
    size_t n = w->z.N, d = (size_t)w->z.d;
    switch (w->f->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_SQRT_D:
    case SP_EMBED_SQRT_D_TOKENS:
    case SP_EMBED_PROJECT:
        return dx0;
    case SP_EMBED_TYPES_NORM:
    case SP_EMBED_NORM:
        memset(w->s.dln, 0, n * d * sizeof(float));
        sp__layernorm_backward(w->s.dln, dx0, w->s.emb, w->s.emb_mean, w->s.emb_rstd, m->emb_ln.w,
                               (int)n, (int)d);
        return w->s.dln;
    }
    return dx0;
}

/* The input rows [N, e] (e: the embeddings' width): row t = the sequence's prompt[k] for soft
 * token k, else the embedding module's row of id (sp_model_input_row: Gemma 3's scaled). */
static void input_rows(const sp_worker *w, float *in, const sp_batch *b, const sp_pass *pass,
                       const sp_gen_seq *seqs) {
    size_t e = (size_t)w->z.e;
    for (int s = 0; s < b->n_seq; s++) {
        const float *prompt = prompt_of(pass, seqs, s);
        for (size_t t = (size_t)b->seq_start[s]; t < (size_t)b->seq_start[s + 1]; t++) {
            int32_t tok = b->tokens[t];
            if (SP_IS_SOFT(tok))
                memcpy(in + t * e, prompt + (size_t)SP_SOFT_INDEX(tok) * e, e * sizeof(float));
            else
                sp_model_input_row(w->m, tok, in + t * e);
        }
    }
}

/* x0 [N, d]: the input rows (inputs_embeds), scaled (Gemma) or through project_in (OPT-350m),
 * + wpe[the sequence's first position + position of t within it] for learned positions. */
static void embed_forward(const sp_worker *w, float *x0, const sp_batch *b, const sp_pass *pass,
                          const sp_gen_seq *seqs) {
    const sp_model *m = w->m;
    size_t d = (size_t)w->z.d;
    switch (w->f->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_TYPES_NORM: /* after the positions */
    case SP_EMBED_NORM:
    case SP_EMBED_SQRT_D_TOKENS: /* in sp_model_input_row: the token rows only */
        input_rows(w, x0, b, pass, seqs);
        break;
    case SP_EMBED_SQRT_D: /* every row, the prompt's too (transformers scales inputs_embeds) */
        input_rows(w, x0, b, pass, seqs);
        for (size_t i = 0; i < w->z.N * d; i++) x0[i] *= m->embed_scale;
        break;
    case SP_EMBED_PROJECT: /* x0 = inputs_embeds project_in^T */
        input_rows(w, w->s.emb_in, b, pass, seqs);
        sp__linear_fwd(x0, (int)d, w->s.emb_in, w->z.e, &m->project_in, (int)w->z.N);
        break;
    }
    switch (w->f->pos) {
    case SP_POS_LEARNED:
        for (int s = 0; s < b->n_seq; s++)
            for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
                float *x = x0 + (size_t)t * d;
                int pos = m->cfg.pos_offset + first_position(w, seqs, s) + t - b->seq_start[s];
                const float *p = m->wpe + (size_t)pos * d;
                for (size_t j = 0; j < d; j++) x[j] += p[j];
            }
        break;
    case SP_POS_ROTARY: /* in every block's q and k */
    case SP_POS_RELATIVE:
    case SP_POS_ALIBI: /* on every block's attention scores */
        break;
    }
    embed_norm_forward(w, x0);
}

/* The prompt gradient from dx0 [N, d]: dprompt[k] += dinput[t] for every position t holding soft
 * token k (into sequence s's slice with per_sequence_grad), dinput [N, e] being dx0 through the
 * embedding's norm, scale or projection. */
static void embed_backward(const sp_worker *w, const float *dx0, const sp_batch *b,
                           const sp_pass *pass) {
    size_t e = (size_t)w->z.e, per_seq = (size_t)pass->n_prompt * e;
    float scale = 1.0f;
    dx0 = embed_norm_backward(w, dx0);
    switch (w->f->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_TYPES_NORM:
    case SP_EMBED_NORM:
    case SP_EMBED_SQRT_D_TOKENS:
        break;
    case SP_EMBED_SQRT_D:
        scale = w->m->embed_scale;
        break;
    case SP_EMBED_PROJECT: /* dinput = dx0 project_in */
        sp__linear_bwd(w->s.emb_in, w->z.e, dx0, w->z.d, &w->m->project_in, (int)w->z.N, 0);
        dx0 = w->s.emb_in;
        break;
    }
    for (int s = 0; s < b->n_seq; s++) {
        float *g = pass->grad + (pass->per_sequence_grad ? (size_t)s * per_seq : 0);
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            if (!SP_IS_SOFT(b->tokens[t])) continue;
            float *gk = g + (size_t)SP_SOFT_INDEX(b->tokens[t]) * e;
            const float *dxt = dx0 + (size_t)t * e;
            if (scale == 1.0f)
                for (size_t j = 0; j < e; j++) gk[j] += dxt[j];
            else
                for (size_t j = 0; j < e; j++) gk[j] += scale * dxt[j];
        }
    }
}

/* ---- one block ----------------------------------------------------------------------------- */

/* y[n, width] = residual + x (row stride width each). */
static void add_rows(float *y, const float *residual, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] = residual[i] + x[i];
}

/* y [n, d] = residual + f W (+ b), through the post-norm of a sandwich block (saving f W in
 * saved and its statistics): the output projection of attention and of the MLP. */
static void project_residual(const sp_worker *w, float *y, const float *residual, const float *f,
                             int ldf, const sp_linear *W, const sp_normw *post, float *saved,
                             float *mean, float *rstd, int n) {
    switch (w->f->block) {
    case SP_BLOCK_PRE_NORM:
    case SP_BLOCK_PARALLEL:
    case SP_BLOCK_NORM_RESIDUAL:
        sp__linear_fwd_residual(y, residual, f, ldf, W, n);
        return;
    case SP_BLOCK_SANDWICH:
        sp__linear_fwd(saved, w->z.d, f, ldf, W, n);
        norm_forward(w, w->s.post, mean, rstd, saved, post, n);
        add_rows(y, residual, w->s.post, (size_t)n * w->z.d);
        return;
    case SP_BLOCK_POST_NORM: /* y = norm(residual + f W), the sum saved */
        sp__linear_fwd_residual(saved, residual, f, ldf, W, n);
        norm_forward(w, y, mean, rstd, saved, post, n);
        return;
    }
}

/* The gradient reaching f W's output from dy [n, d], the gradient of y: dy itself, or through the
 * post-norm (into dpost). A post-norm block's norm sits on the residual too: there dy becomes
 * the gradient of the sum, which both the residual and f W receive. */
static const float *project_residual_backward(const sp_worker *w, float *dy, const sp_normw *post,
                                              const float *saved, const float *mean,
                                              const float *rstd, int n) {
    switch (w->f->block) {
    case SP_BLOCK_PRE_NORM:
    case SP_BLOCK_PARALLEL:
    case SP_BLOCK_NORM_RESIDUAL:
        return dy;
    case SP_BLOCK_SANDWICH:
        memset(w->s.dpost, 0, (size_t)n * w->z.d * sizeof(float));
        norm_backward(w, w->s.dpost, dy, saved, mean, rstd, post, n);
        return w->s.dpost;
    case SP_BLOCK_POST_NORM:
        memset(w->s.dpost, 0, (size_t)n * w->z.d * sizeof(float));
        norm_backward(w, w->s.dpost, dy, saved, mean, rstd, post, n);
        memcpy(dy, w->s.dpost, (size_t)n * w->z.d * sizeof(float));
        return dy;
    }
    return dy;
}

/* Whether the MLP's norm reads the block's input x (parallel residual) rather than xmid. */
static int mlp_reads_x(const sp_worker *w) {
    switch (w->f->block) {
    case SP_BLOCK_PRE_NORM:
    case SP_BLOCK_SANDWICH:
    case SP_BLOCK_POST_NORM:
    case SP_BLOCK_NORM_RESIDUAL:
        return 0;
    case SP_BLOCK_PARALLEL:
        return 1;
    }
    return 0;
}

/* The residual of a step whose norm read x and wrote ln: x, or ln itself (BLOOM's
 * apply_residual_connection_post_layernorm). */
static const float *residual_of(const sp_worker *w, const float *x, const float *ln) {
    switch (w->f->block) {
    case SP_BLOCK_PRE_NORM:
    case SP_BLOCK_SANDWICH:
    case SP_BLOCK_POST_NORM:
    case SP_BLOCK_PARALLEL:
        return x;
    case SP_BLOCK_NORM_RESIDUAL:
        return ln;
    }
    return x;
}

/* Before a pre-norm's backward: with the residual taken from the norm's output, the gradient dy
 * [n, d] of the residual goes through the norm too (dln += dy, then dy = 0, the norm's backward
 * adding its input gradient to it); otherwise nothing. */
static void residual_backward(const sp_worker *w, float *dln, float *dy, int n) {
    size_t nd = (size_t)n * w->z.d;
    switch (w->f->block) {
    case SP_BLOCK_PRE_NORM:
    case SP_BLOCK_SANDWICH:
    case SP_BLOCK_POST_NORM:
    case SP_BLOCK_PARALLEL:
        return;
    case SP_BLOCK_NORM_RESIDUAL:
        for (size_t i = 0; i < nd; i++) dln[i] += dy[i];
        memset(dy, 0, nd * sizeof(float));
        return;
    }
}

/* x_next = xmid + mlp(norm2(xmid)),  xmid = x + attention(qkv(norm1(x))) W_o
 * (parallel: x_next = xmid + mlp(norm2(x)); residual from the norms: xmid = norm1(x) + ..,
 * x_next = norm2(xmid) + ..).
 * Keys and values need every row, but in the top block only the target rows reach the loss
 * after attention, so from the output projection on it runs on the n_tgt target rows alone,
 * gathered compactly (rows 0..n_tgt-1 of xmid .. x_next; none without targets). Training keeps
 * every layer's a; generation passes the same buffers for every layer (x and x_next swapped). */
static void block_forward(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a,
                          const layer_prefix *pre, const sp_batch *b, int top) {
    const sp__dims *z = &w->z;
    const sp__scratch *s = &w->s;
    int n = (int)z->N;
    const float *ln1 = /* norm1(x) */
        pre_norm_forward(w, a->ln1, a->ln1_mean, a->ln1_rstd, a->x, &p->ln1, n);
    qkv_forward(w, p, a, a->qkv, ln1, b, pre->hs.window > 0); /* with positions */
    attention_forward(w, a->atty, a->lse, a->qkv, pre, b);    /* behind the layer's prefix */
    const float *x = residual_of(w, a->x, ln1), *atty = a->atty;
    if (top) {
        if (b->n_targets == 0) return; /* the keys and values were all that was needed */
        gather_targets(s->top_x, x, b, (size_t)z->d);
        gather_targets(s->top_atty, a->atty, b, (size_t)z->qd);
        x = s->top_x, atty = s->top_atty, n = b->n_targets;
    }
    /* xmid = x + atty W_o (sandwich: x + norm(atty W_o)) */
    project_residual(w, a->xmid, x, atty, z->qd, &p->o, &p->ln_post_attn, a->ao, a->ao_mean,
                     a->ao_rstd, n);
    pre_norm_forward(w, a->ln2, a->ln2_mean, a->ln2_rstd, mlp_reads_x(w) ? x : a->xmid, &p->ln2, n);
    mlp_act_forward(w, p, a, s->mlp_act, n);
    project_residual(w, a->x_next, residual_of(w, a->xmid, a->ln2), s->mlp_act, z->F, &p->mlp_out,
                     &p->ln_post_ff, a->mo, a->mo_mean, a->mo_rstd, n);
}

/* On entry the gradient of the loss with respect to x_next: in dx (every row), or for the top
 * block in top_dx (its target rows). On exit dx holds the gradient with respect to x. Each
 * residual connection passes its gradient on unchanged (the norms' backward adds to it). */
static void block_backward(const sp_worker *w, const sp_layer *p, const sp__layer_acts *a,
                           const layer_prefix *pre, const sp_batch *b, int top) {
    const sp__dims *z = &w->z;
    const sp__scratch *s = &w->s;
    int n = top ? b->n_targets : (int)z->N;
    float *dy = top ? s->top_dx : s->dx; /* dL/dx_next, then dL/dxmid (in place) */
    float *datty = top ? s->top_datty : s->datty;
    /* x_next = xmid + act W_out,  act = mlp(ln2),  ln2 = norm2(xmid) */
    const float *dout =
        project_residual_backward(w, dy, &p->ln_post_ff, a->mo, a->mo_mean, a->mo_rstd, n);
    sp__linear_bwd(s->dfc, z->F, dout, z->d, &p->mlp_out, n, 0); /* dact */
    mlp_act_backward(w, p, a, s->dln, s->dfc, s->dup, n);        /* dln2 */
    if (!mlp_reads_x(w)) {
        residual_backward(w, s->dln, dy, n);
        pre_norm_backward(w, dy, s->dln, a->xmid, a->ln2_mean, a->ln2_rstd, &p->ln2, n);
    }
    /* xmid = x + atty W_o */
    dout = project_residual_backward(w, dy, &p->ln_post_attn, a->ao, a->ao_mean, a->ao_rstd, n);
    sp__linear_bwd(datty, z->qd, dout, z->d, &p->o, n, 0);
    if (mlp_reads_x(w)) /* dy becomes dL/dx less norm1's part */
        norm_backward(w, dy, s->dln, top ? s->top_x : a->x, a->ln2_mean, a->ln2_rstd, &p->ln2, n);
    if (top) { /* every row again: zero gradient at the others */
        scatter_targets(s->datty, s->top_datty, b, z->N, (size_t)z->qd);
        scatter_targets(s->dx, s->top_dx, b, z->N, (size_t)z->d);
    }
    /* atty = attention(qkv),  qkv = ln1 W_qkv,  ln1 = norm1(x); dx holds dL/dxmid */
    attention_backward(w, s->dqkv, s->datty, a, pre, b);           /* (and the prefix's) */
    qkv_backward(w, p, a, s->dln, s->dqkv, b, pre->hs.window > 0); /* dln1 */
    residual_backward(w, s->dln, s->dx, (int)z->N);
    pre_norm_backward(w, s->dx, s->dln, a->x, a->ln1_mean, a->ln1_rstd, &p->ln1, (int)z->N);
}

/* ---- the head ------------------------------------------------------------------------------ */

/* h [nt, d] = the rows x_top [nt, d] before the LM head: the final norm (into lnf), the rows
 * themselves (no final norm), or the MLM head's transform dense + gelu + LayerNorm (h, Phi(h) and
 * gelu(h) kept for backward). */
static const float *head_transform(const sp_worker *w, const float *x_top, int nt) {
    const sp_model *m = w->m;
    const sp__scratch *s = &w->s;
    int d = w->z.d;
    switch (w->f->head) {
    case SP_HEAD_LM:
        norm_forward(w, s->lnf, s->lnf_mean, s->lnf_rstd, x_top, &m->lnf, nt);
        return s->lnf;
    case SP_HEAD_LM_NO_NORM:
        return x_top;
    case SP_HEAD_MLM:
        sp__linear_fwd(s->head_h, d, x_top, d, &m->head_dense, nt);
        sp__gelu_erf_forward(s->head_g, s->head_cdf, s->head_h, (size_t)nt * d);
        norm_forward(w, s->lnf, s->lnf_mean, s->lnf_rstd, s->head_g, &m->head_ln, nt);
        return s->lnf;
    }
    return s->lnf;
}

/* dx_top [nt, d] = the gradient with respect to x_top given dh [nt, d], that of
 * head_transform's output (dh is overwritten for the MLM head). */
static void head_transform_backward(const sp_worker *w, float *dx_top, float *dh,
                                    const float *x_top, int nt) {
    const sp_model *m = w->m;
    const sp__scratch *s = &w->s;
    size_t nd = (size_t)nt * w->z.d;
    memset(dx_top, 0, nd * sizeof(float));
    switch (w->f->head) {
    case SP_HEAD_LM:
        norm_backward(w, dx_top, dh, x_top, s->lnf_mean, s->lnf_rstd, &m->lnf, nt);
        return;
    case SP_HEAD_LM_NO_NORM:
        memcpy(dx_top, dh, nd * sizeof(float));
        return;
    case SP_HEAD_MLM: /* dgelu in dx_top, then dh = dgelu gelu'(h), dx_top = dh W_dense^T */
        norm_backward(w, dx_top, dh, s->head_g, s->lnf_mean, s->lnf_rstd, &m->head_ln, nt);
        sp__gelu_erf_backward(dh, dx_top, s->head_h, s->head_cdf, nd);
        sp__linear_bwd(dx_top, w->z.d, dh, w->z.d, &m->head_dense, nt, 0);
        return;
    }
}

/* The LM head's input [nt, e] from h [nt, d]: h itself, or h project_out^T (into head_in). */
static const float *head_project(const sp_worker *w, const float *h, int nt) {
    switch (w->f->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_SQRT_D:
    case SP_EMBED_SQRT_D_TOKENS:
    case SP_EMBED_TYPES_NORM:
    case SP_EMBED_NORM:
        return h;
    case SP_EMBED_PROJECT:
        sp__linear_fwd(w->s.head_in, w->z.e, h, w->z.d, &w->m->project_out, nt);
        return w->s.head_in;
    }
    return h;
}

/* logits [nt, V] = the LM head of the final norm (or MLM transform) of the rows x_top [nt, d],
 * through project_out (OPT-350m), soft-capped when the model caps them (the tanh kept in
 * logit_t, when not NULL, for backward). */
static void head_logits(const sp_worker *w, float *logits, float *logit_t, const float *x_top,
                        int nt) {
    const sp_model *m = w->m;
    int V = w->z.V;
    const float *h = head_project(w, head_transform(w, x_top, nt), nt);
    sp__linear_fwd(logits, V, h, w->z.e, &m->lm_head, nt); /* logits = h W_head^T (+ b) */
    float cap = m->cfg.logit_softcap;
    if (cap > 0) /* cap tanh(logits / cap) */
        for (size_t i = 0; i < (size_t)nt * V; i++) {
            float t = tanhf(logits[i] / cap);
            if (logit_t) logit_t[i] = t;
            logits[i] = cap * t;
        }
}

/* Final norm and LM head at the target rows x_top [n_tgt, d] only; the cross-entropy of each
 * target. With backward the logits become dlogits. Returns the loss sum. */
static double head_forward(const sp_worker *w, const float *x_top, const sp_batch *b,
                           const sp_pass *pass, int backward) {
    const sp__scratch *s = &w->s;
    int nt = b->n_targets, V = w->z.V;
    head_logits(w, s->logits, backward ? s->logit_t : NULL, x_top, nt);
    if (pass->target_logits) memcpy(pass->target_logits, s->logits, (size_t)nt * V * sizeof(float));
    double loss = 0.0;
    for (int j = 0; j < nt; j++) {
        double l =
            sp__cross_entropy(s->logits + (size_t)j * V, V, b->target_ids[j], backward, 1.0f);
        if (pass->target_loss) pass->target_loss[j] = l;
        loss += l;
    }
    return loss;
}

/* dx_top [n_tgt, d] = gradient with respect to x_top, from the dlogits head_forward left;
 * dlnf [n_tgt, d] is its intermediate (the LM head's input gradient [n_tgt, e] goes through
 * head_in first when project_out sits between them). */
static void head_backward(const sp_worker *w, float *dx_top, float *dlnf, const float *x_top,
                          int nt) {
    const sp_model *m = w->m;
    const sp__scratch *s = &w->s;
    int d = w->z.d, e = w->z.e, V = w->z.V;
    if (m->cfg.logit_softcap > 0) /* through the cap: (1 - t^2) */
        for (size_t i = 0; i < (size_t)nt * V; i++)
            s->logits[i] *= 1.0f - s->logit_t[i] * s->logit_t[i];
    switch (w->f->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_SQRT_D:
    case SP_EMBED_SQRT_D_TOKENS:
    case SP_EMBED_TYPES_NORM:
    case SP_EMBED_NORM: /* dlnf = dlogits W_head */
        sp__linear_bwd(dlnf, d, s->logits, V, &m->lm_head, nt, 0);
        break;
    case SP_EMBED_PROJECT: /* dhead_in = dlogits W_head, dlnf = dhead_in W_project_out */
        sp__linear_bwd(s->head_in, e, s->logits, V, &m->lm_head, nt, 0);
        sp__linear_bwd(dlnf, d, s->head_in, e, &m->project_out, nt, 0);
        break;
    }
    head_transform_backward(w, dx_top, dlnf, x_top, nt);
}

/* ---- a run --------------------------------------------------------------------------------- */

int sp_engine_run(sp_worker *w, const sp_batch *b, const sp_pass *pass, double *loss_sum,
                  sp_error *err) {
    if (sp_engine_validate(w->m, b, pass, err)) return -1;
    if (w->m->cfg.arch == SP_ARCH_T5) return sp__t5_run(w, b, pass, loss_sum, err);
    int backward = (pass->grad || pass->kv_prefix_grad) && b->n_targets > 0;
    if (sp__worker_reserve(w, b, pass->n_kv_prefix, backward))
        return sp_fail(err, "out of memory reserving activations for %d tokens",
                       b->n_seq > 0 ? b->seq_start[b->n_seq] : 0);
    *loss_sum = 0.0;
    if (w->z.N == 0) return 0;
    const sp_layer *layer = w->m->layers;
    const sp__layer_acts *acts = w->acts;
    int L = w->z.L;
    const float *x_top = acts[L - 1].x_next; /* target rows */
    positions_prepare(w, b, NULL);
    embed_forward(w, acts[0].x, b, pass, NULL);
    for (int l = 0; l < L; l++) {
        layer_prefix pre = prefix_of(w, pass, l);
        block_forward(w, &layer[l], &acts[l], &pre, b, l == L - 1);
    }
    *loss_sum = head_forward(w, x_top, b, pass, backward);
    if (!backward) return 0;
    head_backward(w, w->s.top_dx, w->s.dln, x_top, b->n_targets);
    for (int l = L - 1; l >= 0; l--) {
        layer_prefix pre = prefix_of(w, pass, l);
        block_backward(w, &layer[l], &acts[l], &pre, b, l == L - 1);
    }
    if (pass->grad) embed_backward(w, w->s.dx, b, pass);
    return 0;
}

void sp__engine_extend(sp_worker *w, const sp_batch *b, const sp_gen_seq *seqs, float *logits) {
    if (w->z.N == 0) return;
    int L = w->z.L;
    sp__layer_acts a = w->acts[0]; /* every layer's, nothing kept for backward */
    positions_prepare(w, b, seqs);
    embed_forward(w, a.x, b, NULL, seqs);
    for (int l = 0; l < L; l++) {
        layer_prefix pre = layer_heads(w, l);
        pre.seqs = seqs;
        block_forward(w, &w->m->layers[l], &a, &pre, b, l == L - 1);
        float *t = a.x; /* the next layer reads this one's output */
        a.x = a.x_next, a.x_next = t;
    }
    if (b->n_targets > 0) head_logits(w, logits, NULL, a.x, b->n_targets);
}

int sp_engine_first_kv(sp_worker *w, const sp_batch *b, float *kv, sp_error *err) {
    sp_pass pass = {.n_prompt = 0};
    if (sp_engine_validate(w->m, b, &pass, err)) return -1;
    if (w->m->cfg.arch == SP_ARCH_T5) /* the decoder's first self-attention */
        return sp__t5_first_kv(w->m, b, kv) ? sp_fail(err, "out of memory") : 0;
    if (sp__worker_reserve(w, b, 0, 0))
        return sp_fail(err, "out of memory reserving activations for %d tokens",
                       b->n_seq > 0 ? b->seq_start[b->n_seq] : 0);
    const sp__dims *z = &w->z;
    const sp__layer_acts *a = &w->acts[0];
    const sp_layer *p = &w->m->layers[0];
    int n = (int)z->N;
    if (n == 0) return 0;
    positions_prepare(w, b, NULL);
    embed_forward(w, a->x, b, &pass, NULL);
    const float *ln1 = pre_norm_forward(w, a->ln1, a->ln1_mean, a->ln1_rstd, a->x, &p->ln1, n);
    qkv_forward(w, p, a, a->qkv, ln1, b, layer_heads(w, 0).hs.window > 0);
    for (int i = 0; i < n; i++) { /* [2, N, kv_dim]: the keys, then the values */
        const float *row = a->qkv + (size_t)i * z->wq + z->qd;
        memcpy(kv + (size_t)i * z->kvd, row, (size_t)z->kvd * sizeof *kv);
        memcpy(kv + ((size_t)n + i) * z->kvd, row + z->kvd, (size_t)z->kvd * sizeof *kv);
    }
    return 0;
}

int sp_engine_first_kv_turns(const sp_model *m) {
    switch (sp__family_for(&m->cfg)->pos) {
    case SP_POS_LEARNED: /* wpe[position] before the first norm: keys and values change */
        return 0;
    case SP_POS_RELATIVE: /* T5: a bias on the scores, keys and values as at position 0 */
    case SP_POS_ROTARY:   /* the key turned by its position after the projection */
    case SP_POS_ALIBI:    /* on the scores: keys and values as at position 0 */
        return 1;
    }
    return 0;
}

int sp_engine_first_keys_unturn(sp_worker *w, float *keys, int n, sp_error *err) {
    switch (sp__family_for(&w->m->cfg)->pos) {
    case SP_POS_LEARNED:
        return sp_fail(err,
                       "layer-0 keys of %s depend on the position through the input: they "
                       "cannot be turned back",
                       sp_arch_model_type(w->m->cfg.arch));
    case SP_POS_RELATIVE: /* positions are a bias on the scores: nothing turns */
    case SP_POS_ALIBI:
        return 0;
    case SP_POS_ROTARY:
        break;
    }
    if (n < 1) return 0;
    int32_t start[2] = {0, n};
    int32_t *ids = calloc((size_t)n, sizeof *ids); /* token 0: only the positions count */
    sp_batch b = {1, start, ids, 0, NULL, NULL, NULL, NULL};
    if (!ids || sp__worker_reserve(w, &b, 0, 0)) {
        free(ids);
        return sp_fail(err, "out of memory reserving activations for %d tokens", n);
    }
    const sp__dims *z = &w->z;
    float *qkv = w->acts[0].qkv;
    memset(qkv, 0, (size_t)n * z->wq * sizeof *qkv);
    for (int i = 0; i < n; i++)
        memcpy(qkv + (size_t)i * z->wq + z->qd, keys + (size_t)i * z->kvd,
               (size_t)z->kvd * sizeof *keys);
    positions_prepare(w, &b, NULL);
    positions_qk(w, qkv, &b, 1, layer_heads(w, 0).hs.window > 0);
    for (int i = 0; i < n; i++)
        memcpy(keys + (size_t)i * z->kvd, qkv + (size_t)i * z->wq + z->qd,
               (size_t)z->kvd * sizeof *keys);
    free(ids);
    return 0;
}

int sp_engine_capture_kv(sp_worker *w, const int32_t *tokens, int n, float *kv, sp_error *err) {
    /* one target, whose loss is not used: the engine runs every layer over all positions */
    int32_t start[2] = {0, n}, pos = n - 1, id = 0;
    sp_batch b = {1, start, tokens, 1, &pos, &id, NULL, NULL};
    sp_pass pass = {.n_prompt = 0};
    double loss;
    if (n < 1) return sp_fail(err, "capturing keys and values: no tokens");
    if (w->m->cfg.arch == SP_ARCH_T5)
        return sp_fail(err, "a T5 prefix sits in the decoder's self-attention (as PEFT's), where "
                            "tokens' keys and values depend on the encoder's input: start it "
                            "with --init random (PEFT's) or from a FILE");
    if (sp_engine_run(w, &b, &pass, &loss, err)) return -1;
    const sp__dims *z = &w->z;
    for (int l = 0; l < z->L; l++)
        for (int i = 0; i < n; i++) {
            const float *row = w->acts[l].qkv + (size_t)i * z->wq;
            float *k = kv + ((size_t)l * 2 * n + i) * z->kvd, *v = k + (size_t)n * z->kvd;
            memcpy(k, row + z->qd, (size_t)z->kvd * sizeof *k);
            memcpy(v, row + z->qd + z->kvd, (size_t)z->kvd * sizeof *v);
        }
    return 0;
}
