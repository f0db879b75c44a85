/* T5 (T5ForConditionalGeneration) forward and backward to the soft prompt, as transformers'
 * modeling_t5.py computes it: the shared embedding (not scaled); in each block an RMS norm (no
 * mean, no bias) before self-attention, before the decoder's cross-attention and before the MLP,
 * each added to the residual; q kᵀ not scaled by 1/sqrt(d_kv); a learned bias per head and
 * relative position bucket, computed from block 0's table and added in every block (the
 * encoder's bidirectional, the decoder's causal), none in cross-attention; ReLU (wi, wo) or
 * gated-GELU (gelu_new(wi_0 x) * wi_1 x, wo); the final norms; a tied head scaling the decoder's
 * output by d_model^-0.5. Batch layout: t5.h.
 *
 * Shapes: Ne / Nd encoder / decoder rows of the batch (sequences with targets only), d, F, H heads
 * of hd columns, qd = H hd, V. Attention runs per sequence and head: the probabilities of one
 * head ([Tq, Tk]) are computed into scratch and recomputed by backward, nothing [T, T] is kept.
 * Linear layers are one product over all rows (kernels.c).
 *
 * A key/value prefix (prefix tuning) is PEFT's for T5: P rows of keys and values before every
 * decoder layer's self-attention (PEFT builds an EncoderDecoderCache and empties its
 * cross-attention part, so the encoder and the cross-attention run as without one); the
 * decoder's positions start at P (transformers' cache_position), so key j's bias for query i is
 * bucket(j - (P + i)), and the causal mask lets every query see the prefix. Layout [L, 2, P, qd]
 * over the decoder's layers. */
#include "model/t5.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"
#include "model/worker.h"

/* ---- relative positions ---------------------------------------------------------------------- */

int sp__t5_bucket(int rel, int bidirectional, int num_buckets, int max_distance) {
    int bucket = 0, n = num_buckets;
    if (bidirectional) {
        n /= 2;
        if (rel > 0) bucket += n;
        rel = rel < 0 ? -rel : rel;
    } else {
        rel = rel < 0 ? -rel : 0; /* -min(rel, 0): keys after the query are masked anyway */
    }
    int max_exact = n / 2;
    if (rel < max_exact) return bucket + rel;
    /* float32 throughout, as torch computes it on relative_position.float() */
    float v = logf((float)rel / (float)max_exact) / (float)log((double)max_distance / max_exact) *
              (float)(n - max_exact);
    int large = max_exact + (int)v;
    return bucket + (large < n - 1 ? large : n - 1);
}

/* ---- the batch as seq2seq ---------------------------------------------------------------------
 */

/* Sequence s's encoder rows [es, es + el) of the encoder's packed rows, decoder rows [ds, ds + dl);
 * first: its first target's packed position (el = 0: no targets, skipped). */
typedef struct t5_seq {
    int es, el, ds, dl, first;
} t5_seq;

/* Per layer: what backward reads. Encoder layers leave the cross-attention fields NULL. */
typedef struct t5_acts {
    float *x;             /* [n, d] input of the block (x of layer l + 1 is its output) */
    float *ln1, *r1;      /* [n, d], [n] */
    float *q, *k, *v;     /* [n, qd] self-attention */
    float *att;           /* [n, qd] */
    float *mid1;          /* [n, d] after self-attention */
    float *lnc, *rc;      /* decoder: norm before cross-attention */
    float *xq, *xk, *xv;  /* [Nd, qd], [Ne, qd] x 2 */
    float *catt;          /* [Nd, qd] */
    float *mid2;          /* [Nd, d] after cross-attention (encoder: mid1) */
    float *ln2, *r2;      /* [n, d], [n] */
    float *fc, *up, *aux; /* [n, F]: input projection(s), gelu_new's tanh (gated) */
} t5_acts;

struct sp__t5_work {
    float *mem;
    size_t cap; /* floats */
    t5_seq *seqs;
    int seq_cap;
    int *tgt_row; /* [n_targets] the decoder row of each target */
    int tgt_cap;
    int *bk_enc, *bk_dec; /* [2 Tmax - 1] buckets of rel + Tmax - 1 */
    int bk_cap;
    t5_acts *enc, *dec; /* [L] each */
    float *ex_top, *enc_out, *enc_r;
    float *dx_top;                      /* decoder output = dec[L - 1]'s block output [Nd, d] */
    float *top, *lnf, *lnf_r, *logits;  /* [n_tgt, d], [n_tgt, d], [n_tgt], [n_tgt, V] */
    float *act;                         /* [max(Ne, Nd), F] */
    float *probs, *dprobs;              /* [Tmax, Tmax] */
    float *kcat, *vcat, *gkcat, *gvcat; /* [Tmax, qd]: a prefix's rows, then a sequence's */
    float *gx, *gln, *gq, *gk, *gv, *gatt, *gfc, *gup; /* gradients, [max(Ne, Nd)] rows */
    float *genc; /* [Ne, d] gradient of the encoder's output */
    float *gxe;  /* [Ne, d] gradient of the encoder's residual stream */
};

size_t sp__t5_work_bytes(const sp__t5_work *t) {
    if (!t) return 0;
    return t->cap * sizeof(float) + (size_t)t->seq_cap * sizeof *t->seqs +
           ((size_t)t->tgt_cap + 2 * (size_t)t->bk_cap) * sizeof(int);
}

