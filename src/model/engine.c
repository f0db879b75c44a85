/* The soft-prompt engine for GPT-2 and the Llama family: forward over packed variable-length
 * sequences, cross-entropy at target positions, and backward of activation gradients down to
 * the prompt embeddings.
 *
 * Shapes: N = packed tokens of the batch, d = model width, F = d_ff, H / Hkv = query / key-value
 * heads of hd columns, qd = H * hd, Wq = (H + 2 Hkv) hd (a qkv row), V = vocabulary, T_s =
 * length of sequence s, n_tgt = target positions. Every linear layer runs once over all N packed
 * rows (one sgemm), attention runs per sequence, so no work is spent on padding.
 *
 * The two families share the block structure x -> x + attn(norm1(x)) -> + mlp(norm2(.)); they
 * differ in the norm (LayerNorm / RMSNorm), positions (learned wpe added to the input / rotary
 * q and k), the q/k/v projection (one fused Conv1D / three nn.Linear, grouped-query heads) and
 * the MLP (GELU / SwiGLU). Each difference is one small function below. */
#include "softprompt/engine.h"

#include <math.h>
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
    buffer ln1, ln2;  /* [L][N, d] norm outputs */
    buffer ln1_stats; /* [L][2, N] mean then rstd (RMSNorm: rstd only) */
    buffer ln2_stats; /* [L][2, N] */
    buffer qkv;       /* [L][N, Wq] q and k after the rotary embedding */
    buffer lse;       /* [L][N, H] log-sum-exp of each attention row (sequence s at H*start) */
    buffer atty;      /* [L][N, qd] attention output before the output projection */
    buffer xmid;      /* [L][N, d] residual stream after attention */
    buffer fc;        /* [L][N, F] c_fc output before GELU / gate_proj output */
    buffer fc_tanh;   /* [L][N, F] tanh inside gelu_new / sigmoid(gate): backward reuses them */
    buffer up;        /* [L][N, F] up_proj output (SwiGLU only) */
    buffer fc_act;    /* [N, F] MLP activation: only the next product needs it (no dW) */
    buffer top_rows;  /* [n_tgt, max(d, qd)] target rows gathered/scattered around the top layer */
    buffer lnf;       /* [n_tgt, d] final norm, only at target positions */
    buffer lnf_stats; /* [2, n_tgt] */
    buffer logits;    /* [n_tgt, V], then dlogits */
    buffer rope;      /* [2][max T_s, hd / 2] cos then sin of every position (rotary models) */
    /* Backward scratch, reused by every layer. */
    buffer dx;          /* [N, d] gradient of the loss sum w.r.t. the residual stream */
    buffer dtmp;        /* [N, max(d, qd)] */
    buffer dff, dup;    /* [N, F] (dup: SwiGLU only) */
    buffer dqkv;        /* [N, Wq] */
    buffer att_scratch; /* attention blocks: SP_ATT_BWD_SCRATCH(max T_s) */
};

/* Sizes of one batch, derived once per call. */
typedef struct dims {
    int L, d, F, V;
    sp_heads hs;
    int qd, wq, llama; /* qd = H * hd, wq = qkv row width */
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
    const sp_model_config *c = &m->cfg;
    size_t d = (size_t)c->d_model, F = (size_t)c->d_ff, hd = (size_t)sp_config_head_dim(c);
    size_t qd = (size_t)c->n_head * hd, wq = qd + 2 * (size_t)sp_config_kv_heads(c) * hd;
    int swiglu = m->arch == SP_ARCH_LLAMA;
    /* per layer: x, ln1, xmid, ln2 (4d) + atty (qd) + qkv (wq) + fc, fc_tanh (2F, + up for
     * SwiGLU) + 4 norm stats + H attention log-sum-exps; plus scratch shared by all layers: dx,
     * dtmp, dqkv, dff, the MLP activation (and dup); plus the attention block scratch of one
     * sequence, spread over its tokens. No [T, T] matrix is kept, so the cost per token does not
     * grow with T. */
    size_t per_layer = 4 * d + qd + wq + (2 + swiglu) * F + 4 + (size_t)c->n_head;
    size_t scratch = d + (d > qd ? d : qd) + wq + (2 + swiglu) * F;
    size_t att = seq_len > 0 ? SP_ATT_BWD_SCRATCH(seq_len) / (size_t)seq_len : 0;
    return ((size_t)c->n_layer * per_layer + d + scratch + att) * sizeof(float);
}

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
    if (b->n_seq < 0 || b->n_targets < 0 || pass->n_prompt < 0)
        return sp_fail(err, "batch: negative count (n_seq %d, n_targets %d, n_prompt %d)", b->n_seq,
                       b->n_targets, pass->n_prompt);
    if (b->n_seq > 0 && b->seq_start[0] != 0)
        return sp_fail(err, "batch: seq_start[0] is %d, expected 0", b->seq_start[0]);
    for (int s = 0; s < b->n_seq; s++) {
        int len = b->seq_start[s + 1] - b->seq_start[s];
        if (len < 1 || len > c->n_ctx) {
            sp_fail(err, "batch: sequence %d has length %d, expected 1..%d (n_positions)", s, len,
                    c->n_ctx);
            return in_example(b, s, -1, err);
        }
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
    return 0;
}

