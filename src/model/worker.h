/* An engine worker's memory (internal; worker.c): every activation and scratch buffer is a row
 * of one table, which both sizes the buffers (sp__worker_reserve) and estimates them
 * (sp_model_activation_bytes), so the memory check and `info` see what a run allocates.
 *
 * Buffers are named per layer through sp__layer_acts (pointers built once per batch) and across
 * layers through sp__scratch, so that the engine's functions name every input and output. */
#ifndef SP_MODEL_WORKER_H
#define SP_MODEL_WORKER_H

#include <stddef.h>

#include "model/family.h"
#include "model/kernels.h"
#include "softprompt/engine.h"

/* Sizes of one batch (and of the model), derived once per run. */
typedef struct sp__dims {
    int L, d, F, V;
    int e; /* the token embeddings' width: a prompt row's, the LM head's input (sp_config_embed_dim)
            */
    sp__heads hs;
    int qd, kvd, wq; /* H hd, Hkv hd, a qkv row (H + 2 Hkv) hd */
    size_t N;        /* packed tokens */
    size_t n_tgt;    /* targets */
    int max_len;     /* longest sequence */
    int n_past;      /* key/value prefix rows: the text's first position (generation: the
                        longest past, shared and own cache rows, of a sequence) */
    int logit_cap;   /* the LM head's logits are soft-capped */
    int local_rope;  /* windowed layers have rotary tables of their own */
    int saved;       /* layers whose activations are kept: L for training, 1 for generation
                        (every layer reuses layer 0's buffers) */
    int rope_rows;   /* rows of the rotary tables: training, one per position (n_past +
                        max_len); generation, one per row (N), each at its own position */
    int cached;      /* generation: the rows run behind key/value caches (sp__engine_extend) */
} sp__dims;

/* Layer l's saved activations: pointers into the worker's buffers. In the top layer the
 * buffers after attention (xmid .. x_next) hold the n_tgt target rows only. */
typedef struct sp__layer_acts {
    float *x;                   /* [N, d] residual stream entering the block */
    float *ln1;                 /* [N, d] norm1(x) */
    float *ln1_mean, *ln1_rstd; /* [N] (mean: LayerNorm only) */
    float *qkv;                 /* [N, Wq] q | k | v, q and k carrying their norms, positions */
    float *qk_raw;              /* [N, (H + Hkv) hd] q | k before their norms (q/k norm only) */
    float *qk_mean, *qk_rstd;   /* [N, H + Hkv] the q/k norms' statistics */
    float *lse;                 /* [N, H] log-sum-exp of each attention row (sequence-major) */
    float *atty;                /* [N, qd] attention output */
    float *ao;                  /* [N, d] atty W_o before the post-attention norm (sandwich) */
    float *ao_mean, *ao_rstd;   /* [N] its norm's statistics */
    float *xmid;                /* [N, d] x + atty W_o (sandwich: + norm(ao)) */
    float *ln2;                 /* [N, d] norm2(xmid) */
    float *ln2_mean, *ln2_rstd; /* [N] */
    float *fc;                  /* [N, F] MLP input projection (GELU input; SwiGLU gate) */
    float *fc_aux;              /* [N, F] Phi(x) of the erf GELU, for backward (else NULL) */
    float *up;                  /* [N, F] SwiGLU's up projection */
    float *mo;                  /* [N, d] act W_out before the post-MLP norm (sandwich) */
    float *mo_mean, *mo_rstd;   /* [N] its norm's statistics */
    float *x_next;              /* [N, d] xmid + mlp: the next layer's x */
} sp__layer_acts;