void sp__t5_work_free(sp__t5_work *t) {
    if (!t) return;
    free(t->mem), free(t->seqs), free(t->tgt_row), free(t->bk_enc), free(t->bk_dec);
    free(t->enc), free(t->dec);
    free(t);
}

/* Sizes of one run. */
typedef struct t5_dims {
    size_t Ne, Nd, nt, rows; /* rows: max(Ne, Nd) */
    int tmax, L, d, F, qd, V, gated, backward;
    int n_kv;      /* rows of the decoder's key/value prefix (tmax counts them) */
    int one_layer; /* forward only: every layer of a stack reuses layer 0's buffers */
} t5_dims;

/* Carves the buffers of z out of base (NULL: only counts); returns the floats used. */
static size_t t5_layout(sp__t5_work *t, const t5_dims *z, float *base) {
    size_t at = 0;
#define TAKE(n) (at += (n), base ? base + at - (n) : NULL)
    size_t d = (size_t)z->d, F = (size_t)z->F, qd = (size_t)z->qd, T = (size_t)z->tmax;
    for (int stack = 0; stack < 2; stack++)
        for (int l = 0; l < z->L; l++) {
            size_t n = stack ? z->Nd : z->Ne;
            t5_acts a = {0};
            if (z->one_layer && l > 0) { /* x_next of layer l - 1 is layer l's x: in place */
                if (base) (stack ? t->dec : t->enc)[l] = (stack ? t->dec : t->enc)[0];
                continue;
            }
            a.x = TAKE(n * d);
            a.ln1 = TAKE(n * d), a.r1 = TAKE(n);
            a.q = TAKE(n * qd), a.k = TAKE(n * qd), a.v = TAKE(n * qd), a.att = TAKE(n * qd);
            a.mid1 = TAKE(n * d);
            a.mid2 = a.mid1;
            if (stack) {
                a.lnc = TAKE(n * d), a.rc = TAKE(n);
                a.xq = TAKE(n * qd), a.xk = TAKE(z->Ne * qd), a.xv = TAKE(z->Ne * qd);
                a.catt = TAKE(n * qd), a.mid2 = TAKE(n * d);
            }
            a.ln2 = TAKE(n * d), a.r2 = TAKE(n);
            a.fc = TAKE(n * F);
            a.up = z->gated ? TAKE(n * F) : NULL;
            a.aux = z->gated ? TAKE(n * F) : NULL;
            if (base) (stack ? t->dec : t->enc)[l] = a;
        }
    float *ex_top = TAKE(z->Ne * d), *enc_out = TAKE(z->Ne * d), *enc_r = TAKE(z->Ne);
    float *dx_top = TAKE(z->Nd * d);
    float *top = TAKE(z->nt * d), *lnf = TAKE(z->nt * d), *lnf_r = TAKE(z->nt);
    float *logits = TAKE(z->nt * (size_t)z->V);
    float *act = TAKE(z->rows * F), *probs = TAKE(T * T);
    float *kcat = z->n_kv ? TAKE(T * qd) : NULL, *vcat = z->n_kv ? TAKE(T * qd) : NULL;
    float *gkcat = z->n_kv && z->backward ? TAKE(T * qd) : NULL;
    float *gvcat = z->n_kv && z->backward ? TAKE(T * qd) : NULL;
    float *dprobs = NULL, *gx = NULL, *gln = NULL, *gq = NULL, *gk = NULL, *gv = NULL;
    float *gatt = NULL, *gfc = NULL, *gup = NULL, *genc = NULL, *gxe = NULL;
    if (z->backward) {
        size_t r = z->rows;
        dprobs = TAKE(T * T);
        gx = TAKE(r * d), gln = TAKE(r * d), gq = TAKE(r * qd), gk = TAKE(r * qd);
        gv = TAKE(r * qd), gatt = TAKE(r * qd), gfc = TAKE(r * F);
        gup = z->gated ? TAKE(r * F) : NULL;
        genc = TAKE(z->Ne * d), gxe = TAKE(z->Ne * d);
    }
#undef TAKE
    if (base) {
        t->ex_top = ex_top, t->enc_out = enc_out, t->enc_r = enc_r, t->dx_top = dx_top;
        t->top = top, t->lnf = lnf, t->lnf_r = lnf_r, t->logits = logits, t->act = act;
        t->kcat = kcat, t->vcat = vcat, t->gkcat = gkcat, t->gvcat = gvcat;
        t->probs = probs, t->dprobs = dprobs, t->gx = gx, t->gln = gln, t->gq = gq, t->gk = gk;
        t->gv = gv, t->gatt = gatt, t->gfc = gfc, t->gup = gup, t->genc = genc, t->gxe = gxe;
    }
    return at;
}

static t5_dims model_dims(const sp_model *m, size_t Ne, size_t Nd, size_t nt, int tmax,
                          int backward) {
    const sp_model_config *c = &m->cfg;
    t5_dims z = {Ne,
                 Nd,
                 nt,
                 Ne > Nd ? Ne : Nd,
                 tmax,
                 c->n_layer,
                 c->d_model,
                 c->d_ff,
                 c->n_head * sp_config_head_dim(c),
                 c->vocab_size,
                 c->ff_gated,
                 backward,
                 0,
                 0};
    return z;
}

