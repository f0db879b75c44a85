/* A frozen Hugging Face causal LM loaded from a model directory: one of the families of sp_arch
 * (GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM, Qwen3ForCausalLM,
 * the Gemma families, GPTNeoXForCausalLM).
 *
 * Files: config.json plus model.safetensors, or model-0000i-of-0000n.safetensors shards listed
 * in model.safetensors.index.json. F32 tensors are used in place inside the read-only mapping
 * (no copy, so the ranks of one node share the page cache); F16/BF16/F64 tensors are converted
 * to float32 once at load. With BF16 weights (sp_weights) the blocks' matrices are BF16 instead:
 * BF16 tensors used in place, others rounded once. GPT-2 names are accepted with or without the
 * "transformer." prefix. */
#ifndef SOFTPROMPT_MODEL_H
#define SOFTPROMPT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/error.h"
#include "softprompt/safetensors.h"

/* The model families (architectures) the engine implements. Each is described once, as data,
 * in src/model/family.c: its tensors, norm, positions, attention and MLP (docs/design.md).
 * Code that depends on the family switches on this enum without a default, so that -Wswitch
 * (-Wall -Werror) names every place a new family must be handled. */
typedef enum sp_arch {
    SP_ARCH_GPT2,     /* GPT2LMHeadModel: LayerNorm, learned positions, fused Conv1D qkv, GELU */
    SP_ARCH_LLAMA,    /* LlamaForCausalLM: RMSNorm, rotary, grouped-query heads, SwiGLU */
    SP_ARCH_QWEN2,    /* Qwen2ForCausalLM: Llama's block with q/k/v biases */
    SP_ARCH_MISTRAL,  /* MistralForCausalLM: Llama's block with a sliding attention window */
    SP_ARCH_QWEN3,    /* Qwen3ForCausalLM: Llama's block with per-head RMSNorm of q and k */
    SP_ARCH_GEMMA,    /* GemmaForCausalLM: scaled embeddings, RMSNorm (1 + w), GeGLU */
    SP_ARCH_GEMMA2,   /* Gemma2ForCausalLM: Gemma with sandwich norms, soft-capping, windows */
    SP_ARCH_GEMMA3,   /* Gemma3ForCausalLM (gemma3_text): Gemma 2 with q/k norms, local rope */
    SP_ARCH_GPT_NEOX, /* GPTNeoXForCausalLM: LayerNorm, parallel residual, partial rotary,
                       * q/k/v interleaved per head */
    SP_ARCH_PHI3,     /* Phi3ForCausalLM: Mistral's block with fused qkv_proj and gate_up_proj,
                       * partial rotary */
    SP_ARCH_OPT,      /* OPTForCausalLM: GPT-2's block with separate q/k/v, ReLU, positions
                       * offset by 2 */
    SP_ARCH_PHI,      /* PhiForCausalLM (Phi-2): attention and MLP in parallel off one LayerNorm,
                       * partial rotary, biases everywhere, a head with a bias */
    SP_ARCH_BERT,     /* BertForMaskedLM: bidirectional post-LN encoder, MLM head */
    SP_ARCH_ROBERTA,  /* RobertaForMaskedLM: BERT with positions from padding_idx + 1 */
    SP_ARCH_T5,       /* T5ForConditionalGeneration: encoder-decoder, relative position buckets,
                       * RMS norms, ReLU or gated-GELU, cross-attention (src/model/t5.c) */
    SP_ARCH_BLOOM,    /* BloomForCausalLM: embedding LayerNorm, ALiBi, q/k/v interleaved per head,
                       * tanh GELU */
} sp_arch;
#define SP_N_ARCH (SP_ARCH_BLOOM + 1) /* keep at the last value + 1 */

/* config.json's model_type of a family ("gpt2", "llama", "qwen2", "mistral", "qwen3"). */
const char *sp_arch_model_type(sp_arch a);

typedef enum sp_rope_scaling { SP_ROPE_NONE, SP_ROPE_LINEAR, SP_ROPE_LLAMA3 } sp_rope_scaling;

