/* Model families as data (internal): what distinguishes GPT-2, Llama and Qwen2 is written once
 * per family, in src/model/family.c, and read by the loader (loader.c), init-model (init.c),
 * the fingerprint (src/train/fingerprint.c), the engine (engine.c) and `info`.
 *
 * A family is
 *  - its tensors: one table of {Hugging Face name pattern, shape, role} rows, in the order the
 *    fingerprint hashes them, each with its rank in HF's state dict (init-model writes in that
 *    order), when it exists (biases, untied head) and how init-model initialises it;
 *  - its block: norm, positions, q/k/v projection and MLP kinds, and the layout of its linear
 *    weights.
 * Everything that behaves differently per kind switches on these enums without a default, so
 * -Wswitch lists every place a new kind (GeGLU, ALiBi, parallel residual, ...) must be handled;
 * docs/design.md shows where each planned one goes. */
#ifndef SP_MODEL_FAMILY_H
#define SP_MODEL_FAMILY_H

#include <stdint.h>

#include "softprompt/model.h"

typedef enum sp__norm_kind {
    SP_NORM_LAYERNORM,     /* (x - mean) * rstd * w + b; saves mean and rstd */
    SP_NORM_RMSNORM,       /* x * rstd * w; saves rstd */
    SP_NORM_RMSNORM_PLUS1, /* x * rstd * (1 + w) (Gemma: the gain is stored as an offset) */
} sp__norm_kind;

typedef enum sp__pos_kind {
    SP_POS_LEARNED,  /* wpe[position] added to the input embedding */
    SP_POS_ROTARY,   /* q and k rotated after their projection (HF rotate-half, rope_scaling) */
    SP_POS_RELATIVE, /* a learned bias per head and relative position bucket added to the scores
                      * (T5; src/model/t5.c) */
    SP_POS_ALIBI,    /* a bias slope_h (key position - query position) on the scores (BLOOM) */
} sp__pos_kind;

typedef enum sp__qkv_kind {
    SP_QKV_FUSED,       /* one linear writes the whole q|k|v row (GPT-2 c_attn) */
    SP_QKV_SEPARATE,    /* q, k, v linears into the row's column blocks (Llama) */
    SP_QKV_INTERLEAVED, /* one linear writing [H, 3, hd]: each head's q, k, v side by side
                         * (GPT-NeoX query_key_value), reordered into q | k | v */
} sp__qkv_kind;

/* Where a block's norms sit. */
typedef enum sp__block_kind {
    SP_BLOCK_PRE_NORM,      /* x + f(norm(x)) for attention and the MLP */
    SP_BLOCK_SANDWICH,      /* x + norm_post(f(norm_pre(x))) (Gemma 2, 3) */
    SP_BLOCK_PARALLEL,      /* x + attn(norm1(x)) + mlp(norm2(x)): both read x (GPT-NeoX) */
    SP_BLOCK_POST_NORM,     /* norm_post(x + f(x)) for attention and the MLP (BERT, RoBERTa): no
                             * norm before either; the post-norms are ln_post_attn and ln_post_ff */
    SP_BLOCK_NORM_RESIDUAL, /* norm(x) + f(norm(x)): the residual is the norm's output (BLOOM's
                             * apply_residual_connection_post_layernorm) */
} sp__block_kind;

/* What multiplies the input embeddings (and whether the prompt's rows too). */
typedef enum sp__embed_kind {
    SP_EMBED_PLAIN,
    SP_EMBED_SQRT_D,        /* sqrt(d_model) rounded to the embedding's stored dtype, on every input
                             * row, the prompt's too: transformers scales inputs_embeds (Gemma 1, 2) */
    SP_EMBED_SQRT_D_TOKENS, /* the same factor on the token rows only: transformers' Gemma 3 scales
                             * inside its embedding module, before PEFT's prompt joins the rows */
    SP_EMBED_TYPES_NORM,    /* + token_type_embeddings[0], then the embedding LayerNorm (BERT) */
    SP_EMBED_NORM,          /* the embedding LayerNorm, prompt rows included (BLOOM) */
    SP_EMBED_PROJECT,       /* rows of e = word_embed_proj_dim (the prompt's too) through project_in
                             * to d, and the head's input through project_out back to e (OPT-350m) */
} sp__embed_kind;

/* Which keys a query sees. */
typedef enum sp__mask_kind {
    SP_MASK_CAUSAL,  /* its own position and the ones before it (decoders) */
    SP_MASK_FULL,    /* every position of its sequence and prefix (encoders: BERT, RoBERTa) */
    SP_MASK_SEQ2SEQ, /* an encoder's (full) and a decoder's (causal, cross-attending): T5, run by
                      * t5.c; trained on causal LMs' data (no {mask}) */
} sp__mask_kind;