size_t sp__t5_activation_bytes(const sp_model *m, size_t n_tokens, size_t n_targets, int max_len) {
    t5_dims z = model_dims(m, n_tokens, n_tokens, n_targets, max_len, 1);
    int tm = max_len > 0 ? max_len : 1;
    size_t ints = (size_t)n_tokens + n_targets + 4 * (size_t)tm; /* seqs (5 ints) <= tokens */
    return t5_layout(NULL, &z, NULL) * sizeof(float) + ints * 5 * sizeof(int);
}

/* ---- validation ---------------------------------------------------------------------------- */

static int in_example(const sp_batch *b, int s, sp_error *err) {
    if (!b->source || !b->example_ids) return -1;
    return sp_fail_prefix(err, "%s: example %lld", b->source, (long long)b->example_ids[s]);
}

int sp__t5_validate(const sp_model *m, const sp_batch *b, const sp_pass *pass, sp_error *err) {
    const sp_model_config *c = &m->cfg;
    int P = pass->n_kv_prefix, j = 0;
    for (int s = 0; s < b->n_seq; s++) {
        int s0 = b->seq_start[s], s1 = b->seq_start[s + 1];
        if (j >= b->n_targets || b->target_pos[j] >= s1) {
            if (s1 - s0 > c->n_ctx) {
                sp_fail(err, "batch: sequence %d has length %d, expected 1..%d (n_positions)", s,
                        s1 - s0, c->n_ctx);
                return in_example(b, s, err);
            }
            continue;
        }
        int first = b->target_pos[j], last = first;
        while (j < b->n_targets && b->target_pos[j] < s1) last = b->target_pos[j++];
        if (first - s0 + 1 > c->n_ctx) {
            sp_fail(err,
                    "batch: sequence %d: the encoder's input (the %d positions up to the first "
                    "target) is longer than n_positions = %d",
                    s, first - s0 + 1, c->n_ctx);
            return in_example(b, s, err);
        }
        if (last - first + 1 + P > c->n_ctx) {
            char pre[64] = "";
            if (P) snprintf(pre, sizeof pre, " less the key/value prefix's %d", P);
            sp_fail(err,
                    "batch: sequence %d: the target spans %d decoder positions, more than the "
                    "decoder's limit n_positions = %d%s",
                    s, last - first + 1, c->n_ctx, pre);
            return in_example(b, s, err);
        }
        for (int t = first + 1; t <= last; t++)
            if (SP_IS_SOFT(b->tokens[t])) {
                sp_fail(err,
                        "batch: sequence %d, position %d: a soft token in the decoder's input "
                        "(after the first target): T5 takes soft tokens in the encoder's input",
                        s, t - s0);
                return in_example(b, s, err);
            }
    }
    return 0;
}

/* ---- steps --------------------------------------------------------------------------------- */

/* Buckets of every relative position -(T - 1) .. T - 1 (index rel + T - 1). */
static void buckets(int *bk, int T, int bidirectional, const sp_model_config *c) {
    for (int r = -(T - 1); r <= T - 1; r++)
        bk[r + T - 1] = sp__t5_bucket(r, bidirectional, c->rel_buckets, c->rel_max_distance);
}

/* What one attention call of a sequence reads. */
typedef struct t5_att {
    int tq, tk, H, hd, qd;
    const float *rel; /* [buckets, H] or NULL (cross-attention) */
    const int *bk;    /* buckets of rel + bk_mid */
    int bk_mid;
    int causal;
    int off; /* key index of query 0's own position: the prefix's rows come first */
} t5_att;

/* probs [tq, tk] = softmax(q_h k_hᵀ + bias_h) of head h (masked: 0). */
static void head_probs(float *P, const float *q, const float *k, int h, const t5_att *a) {
    int tq = a->tq, tk = a->tk;
    sp__sgemm_small(CblasNoTrans, CblasTrans, tq, tk, a->hd, 1.0f, q + h * a->hd, a->qd,
                    k + h * a->hd, a->qd, 0.0f, P, tk);
    for (int i = 0; i < tq; i++) {
        float *row = P + (size_t)i * tk;
        int end = a->causal ? i + a->off + 1 : tk;
        if (a->rel)
            for (int jj = 0; jj < end; jj++)
                row[jj] += a->rel[(size_t)a->bk[jj - i - a->off + a->bk_mid] * a->H + h];
        float mx = sp__max(row, end);
        float sum = sp__exp_shift_sum(row, end, mx);
        float inv = 1.0f / sum;
        for (int jj = 0; jj < end; jj++) row[jj] *= inv;
        for (int jj = end; jj < tk; jj++) row[jj] = 0.0f;
    }
}

/* out [tq, qd] = attention of q [tq, qd] over k, v [tk, qd]. */
static void attention(float *out, float *P, const float *q, const float *k, const float *v,
                      const t5_att *a) {
    for (int h = 0; h < a->H; h++) {
        head_probs(P, q, k, h, a);
        sp__sgemm_small(CblasNoTrans, CblasNoTrans, a->tq, a->hd, a->tk, 1.0f, P, a->tk,
                        v + h * a->hd, a->qd, 0.0f, out + h * a->hd, a->qd);
    }
}

