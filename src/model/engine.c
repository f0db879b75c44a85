/* The GPT-2 soft-prompt engine: forward over packed variable-length sequences, cross-entropy at
 * target positions, and backward of activation gradients down to the prompt embeddings.
 *
 * Shapes: N = packed tokens of the batch, d = model width, F = d_ff, H = heads, V = vocabulary,
 * T_s = length of sequence s, n_tgt = target positions. Every linear layer runs once over all N
 * packed rows (one sgemm), attention runs per sequence, so no work is spent on padding. */
#include "softprompt/engine.h"

#include <stdlib.h>
#include <string.h>

#include "model/kernels.h"

typedef struct buffer {
    float *p;
    size_t cap; /* floats */
} buffer;

struct sp_worker {
    const sp_model *m;
    /* Saved for backward; layer l's slice starts at l * N * width. */
    buffer x;         /* [L + 1][N, d] residual stream entering each layer; x[L] leaves the last */
    buffer ln1, ln2;  /* [L][N, d] LayerNorm outputs */
    buffer ln1_stats; /* [L][2, N] mean then rstd */
    buffer ln2_stats; /* [L][2, N] */
    buffer qkv;       /* [L][N, 3d] */
    buffer lse;       /* [L][N, H] log-sum-exp of each attention row (sequence s at H*start) */
    buffer atty;      /* [L][N, d] attention output before c_proj */
    buffer xmid;      /* [L][N, d] residual stream after attention */
    buffer fc;        /* [L][N, F] c_fc output before GELU */
    buffer fc_tanh;   /* [L][N, F] the tanh inside gelu_new, so backward need not recompute it */
    buffer fc_act;    /* [N, F] gelu output: only the next product needs it (no dW), not saved */
    buffer top_rows;  /* [n_tgt, d] target rows gathered/scattered around the top layer */
    buffer lnf;       /* [n_tgt, d] final LayerNorm, only at target positions */
    buffer lnf_stats; /* [2, n_tgt] */
    buffer logits;    /* [n_tgt, V], then dlogits */
    /* Backward scratch, reused by every layer. */
    buffer dx;          /* [N, d] gradient of the loss sum w.r.t. the residual stream */
    buffer dtmp;        /* [N, d] */
    buffer dff;         /* [N, F] */
    buffer dqkv;        /* [N, 3d] */
    buffer att_scratch; /* attention blocks: SP_ATT_BWD_SCRATCH(max T_s) */
};

/* Sizes of one batch, derived once per call. */
typedef struct dims {
    int L, d, F, H, V;
    size_t N, n_tgt;
    int max_len;
} dims;

static int ensure(buffer *b, size_t n) {
    if (n <= b->cap) return 0;
    free(b->p);
    b->p = malloc(n * sizeof(float));
    b->cap = b->p ? n : 0;
    return b->p ? 0 : -1;
}

static buffer *all_buffers(sp_worker *w, int *count) {
    *count = (int)((sizeof *w - offsetof(sp_worker, x)) / sizeof(buffer));
    return &w->x;
}

sp_worker *sp_worker_new(const sp_model *m) {
    sp_worker *w = calloc(1, sizeof *w);
    if (w) w->m = m;
    return w;
}

void sp_worker_free(sp_worker *w) {
    if (!w) return;
    int n;
    buffer *b = all_buffers(w, &n);
    for (int i = 0; i < n; i++) free(b[i].p);
    free(w);
}

size_t sp_worker_bytes(const sp_worker *w) {
    int n;
    buffer *b = all_buffers((sp_worker *)w, &n);
    size_t total = 0;
    for (int i = 0; i < n; i++) total += b[i].cap * sizeof(float);
    return total;
}

const sp_model *sp_worker_model(const sp_worker *w) {
    return w->m;
}

size_t sp_model_activation_bytes_per_token(const sp_model *m, int seq_len) {
    const sp_gpt2_config *c = &m->cfg;
    /* per layer: x, ln1, atty, xmid, ln2 (5d) + qkv (3d) + fc, fc_tanh (2F) + 4 LayerNorm stats
     * + H attention log-sum-exps; plus scratch shared by all layers: dx, dtmp (2d), dqkv (3d),
     * dff and the GELU output (2F); plus the attention block scratch of one sequence, spread
     * over its tokens. No [T, T] matrix is kept, so the cost per token does not grow with T. */
    size_t per_layer = 8 * (size_t)c->d_model + 2 * (size_t)c->d_ff + 4 + (size_t)c->n_head;
    size_t scratch = 5 * (size_t)c->d_model + 2 * (size_t)c->d_ff;
    size_t att = seq_len > 0 ? SP_ATT_BWD_SCRATCH(seq_len) / (size_t)seq_len : 0;
    return ((size_t)c->n_layer * per_layer + c->d_model + scratch + att) * sizeof(float);
}