/* What turns the last block's target rows into logits. */
typedef enum sp__head_kind {
    SP_HEAD_LM,  /* final norm (lnf), then the LM head */
    SP_HEAD_MLM, /* dense(d, d) + gelu (erf) + LayerNorm (head_ln), then the LM head + bias (BERT
                  * cls.predictions, RoBERTa lm_head) */
    SP_HEAD_LM_NO_NORM, /* the LM head of the last block's output itself (OPT's post-norm blocks end
                         * with a norm: no final_layer_norm) */
} sp__head_kind;

/* A norm of each query and key head before the positions (the family's norm kind over head_dim,
 * one gain of head_dim shared by the heads: Qwen3, Gemma 3). */
typedef enum sp__qknorm_kind {
    SP_QKNORM_NONE,
    SP_QKNORM_PER_HEAD,
} sp__qknorm_kind;

typedef enum sp__mlp_kind {
    SP_MLP_GELU,     /* out(gelu_tanh(in(x))) */
    SP_MLP_SWIGLU,   /* out(silu(in(x)) * up(x)) */
    SP_MLP_GEGLU,    /* out(gelu_tanh(in(x)) * up(x)) (Gemma) */
    SP_MLP_GELU_ERF, /* out(gelu(in(x))) with the exact (erf) GELU (GPT-NeoX, BERT "gelu") */
    SP_MLP_RELU,     /* out(relu(in(x))) (OPT) */
} sp__mlp_kind;

/* Where a tensor goes in sp_model / sp_layer. */
typedef enum sp__role {
    SP_ROLE_WTE,
    SP_ROLE_WPE,
    SP_ROLE_LN1_W,
    SP_ROLE_LN1_B,
    SP_ROLE_LN_SHARED_W, /* a block's one norm, read by attention and the MLP both (Phi-2): */
    SP_ROLE_LN_SHARED_B, /* ln1 and ln2 point at the same gain and bias */
    SP_ROLE_QKV_W,
    SP_ROLE_QKV_B,
    SP_ROLE_Q_W,
    SP_ROLE_Q_B,
    SP_ROLE_K_W,
    SP_ROLE_K_B,
    SP_ROLE_V_W,
    SP_ROLE_V_B,
    SP_ROLE_O_W,
    SP_ROLE_O_B,
    SP_ROLE_Q_NORM,
    SP_ROLE_K_NORM,
    SP_ROLE_LN2_W,
    SP_ROLE_LN2_B,
    SP_ROLE_LN_POST_ATTN_W,
    SP_ROLE_LN_POST_FF_W,
    SP_ROLE_LN_POST_ATTN_B, /* post-norm blocks' LayerNorm biases (BERT) */
    SP_ROLE_LN_POST_FF_B,
    SP_ROLE_TYPE_EMB, /* token_type_embeddings [type_vocab_size, d] (row 0 is used) */
    SP_ROLE_EMB_LN_W, /* the embedding LayerNorm (BERT) */
    SP_ROLE_EMB_LN_B,
    SP_ROLE_HEAD_DENSE_W, /* the MLM head's transform (BERT, RoBERTa) */
    SP_ROLE_HEAD_DENSE_B,
    SP_ROLE_HEAD_LN_W,
    SP_ROLE_HEAD_LN_B,
    SP_ROLE_MLP_IN_W,
    SP_ROLE_MLP_IN_B,
    SP_ROLE_MLP_UP_W,
    SP_ROLE_MLP_GATE_UP_W, /* gate rows then up rows of one [2 F, d] weight (Phi-3 gate_up_proj):
                            * mlp_in and mlp_up over its halves */
    SP_ROLE_MLP_UP_B,
    SP_ROLE_MLP_OUT_W,
    SP_ROLE_MLP_OUT_B,
    SP_ROLE_LNF_W,
    SP_ROLE_LNF_B,
    SP_ROLE_LM_HEAD,
    SP_ROLE_LM_HEAD_B, /* the LM head's bias [V] (Phi-2; BERT's and RoBERTa's MLM decoder) */
    SP_ROLE_XQ_W,      /* the decoder's cross-attention (T5 EncDecAttention): q, k, v, o */
    SP_ROLE_XK_W,
    SP_ROLE_XV_W,
    SP_ROLE_XO_W,
    SP_ROLE_LN_CROSS_W,    /* its norm */
    SP_ROLE_REL_BIAS,      /* the encoder's relative position bias [buckets, heads] (T5 block 0) */
    SP_ROLE_DEC_REL_BIAS,  /* the decoder's */
    SP_ROLE_ENC_LNF_W,     /* the encoder's final norm (T5; the decoder's is SP_ROLE_LNF_W) */
    SP_ROLE_PROJECT_IN_W,  /* [d, e] nn.Linear from the embeddings' width (OPT project_in) */
    SP_ROLE_PROJECT_OUT_W, /* [e, d] nn.Linear back to it before the LM head (project_out) */
    SP_ROLE_BUFFER, /* a constant some checkpoints store (attention masks, inv_freq): ignored */
} sp__role;