/* gq [tq, qd], gk, gv [tk, qd] (overwritten) from gout [tq, qd], the probabilities recomputed. */
static void attention_backward(float *gq, float *gk, float *gv, float *P, float *dP,
                               const float *gout, const float *q, const float *k, const float *v,
                               const t5_att *a) {
    int tq = a->tq, tk = a->tk, hd = a->hd, qd = a->qd;
    for (int h = 0; h < a->H; h++) {
        size_t c = (size_t)h * hd;
        head_probs(P, q, k, h, a);
        sp__sgemm_small(CblasTrans, CblasNoTrans, tk, hd, tq, 1.0f, P, tk, gout + c, qd, 0.0f,
                        gv + c, qd); /* dV = Pᵀ dO */
        sp__sgemm_small(CblasNoTrans, CblasTrans, tq, tk, hd, 1.0f, gout + c, qd, v + c, qd, 0.0f,
                        dP, tk);       /* dP = dO Vᵀ */
        for (int i = 0; i < tq; i++) { /* dS = P (dP - sum_j P dP) */
            float *pr = P + (size_t)i * tk, *dr = dP + (size_t)i * tk;
            double dot = 0.0;
            for (int jj = 0; jj < tk; jj++) dot += (double)pr[jj] * dr[jj];
            for (int jj = 0; jj < tk; jj++) dr[jj] = pr[jj] * (dr[jj] - (float)dot);
        }
        sp__sgemm_small(CblasNoTrans, CblasNoTrans, tq, hd, tk, 1.0f, dP, tk, k + c, qd, 0.0f,
                        gq + c, qd); /* dQ = dS K */
        sp__sgemm_small(CblasTrans, CblasNoTrans, tk, hd, tq, 1.0f, dP, tk, q + c, qd, 0.0f, gk + c,
                        qd); /* dK = dSᵀ Q */
    }
}

/* What a run reads: the model, the sizes, the sequences. */
typedef struct t5_run {
    const sp_model *m;
    sp__t5_work *t;
    t5_dims z;
    int n_seq;
    const sp_pass *pass; /* the prefix and its gradient */
} t5_run;

static t5_att self_att(const t5_run *r, const t5_seq *q, int dec) {
    const sp_model_config *c = &r->m->cfg;
    int T = dec ? q->dl : q->el, off = dec ? r->z.n_kv : 0;
    t5_att a = {T,
                off + T,
                c->n_head,
                sp_config_head_dim(c),
                r->z.qd,
                dec ? r->m->dec_rel_bias : r->m->rel_bias,
                dec ? r->t->bk_dec : r->t->bk_enc,
                r->z.tmax - 1,
                dec,
                off};
    return a;
}

static t5_att cross_att(const t5_run *r, const t5_seq *q) {
    const sp_model_config *c = &r->m->cfg;
    t5_att a = {q->dl, q->el, c->n_head, sp_config_head_dim(c), r->z.qd, NULL, NULL, 0, 0, 0};
    return a;
}

/* Decoder layer l's prefix keys [n_kv, qd] (its values follow), or NULL. */
static const float *prefix_of(const t5_run *r, int l, int dec) {
    if (!dec || !r->z.n_kv) return NULL;
    return r->pass->kv_prefix + (size_t)l * 2 * r->z.n_kv * r->z.qd;
}

/* Where sequence s adds decoder layer l's prefix gradient (keys; values n_kv rows on), or NULL. */
static float *prefix_grad_of(const t5_run *r, int s, int l) {
    const sp_pass *pass = r->pass;
    if (!pass->kv_prefix_grad) return NULL;
    size_t layer = 2 * (size_t)r->z.n_kv * r->z.qd;
    return pass->kv_prefix_grad + (pass->per_sequence_grad ? (size_t)s * r->z.L * layer : 0) +
           (size_t)l * layer;
}

/* dst [n + T, qd] = pre's n rows, then src's T. */
static float *join_rows(float *dst, const float *pre, const float *src, int n, int T, int qd) {
    memcpy(dst, pre, (size_t)n * qd * sizeof *dst);
    memcpy(dst + (size_t)n * qd, src, (size_t)T * qd * sizeof *dst);
    return dst;
}

/* Self-attention of sequence q's rows of a, behind decoder layer l's prefix when there is one. */
static void self_attention(const t5_run *r, const t5_acts *a, const t5_seq *q, int dec, int l) {
    sp__t5_work *t = r->t;
    int qd = r->z.qd, n = r->z.n_kv, T = dec ? q->dl : q->el;
    size_t o = (size_t)(dec ? q->ds : q->es) * qd;
    t5_att at = self_att(r, q, dec);
    const float *pre = prefix_of(r, l, dec), *k = a->k + o, *v = a->v + o;
    if (pre) {
        k = join_rows(t->kcat, pre, k, n, T, qd);
        v = join_rows(t->vcat, pre + (size_t)n * qd, v, n, T, qd);
    }
    attention(a->att + o, t->probs, a->q + o, k, v, &at);
}

/* Its backward from gatt: gq, gk, gv of the sequence's rows; the prefix rows' gradients added to
 * the pass's (sequence s's with per_sequence_grad). */