static dims batch_dims(const sp_model *m, const sp_batch *b) {
    const sp_model_config *c = &m->cfg;
    dims z = {.L = c->n_layer, .d = c->d_model, .F = c->d_ff, .V = c->vocab_size};
    z.hs = (sp_heads){c->n_head, sp_config_kv_heads(c), sp_config_head_dim(c)};
    z.qd = z.hs.n_head * z.hs.hd, z.wq = SP_QKV_WIDTH(&z.hs);
    z.llama = m->arch == SP_ARCH_LLAMA;
    z.N = b->n_seq > 0 ? (size_t)b->seq_start[b->n_seq] : 0;
    z.n_tgt = (size_t)b->n_targets;
    for (int s = 0; s < b->n_seq; s++) {
        int len = b->seq_start[s + 1] - b->seq_start[s];
        if (len > z.max_len) z.max_len = len;
    }
    return z;
}

static int reserve(sp_worker *w, const dims *z, int backward) {
    size_t L = (size_t)z->L, N = z->N, d = (size_t)z->d, F = (size_t)z->F, wq = (size_t)z->wq;
    size_t qd = (size_t)z->qd, wide = d > qd ? d : qd, H = (size_t)z->hs.n_head;
    int rc = 0;
    rc |= ensure(&w->x, (L + 1) * N * d);
    rc |= ensure(&w->ln1, L * N * d) | ensure(&w->ln2, L * N * d);
    rc |= ensure(&w->ln1_stats, L * 2 * N) | ensure(&w->ln2_stats, L * 2 * N);
    rc |= ensure(&w->qkv, L * N * wq) | ensure(&w->lse, L * N * H);
    rc |= ensure(&w->att_scratch, SP_ATT_BWD_SCRATCH(z->max_len));
    rc |= ensure(&w->atty, L * N * qd) | ensure(&w->xmid, L * N * d);
    rc |= ensure(&w->fc, L * N * F) | ensure(&w->fc_tanh, L * N * F) | ensure(&w->fc_act, N * F);
    if (z->llama) rc |= ensure(&w->up, L * N * F) | ensure(&w->rope, (size_t)z->max_len * z->hs.hd);
    rc |= ensure(&w->top_rows, z->n_tgt * wide);
    rc |= ensure(&w->lnf, z->n_tgt * d) | ensure(&w->lnf_stats, 2 * z->n_tgt);
    rc |= ensure(&w->logits, z->n_tgt * (size_t)z->V);
    if (backward) {
        rc |= ensure(&w->dx, N * d) | ensure(&w->dtmp, N * wide) | ensure(&w->dff, N * F);
        rc |= ensure(&w->dqkv, N * wq);
        if (z->llama) rc |= ensure(&w->dup, N * F);
    }
    return rc;
}

/* cos and sin [max_len, hd/2] of position t times each rotary frequency, the angle rounded to
 * float first as Hugging Face computes it. */
static void rope_tables(sp_worker *w, const dims *z) {
    int half = z->hs.hd / 2;
    float *c = w->rope.p, *s = w->rope.p + (size_t)z->max_len * half;
    for (int t = 0; t < z->max_len; t++)
        for (int i = 0; i < half; i++) {
            float angle = (float)t * w->m->rope_inv_freq[i];
            c[(size_t)t * half + i] = (float)cos((double)angle);
            s[(size_t)t * half + i] = (float)sin((double)angle);
        }
}

