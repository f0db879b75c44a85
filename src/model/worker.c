/* The activation table (worker.h): one row per buffer, its size a number of rows (per layer and
 * token, per token, per target, ...) times a width (d, F, ...). sp__worker_reserve allocates
 * from it; sp_model_activation_bytes adds it up for the memory check and `info`. No [T, T]
 * matrix appears: attention keeps H log-sum-exps per token and a 64-row block of scores. */
#include <stdlib.h>
#include <string.h>

#include "model/t5.h"
#include "util/bigalloc.h"
#include "model/worker.h"
#include "softprompt/generate.h"

/* How many rows a buffer has. */
typedef enum act_rows {
    ROWS_LAYER_TOKENS,  /* L N: saved per layer */
    ROWS_LAYER1_TOKENS, /* (L + 1) N: the residual stream entering each layer and leaving the last
                         */
    ROWS_TOKENS,        /* N: one layer at a time */
    ROWS_TARGETS,       /* n_tgt */
    ROWS_POSITIONS,     /* rope_rows: training, the positions of a prefix and the longest
                           sequence (n_past + max_len); generation, one per row (N) */
    ROWS_ATTENTION,     /* SP_ATT_BWD_SCRATCH(n_past + max_len): attention's blocks of scores */
} act_rows;

/* How wide each row is. */
typedef enum act_width {
    W_ONE,
    W_D,
    W_QD,
    W_QKV,
    W_FF,
    W_GATED_FF, /* F for a gated MLP (the second input projection), else 0 */
    W_AUX_FF,   /* F when the activation saves a value for backward (the erf GELU), else 0 */
    W_HEADS,    /* H */
    W_STATS,    /* 2: a norm's mean and rstd */
    W_VOCAB,
    W_ROTARY,          /* hd (cos and sin of hd / 2 frequencies) for rotary positions, else 0 */
    W_QK_NORMED,       /* (H + Hkv) hd with a q/k norm, else 0 */
    W_QK_STATS,        /* 2 (H + Hkv) with a q/k norm, else 0 */
    W_SANDWICH_D,      /* d in a block with post-norms, else 0 */
    W_SANDWICH_STATS,  /* 2 in a block with post-norms, else 0 */
    W_CAPPED_VOCAB,    /* V with soft-capped logits, else 0 */
    W_PRE_NORM_D,      /* d in a block with norms before attention and the MLP, else 0 */
    W_PRE_NORM_STATS,  /* 2 in such a block, else 0 */
    W_SANDWICH_OUT_D,  /* d in a sandwich block (its post-norm's output), else 0 */
    W_EMB_NORM_D,      /* d with an embedding norm, else 0 */
    W_EMB_NORM_STATS,  /* 2 with an embedding norm, else 0 */
    W_MLM_D,           /* d with an MLM head, else 0 */
    W_QKV_HEADS,       /* Wq with q/k/v interleaved per head, else 0 */
    W_PROJECT_E,       /* e with project_in / project_out, else 0 */
    W_HEAD_NORM_D,     /* d when the head has a norm (final or the MLM head's), else 0 */
    W_HEAD_NORM_STATS, /* 2 then, else 0 */
} act_width;

typedef struct act_desc {
    const char *name;
    act_rows rows;
    act_width width;
    int backward; /* needed only by backward */
} act_desc;