static void self_attention_backward(const t5_run *r, const t5_acts *a, int s, int dec, int l) {
    sp__t5_work *t = r->t;
    const t5_seq *q = &t->seqs[s];
    int qd = r->z.qd, n = r->z.n_kv, T = dec ? q->dl : q->el;
    size_t o = (size_t)(dec ? q->ds : q->es) * qd, nq = (size_t)n * qd, tq = (size_t)T * qd;
    t5_att at = self_att(r, q, dec);
    const float *pre = prefix_of(r, l, dec);
    if (!pre) {
        attention_backward(t->gq + o, t->gk + o, t->gv + o, t->probs, t->dprobs, t->gatt + o,
                           a->q + o, a->k + o, a->v + o, &at);
        return;
    }
    const float *k = join_rows(t->kcat, pre, a->k + o, n, T, qd);
    const float *v = join_rows(t->vcat, pre + nq, a->v + o, n, T, qd);
    attention_backward(t->gq + o, t->gkcat, t->gvcat, t->probs, t->dprobs, t->gatt + o, a->q + o, k,
                       v, &at);
    memcpy(t->gk + o, t->gkcat + nq, tq * sizeof(float));
    memcpy(t->gv + o, t->gvcat + nq, tq * sizeof(float));
    float *g = prefix_grad_of(r, s, l);
    if (!g) return;
    for (size_t i = 0; i < nq; i++) g[i] += t->gkcat[i], g[nq + i] += t->gvcat[i];
}

/* The MLP of rows ln [n, d] into act [n, F] (fc, up, aux saved). */
static void mlp_forward(const t5_run *r, const sp_layer *p, const t5_acts *a, size_t n) {
    int d = r->z.d, F = r->z.F;
    sp__linear_fwd(a->fc, F, a->ln2, d, &p->mlp_in, (int)n);
    if (r->z.gated) {
        sp__linear_fwd(a->up, F, a->ln2, d, &p->mlp_up, (int)n);
        sp__geglu_forward(r->t->act, a->aux, a->fc, a->up, n * F);
    } else {
        sp__relu_forward(r->t->act, a->fc, n * F);
    }
}

/* gln [n, d] = the MLP's input gradient from gx [n, d] (the block output's). */
static void mlp_backward(const t5_run *r, const sp_layer *p, const t5_acts *a, size_t n) {
    sp__t5_work *t = r->t;
    int d = r->z.d, F = r->z.F;
    sp__linear_bwd(t->gfc, F, t->gx, d, &p->mlp_out, (int)n, 0);
    if (r->z.gated) {
        sp__geglu_backward(t->gfc, t->gup, t->gfc, a->fc, a->aux, a->up, n * F);
        sp__linear_bwd(t->gln, d, t->gfc, F, &p->mlp_in, (int)n, 0);
        sp__linear_bwd(t->gln, d, t->gup, F, &p->mlp_up, (int)n, 1);
    } else {
        sp__relu_backward(t->gfc, t->gfc, a->fc, n * F);
        sp__linear_bwd(t->gln, d, t->gfc, F, &p->mlp_in, (int)n, 0);
    }
}

/* One block of either stack over its n rows; x_next [n, d] receives the output. */
static void block_forward(const t5_run *r, const sp_layer *p, const t5_acts *a, float *x_next,
                          int dec, int l) {
    sp__t5_work *t = r->t;
    const t5_dims *z = &r->z;
    size_t n = dec ? z->Nd : z->Ne;
    int d = z->d, qd = z->qd;
    float eps = r->m->cfg.ln_eps;
    sp__rmsnorm_forward(a->ln1, a->r1, a->x, p->ln1.w, (int)n, d, eps);
    sp__linear_fwd(a->q, qd, a->ln1, d, &p->q, (int)n);
    sp__linear_fwd(a->k, qd, a->ln1, d, &p->k, (int)n);
    sp__linear_fwd(a->v, qd, a->ln1, d, &p->v, (int)n);
    for (int s = 0; s < r->n_seq; s++)
        if (t->seqs[s].el) self_attention(r, a, &t->seqs[s], dec, l);
    sp__linear_fwd_residual(a->mid1, a->x, a->att, qd, &p->o, (int)n);
    if (dec) {
        sp__rmsnorm_forward(a->lnc, a->rc, a->mid1, p->ln_cross.w, (int)n, d, eps);
        sp__linear_fwd(a->xq, qd, a->lnc, d, &p->xq, (int)n);
        sp__linear_fwd(a->xk, qd, t->enc_out, d, &p->xk, (int)z->Ne);
        sp__linear_fwd(a->xv, qd, t->enc_out, d, &p->xv, (int)z->Ne);
        for (int s = 0; s < r->n_seq; s++) {
            const t5_seq *q = &t->seqs[s];
            if (!q->el) continue;
            size_t o = (size_t)q->ds * qd, e = (size_t)q->es * qd;
            t5_att at = cross_att(r, q);
            attention(a->catt + o, t->probs, a->xq + o, a->xk + e, a->xv + e, &at);
        }
        sp__linear_fwd_residual(a->mid2, a->mid1, a->catt, qd, &p->xo, (int)n);
    }
    sp__rmsnorm_forward(a->ln2, a->r2, a->mid2, p->ln2.w, (int)n, d, eps);
    mlp_forward(r, p, a, n);
    sp__linear_fwd_residual(x_next, a->mid2, t->act, z->F, &p->mlp_out, (int)n);
}

/* gx [n, d]: dL/d the block's output on entry, dL/d its input on return (cross-attention adds
 * the encoder output's gradient to genc). */