/* Rotates q and k (the first H + Hkv heads of every qkv row) of each sequence in place;
 * inverse: the transposed rotation, for their gradients. */
static void rope_all(sp_worker *w, float *qkv, const sp_batch *b, const dims *z, int inverse) {
    const float *c = w->rope.p, *s = w->rope.p + (size_t)z->max_len * (z->hs.hd / 2);
    for (int q = 0; q < b->n_seq; q++) {
        size_t start = (size_t)b->seq_start[q];
        int len = b->seq_start[q + 1] - b->seq_start[q];
        sp_rope_rotate(qkv + start * z->wq, z->wq, len, z->hs.n_head + z->hs.n_kv_head, z->hs.hd, c,
                       s, inverse);
    }
}

/* x0[t] = (soft ? prompt[k] : wte[id]) (+ wpe[position of t within its own sequence], GPT-2) */
static void embed_forward(sp_worker *w, const sp_batch *b, const float *prompt) {
    const sp_model *m = w->m;
    int d = m->cfg.d_model;
    for (int s = 0; s < b->n_seq; s++) {
        for (int t = b->seq_start[s]; t < b->seq_start[s + 1]; t++) {
            int32_t tok = b->tokens[t];
            const float *e = SP_IS_SOFT(tok) ? prompt + (size_t)SP_SOFT_INDEX(tok) * d
                                             : m->wte + (size_t)tok * d;
            float *x = w->x.p + (size_t)t * d;
            if (!m->wpe) {
                memcpy(x, e, (size_t)d * sizeof *x);
                continue;
            }
            const float *p = m->wpe + (size_t)(t - b->seq_start[s]) * d;
            for (int j = 0; j < d; j++) x[j] = e[j] + p[j];
        }
    }
}

/* LayerNorm (with bias) or RMSNorm (without) over n rows; stats = [2, n_all] (mean, rstd). */
static void norm_forward(const dims *z, float *out, float *stats, size_t n_all, const float *x,
                         const float *g, const float *bias, int n, float eps) {
    if (z->llama)
        sp_rmsnorm_forward(out, stats + n_all, x, g, n, z->d, eps);
    else
        sp_layernorm_forward(out, stats, stats + n_all, x, g, bias, n, z->d, eps);
}

static void norm_backward(const dims *z, float *dx, const float *dout, const float *x,
                          const float *stats, size_t n_all, const float *g, int n) {
    if (z->llama)
        sp_rmsnorm_backward(dx, dout, x, stats + n_all, g, n, z->d);
    else
        sp_layernorm_backward(dx, dout, x, stats, stats + n_all, g, n, z->d);
}

/* qkv [N, Wq] from ln1 [N, d]: GPT-2's fused c_attn, or Llama's three projections into the
 * q | k | v column blocks followed by the rotary embedding of q and k. */
static void qkv_forward(sp_worker *w, const sp_layer *p, float *qkv, const float *ln1,
                        const sp_batch *b, const dims *z) {
    int n = (int)z->N, d = z->d, kvd = z->hs.n_kv_head * z->hs.hd;
    if (!z->llama) {
        sp_linear_forward(qkv, ln1, p->qkv_w, p->qkv_b, n, d, 3 * d, 0);
        return;
    }
    sp_linear_fwd(qkv, z->wq, ln1, d, p->q_w, SP_W_OUT_IN, p->q_b, n, d, z->qd, 0);
    sp_linear_fwd(qkv + z->qd, z->wq, ln1, d, p->k_w, SP_W_OUT_IN, p->k_b, n, d, kvd, 0);
    sp_linear_fwd(qkv + z->qd + kvd, z->wq, ln1, d, p->v_w, SP_W_OUT_IN, p->v_b, n, d, kvd, 0);
    rope_all(w, qkv, b, z, 0);
}

/* dln1 [N, d] (in dtmp) from dqkv [N, Wq]; for Llama the rotary embedding is undone on dq and
 * dk first (in place). */