typedef struct sp_model_config {
    sp_arch arch;
    int n_layer;
    int d_model; /* n_embd / hidden_size */
    int n_head;
    int d_ff; /* n_inner (4 * d_model when null) / intermediate_size */
    int vocab_size;
    int n_ctx;    /* n_positions / max_position_embeddings */
    float ln_eps; /* layer_norm_epsilon / rms_norm_eps */
    /* grouped-query families (0 = the GPT-2 value: n_kv_head = n_head, head_dim = d_model / n_head)
     */
    int n_kv_head; /* num_key_value_heads: grouped-query attention when < n_head */
    int head_dim;
    int tied;                       /* LM head is the token embedding (tie_word_embeddings) */
    int qkv_bias, o_bias, mlp_bias; /* Qwen2: q/k/v biases; Llama: attention_bias, mlp_bias */
    double rope_theta;
    sp_rope_scaling rope_scaling;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_ctx; /* original_max_position_embeddings (llama3 scaling) */
    /* Sliding attention window (Mistral): a key is visible to a query fewer than sliding_window
     * positions after it; 0 = no window. window_pattern k > 1: only layers l with (l + 1) % k != 0
     * have it (the others attend to everything); 0 = every layer. sp_config_layer_window. */
    int sliding_window;
    int window_pattern;
    float attn_softcap;  /* scores become cap tanh(scores / cap) (attn_logit_softcapping); 0 none */
    float logit_softcap; /* the same on the LM head's logits (final_logit_softcapping); 0 none */
    double query_scale;  /* attention scores' scale (Gemma 2: query_pre_attn_scalar^-1/2);
                          * 0: 1 / sqrt(head_dim) */
    double rope_local_theta; /* rotary base of the layers with a window, without rope_scaling
                              * (Gemma 3: rope_local_base_freq); 0: every layer's is rope_theta */
    int type_vocab_size;     /* rows of token_type_embeddings (BERT 2, RoBERTa 1; 0: none) */
    int pos_offset;          /* row of the learned position table holding position 0 (OPT: 2;
                              * RoBERTa: padding_idx + 1, n_ctx being max_position_embeddings
                              * less it) */
    int rotary_dim;          /* leading columns of each q/k head that rotate (GPT-NeoX:
                              * int(head_dim * rotary_pct)); 0: all of head_dim */
    int parallel_residual;   /* x + attn(norm1(x)) + mlp(norm2(x)) (use_parallel_residual) */
    int gelu_exact;          /* the MLP's GELU is the erf one (hidden_act "gelu"), not tanh's */
    /* Encoder-decoders (T5): n_layer is the encoder's blocks and the decoder's alike
     * (num_layers = num_decoder_layers); n_ctx bounds the encoder input and the decoder's. */
    int rel_buckets;      /* relative_attention_num_buckets */
    int rel_max_distance; /* relative_attention_max_distance */
    int ff_gated;         /* feed_forward_proj "gated-gelu": gelu_new(wi_0 x) * wi_1 x; else ReLU */
    int decoder_start;    /* decoder_start_token_id: the decoder's first input */
    int mt5;              /* model_type "mt5" (MT5ForConditionalGeneration): T5 1.1 by another
                             name, gated-GELU and untied (sp__family_for: its own names) */
    int residual_from_norm; /* the residual of attention and of the MLP is their norm's output,
                             * not its input (BLOOM's apply_residual_connection_post_layernorm) */
    int post_norm;          /* each block's norms after its residual adds and no final norm (OPT's
                             * do_layer_norm_before false: opt-350m) */
    int d_embed; /* width of the token embeddings, of the LM head's input and of a soft prompt's
                  * rows when it differs from d_model (OPT's word_embed_proj_dim, with project_in
                  * and project_out); 0: d_model. sp_config_embed_dim */
} sp_model_config;

static inline int sp_config_kv_heads(const sp_model_config *c) {
    return c->n_kv_head > 0 ? c->n_kv_head : c->n_head;
}
static inline int sp_config_head_dim(const sp_model_config *c) {
    return c->head_dim > 0 ? c->head_dim : c->d_model / c->n_head;
}
/* The width of a token embedding row, of the LM head's input and of a soft prompt's rows
 * (inputs_embeds): d_model but for OPT's word_embed_proj_dim. */