static int validate(const sp_model *m, const sp_batch *b, const sp_pass *pass, sp_error *err) {
    const sp_gpt2_config *c = &m->cfg;
    if (b->n_seq < 0 || b->n_targets < 0 || pass->n_prompt < 0)
        return sp_fail(err, "batch: negative count (n_seq %d, n_targets %d, n_prompt %d)", b->n_seq,
                       b->n_targets, pass->n_prompt);
    if (b->n_seq > 0 && b->seq_start[0] != 0)
        return sp_fail(err, "batch: seq_start[0] is %d, expected 0", b->seq_start[0]);
    for (int s = 0; s < b->n_seq; s++) {
        int len = b->seq_start[s + 1] - b->seq_start[s];
        if (len < 1 || len > c->n_ctx)
            return sp_fail(err, "batch: sequence %d has length %d, expected 1..%d (n_positions)", s,
                           len, c->n_ctx);
    }
    int n_tok = b->n_seq > 0 ? b->seq_start[b->n_seq] : 0;
    for (int t = 0; t < n_tok; t++) {
        int32_t tok = b->tokens[t];
        if (SP_IS_SOFT(tok) ? SP_SOFT_INDEX(tok) >= pass->n_prompt : tok >= c->vocab_size)
            return sp_fail(err, "batch: position %d holds %s %d, expected < %d", t,
                           SP_IS_SOFT(tok) ? "soft token" : "token id",
                           SP_IS_SOFT(tok) ? SP_SOFT_INDEX(tok) : tok,
                           SP_IS_SOFT(tok) ? pass->n_prompt : c->vocab_size);
    }
    for (int j = 0; j < b->n_targets; j++) {
        int pos = b->target_pos[j], id = b->target_ids[j];
        if (pos < 0 || pos >= n_tok || (j > 0 && pos <= b->target_pos[j - 1]))
            return sp_fail(err,
                           "batch: target %d at position %d: positions must be strictly "
                           "increasing within 0..%d",
                           j, pos, n_tok - 1);
        if (id < 0 || id >= c->vocab_size)
            return sp_fail(err, "batch: target %d has token id %d, expected 0..%d", j, id,
                           c->vocab_size - 1);
    }
    return 0;
}

static dims batch_dims(const sp_model *m, const sp_batch *b) {
    const sp_gpt2_config *c = &m->cfg;
    dims z = {c->n_layer, c->d_model, c->d_ff, c->n_head, c->vocab_size, 0, 0, 0};
    z.N = b->n_seq > 0 ? (size_t)b->seq_start[b->n_seq] : 0;
    z.n_tgt = (size_t)b->n_targets;
    for (int s = 0; s < b->n_seq; s++) {
        size_t len = (size_t)(b->seq_start[s + 1] - b->seq_start[s]);
        if ((int)len > z.max_len) z.max_len = (int)len;
    }
    return z;
}

static int reserve(sp_worker *w, const dims *z, int backward) {
    size_t L = (size_t)z->L, N = z->N, d = (size_t)z->d, F = (size_t)z->F;
    int rc = 0;
    rc |= ensure(&w->x, (L + 1) * N * d);
    rc |= ensure(&w->ln1, L * N * d) | ensure(&w->ln2, L * N * d);
    rc |= ensure(&w->ln1_stats, L * 2 * N) | ensure(&w->ln2_stats, L * 2 * N);
    rc |= ensure(&w->qkv, L * N * 3 * d) | ensure(&w->lse, L * N * (size_t)z->H);
    rc |= ensure(&w->att_scratch, SP_ATT_BWD_SCRATCH(z->max_len));
    rc |= ensure(&w->atty, L * N * d) | ensure(&w->xmid, L * N * d);
    rc |= ensure(&w->fc, L * N * F) | ensure(&w->fc_tanh, L * N * F) | ensure(&w->fc_act, N * F);
    rc |= ensure(&w->top_rows, z->n_tgt * d);
    rc |= ensure(&w->lnf, z->n_tgt * d) | ensure(&w->lnf_stats, 2 * z->n_tgt);
    rc |= ensure(&w->logits, z->n_tgt * (size_t)z->V);
    if (backward) {
        rc |= ensure(&w->dx, N * d) | ensure(&w->dtmp, N * d) | ensure(&w->dff, N * F);
        rc |= ensure(&w->dqkv, N * 3 * d);
    }
    return rc;
}