/* Buffers used by one layer at a time (forward or backward), the head and the positions. */
typedef struct sp__scratch {
    float *mlp_act;             /* [N, F] the MLP activation: only W_out reads it */
    float *qkv_heads;           /* [N, Wq] a qkv row per head [H, 3, hd] (interleaved q/k/v) */
    float *post;                /* [N, d] a post-norm's output (sandwich) */
    float *dpost;               /* [N, d] gradient of a post-norm's input (sandwich) */
    float *logit_t;             /* [n_tgt, V] tanh of the capped logits (soft-capping) */
    float *att;                 /* attention blocks: SP_ATT_BWD_SCRATCH(max_len) */
    float *rope_cos, *rope_sin; /* [rope_rows, hd / 2] rotary tables */
    float *rope_cos_local, *rope_sin_local; /* the same of windowed layers (local_rope) */
    float *top_x, *top_atty;                /* [n_tgt, d], [n_tgt, qd] top block's target rows */
    float *lnf, *lnf_mean, *lnf_rstd;       /* [n_tgt, d], [n_tgt] x 2 final norm (MLM: the
                                             * head's LayerNorm) */
    float *emb, *emb_mean, *emb_rstd;       /* [N, d], [N] x 2: the embedding sum before its norm */
    float *head_h, *head_cdf, *head_g; /* [n_tgt, d] the MLM head's dense output, Phi of it, gelu */
    float *emb_in;    /* [N, e] the input rows before project_in, then their gradient (OPT-350m) */
    float *head_in;   /* [n_tgt, e] the LM head's input after project_out, then its gradient */
    float *logits;    /* [n_tgt, V], then dlogits */
    float *dx;        /* [N, d] dL/d residual stream */
    float *dln;       /* [N, d] dL/d a norm's output */
    float *datty;     /* [N, qd] */
    float *dqkv;      /* [N, Wq] */
    float *dqk;       /* [N, (H + Hkv) hd] q/k norm gradients */
    float *dfc, *dup; /* [N, F] MLP activation gradients */
    float *top_dx, *top_datty; /* [n_tgt, d], [n_tgt, qd] */
} sp__scratch;

/* The buffers of the table (worker.c's ACTS lists each with its size). */
enum {
    SP_ACT_X,
    SP_ACT_LN1,
    SP_ACT_LN1_STATS,
    SP_ACT_QKV,
    SP_ACT_QK_RAW,
    SP_ACT_QK_STATS,
    SP_ACT_LSE,
    SP_ACT_ATTY,
    SP_ACT_AO,
    SP_ACT_AO_STATS,
    SP_ACT_XMID,
    SP_ACT_LN2,
    SP_ACT_LN2_STATS,
    SP_ACT_FC,
    SP_ACT_FC_AUX,
    SP_ACT_UP,
    SP_ACT_MO,
    SP_ACT_MO_STATS,
    SP_ACT_POST,
    SP_ACT_DPOST,
    SP_ACT_LOGIT_T,
    SP_ACT_MLP_ACT,
    SP_ACT_QKV_HEADS,
    SP_ACT_ATT,
    SP_ACT_ROPE,
    SP_ACT_TOP_X,
    SP_ACT_TOP_ATTY,
    SP_ACT_LNF,
    SP_ACT_LNF_STATS,
    SP_ACT_LOGITS,
    SP_ACT_DX,
    SP_ACT_DLN,
    SP_ACT_DATTY,
    SP_ACT_DQKV,
    SP_ACT_DQK,
    SP_ACT_DFC,
    SP_ACT_DUP,
    SP_ACT_TOP_DX,
    SP_ACT_TOP_DATTY,
    SP_ACT_EMB,
    SP_ACT_EMB_STATS,
    SP_ACT_HEAD_H,
    SP_ACT_HEAD_CDF,
    SP_ACT_HEAD_G,
    SP_ACT_EMB_IN,
    SP_ACT_HEAD_IN,
    SP_N_ACT
};

struct sp_worker {
    const sp_model *m;
    const sp__family *f;
    float *buf[SP_N_ACT];
    size_t cap[SP_N_ACT]; /* floats */
    sp__dims z;           /* of the batch being run */
    sp__layer_acts *acts; /* [L] */
    sp__scratch s;
    struct sp__t5_work *t5;   /* a T5 model's buffers (t5.c), allocated by its first run */
    struct sp__t5_gen *t5gen; /* a T5 model's decoder step buffers (t5_generate.c) */
};

/* Sizes the buffers for batch b behind n_past key/value prefix rows (forward, and backward when
 * asked), keeping larger ones, and points acts and s into them. 0, or -1 when out of memory. */
int sp__worker_reserve(sp_worker *w, const sp_batch *b, int n_past, int backward);

/* Sizes the forward buffers for one step of generation (sp_generate_extend): n_rows new rows
 * of n_seq sequences, the longest max_new rows behind at most max_past cached rows, logits at
 * n_logits rows; one layer's activations, reused by every layer. 0, or -1 when out of memory. */
int sp__worker_reserve_generate(sp_worker *w, size_t n_rows, size_t n_logits, int max_new,
                                int max_past);

/* For tests: the name of buffer i and its storage (*cap floats). */
const char *sp__worker_buffer_name(int i);
float *sp__worker_buffer(const sp_worker *w, int i, size_t *cap);

#endif