static const act_desc ACTS[SP_N_ACT] = {
    [SP_ACT_X] = {"x", ROWS_LAYER1_TOKENS, W_D, 0},
    [SP_ACT_LN1] = {"ln1", ROWS_LAYER_TOKENS, W_PRE_NORM_D, 0},
    [SP_ACT_LN1_STATS] = {"ln1 stats", ROWS_LAYER_TOKENS, W_PRE_NORM_STATS, 0},
    [SP_ACT_QKV] = {"qkv", ROWS_LAYER_TOKENS, W_QKV, 0},
    [SP_ACT_QK_RAW] = {"q/k before norm", ROWS_LAYER_TOKENS, W_QK_NORMED, 0},
    [SP_ACT_QK_STATS] = {"q/k norm stats", ROWS_LAYER_TOKENS, W_QK_STATS, 0},
    [SP_ACT_LSE] = {"attention lse", ROWS_LAYER_TOKENS, W_HEADS, 0},
    [SP_ACT_ATTY] = {"atty", ROWS_LAYER_TOKENS, W_QD, 0},
    [SP_ACT_AO] = {"attention out", ROWS_LAYER_TOKENS, W_SANDWICH_D, 0},
    [SP_ACT_AO_STATS] = {"attention out stats", ROWS_LAYER_TOKENS, W_SANDWICH_STATS, 0},
    [SP_ACT_XMID] = {"xmid", ROWS_LAYER_TOKENS, W_D, 0},
    [SP_ACT_LN2] = {"ln2", ROWS_LAYER_TOKENS, W_PRE_NORM_D, 0},
    [SP_ACT_LN2_STATS] = {"ln2 stats", ROWS_LAYER_TOKENS, W_PRE_NORM_STATS, 0},
    [SP_ACT_FC] = {"fc", ROWS_LAYER_TOKENS, W_FF, 0},
    [SP_ACT_FC_AUX] = {"fc aux", ROWS_LAYER_TOKENS, W_AUX_FF, 0},
    [SP_ACT_UP] = {"up", ROWS_LAYER_TOKENS, W_GATED_FF, 0},
    [SP_ACT_MO] = {"mlp out", ROWS_LAYER_TOKENS, W_SANDWICH_D, 0},
    [SP_ACT_MO_STATS] = {"mlp out stats", ROWS_LAYER_TOKENS, W_SANDWICH_STATS, 0},
    [SP_ACT_POST] = {"post-norm out", ROWS_TOKENS, W_SANDWICH_OUT_D, 0},
    [SP_ACT_DPOST] = {"dpost", ROWS_TOKENS, W_SANDWICH_D, 1},
    [SP_ACT_LOGIT_T] = {"logit tanh", ROWS_TARGETS, W_CAPPED_VOCAB, 1},
    [SP_ACT_MLP_ACT] = {"mlp act", ROWS_TOKENS, W_FF, 0},
    [SP_ACT_QKV_HEADS] = {"qkv per head", ROWS_TOKENS, W_QKV_HEADS, 0},
    [SP_ACT_ATT] = {"attention scratch", ROWS_ATTENTION, W_ONE, 0},
    [SP_ACT_ROPE] = {"rotary tables", ROWS_POSITIONS, W_ROTARY, 0},
    [SP_ACT_TOP_X] = {"top x", ROWS_TARGETS, W_D, 0},
    [SP_ACT_TOP_ATTY] = {"top atty", ROWS_TARGETS, W_QD, 0},
    [SP_ACT_LNF] = {"lnf", ROWS_TARGETS, W_HEAD_NORM_D, 0},
    [SP_ACT_LNF_STATS] = {"lnf stats", ROWS_TARGETS, W_HEAD_NORM_STATS, 0},
    [SP_ACT_LOGITS] = {"logits", ROWS_TARGETS, W_VOCAB, 0},
    [SP_ACT_DX] = {"dx", ROWS_TOKENS, W_D, 1},
    [SP_ACT_DLN] = {"dln", ROWS_TOKENS, W_D, 1},
    [SP_ACT_DATTY] = {"datty", ROWS_TOKENS, W_QD, 1},
    [SP_ACT_DQKV] = {"dqkv", ROWS_TOKENS, W_QKV, 1},
    [SP_ACT_DQK] = {"dqk", ROWS_TOKENS, W_QK_NORMED, 1},
    [SP_ACT_DFC] = {"dfc", ROWS_TOKENS, W_FF, 1},
    [SP_ACT_DUP] = {"dup", ROWS_TOKENS, W_GATED_FF, 1},
    [SP_ACT_TOP_DX] = {"top dx", ROWS_TARGETS, W_D, 1},
    [SP_ACT_TOP_DATTY] = {"top datty", ROWS_TARGETS, W_QD, 1},
    [SP_ACT_EMB] = {"embedding sum", ROWS_TOKENS, W_EMB_NORM_D, 0},
    [SP_ACT_EMB_STATS] = {"embedding stats", ROWS_TOKENS, W_EMB_NORM_STATS, 0},
    [SP_ACT_HEAD_H] = {"head dense", ROWS_TARGETS, W_MLM_D, 0},
    [SP_ACT_HEAD_CDF] = {"head gelu cdf", ROWS_TARGETS, W_MLM_D, 0},
    [SP_ACT_HEAD_G] = {"head gelu", ROWS_TARGETS, W_MLM_D, 0},
    [SP_ACT_EMB_IN] = {"embedding input", ROWS_TOKENS, W_PROJECT_E, 0},
    [SP_ACT_HEAD_IN] = {"head input", ROWS_TARGETS, W_PROJECT_E, 0},
};