static void qkv_backward(sp_worker *w, const sp_layer *p, const sp_batch *b, const dims *z) {
    int n = (int)z->N, d = z->d, kvd = z->hs.n_kv_head * z->hs.hd;
    float *dqkv = w->dqkv.p, *dln1 = w->dtmp.p;
    if (!z->llama) {
        sp_linear_backward(dln1, dqkv, p->qkv_w, n, d, 3 * d, 0);
        return;
    }
    rope_all(w, dqkv, b, z, 1);
    sp_linear_bwd(dln1, d, dqkv, z->wq, p->q_w, SP_W_OUT_IN, n, d, z->qd, 0);
    sp_linear_bwd(dln1, d, dqkv + z->qd, z->wq, p->k_w, SP_W_OUT_IN, n, d, kvd, 1);
    sp_linear_bwd(dln1, d, dqkv + z->qd + kvd, z->wq, p->v_w, SP_W_OUT_IN, n, d, kvd, 1);
}

static void attention_forward_all(sp_worker *w, int l, const sp_batch *b, const dims *z) {
    size_t N = z->N, H = (size_t)z->hs.n_head;
    const float *qkv = w->qkv.p + l * N * z->wq;
    float *atty = w->atty.p + l * N * z->qd, *lse = w->lse.p + l * N * H;
    for (int s = 0; s < b->n_seq; s++) {
        size_t start = (size_t)b->seq_start[s];
        int len = b->seq_start[s + 1] - b->seq_start[s];
        sp_attention_forward(atty + start * z->qd, lse + start * H, w->att_scratch.p,
                             qkv + start * z->wq, len, &z->hs);
    }
}

/* x_next [n, d] = xmid + mlp(ln2) over n rows: GELU (GPT-2) or SwiGLU (Llama). */
static void mlp_forward(sp_worker *w, int l, float *x_next, const float *ln2, int n,
                        const dims *z) {
    const sp_layer *p = &w->m->layers[l];
    size_t N = z->N, F = (size_t)z->F;
    float *fc = w->fc.p + l * N * F, *saved = w->fc_tanh.p + l * N * F, *act = w->fc_act.p;
    if (!z->llama) {
        sp_linear_forward(fc, ln2, p->fc_w, p->fc_b, n, z->d, z->F, 0);
        sp_gelu_forward(act, saved, fc, (size_t)n * F);
        sp_linear_forward(x_next, act, p->fc_proj_w, p->fc_proj_b, n, z->F, z->d, 1);
        return;
    }
    float *up = w->up.p + l * N * F;
    sp_linear_fwd(fc, z->F, ln2, z->d, p->gate_w, SP_W_OUT_IN, p->gate_b, n, z->d, z->F, 0);
    sp_linear_fwd(up, z->F, ln2, z->d, p->up_w, SP_W_OUT_IN, p->up_b, n, z->d, z->F, 0);
    sp_swiglu_forward(act, saved, fc, up, (size_t)n * F);
    sp_linear_fwd(x_next, z->d, act, z->F, p->down_w, SP_W_OUT_IN, p->down_b, n, z->F, z->d, 1);
}

/* dln2 [n, d] (in dtmp) from dx_next [n, d] (in dx) through the MLP. */
static void mlp_backward(sp_worker *w, int l, int n, const dims *z) {
    const sp_layer *p = &w->m->layers[l];
    size_t N = z->N, F = (size_t)z->F;
    const float *fc = w->fc.p + l * N * F, *saved = w->fc_tanh.p + l * N * F;
    float *dx = w->dx.p, *dln2 = w->dtmp.p, *dff = w->dff.p;
    if (!z->llama) {
        sp_linear_backward(dff, dx, p->fc_proj_w, n, z->F, z->d, 0);
        sp_gelu_backward(dff, dff, fc, saved, (size_t)n * F);
        sp_linear_backward(dln2, dff, p->fc_w, n, z->d, z->F, 0);
        return;
    }
    const float *up = w->up.p + l * N * F;
    sp_linear_bwd(dff, z->F, dx, z->d, p->down_w, SP_W_OUT_IN, n, z->F, z->d, 0);
    sp_swiglu_backward(dff, w->dup.p, dff, fc, saved, up, (size_t)n * F);
    sp_linear_bwd(dln2, z->d, dff, z->F, p->gate_w, SP_W_OUT_IN, n, z->d, z->F, 0);
    sp_linear_bwd(dln2, z->d, w->dup.p, z->F, p->up_w, SP_W_OUT_IN, n, z->d, z->F, 1);
}