static void block_backward(const t5_run *r, const sp_layer *p, const t5_acts *a, int dec, int l) {
    sp__t5_work *t = r->t;
    const t5_dims *z = &r->z;
    size_t n = dec ? z->Nd : z->Ne;
    int d = z->d, qd = z->qd;
    mlp_backward(r, p, a, n);
    sp__rmsnorm_backward(t->gx, t->gln, a->mid2, a->r2, p->ln2.w, (int)n, d);
    if (dec) {
        sp__linear_bwd(t->gatt, qd, t->gx, d, &p->xo, (int)n, 0);
        for (int s = 0; s < r->n_seq; s++) {
            const t5_seq *q = &t->seqs[s];
            if (!q->el) continue;
            size_t o = (size_t)q->ds * qd, e = (size_t)q->es * qd;
            t5_att at = cross_att(r, q);
            attention_backward(t->gq + o, t->gk + e, t->gv + e, t->probs, t->dprobs, t->gatt + o,
                               a->xq + o, a->xk + e, a->xv + e, &at);
        }
        sp__linear_bwd(t->gln, d, t->gq, qd, &p->xq, (int)n, 0);
        sp__linear_bwd(t->genc, d, t->gk, qd, &p->xk, (int)z->Ne, 1);
        sp__linear_bwd(t->genc, d, t->gv, qd, &p->xv, (int)z->Ne, 1);
        sp__rmsnorm_backward(t->gx, t->gln, a->mid1, a->rc, p->ln_cross.w, (int)n, d);
    }
    sp__linear_bwd(t->gatt, qd, t->gx, d, &p->o, (int)n, 0);
    for (int s = 0; s < r->n_seq; s++)
        if (t->seqs[s].el) self_attention_backward(r, a, s, dec, l);
    sp__linear_bwd(t->gln, d, t->gq, qd, &p->q, (int)n, 0);
    sp__linear_bwd(t->gln, d, t->gk, qd, &p->k, (int)n, 1);
    sp__linear_bwd(t->gln, d, t->gv, qd, &p->v, (int)n, 1);
    sp__rmsnorm_backward(t->gx, t->gln, a->x, a->r1, p->ln1.w, (int)n, d);
}

/* ---- a run --------------------------------------------------------------------------------- */

static int grow(void **p, int *cap, int n, size_t size) {
    if (n <= *cap) return 0;
    void *q = realloc(*p, (size_t)n * size);
    if (!q) return -1;
    *p = q, *cap = n;
    return 0;
}

/* The buckets of the run's longest sequence and the arena of r->z, carved into t. */
static int reserve(t5_run *r) {
    sp__t5_work *t = r->t;
    int tmax = r->z.tmax;
    if (2 * tmax - 1 > t->bk_cap) {
        free(t->bk_enc), free(t->bk_dec);
        t->bk_enc = malloc((size_t)(2 * tmax - 1) * sizeof(int));
        t->bk_dec = malloc((size_t)(2 * tmax - 1) * sizeof(int));
        t->bk_cap = t->bk_enc && t->bk_dec ? 2 * tmax - 1 : 0;
        if (!t->bk_cap) return -1;
    }
    buckets(t->bk_enc, tmax, 1, &r->m->cfg);
    buckets(t->bk_dec, tmax, 0, &r->m->cfg);
    size_t need = t5_layout(t, &r->z, NULL);
    if (need > t->cap) {
        free(t->mem);
        t->mem = malloc((need > 0 ? need : 1) * sizeof(float));
        t->cap = t->mem ? need : 0;
        if (!t->mem) return -1;
    }
    t5_layout(t, &r->z, t->mem);
    return 0;
}

/* Splits the batch into encoder and decoder rows (t->seqs, t->tgt_row); sizes z. */
static int plan(t5_run *r, const sp_batch *b, int backward) {
    sp__t5_work *t = r->t;
    if (grow((void **)&t->seqs, &t->seq_cap, b->n_seq > 0 ? b->n_seq : 1, sizeof *t->seqs) ||
        grow((void **)&t->tgt_row, &t->tgt_cap, b->n_targets > 0 ? b->n_targets : 1,
             sizeof *t->tgt_row))
        return -1;
    size_t Ne = 0, Nd = 0;
    int tmax = 1, j = 0, n_kv = r->pass ? r->pass->n_kv_prefix : 0;
    for (int s = 0; s < b->n_seq; s++) {
        t5_seq *q = &t->seqs[s];
        int s0 = b->seq_start[s], s1 = b->seq_start[s + 1];
        memset(q, 0, sizeof *q);
        if (j >= b->n_targets || b->target_pos[j] >= s1) continue;
        q->first = b->target_pos[j];
        q->es = (int)Ne, q->el = q->first - s0 + 1, q->ds = (int)Nd;
        for (; j < b->n_targets && b->target_pos[j] < s1; j++)
            t->tgt_row[j] = q->ds + b->target_pos[j] - q->first;
        q->dl = b->target_pos[j - 1] - q->first + 1;
        Ne += (size_t)q->el, Nd += (size_t)q->dl;
        if (q->el > tmax) tmax = q->el;
        if (q->dl + n_kv > tmax) tmax = q->dl + n_kv; /* the prefix's keys come first */
    }
    r->n_seq = b->n_seq;
    r->z = model_dims(r->m, Ne, Nd, (size_t)b->n_targets, tmax, backward);
    r->z.n_kv = n_kv;
    return reserve(r);
}