static size_t rows_of(const sp__dims *z, act_rows r) {
    switch (r) {
    case ROWS_LAYER_TOKENS:
        return (size_t)z->saved * z->N;
    case ROWS_LAYER1_TOKENS:
        return ((size_t)z->saved + 1) * z->N;
    case ROWS_TOKENS:
        return z->N;
    case ROWS_TARGETS:
        return z->n_tgt;
    case ROWS_POSITIONS:
        return (size_t)z->rope_rows;
    case ROWS_ATTENTION:
        return z->max_len > 0 ? SP_ATT_BWD_SCRATCH(z->n_past + z->max_len) : 0;
    }
    return 0;
}

static size_t gated_ff(const sp__family *f, const sp__dims *z) {
    switch (f->mlp) {
    case SP_MLP_GELU:
    case SP_MLP_GELU_ERF:
    case SP_MLP_RELU:
        return 0;
    case SP_MLP_SWIGLU:
    case SP_MLP_GEGLU:
        return (size_t)z->F;
    }
    return 0;
}

/* F when the MLP's activation keeps a value beside its input (tanh, Phi, sigmoid), else 0. */
static size_t aux_ff(const sp__family *f, const sp__dims *z) {
    switch (f->mlp) {
    case SP_MLP_GELU_ERF: /* Phi(x): erf is not recomputed */
        return (size_t)z->F;
    case SP_MLP_GELU: /* tanh / sigmoid recomputed in backward (activations.c) */
    case SP_MLP_SWIGLU:
    case SP_MLP_GEGLU:
    case SP_MLP_RELU:
        return 0;
    }
    return 0;
}

static size_t rotary(const sp__family *f, const sp__dims *z) {
    switch (f->pos) {
    case SP_POS_RELATIVE: /* T5: its own buffers (t5.c) */
    case SP_POS_LEARNED:
        return 0;
    case SP_POS_ROTARY:
        return (size_t)z->hs.hd * (z->local_rope ? 2 : 1);
    case SP_POS_ALIBI: /* the bias is computed in the attention kernels */
        return 0;
    }
    return 0;
}

/* 1 in a block with post-norms, else 0. */
static size_t sandwich(const sp__family *f) {
    switch (f->block) {
    case SP_BLOCK_PRE_NORM:
    case SP_BLOCK_PARALLEL:
    case SP_BLOCK_NORM_RESIDUAL:
        return 0;
    case SP_BLOCK_SANDWICH:
    case SP_BLOCK_POST_NORM:
        return 1;
    }
    return 0;
}

/* 1 in a block with norms before attention and the MLP (a post-norm block has none: ln1 is x,
 * ln2 is xmid), else 0. */
static size_t pre_norms(const sp__family *f) {
    switch (f->block) {
    case SP_BLOCK_PRE_NORM:
    case SP_BLOCK_SANDWICH:
    case SP_BLOCK_PARALLEL:
    case SP_BLOCK_NORM_RESIDUAL:
        return 1;
    case SP_BLOCK_POST_NORM:
        return 0;
    }
    return 0;
}

/* 1 in a sandwich block, else 0. */
static size_t sandwich_out(const sp__family *f) {
    return f->block == SP_BLOCK_SANDWICH;
}

/* 1 with an embedding norm, else 0. */
static size_t emb_norm(const sp__family *f) {
    switch (f->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_SQRT_D:
    case SP_EMBED_SQRT_D_TOKENS:
    case SP_EMBED_PROJECT:
        return 0;
    case SP_EMBED_TYPES_NORM:
    case SP_EMBED_NORM:
        return 1;
    }
    return 0;
}