static sp_wlayout layout(const dims *z) {
    return z->llama ? SP_W_OUT_IN : SP_W_IN_OUT;
}

/* The part of block l after attention, over n rows: xmid (holding the residual input rows)
 * += out_proj(atty); x[l+1] = xmid + mlp(norm2(xmid)). Row r of every buffer is row r of the
 * block. */
static void post_attention_forward(sp_worker *w, int l, const float *atty, int n, const dims *z) {
    const sp_layer *p = &w->m->layers[l];
    size_t N = z->N, d = (size_t)z->d;
    float *xmid = w->xmid.p + l * N * d, *ln2 = w->ln2.p + l * N * d;
    float *x_next = w->x.p + (l + 1) * N * d;
    sp_linear_fwd(xmid, z->d, atty, z->qd, p->attn_proj_w, layout(z), p->attn_proj_b, n, z->qd,
                  z->d, 1);
    norm_forward(z, ln2, w->ln2_stats.p + l * 2 * N, N, xmid, p->ln2_w, p->ln2_b, n,
                 w->m->cfg.ln_eps);
    memcpy(x_next, xmid, (size_t)n * d * sizeof(float));
    mlp_forward(w, l, x_next, ln2, n, z);
}

/* Copies rows target_pos[j] of src [N, width] to rows j of dst [n_tgt, width]. */
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

/* Block l over all N rows. In the top block only the target rows reach the loss after
 * attention (keys and values need every row, the rest does not), so from the output
 * projection on it runs on the n_tgt target rows alone, stored compactly as rows 0..n_tgt-1. */
static void layer_forward(sp_worker *w, int l, const sp_batch *b, const dims *z) {
    const sp_layer *p = &w->m->layers[l];
    size_t N = z->N, d = (size_t)z->d;
    const float *x = w->x.p + l * N * d;
    float *ln1 = w->ln1.p + l * N * d, *atty = w->atty.p + l * N * z->qd;
    float *xmid = w->xmid.p + l * N * d;
    norm_forward(z, ln1, w->ln1_stats.p + l * 2 * N, N, x, p->ln1_w, p->ln1_b, (int)N,
                 w->m->cfg.ln_eps);
    qkv_forward(w, p, w->qkv.p + l * N * z->wq, ln1, b, z);
    attention_forward_all(w, l, b, z);
    if (l < z->L - 1) {
        memcpy(xmid, x, N * d * sizeof(float));
        post_attention_forward(w, l, atty, (int)N, z);
        return;
    }
    gather_targets(xmid, x, b, d);
    gather_targets(w->top_rows.p, atty, b, (size_t)z->qd);
    post_attention_forward(w, l, w->top_rows.p, b->n_targets, z);
}

/* Final norm and vocabulary projection at target positions only; cross-entropy per target.
 * With backward, logits become dlogits and dx receives the gradient at target rows. */
static double head(sp_worker *w, const sp_batch *b, const sp_pass *pass, const dims *z,
                   int backward) {
    const sp_model *m = w->m;
    size_t d = (size_t)z->d, V = (size_t)z->V, nt = z->n_tgt;
    const float *x_top = w->x.p + (size_t)z->L * z->N * d;
    float *lnf = w->lnf.p;
    /* x_top holds the target rows compactly (see layer_forward) */
    norm_forward(z, lnf, w->lnf_stats.p, nt, x_top, m->lnf_w, m->lnf_b, (int)nt, m->cfg.ln_eps);
    /* logits[n_tgt, V] = lnf . lm_head^T  (lm_head is [V, d]) */
    sp_linear_bwd(w->logits.p, z->V, lnf, z->d, m->lm_head, SP_W_IN_OUT, (int)nt, z->V, z->d, 0);
    if (pass->target_logits) memcpy(pass->target_logits, w->logits.p, nt * V * sizeof(float));
    double loss = 0.0;
    for (size_t j = 0; j < nt; j++) {
        double l = sp_cross_entropy(w->logits.p + j * V, z->V, b->target_ids[j], backward, 1.0f);
        if (pass->target_loss) pass->target_loss[j] = l;
        loss += l;
    }
    if (!backward) return loss;
    /* dlnf[n_tgt, d] = dlogits . lm_head */
    float *dlnf = w->dtmp.p;
    sp_linear_forward(dlnf, w->logits.p, m->lm_head, NULL, (int)nt, z->V, z->d, 0);
    memset(w->dx.p, 0, nt * d * sizeof(float)); /* compact target rows, like x_top */
    norm_backward(z, w->dx.p, dlnf, x_top, w->lnf_stats.p, nt, m->lnf_w, (int)nt);
    return loss;
}