/* x0[t] = (soft ? prompt[k] : wte[id]) + wpe[position of t within its own sequence] */
static void embed_forward(sp_worker *w, const sp_batch *b, const float *prompt) {
    const sp_model *m = w->m;
    int d = m->cfg.d_model;
    for (int s = 0; s < b->n_seq; s++) {
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            int32_t tok = b->tokens[t];
            const float *e = SP_IS_SOFT(tok) ? prompt + (size_t)SP_SOFT_INDEX(tok) * d
                                             : m->wte + (size_t)tok * d;
            const float *p = m->wpe + (size_t)(t - b->seq_start[s]) * d;
            float *x = w->x.p + (size_t)t * d;
            for (int j = 0; j < d; j++) x[j] = e[j] + p[j];
        }
    }
}

static void attention_forward_all(sp_worker *w, int l, const sp_batch *b, const dims *z) {
    size_t N = z->N, d = (size_t)z->d, H = (size_t)z->H;
    const float *qkv = w->qkv.p + l * N * 3 * d;
    float *atty = w->atty.p + l * N * d, *lse = w->lse.p + l * N * H;
    for (int s = 0; s < b->n_seq; s++) {
        size_t start = (size_t)b->seq_start[s];
        int len = b->seq_start[s + 1] - b->seq_start[s];
        sp_attention_forward(atty + start * d, lse + start * H, w->att_scratch.p,
                             qkv + start * 3 * d, len, z->d, z->H);
    }
}

/* The part of block l after attention, over n rows: xmid (holding the residual input rows)
 * += c_proj(atty); x[l+1] = xmid + mlp(ln2(xmid)). Row r of every buffer is row r of the block. */
static void post_attention_forward(sp_worker *w, int l, const float *atty, int n, const dims *z) {
    const sp_gpt2_layer *p = &w->m->layers[l];
    size_t N = z->N, d = (size_t)z->d, F = (size_t)z->F;
    float *xmid = w->xmid.p + l * N * d, *ln2 = w->ln2.p + l * N * d;
    float *st2 = w->ln2_stats.p + l * 2 * N, *fc = w->fc.p + l * N * F;
    float *fc_tanh = w->fc_tanh.p + l * N * F, *x_next = w->x.p + (l + 1) * N * d;
    sp_linear_forward(xmid, atty, p->attn_proj_w, p->attn_proj_b, n, z->d, z->d, 1);
    sp_layernorm_forward(ln2, st2, st2 + N, xmid, p->ln2_w, p->ln2_b, n, z->d, w->m->cfg.ln_eps);
    sp_linear_forward(fc, ln2, p->fc_w, p->fc_b, n, z->d, z->F, 0);
    sp_gelu_forward(w->fc_act.p, fc_tanh, fc, (size_t)n * F);
    memcpy(x_next, xmid, (size_t)n * d * sizeof(float));
    sp_linear_forward(x_next, w->fc_act.p, p->fc_proj_w, p->fc_proj_b, n, z->F, z->d, 1);
}

/* Copies rows target_pos[j] of src [N, d] to rows j of dst [n_tgt, d]. */
static void gather_targets(float *dst, const float *src, const sp_batch *b, size_t d) {
    for (int j = 0; j < b->n_targets; j++)
        memcpy(dst + (size_t)j * d, src + (size_t)b->target_pos[j] * d, d * sizeof(float));
}

/* dst [N, d] = 0 except rows target_pos[j] = src row j. */
static void scatter_targets(float *dst, const float *src, const sp_batch *b, size_t N, size_t d) {
    memset(dst, 0, N * d * sizeof(float));
    for (int j = 0; j < b->n_targets; j++)
        memcpy(dst + (size_t)b->target_pos[j] * d, src + (size_t)j * d, d * sizeof(float));
}

/* Block l over all N rows. In the top block only the target rows reach the loss after
 * attention (keys and values need every row, the rest does not), so from c_proj on it runs on
 * the n_tgt target rows alone, stored compactly as rows 0..n_tgt-1. */