/* 1 with project_in / project_out, else 0. */
static size_t projected(const sp__family *f) {
    switch (f->embed) {
    case SP_EMBED_PLAIN:
    case SP_EMBED_SQRT_D:
    case SP_EMBED_SQRT_D_TOKENS:
    case SP_EMBED_TYPES_NORM:
    case SP_EMBED_NORM:
        return 0;
    case SP_EMBED_PROJECT:
        return 1;
    }
    return 0;
}

/* 1 when the head has a norm, else 0. */
static size_t head_norm(const sp__family *f) {
    switch (f->head) {
    case SP_HEAD_LM:
    case SP_HEAD_MLM:
        return 1;
    case SP_HEAD_LM_NO_NORM:
        return 0;
    }
    return 0;
}

/* 1 with an MLM head, else 0. */
static size_t mlm_head(const sp__family *f) {
    switch (f->head) {
    case SP_HEAD_LM:
    case SP_HEAD_LM_NO_NORM:
        return 0;
    case SP_HEAD_MLM:
        return 1;
    }
    return 0;
}

/* Width of the per-head qkv rows: Wq when the projection interleaves q/k/v per head, else 0. */
static size_t qkv_heads(const sp__family *f, const sp__dims *z) {
    switch (f->qkv) {
    case SP_QKV_FUSED:
    case SP_QKV_SEPARATE:
        return 0;
    case SP_QKV_INTERLEAVED:
        return (size_t)z->wq;
    }
    return 0;
}

/* Heads a q/k norm normalises (H + Hkv), or 0. */
static size_t qk_heads(const sp__family *f, const sp__dims *z) {
    switch (f->qk_norm) {
    case SP_QKNORM_NONE:
        return 0;
    case SP_QKNORM_PER_HEAD:
        return (size_t)z->hs.n_head + (size_t)z->hs.n_kv_head;
    }
    return 0;
}

static size_t width_of(const sp__family *f, const sp__dims *z, act_width w) {
    switch (w) {
    case W_ONE:
        return 1;
    case W_D:
        return (size_t)z->d;
    case W_QD:
        return (size_t)z->qd;
    case W_QKV:
        return (size_t)z->wq;
    case W_FF:
        return (size_t)z->F;
    case W_GATED_FF:
        return gated_ff(f, z);
    case W_AUX_FF:
        return aux_ff(f, z);
    case W_HEADS:
        return (size_t)z->hs.n_head;
    case W_STATS:
        return 2;
    case W_VOCAB:
        return (size_t)z->V;
    case W_ROTARY:
        return rotary(f, z);
    case W_QK_NORMED:
        return qk_heads(f, z) * (size_t)z->hs.hd;
    case W_QK_STATS:
        return 2 * qk_heads(f, z);
    case W_SANDWICH_D:
        return sandwich(f) * (size_t)z->d;
    case W_SANDWICH_STATS:
        return 2 * sandwich(f);
    case W_CAPPED_VOCAB:
        return z->logit_cap ? (size_t)z->V : 0;
    case W_PRE_NORM_D:
        return pre_norms(f) * (size_t)z->d;
    case W_PRE_NORM_STATS:
        return 2 * pre_norms(f);
    case W_SANDWICH_OUT_D:
        return sandwich_out(f) * (size_t)z->d;
    case W_EMB_NORM_D:
        return emb_norm(f) * (size_t)z->d;
    case W_EMB_NORM_STATS:
        return 2 * emb_norm(f);
    case W_MLM_D:
        return mlm_head(f) * (size_t)z->d;
    case W_QKV_HEADS:
        return qkv_heads(f, z);
    case W_PROJECT_E:
        return projected(f) * (size_t)z->e;
    case W_HEAD_NORM_D:
        return head_norm(f) * (size_t)z->d;
    case W_HEAD_NORM_STATS:
        return 2 * head_norm(f);
    }
    return 0;
}