/* dqkv [N, Wq] from datty [N, qd] (in dtmp). */
static void attention_backward_all(sp_worker *w, int l, const sp_batch *b, const dims *z) {
    size_t N = z->N, H = (size_t)z->hs.n_head;
    const float *qkv = w->qkv.p + l * N * z->wq, *atty = w->atty.p + l * N * z->qd;
    const float *lse = w->lse.p + l * N * H;
    for (int s = 0; s < b->n_seq; s++) {
        size_t start = (size_t)b->seq_start[s];
        int len = b->seq_start[s + 1] - b->seq_start[s];
        sp_attention_backward(w->dqkv.p + start * z->wq, w->att_scratch.p,
                              w->dtmp.p + start * z->qd, atty + start * z->qd, lse + start * H,
                              qkv + start * z->wq, len, &z->hs);
    }
}

/* Backward of post_attention_forward over n rows: on entry dx holds dLoss/dx[l+1] (n rows); on
 * exit dx holds dLoss/dxmid and datty receives dLoss/datty (n rows of qd). */
static void post_attention_backward(sp_worker *w, int l, float *datty, int n, const dims *z) {
    const sp_layer *p = &w->m->layers[l];
    size_t N = z->N, d = (size_t)z->d;
    /* x[l+1] = xmid + mlp(norm2(xmid)): dx reaches xmid through the residual unchanged and
     * additionally through the branch. */
    mlp_backward(w, l, n, z);
    norm_backward(z, w->dx.p, w->dtmp.p, w->xmid.p + l * N * d, w->ln2_stats.p + l * 2 * N, N,
                  p->ln2_w, n);
    /* xmid = x + out_proj(atty) */
    sp_linear_bwd(datty, z->qd, w->dx.p, z->d, p->attn_proj_w, layout(z), n, z->qd, z->d, 0);
}

/* On entry w->dx holds dLoss/dx[l+1] (compact target rows for the top block); on exit
 * dLoss/dx[l] over all N rows. */
static void layer_backward(sp_worker *w, int l, const sp_batch *b, const dims *z) {
    const sp_layer *p = &w->m->layers[l];
    size_t N = z->N, d = (size_t)z->d, qd = (size_t)z->qd;
    float *dx = w->dx.p, *dtmp = w->dtmp.p;
    if (l < z->L - 1) {
        post_attention_backward(w, l, dtmp, (int)N, z);
    } else {
        /* compact target rows -> full rows: datty and the residual gradient are zero elsewhere */
        post_attention_backward(w, l, w->top_rows.p, b->n_targets, z);
        scatter_targets(dtmp, w->top_rows.p, b, N, qd);
        memcpy(w->top_rows.p, dx, (size_t)b->n_targets * d * sizeof(float));
        scatter_targets(dx, w->top_rows.p, b, N, d);
    }
    /* Attention branch: xmid = x + out_proj(attn(qkv(norm1(x)))); dtmp holds datty [N, qd]. */
    attention_backward_all(w, l, b, z);
    qkv_backward(w, p, b, z);
    norm_backward(z, dx, dtmp, w->x.p + l * N * d, w->ln1_stats.p + l * 2 * N, N, p->ln1_w, (int)N);
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
    if (sp_engine_validate(w->m, b, pass, err)) return -1;
    dims z = batch_dims(w->m, b);
    int backward = pass->grad != NULL && z.n_tgt > 0;
    if (reserve(w, &z, backward))
        return sp_fail(err, "out of memory reserving activations for %zu tokens", z.N);
    *loss_sum = 0.0;
    if (z.N == 0) return 0;
    if (z.llama) rope_tables(w, &z);
    embed_forward(w, b, pass->prompt);
    for (int l = 0; l < z.L; l++) layer_forward(w, l, b, &z);
    *loss_sum = head(w, b, pass, &z, backward);
    if (!backward) return 0;
    for (int l = z.L - 1; l >= 0; l--) layer_backward(w, l, b, &z);
    embed_backward(w, b, pass);
    return 0;
}