static void layer_forward(sp_worker *w, int l, const sp_batch *b, const dims *z) {
    const sp_gpt2_layer *p = &w->m->layers[l];
    size_t N = z->N, d = (size_t)z->d;
    const float *x = w->x.p + l * N * d;
    float *ln1 = w->ln1.p + l * N * d, *st1 = w->ln1_stats.p + l * 2 * N;
    float *qkv = w->qkv.p + l * N * 3 * d, *atty = w->atty.p + l * N * d;
    float *xmid = w->xmid.p + l * N * d;
    sp_layernorm_forward(ln1, st1, st1 + N, x, p->ln1_w, p->ln1_b, (int)N, z->d, w->m->cfg.ln_eps);
    sp_linear_forward(qkv, ln1, p->qkv_w, p->qkv_b, (int)N, z->d, 3 * z->d, 0);
    attention_forward_all(w, l, b, z);
    if (l < z->L - 1) {
        memcpy(xmid, x, N * d * sizeof(float));
        post_attention_forward(w, l, atty, (int)N, z);
        return;
    }
    gather_targets(xmid, x, b, d);
    gather_targets(w->top_rows.p, atty, b, d);
    post_attention_forward(w, l, w->top_rows.p, b->n_targets, z);
}

/* Final LayerNorm and vocabulary projection at target positions only; cross-entropy per target.
 * With backward, logits become dlogits and dx receives the gradient at target rows. */
static double head(sp_worker *w, const sp_batch *b, const sp_pass *pass, const dims *z,
                   int backward) {
    const sp_model *m = w->m;
    size_t d = (size_t)z->d, V = (size_t)z->V, nt = z->n_tgt;
    const float *x_top = w->x.p + (size_t)z->L * z->N * d;
    float *lnf = w->lnf.p, *mean = w->lnf_stats.p, *rstd = w->lnf_stats.p + nt;
    /* x_top holds the target rows compactly (see layer_forward) */
    sp_layernorm_forward(lnf, mean, rstd, x_top, m->lnf_w, m->lnf_b, (int)nt, z->d, m->cfg.ln_eps);
    /* logits[n_tgt, V] = lnf . lm_head^T */
    sp_linear_backward(w->logits.p, lnf, m->lm_head, (int)nt, z->V, z->d, 0);
    if (pass->target_logits) memcpy(pass->target_logits, w->logits.p, nt * V * sizeof(float));
    double loss = 0.0;
    for (size_t j = 0; j < nt; j++) {
        double l = sp_cross_entropy(w->logits.p + j * V, z->V, b->target_ids[j], backward, 1.0f);
        if (pass->target_loss) pass->target_loss[j] = l;
        loss += l;
    }
    if (!backward) return loss;
    /* dlnf[n_tgt, d] = dlogits . lm_head  (lm_head is [V, d]: a Conv1D-shaped product) */
    float *dlnf = w->dtmp.p;
    sp_linear_forward(dlnf, w->logits.p, m->lm_head, NULL, (int)nt, z->V, z->d, 0);
    memset(w->dx.p, 0, nt * d * sizeof(float)); /* compact target rows, like x_top */
    sp_layernorm_backward(w->dx.p, dlnf, x_top, mean, rstd, m->lnf_w, (int)nt, z->d);
    return loss;
}

/* dqkv [N, 3d] from datty [N, d] (in dtmp). */
static void attention_backward_all(sp_worker *w, int l, const sp_batch *b, const dims *z) {
    size_t N = z->N, d = (size_t)z->d, H = (size_t)z->H;
    const float *qkv = w->qkv.p + l * N * 3 * d, *atty = w->atty.p + l * N * d;
    const float *lse = w->lse.p + l * N * H;
    for (int s = 0; s < b->n_seq; s++) {
        size_t start = (size_t)b->seq_start[s];
        int len = b->seq_start[s + 1] - b->seq_start[s];
        sp_attention_backward(w->dqkv.p + start * 3 * d, w->att_scratch.p, w->dtmp.p + start * d,
                              atty + start * d, lse + start * H, qkv + start * 3 * d, len, z->d,
                              z->H);
    }
}

/* Backward of post_attention_forward over n rows: on entry dx holds dLoss/dx[l+1] (n rows); on
 * exit dx holds dLoss/dxmid and datty receives dLoss/datty (n rows each). */