/* A dimension of a tensor's shape, resolved from the configuration (sp__dim_size). */
typedef enum sp__dim {
    SP_DIM_NONE, /* second dimension of a vector */
    SP_DIM_D,    /* d_model */
    SP_DIM_QKV,  /* (n_head + 2 n_kv_head) head_dim: a fused q|k|v row */
    SP_DIM_QD,   /* n_head head_dim */
    SP_DIM_KVD,  /* n_kv_head head_dim */
    SP_DIM_FF,   /* d_ff */
    SP_DIM_FF2,  /* 2 d_ff: a gate and an up projection in one */
    SP_DIM_HD,   /* head_dim */
    SP_DIM_VOCAB,
    SP_DIM_CTX,     /* n_ctx */
    SP_DIM_POS,     /* n_ctx + cfg.pos_offset: rows of a learned position table (OPT: n_ctx + 2,
                     * RoBERTa: 514) */
    SP_DIM_TYPES,   /* type_vocab_size */
    SP_DIM_BUCKETS, /* relative_attention_num_buckets (T5) */
    SP_DIM_HEADS,   /* n_head */
    SP_DIM_EMBED,   /* sp_config_embed_dim: the token embeddings' width (OPT word_embed_proj_dim) */
} sp__dim;

/* When a tensor exists. */
typedef enum sp__when {
    SP_ALWAYS,
    SP_IF_QKV_BIAS,
    SP_IF_O_BIAS,
    SP_IF_MLP_BIAS,
    SP_IF_UNTIED,    /* the LM head; a tied model's stored copy is known but not read */
    SP_IF_GATED,     /* a gated MLP's second input projection (T5 feed_forward_proj gated-gelu) */
    SP_IF_NOT_GATED, /* the one input projection of an MLP that is not gated (T5 relu) */
    SP_IF_PROJECT,   /* project_in / project_out: the embeddings are narrower than d (OPT) */
    SP_NEVER,        /* buffers */
} sp__when;

/* How init-model fills a tensor (HF's _init_weights). */
typedef enum sp__init_kind {
    SP_INIT_NORMAL,      /* N(0, std^2) */
    SP_INIT_PROJ,        /* N(0, std^2 / (2 n_layer)): GPT-2's residual projections */
    SP_INIT_GAIN,        /* norm gain: 1 */
    SP_INIT_GAIN_OFFSET, /* a (1 + w) norm's w: 0 */
    SP_INIT_BIAS,        /* 0 */
    SP_INIT_NONE,        /* buffers: not written */
} sp__init_kind;

typedef struct sp__tensor_desc {
    const char *name; /* HF name; "%d" stands for the layer index in a layer's tensors */
    sp__dim shape[2]; /* as stored; shape[1] == SP_DIM_NONE for a vector */
    sp__role role;
    sp__when when;
    sp__init_kind init;
    const char *fp_name; /* the name the fingerprint hashes it under */
    int hf_rank;         /* position in HF's state dict (a layer's rows form one run) */
} sp__tensor_desc;

typedef struct sp__family {
    sp_arch arch;
    const char *model_type; /* config.json's model_type */
    const char *hf_class;   /* architectures[0] in config.json */
    const char *ctx_key;    /* config.json's key of the position limit (n_ctx) */
    /* Optional prefix of the base model's tensor names (GPT-2: "transformer."; the LM head is
     * outside it), accepted with or without; NULL when names are always as in the table. */
    const char *name_prefix;
    const char *layer_prefix; /* pattern of every tensor name of layer %d ("h.%d.") */
    sp_wlayout layout;        /* of the block's linear weights (the LM head is nn.Linear) */
    sp__norm_kind norm;
    sp__block_kind block;
    sp__embed_kind embed;
    sp__pos_kind pos;
    sp__qkv_kind qkv;
    sp__qknorm_kind qk_norm;
    sp__mlp_kind mlp;
    sp__mask_kind mask;
    sp__head_kind head;
    int gqa; /* num_key_value_heads and head_dim come from the config (else n_head, d / n_head) */
    const char *window_key; /* config.json's key of an attention window (NULL: none) */
    const sp__tensor_desc *tensors;
    int n_tensors;
} sp__family;

