/* A frozen Hugging Face causal LM loaded from a model directory: GPT-2 (GPT2LMHeadModel) or the
 * Llama family (LlamaForCausalLM, Qwen2ForCausalLM).
 *
 * Files: config.json plus model.safetensors, or model-0000i-of-0000n.safetensors shards listed
 * in model.safetensors.index.json. F32 tensors are used in place inside the read-only mapping
 * (no copy, so the ranks of one node share the page cache); F16/BF16/F64 tensors are converted
 * to float32 once at load. GPT-2 names are accepted with or without the "transformer." prefix. */
#ifndef SOFTPROMPT_MODEL_H
#define SOFTPROMPT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/error.h"
#include "softprompt/safetensors.h"

/* GPT-2: LayerNorm, learned positions, fused Conv1D qkv [in, out], GELU MLP.
 * LLAMA: RMSNorm, rotary positions, nn.Linear [out, in] q/k/v/o with grouped-query attention,
 * SwiGLU MLP; Qwen2 is the same with q/k/v biases. */
typedef enum sp_arch { SP_ARCH_GPT2, SP_ARCH_LLAMA } sp_arch;

typedef enum sp_rope_scaling { SP_ROPE_NONE, SP_ROPE_LINEAR, SP_ROPE_LLAMA3 } sp_rope_scaling;

typedef struct sp_model_config {
    int n_layer;
    int d_model; /* n_embd / hidden_size */
    int n_head;
    int d_ff; /* n_inner (4 * d_model when null) / intermediate_size */
    int vocab_size;
    int n_ctx;    /* n_positions / max_position_embeddings */
    float ln_eps; /* layer_norm_epsilon / rms_norm_eps */
    /* Llama family (0 = the GPT-2 value: n_kv_head = n_head, head_dim = d_model / n_head) */
    int n_kv_head; /* num_key_value_heads: grouped-query attention when < n_head */
    int head_dim;
    int tied;                       /* LM head is the token embedding (tie_word_embeddings) */
    int qkv_bias, o_bias, mlp_bias; /* Qwen2: q/k/v biases; Llama: attention_bias, mlp_bias */
    double rope_theta;
    sp_rope_scaling rope_scaling;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_original_ctx; /* original_max_position_embeddings (llama3 scaling) */
    char model_type[16];   /* "gpt2", "llama", "qwen2" */
} sp_model_config;

static inline int sp_config_kv_heads(const sp_model_config *c) {
    return c->n_kv_head > 0 ? c->n_kv_head : c->n_head;
}
static inline int sp_config_head_dim(const sp_model_config *c) {
    return c->head_dim > 0 ? c->head_dim : c->d_model / c->n_head;
}

/* One pre-norm block. GPT-2's Conv1D weights are stored [in, out] (y = x W + b); the Llama
 * family's nn.Linear weights [out, in] (y = x W^T + b). Unused fields are NULL. */
typedef struct sp_layer {
    const float *ln1_w, *ln1_b;             /* [d]; no bias for RMSNorm */
    const float *qkv_w, *qkv_b;             /* GPT-2 c_attn: [d, 3d], [3d] */
    const float *q_w, *k_w, *v_w;           /* Llama: [H*hd, d], [Hkv*hd, d], [Hkv*hd, d] */
    const float *q_b, *k_b, *v_b;           /* Qwen2 / attention_bias: [H*hd], [Hkv*hd] x 2 */
    const float *attn_proj_w, *attn_proj_b; /* GPT-2 c_proj [d, d]; Llama o_proj [d, H*hd] */
    const float *ln2_w, *ln2_b;             /* [d] */
    const float *fc_w, *fc_b;               /* GPT-2 mlp.c_fc: [d, d_ff], [d_ff] */
    const float *fc_proj_w, *fc_proj_b;     /* GPT-2 mlp.c_proj: [d_ff, d], [d] */
    const float *gate_w, *up_w, *down_w;    /* Llama: [d_ff, d], [d_ff, d], [d, d_ff] */
    const float *gate_b, *up_b, *down_b;    /* mlp_bias */
} sp_layer;

typedef struct sp_model {
    sp_arch arch;
    sp_model_config cfg;
    const float *wte;           /* [V, d] token embeddings */
    const float *wpe;           /* [n_ctx, d] GPT-2 position embeddings; NULL for rotary models */
    const float *lnf_w, *lnf_b; /* [d]; no bias for RMSNorm */
    const float *lm_head;       /* [V, d]; == wte when tied (GPT-2 always is) */
    sp_layer *layers;           /* [n_layer] */
    float *rope_inv_freq; /* [head_dim / 2] rotary frequencies after rope_scaling (Llama family) */

    /* Provenance and memory accounting (for `softprompt info` and fingerprints). */
    char *dir;
    int n_files;
    sp_st_file *files;
    float **owned; /* converted or realigned tensors */
    int n_owned;
    int64_t n_params;       /* parameters actually used (tied head counted once) */
    size_t bytes_mapped;    /* size of all mapped safetensors files */
    size_t bytes_in_place;  /* F32 tensor bytes used directly from the mapping */
    size_t bytes_converted; /* private float32 copies made at load */
    int64_t params_by_dtype[SP_DTYPE_COUNT];
} sp_model;

/* Loads and validates dir. On failure m is left empty (safe to sp_model_free) and err names
 * the file and the tensor or key at fault. */
int sp_model_load(sp_model *m, const char *dir, sp_error *err);
void sp_model_free(sp_model *m);

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

/* Bytes of float32 activations one training token costs the engine (forward + backward). */
size_t sp_model_activation_bytes_per_token(const sp_model *m, int seq_len);

#endif