static inline int sp_config_embed_dim(const sp_model_config *c) {
    return c->d_embed > 0 ? c->d_embed : c->d_model;
}
/* The columns of each q/k head the rotary embedding turns (even, <= head_dim). */
static inline int sp_config_rotary_dim(const sp_model_config *c) {
    return c->rotary_dim > 0 ? c->rotary_dim : sp_config_head_dim(c);
}
/* The attention window of layer l (0: none). */
static inline int sp_config_layer_window(const sp_model_config *c, int l) {
    if (c->sliding_window <= 0) return 0;
    if (c->window_pattern > 1 && (l + 1) % c->window_pattern == 0) return 0;
    return c->sliding_window;
}

/* A frozen linear layer y = x W + b over the weight's storage. Call sites pass the whole
 * struct to sp__linear_fwd / sp__linear_bwd (src/model/kernels.h) and never look at w: how it is
 * stored (layout, element type) is the kernels' business. A weight is float32, or BF16 when the
 * model was loaded with BF16 weights (sp_weights); a new storage adds a value to sp_wstore, and
 * -Wswitch then points at the kernels that must handle it. */
typedef enum sp_wlayout {
    SP_W_IN_OUT, /* W [in, out], y = x W (GPT-2's Conv1D) */
    SP_W_OUT_IN, /* W [out, in], y = x W^T (nn.Linear) */
} sp_wlayout;
typedef enum sp_wstore {
    SP_WSTORE_F32,  /* float32 */
    SP_WSTORE_BF16, /* bfloat16 (uint16 bit patterns): products in BF16, sums in float32 */
} sp_wstore;
typedef struct sp_linear {
    const void *w;  /* in, out elements in layout and store; NULL when the family has none */
    const float *b; /* [out] or NULL */
    int in, out;
    sp_wlayout layout;
    sp_wstore store;
    int exact; /* the LM head (which runs at target rows only): float32 compute by
                * sp__sgemm_small whatever the store, a BF16 store's activations unrounded, so
                * that a BF16 table in place gives what a float32 copy of it gives */
} sp_linear;

/* A norm's gain and bias (NULL for RMSNorm), [d] each. */
typedef struct sp_normw {
    const float *w, *b;
} sp_normw;

/* One pre-norm block. Which fields a family uses is in its description (src/model/family.c);
 * the others stay zero. */
typedef struct sp_layer {
    sp_normw ln1, ln2;                 /* before attention, before the MLP */
    sp_normw ln_post_attn, ln_post_ff; /* after attention, after the MLP (Gemma 2) */
    sp_linear qkv;                     /* fused q|k|v (GPT-2 c_attn [d, 3d]) */
    sp_linear q, k, v;        /* separate projections (Llama: [H*hd, d], [Hkv*hd, d] x 2) */
    sp_linear o;              /* attention output: GPT-2 c_proj, Llama o_proj */
    sp_normw q_norm, k_norm;  /* per-head norms of q and k, [head_dim] (Qwen3) */
    sp_linear mlp_in;         /* GPT-2 mlp.c_fc; SwiGLU gate_proj */
    sp_linear mlp_up;         /* SwiGLU up_proj */
    sp_linear mlp_out;        /* GPT-2 mlp.c_proj; SwiGLU down_proj */
    sp_normw ln_cross;        /* the decoder's norm before cross-attention (T5) */
    sp_linear xq, xk, xv, xo; /* its projections: q of the decoder rows, k and v of the encoder's
                               * output, the output projection (T5 EncDecAttention) */
} sp_layer;

/* The element type of the matrices of the blocks (and of an untied LM head), --weights. The
 * embeddings, norms, biases, activations and every sum stay float32. */
typedef enum sp_weights {
    SP_WEIGHTS_AUTO, /* BF16 when every such matrix is stored BF16 in the files, else F32 */
    SP_WEIGHTS_F32,  /* float32 (other dtypes converted once at load) */
    SP_WEIGHTS_BF16, /* BF16: BF16 tensors used in place, others rounded once (nearest even) */
} sp_weights;
/* "auto", "f32", "bf16" <-> the value; parse returns -1 for anything else. */
int sp_weights_parse(const char *name, sp_weights *out);
const char *sp_weights_name(sp_weights w);
/* How products with BF16 weights are computed on this CPU: "avx512-bf16" (the BF16 dot-product
 * instruction) or a float32 path (tiles converted; no BF16 instructions, or SP_CPU_NO_BF16=1 in
 * the environment). */