/* The encoder's rows (soft tokens from the prompt) and the decoder's (start token, then the
 * tokens after the first target). */
static void embed(const t5_run *r, const sp_batch *b, const sp_pass *pass) {
    const sp_model *m = r->m;
    sp__t5_work *t = r->t;
    size_t d = (size_t)r->z.d;
    for (int s = 0; s < r->n_seq; s++) {
        const t5_seq *q = &t->seqs[s];
        if (!q->el) continue;
        const float *prompt =
            pass->seq_prompts && pass->seq_prompts[s] ? pass->seq_prompts[s] : pass->prompt;
        int s0 = b->seq_start[s];
        for (int i = 0; i < q->el; i++) {
            int32_t tok = b->tokens[s0 + i];
            float *x = t->enc[0].x + (size_t)(q->es + i) * d;
            if (SP_IS_SOFT(tok))
                memcpy(x, prompt + (size_t)SP_SOFT_INDEX(tok) * d, d * sizeof(float));
            else
                sp_model_embedding_row(m, tok, x);
        }
        for (int i = 0; i < q->dl; i++) {
            int32_t tok = i == 0 ? m->cfg.decoder_start : b->tokens[q->first + i];
            sp_model_embedding_row(m, tok, t->dec[0].x + (size_t)(q->ds + i) * d);
        }
    }
}

/* The encoder's blocks and final norm: t->enc_out [Ne, d]. */
static void encode(const t5_run *r) {
    const sp_model *m = r->m;
    sp__t5_work *t = r->t;
    int L = r->z.L;
    for (int l = 0; l < L; l++)
        block_forward(r, &m->layers[l], &t->enc[l], l + 1 < L ? t->enc[l + 1].x : t->ex_top, 0, l);
    sp__rmsnorm_forward(t->enc_out, t->enc_r, t->ex_top, m->enc_lnf.w, (int)r->z.Ne, r->z.d,
                        m->cfg.ln_eps);
}

/* Encoder and decoder forward; the logits and cross-entropy of every target. */
static double forward(const t5_run *r, const sp_batch *b, const sp_pass *pass) {
    const sp_model *m = r->m;
    sp__t5_work *t = r->t;
    const t5_dims *z = &r->z;
    int L = z->L, d = z->d, V = z->V;
    encode(r);
    for (int l = 0; l < L; l++)
        block_forward(r, &m->layers[L + l], &t->dec[l], l + 1 < L ? t->dec[l + 1].x : t->dx_top, 1,
                      l);
    int nt = (int)z->nt;
    for (int j = 0; j < nt; j++)
        memcpy(t->top + (size_t)j * d, t->dx_top + (size_t)t->tgt_row[j] * d,
               (size_t)d * sizeof(float));
    sp__rmsnorm_forward(t->lnf, t->lnf_r, t->top, m->lnf.w, nt, d, m->cfg.ln_eps);
    if (m->cfg.tied) { /* sequence_output * model_dim ** -0.5 */
        float k = (float)pow((double)d, -0.5);
        for (size_t i = 0; i < (size_t)nt * d; i++) t->lnf[i] *= k;
    }
    sp__linear_fwd(t->logits, V, t->lnf, d, &m->lm_head, nt);
    if (pass->target_logits) memcpy(pass->target_logits, t->logits, (size_t)nt * V * sizeof(float));
    double loss = 0.0;
    for (int j = 0; j < nt; j++) {
        double l =
            sp__cross_entropy(t->logits + (size_t)j * V, V, b->target_ids[j], z->backward, 1.0f);
        if (pass->target_loss) pass->target_loss[j] = l;
        loss += l;
    }
    return loss;
}

/* From the dlogits forward left down to the prompt's gradient. */
static void backward(const t5_run *r, const sp_batch *b, const sp_pass *pass) {
    const sp_model *m = r->m;
    sp__t5_work *t = r->t;
    const t5_dims *z = &r->z;
    int L = z->L, d = z->d, nt = (int)z->nt;
    size_t dd = (size_t)d;
    sp__linear_bwd(t->gln, d, t->logits, z->V, &m->lm_head, nt, 0); /* d(scaled lnf) */
    if (m->cfg.tied) {
        float k = (float)pow((double)d, -0.5);
        for (size_t i = 0; i < (size_t)nt * dd; i++) t->gln[i] *= k;
    }
    memset(t->gx, 0, z->Nd * dd * sizeof(float));
    /* the final norm at the target rows, scattered to the decoder's rows */
    float *gtop = t->lnf; /* lnf is not read again */
    memset(gtop, 0, (size_t)nt * dd * sizeof(float));
    sp__rmsnorm_backward(gtop, t->gln, t->top, t->lnf_r, m->lnf.w, nt, d);
    for (int j = 0; j < nt; j++) {
        float *g = t->gx + (size_t)t->tgt_row[j] * dd;
        for (size_t i = 0; i < dd; i++) g[i] += gtop[(size_t)j * dd + i];
    }
    memset(t->genc, 0, z->Ne * dd * sizeof(float));
    for (int l = L - 1; l >= 0; l--) block_backward(r, &m->layers[L + l], &t->dec[l], 1, l);
    if (!pass->grad) return; /* the prefix's gradient alone: the encoder is not needed */
    memset(t->gx, 0, z->Ne * dd * sizeof(float));
    sp__rmsnorm_backward(t->gx, t->genc, t->ex_top, t->enc_r, m->enc_lnf.w, (int)z->Ne, d);
    for (int l = L - 1; l >= 0; l--) block_backward(r, &m->layers[l], &t->enc[l], 0, l);
    size_t per_seq = (size_t)pass->n_prompt * dd;
    for (int s = 0; s < r->n_seq; s++) {
        const t5_seq *q = &t->seqs[s];
        float *g = pass->grad + (pass->per_sequence_grad ? (size_t)s * per_seq : 0);
        for (int i = 0; i < q->el; i++) {
            int32_t tok = b->tokens[b->seq_start[s] + i];
            if (!SP_IS_SOFT(tok)) continue;
            float *gk = g + (size_t)SP_SOFT_INDEX(tok) * dd;
            const float *gr = t->gx + (size_t)(q->es + i) * dd;
            for (size_t k = 0; k < dd; k++) gk[k] += gr[k];
        }
    }
}