/* The description of a family (a switch: every sp_arch has one). */
const sp__family *sp__family_of(sp_arch a);

/* The description a model of configuration c runs with: its family's, with the kinds that a
 * config key chooses (GPT-NeoX: use_parallel_residual, hidden_act). */
const sp__family *sp__family_for(const sp_model_config *c);

/* The one mapping from config.json's model_type to the enum; -1 when not supported. */
int sp__arch_from_model_type(const char *model_type, sp_arch *a);
/* config.json's model_type into c->arch and the variant it names (c->mt5: "mt5" is T5 1.1 as
 * MT5ForConditionalGeneration; sp__family_for gives its names). 0, or -1 when unknown. */
int sp__model_type_lookup(const char *model_type, sp_model_config *c);
/* The supported model_type values, each quoted ("\"gpt2\", \"llama\", \"qwen2\"") or plain with
 * a final " or " ("gpt2, llama or qwen2"), for messages. Static storage. */
const char *sp__arch_supported_quoted(void);
const char *sp__arch_supported_plain(void);

/* ---- the tensor table ---------------------------------------------------------------------- */

int64_t sp__dim_size(const sp_model_config *c, sp__dim d);
/* Whether a tensor of this row is stored (and used) by a model of configuration c. */
int sp__tensor_present(const sp__tensor_desc *row, const sp_model_config *c);
/* Number of dimensions (1 or 2) and the shape of row for configuration c. */
int sp__tensor_shape(const sp__tensor_desc *row, const sp_model_config *c, int64_t shape[2]);
/* The row's name for layer (ignored for model-wide rows) into buf. */
void sp__tensor_name(const sp__tensor_desc *row, int layer, char *buf, size_t cap);
/* The index into sp_model.layers of the row's tensor of layer: T5's decoder blocks (its rows
 * named "decoder.…%d…") are layers[n_layer + l], after the encoder's; -1 stays -1 (model-wide
 * rows). */
int sp__tensor_layer(const sp__tensor_desc *row, const sp_model_config *c, int layer);
/* Whether the row is one of a layer's tensors (its name holds "%d"). */
int sp__tensor_per_layer(const sp__tensor_desc *row);

/* The order sp__tensors_walk visits rows in. */
typedef enum sp__tensor_order {
    SP_ORDER_TABLE, /* the table's: the fingerprint's (the loader uses it too) */
    SP_ORDER_HF,    /* Hugging Face's state dict: init-model writes in this order */
} sp__tensor_order;

/* Calls visit(ctx, row, layer) for every row of f, present or not (layer -1 for model-wide
 * rows), with each run of per-layer rows visited once per layer 0..n_layer-1 before the next
 * row. Stops at, and returns, the first non-zero value visit returns. */
typedef int (*sp__tensor_visit)(void *ctx, const sp__tensor_desc *row, int layer);
int sp__tensors_walk(const sp__family *f, int n_layer, sp__tensor_order order,
                     sp__tensor_visit visit, void *ctx);

/* The row a stored tensor name is (with or without the family's name prefix), and its layer
 * (-1 for model-wide rows; any layer number matches); NULL when the name is not in the table. */
const sp__tensor_desc *sp__tensor_match(const sp__family *f, const char *name, int *layer);

/* Parameters of a model of configuration c: every present tensor (a tied head once). */
int64_t sp__family_param_count(const sp_model_config *c);

/* ---- roles: where a tensor lives in sp_model ------------------------------------------------ */

/* Points the role's slot of layer (or the model) at data of shape[ndim] in store (float32 for
 * everything but linear weights; the layout of a linear weight is the family's, or nn.Linear's
 * for the LM head; a fused gate_up_proj's up half starts after its gate rows). */
void sp__model_set_tensor(sp_model *m, int layer, sp__role role, const void *data, sp_wstore store,
                          int ndim, const int64_t shape[2]);
/* The float32 values of a role's tensor (NULL when unset). */
const float *sp__model_tensor(const sp_model *m, int layer, sp__role role);
/* The linear layer a role fills (NULL for vectors and buffers): its weight's storage may be
 * other than float32 (then sp__model_tensor returns NULL). */
sp_linear *sp__model_linear(sp_model *m, int layer, sp__role role);

#endif