const char *sp_bf16_compute(void);

typedef struct sp_model {
    sp_model_config cfg; /* cfg.arch: the family */
    const void *wte; /* [V, e] token embeddings (e: sp_config_embed_dim) in wte_store: float32, or
                      * BF16 as stored (used in place) when BF16 weights are loaded from a BF16
                      * checkpoint; rows are read as float32 through sp_model_embedding_row (exact)
                      */
    sp_wstore wte_store;
    const float *wpe;      /* [n_ctx, d] learned position embeddings (GPT-2) */
    sp_normw lnf;          /* final norm */
    sp_linear lm_head;     /* [V, e] nn.Linear; .w == wte when tied (MLM: .b the decoder bias) */
    sp_linear project_in;  /* [d, e] input rows to the residual stream (OPT project_in) */
    sp_linear project_out; /* [e, d] the final hidden state to the LM head's input (project_out) */
    const float *wtt;      /* [type_vocab_size, d] token type embeddings (BERT) */
    sp_normw emb_ln;       /* the embedding LayerNorm (BERT) */
    sp_linear head_dense;  /* the MLM head's transform [d, d] (BERT, RoBERTa) */
    sp_normw head_ln;      /* its LayerNorm */
    sp_layer *layers; /* [n_layer]; T5: [2 n_layer], the encoder's blocks, then the decoder's */
    const float *rel_bias;     /* [rel_buckets, n_head] the encoder's relative position bias (T5) */
    const float *dec_rel_bias; /* the decoder's */
    sp_normw enc_lnf;          /* the encoder's final norm (T5; lnf is the decoder's) */
    float embed_scale;         /* input rows are multiplied by it (Gemma: sqrt(d) rounded to the
                                * embedding's stored dtype, as transformers' normalizer; Gemma 1, 2:
                                * every row, Gemma 3: the token rows only); 1 otherwise */
    float
        *rope_inv_freq; /* [head_dim / 2] rotary frequencies after rope_scaling (rotary families) */
    float *rope_inv_freq_local; /* [head_dim / 2] those of windowed layers (rope_local_theta) */
    float *alibi_slopes;        /* [n_head] ALiBi slopes (BLOOM; sp__alibi_slopes) */

    /* Provenance and memory accounting (for `softprompt info` and fingerprints). */
    char *dir;
    struct sp__model_store *store; /* the loader's: mapped files, converted copies (opaque) */
    int64_t n_params;              /* parameters actually used (tied head counted once) */
    size_t bytes_mapped;           /* size of all mapped safetensors files */
    size_t bytes_in_place;         /* F32 tensor bytes used directly from the mapping */
    size_t bytes_converted;        /* copies made at load (float32, or BF16 rounded) */
    int copies_shared;             /* 1: those copies are one per node, shared by its ranks
                                    * (sp_model_load_shared); 0: private to the process */
    sp_weights weights;            /* the matrices' storage: SP_WEIGHTS_F32 or SP_WEIGHTS_BF16 */
    size_t bytes_matrices;         /* of the matrices in that storage (shared or private) */
    int64_t params_by_dtype[SP_DTYPE_COUNT];
} sp_model;

/* Row id of the token embedding table ([e] floats, e = sp_config_embed_dim) as float32 (a BF16
 * table's values converted, exactly). */
void sp_model_embedding_row(const sp_model *m, int64_t id, float *out);
/* Row id as the model's embedding module returns it, in the space of the soft prompt's rows
 * (what PEFT's word_embeddings(id) gives: prompts initialised from the vocabulary, inspect): the
 * table's row, times embed_scale for Gemma 3, whose transformers module scales inside the
 * embedding (Gemma 1 and 2 scale inputs_embeds later, the prompt's rows included). */
void sp_model_input_row(const sp_model *m, int64_t id, float *out);