/* The worker's T5 buffers, made at its first run; NULL when out of memory. */
static sp__t5_work *work_of(sp_worker *w) {
    if (!w->t5 && !(w->t5 = calloc(1, sizeof *w->t5))) return NULL;
    sp__t5_work *t = w->t5;
    int L = w->m->cfg.n_layer;
    if (!t->enc && (!(t->enc = calloc((size_t)L, sizeof *t->enc)) ||
                    !(t->dec = calloc((size_t)L, sizeof *t->dec))))
        return NULL;
    return t;
}

int sp__t5_run(sp_worker *w, const sp_batch *b, const sp_pass *pass, double *loss_sum,
               sp_error *err) {
    *loss_sum = 0.0;
    sp__t5_work *t = work_of(w);
    if (!t) return sp_fail(err, "out of memory reserving T5 activations");
    t5_run r = {.m = w->m, .t = t, .pass = pass};
    int want = (pass->grad != NULL || pass->kv_prefix_grad != NULL) && b->n_targets > 0;
    if (plan(&r, b, want))
        return sp_fail(err, "out of memory reserving activations for %d tokens",
                       b->n_seq > 0 ? b->seq_start[b->n_seq] : 0);
    if (b->n_targets == 0) return 0;
    embed(&r, b, pass);
    *loss_sum = forward(&r, b, pass);
    if (want) backward(&r, b, pass);
    return 0;
}

/* ---- the encoder alone (generation) ---------------------------------------------------------- */

/* Every position of b's sequences is the encoder's (no decoder rows, no targets); one layer's
 * buffers. */
static int plan_encode(t5_run *r, const sp_batch *b) {
    sp__t5_work *t = r->t;
    if (grow((void **)&t->seqs, &t->seq_cap, b->n_seq > 0 ? b->n_seq : 1, sizeof *t->seqs))
        return -1;
    int tmax = 1;
    for (int s = 0; s < b->n_seq; s++) {
        int s0 = b->seq_start[s], len = b->seq_start[s + 1] - s0;
        t->seqs[s] = (t5_seq){s0, len, 0, 0, s0 + len - 1};
        tmax = len > tmax ? len : tmax;
    }
    r->n_seq = b->n_seq;
    r->z = model_dims(r->m, (size_t)b->seq_start[b->n_seq], 0, 0, tmax, 0);
    r->z.one_layer = 1;
    return reserve(r);
}

const float *sp__t5_encode(sp_worker *w, const sp_batch *b, const float *const *prompts) {
    sp__t5_work *t = work_of(w);
    t5_run r = {.m = w->m, .t = t};
    if (!t || plan_encode(&r, b)) return NULL;
    sp_pass pass = {.seq_prompts = prompts};
    embed(&r, b, &pass);
    encode(&r);
    return t->enc_out;
}

size_t sp__t5_encode_bytes(const sp_model *m, size_t n_rows, int max_len) {
    t5_dims z = model_dims(m, n_rows, 0, 0, max_len > 0 ? max_len : 1, 0);
    z.one_layer = 1;
    size_t ints = n_rows * 5 + 4 * (size_t)z.tmax; /* seqs (5 ints each, <= rows), buckets */
    return t5_layout(NULL, &z, NULL) * sizeof(float) + ints * sizeof(int);
}

int sp__t5_first_kv(const sp_model *m, const sp_batch *b, float *kv) {
    const sp_model_config *c = &m->cfg;
    const sp_layer *p = &m->layers[c->n_layer]; /* the decoder's first block */
    int n = b->n_seq > 0 ? b->seq_start[b->n_seq] : 0, d = c->d_model;
    int qd = c->n_head * sp_config_head_dim(c);
    if (n == 0) return 0;
    float *x = malloc((size_t)n * d * sizeof *x), *ln = malloc((size_t)n * d * sizeof *ln);
    float *r = malloc((size_t)n * sizeof *r);
    int rc = x && ln && r ? 0 : -1;
    for (int i = 0; rc == 0 && i < n; i++)
        sp_model_embedding_row(m, b->tokens[i], x + (size_t)i * d);
    if (rc == 0) {
        sp__rmsnorm_forward(ln, r, x, p->ln1.w, n, d, c->ln_eps);
        sp__linear_fwd(kv, qd, ln, d, &p->k, n);
        sp__linear_fwd(kv + (size_t)n * qd, qd, ln, d, &p->v, n);
    }
    free(x), free(ln), free(r);
    return rc;
}