/* Floats of buffer i for batch sizes z. */
static size_t act_floats(const sp__family *f, const sp__dims *z, int i) {
    return rows_of(z, ACTS[i].rows) * width_of(f, z, ACTS[i].width);
}

/* The model's sizes with the batch's counts. */
static sp__dims model_dims(const sp_model *m, size_t n_tokens, size_t n_targets, int max_len,
                           int n_past) {
    const sp_model_config *c = &m->cfg;
    sp__dims z = {.L = c->n_layer, .d = c->d_model, .F = c->d_ff, .V = c->vocab_size};
    z.e = sp_config_embed_dim(c);
    z.hs = (sp__heads){c->n_head, sp_config_kv_heads(c), sp_config_head_dim(c), 0, 0, 0, 0, NULL};
    z.qd = z.hs.n_head * z.hs.hd, z.kvd = z.hs.n_kv_head * z.hs.hd, z.wq = SP_QKV_WIDTH(&z.hs);
    z.N = n_tokens, z.n_tgt = n_targets, z.max_len = max_len, z.n_past = n_past;
    z.logit_cap = c->logit_softcap > 0;
    z.local_rope = m->rope_inv_freq_local != NULL;
    z.saved = z.L, z.rope_rows = n_past + max_len;
    return z;
}

/* Bytes of the table's buffers for z (the backward ones too when asked). */
static size_t table_bytes(const sp_model *m, const sp__dims *z, int backward) {
    const sp__family *f = sp__family_for(&m->cfg);
    size_t floats = 0;
    for (int i = 0; i < SP_N_ACT; i++)
        if (!ACTS[i].backward || backward) floats += act_floats(f, z, i);
    return floats * sizeof(float);
}

size_t sp_model_activation_bytes(const sp_model *m, size_t n_tokens, size_t n_targets,
                                 int max_len) {
    if (m->cfg.arch == SP_ARCH_T5) return sp__t5_activation_bytes(m, n_tokens, n_targets, max_len);
    sp__dims z = model_dims(m, n_tokens, n_targets, max_len, 0);
    return table_bytes(m, &z, 1);
}

/* Generation's sizes: one layer's activations, reused by every layer. */
static sp__dims generate_dims(const sp_model *m, size_t n_rows, size_t n_logits, int max_new,
                              int max_past) {
    sp__dims z = model_dims(m, n_rows, n_logits, max_new, max_past);
    z.saved = 1, z.rope_rows = (int)n_rows, z.cached = 1;
    return z;
}

size_t sp_model_generate_bytes(const sp_model *m, size_t n_rows, size_t n_logits, int max_new,
                               int max_past) {
    if (m->cfg.arch == SP_ARCH_T5)
        return sp__t5_generate_bytes(m, n_rows, n_logits, max_new, max_past);
    sp__dims z = generate_dims(m, n_rows, n_logits, max_new, max_past);
    return table_bytes(m, &z, 0);
}

size_t sp_model_kv_cache_bytes(const sp_model *m, size_t rows) {
    const sp_model_config *c = &m->cfg;
    size_t kvd = (size_t)sp_config_kv_heads(c) * (size_t)sp_config_head_dim(c);
    return (size_t)c->n_layer * 2 * rows * kvd * sizeof(float);
}

size_t sp_model_activation_bytes_per_token(const sp_model *m, int seq_len) {
    if (seq_len < 1) seq_len = 1;
    size_t T = (size_t)seq_len;
    size_t all = sp_model_activation_bytes(m, T, T, seq_len);
    size_t logits = T * (size_t)m->cfg.vocab_size * sizeof(float);
    return (all - logits + T - 1) / T;
}

/* ---- the worker ---------------------------------------------------------------------------- */

sp_worker *sp_worker_new(const sp_model *m) {
    sp_worker *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->m = m;
    w->f = sp__family_for(&m->cfg);
    w->acts = calloc((size_t)(m->cfg.n_layer > 0 ? m->cfg.n_layer : 1), sizeof *w->acts);
    if (!w->acts) {
        free(w);
        return NULL;
    }
    return w;
}