/* Loads and validates dir. On failure m is left empty (safe to sp_model_free) and err names
 * the file and the tensor or key at fault. */
int sp_model_load(sp_model *m, const char *dir, sp_error *err);
/* The same with the matrices' storage chosen (sp_model_load is SP_WEIGHTS_F32). BF16 is refused,
 * naming the tensor, when a value of a matrix stored in another dtype is finite but beyond
 * BF16's range once rounded. */
int sp_model_load_weights(sp_model *m, const char *dir, sp_weights weights, sp_error *err);
void sp_model_free(sp_model *m);

/* Memory that the processes (ranks) of one node share, for the copies a load makes (F32 or F16
 * matrices rounded to BF16, F16/BF16 tensors converted to float32): with it, N ranks on a node
 * pay for them once. sp_model_load_shared calls map, then ready, once each, on every rank of
 * the node (they are collective), in that order, whatever happened before. */
typedef struct sp_model_share {
    /* ok: whether this rank's load got this far; bytes (equal on every rank where ok is 1):
     * returns 0 with *p (NULL when bytes is 0) mapped by every rank of the node, readable, and
     * writable on the one rank where *writer is set (it fills it; the others only read it after
     * ready), a mapping sp_model_free releases with munmap(*p, bytes). Returns -1 on every rank
     * when some rank's ok is 0 or the memory could not be had (err set where it was not yet). */
    int (*map)(void *ctx, size_t bytes, int ok, void **p, int *writer, sp_error *err);
    /* ok: whether this rank took every tensor (the writer: converted every copy); 0 when every
     * rank of the node succeeded, else -1 (err set on the ranks whose ok was 1). */
    int (*ready)(void *ctx, int ok, sp_error *err);
    void *ctx;
} sp_model_share;
/* sp_model_load_weights with the copies in memory that share gives (NULL: private memory, as
 * sp_model_load_weights). */
int sp_model_load_shared(sp_model *m, const char *dir, sp_weights weights,
                         const sp_model_share *share, sp_error *err);

/* The safetensors files a loaded model maps (one, or the shards in index order): their count
 * and each one's path (NULL when i is out of range). */
int sp_model_n_files(const sp_model *m);
const char *sp_model_file_path(const sp_model *m, int i);

/* Non-finite weights (NaN, infinities) of a loaded model: every value of every tensor it
 * computes with, in its stored dtype (an F64 value beyond float32's range counts: it is
 * infinite once converted). A full scan of the mapped files: for GPT-2 124M F32, 0.07-0.1 s in
 * the page cache, 0.2 s read from disk. */
typedef struct sp_nonfinite {
    int64_t count;   /* non-finite values found */
    int64_t checked; /* values checked */
    int n_tensors;   /* tensors holding at least one */
    /* the first one found (file order, then element order); NULL when none */
    const char *file, *tensor; /* borrowed from the model */
    int ndim;
    int64_t index[SP_ST_MAX_DIMS];
    double value; /* NaN, inf or -inf */
} sp_nonfinite;

void sp_model_scan_nonfinite(const sp_model *m, sp_nonfinite *r);

/* Bytes of activations and scratch a worker allocates for a training step (forward and
 * backward) over a batch of n_tokens packed tokens with n_targets targets and sequences of at
 * most max_len tokens (plus the rows of a key/value prefix, sp_pass.n_kv_prefix, if any): the sum
 * of the engine's activation table (src/model/worker.c), the same table that sizes the buffers.
 * Grows with each argument, so the largest batch of a run bounds every other. */
size_t sp_model_activation_bytes(const sp_model *m, size_t n_tokens, size_t n_targets, int max_len);

/* Bytes per token of the same: for sequences of at most seq_len tokens and n_tokens >= seq_len,
 * n_tokens * sp_model_activation_bytes_per_token(m, seq_len) + n_targets * vocab_size * 4 (the
 * target logits) bounds sp_model_activation_bytes(m, n_tokens, n_targets, seq_len) (every buffer
 * sized per target or per sequence is charged to each token). */
size_t sp_model_activation_bytes_per_token(const sp_model *m, int seq_len);

#endif