static void post_attention_backward(sp_worker *w, int l, float *datty, int n, const dims *z) {
    const sp_gpt2_layer *p = &w->m->layers[l];
    size_t N = z->N, d = (size_t)z->d, F = (size_t)z->F;
    float *dx = w->dx.p, *dtmp = w->dtmp.p, *dff = w->dff.p;
    const float *st2 = w->ln2_stats.p + l * 2 * N;
    /* x[l+1] = xmid + c_proj(gelu(c_fc(ln2(xmid)))): dx reaches xmid through the residual
     * unchanged and additionally through the branch. */
    sp_linear_backward(dff, dx, p->fc_proj_w, n, z->F, z->d, 0);
    sp_gelu_backward(dff, dff, w->fc.p + l * N * F, w->fc_tanh.p + l * N * F, (size_t)n * F);
    sp_linear_backward(dtmp, dff, p->fc_w, n, z->d, z->F, 0);
    sp_layernorm_backward(dx, dtmp, w->xmid.p + l * N * d, st2, st2 + N, p->ln2_w, n, z->d);
    /* xmid = x + c_proj(atty) */
    sp_linear_backward(datty, dx, p->attn_proj_w, n, z->d, z->d, 0);
}

/* On entry w->dx holds dLoss/dx[l+1] (compact target rows for the top block); on exit
 * dLoss/dx[l] over all N rows. */
static void layer_backward(sp_worker *w, int l, const sp_batch *b, const dims *z) {
    const sp_gpt2_layer *p = &w->m->layers[l];
    size_t N = z->N, d = (size_t)z->d;
    float *dx = w->dx.p, *dtmp = w->dtmp.p;
    const float *st1 = w->ln1_stats.p + l * 2 * N;
    if (l < z->L - 1) {
        post_attention_backward(w, l, dtmp, (int)N, z);
    } else {
        /* compact target rows -> full rows: datty and the residual gradient are zero elsewhere */
        post_attention_backward(w, l, w->top_rows.p, b->n_targets, z);
        scatter_targets(dtmp, w->top_rows.p, b, N, d);
        memcpy(w->top_rows.p, dx, (size_t)b->n_targets * d * sizeof(float));
        scatter_targets(dx, w->top_rows.p, b, N, d);
    }
    /* Attention branch: xmid = x + c_proj(attn(c_attn(ln1(x)))); dtmp holds datty [N, d]. */
    attention_backward_all(w, l, b, z);
    sp_linear_backward(dtmp, w->dqkv.p, p->qkv_w, (int)N, z->d, 3 * z->d, 0);
    sp_layernorm_backward(dx, dtmp, w->x.p + l * N * d, st1, st1 + N, p->ln1_w, (int)N, z->d);
}

/* The prompt gradient: dprompt[k] += dx0[t] for every position t holding soft token k. */
static void embed_backward(sp_worker *w, const sp_batch *b, const sp_pass *pass) {
    int d = w->m->cfg.d_model;
    size_t per_seq = (size_t)pass->n_prompt * d;
    for (int s = 0; s < b->n_seq; s++) {
        float *g = pass->grad + (pass->per_sequence_grad ? (size_t)s * per_seq : 0);
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            if (!SP_IS_SOFT(b->tokens[t])) continue;
            float *gk = g + (size_t)SP_SOFT_INDEX(b->tokens[t]) * d;
            const float *dxt = w->dx.p + (size_t)t * d;
            for (int j = 0; j < d; j++) gk[j] += dxt[j];
        }
    }
}

int sp_engine_run(sp_worker *w, const sp_batch *b, const sp_pass *pass, double *loss_sum,
                  sp_error *err) {
    if (validate(w->m, b, pass, err)) return -1;
    dims z = batch_dims(w->m, b);
    int backward = pass->grad != NULL && z.n_tgt > 0;
    if (reserve(w, &z, backward))
        return sp_fail(err, "out of memory reserving activations for %zu tokens", z.N);
    *loss_sum = 0.0;
    if (z.N == 0) return 0;
    embed_forward(w, b, pass->prompt);
    for (int l = 0; l < z.L; l++) layer_forward(w, l, b, &z);
    *loss_sum = head(w, b, pass, &z, backward);
    if (!backward) return 0;
    for (int l = z.L - 1; l >= 0; l--) layer_backward(w, l, b, &z);
    embed_backward(w, b, pass);
    return 0;
}