void sp_worker_free(sp_worker *w) {
    if (!w) return;
    for (int i = 0; i < SP_N_ACT; i++) free(w->buf[i]);
    sp__t5_work_free(w->t5);
    sp__t5_gen_free(w->t5gen);
    free(w->acts);
    free(w);
}

size_t sp_worker_bytes(const sp_worker *w) {
    size_t total = 0;
    for (int i = 0; i < SP_N_ACT; i++) total += w->cap[i] * sizeof(float);
    return total + sp__t5_work_bytes(w->t5) + sp__t5_gen_bytes(w->t5gen);
}

const sp_model *sp_worker_model(const sp_worker *w) {
    return w->m;
}

const char *sp__worker_buffer_name(int i) {
    return ACTS[i].name;
}

float *sp__worker_buffer(const sp_worker *w, int i, size_t *cap) {
    *cap = w->cap[i];
    return w->buf[i];
}

static int ensure(sp_worker *w, int i, size_t n) {
    if (n <= w->cap[i]) return 0;
    free(w->buf[i]);
    w->buf[i] = sp__big_alloc(n * sizeof(float));
    w->cap[i] = w->buf[i] ? n : 0;
    return w->buf[i] ? 0 : -1;
}

/* Layer l's slices of the per-layer buffers. */
static sp__layer_acts layer_acts(const sp_worker *w, int l) {
    const sp__dims *z = &w->z;
    size_t N = z->N, d = (size_t)z->d, F = (size_t)z->F, at = (size_t)l * N;
    size_t nh = qk_heads(w->f, z);
    float *const *b = w->buf;
    sp__layer_acts a = {
        .x = b[SP_ACT_X] + at * d,
        .ln1 = b[SP_ACT_LN1] ? b[SP_ACT_LN1] + at * d : b[SP_ACT_X] + at * d, /* post-norm: x */
        .ln1_mean = b[SP_ACT_LN1_STATS] ? b[SP_ACT_LN1_STATS] + 2 * at : NULL,
        .ln1_rstd = b[SP_ACT_LN1_STATS] ? b[SP_ACT_LN1_STATS] + 2 * at + N : NULL,
        .qkv = b[SP_ACT_QKV] + at * (size_t)z->wq,
        .qk_raw = b[SP_ACT_QK_RAW] ? b[SP_ACT_QK_RAW] + at * nh * (size_t)z->hs.hd : NULL,
        .qk_mean = b[SP_ACT_QK_STATS] ? b[SP_ACT_QK_STATS] + 2 * at * nh : NULL,
        .qk_rstd = b[SP_ACT_QK_STATS] ? b[SP_ACT_QK_STATS] + 2 * at * nh + N * nh : NULL,
        .lse = b[SP_ACT_LSE] + at * (size_t)z->hs.n_head,
        .atty = b[SP_ACT_ATTY] + at * (size_t)z->qd,
        .ao = b[SP_ACT_AO] ? b[SP_ACT_AO] + at * d : NULL,
        .ao_mean = b[SP_ACT_AO_STATS] ? b[SP_ACT_AO_STATS] + 2 * at : NULL,
        .ao_rstd = b[SP_ACT_AO_STATS] ? b[SP_ACT_AO_STATS] + 2 * at + N : NULL,
        .xmid = b[SP_ACT_XMID] + at * d,
        .ln2 = b[SP_ACT_LN2] ? b[SP_ACT_LN2] + at * d : b[SP_ACT_XMID] + at * d, /* or xmid */
        .ln2_mean = b[SP_ACT_LN2_STATS] ? b[SP_ACT_LN2_STATS] + 2 * at : NULL,
        .ln2_rstd = b[SP_ACT_LN2_STATS] ? b[SP_ACT_LN2_STATS] + 2 * at + N : NULL,
        .fc = b[SP_ACT_FC] + at * F,
        .fc_aux = b[SP_ACT_FC_AUX] ? b[SP_ACT_FC_AUX] + at * F : NULL,
        .up = b[SP_ACT_UP] ? b[SP_ACT_UP] + at * F : NULL,
        .mo = b[SP_ACT_MO] ? b[SP_ACT_MO] + at * d : NULL,
        .mo_mean = b[SP_ACT_MO_STATS] ? b[SP_ACT_MO_STATS] + 2 * at : NULL,
        .mo_rstd = b[SP_ACT_MO_STATS] ? b[SP_ACT_MO_STATS] + 2 * at + N : NULL,
        .x_next = b[SP_ACT_X] + (at + N) * d,
    };
    return a;
}

static sp__scratch scratch(const sp_worker *w) {
    const sp__dims *z = &w->z;
    float *const *b = w->buf;
    size_t half = (size_t)z->hs.hd / 2, nt = z->n_tgt;
    float *rope = b[SP_ACT_ROPE];
    return (sp__scratch){
        .mlp_act = b[SP_ACT_MLP_ACT],
        .qkv_heads = b[SP_ACT_QKV_HEADS],
        .post = b[SP_ACT_POST],
        .dpost = b[SP_ACT_DPOST],
        .logit_t = b[SP_ACT_LOGIT_T],
        .att = b[SP_ACT_ATT],
        .rope_cos = rope,
        .rope_sin = rope ? rope + (size_t)z->rope_rows * half : NULL,
        .rope_cos_local = rope && z->local_rope ? rope + 2 * (size_t)z->rope_rows * half : NULL,
        .rope_sin_local = rope && z->local_rope ? rope + 3 * (size_t)z->rope_rows * half : NULL,
        .top_x = b[SP_ACT_TOP_X],
        .top_atty = b[SP_ACT_TOP_ATTY],
        .lnf = b[SP_ACT_LNF],
        .lnf_mean = b[SP_ACT_LNF_STATS],
        .lnf_rstd = b[SP_ACT_LNF_STATS] ? b[SP_ACT_LNF_STATS] + nt : NULL,
        .logits = b[SP_ACT_LOGITS],
        .dx = b[SP_ACT_DX],
        .dln = b[SP_ACT_DLN],
        .datty = b[SP_ACT_DATTY],
        .dqkv = b[SP_ACT_DQKV],
        .dqk = b[SP_ACT_DQK],
        .dfc = b[SP_ACT_DFC],
        .dup = b[SP_ACT_DUP],
        .top_dx = b[SP_ACT_TOP_DX],
        .top_datty = b[SP_ACT_TOP_DATTY],
        .emb = b[SP_ACT_EMB],
        .emb_mean = b[SP_ACT_EMB_STATS],
        .emb_rstd = b[SP_ACT_EMB_STATS] ? b[SP_ACT_EMB_STATS] + z->N : NULL,
        .head_h = b[SP_ACT_HEAD_H],
        .head_cdf = b[SP_ACT_HEAD_CDF],
        .head_g = b[SP_ACT_HEAD_G],
        .emb_in = b[SP_ACT_EMB_IN],
        .head_in = b[SP_ACT_HEAD_IN],
    };
}

/* Grows the buffers w->z needs and points acts and s into them. */
static int reserve_dims(sp_worker *w, int backward) {
    for (int i = 0; i < SP_N_ACT; i++)
        if ((!ACTS[i].backward || backward) && ensure(w, i, act_floats(w->f, &w->z, i))) return -1;
    if (w->z.N == 0) return 0; /* nothing to run, nothing to point at */
    for (int l = 0; l < w->z.saved; l++) w->acts[l] = layer_acts(w, l);
    w->s = scratch(w);
    return 0;
}

int sp__worker_reserve(sp_worker *w, const sp_batch *b, int n_past, int backward) {
    int max_len = 0;
    for (int s = 0; s < b->n_seq; s++) {
        int len = b->seq_start[s + 1] - b->seq_start[s];
        if (len > max_len) max_len = len;
    }
    size_t N = b->n_seq > 0 ? (size_t)b->seq_start[b->n_seq] : 0;
    w->z = model_dims(w->m, N, (size_t)b->n_targets, max_len, n_past);
    return reserve_dims(w, backward);
}

int sp__worker_reserve_generate(sp_worker *w, size_t n_rows, size_t n_logits, int max_new,
                                int max_past) {
    w->z = generate_dims(w->m, n_rows, n_logits, max_new, max_past);
    return reserve_dims(w, 0);
}
