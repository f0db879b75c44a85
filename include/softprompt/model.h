/* A frozen Hugging Face causal LM loaded from a model directory.
 *
 * Files: config.json plus model.safetensors, or model-0000i-of-0000n.safetensors shards listed
 * in model.safetensors.index.json. F32 tensors are used in place inside the read-only mapping
 * (no copy, so the ranks of one node share the page cache); F16/BF16/F64 tensors are converted
 * to float32 once at load. Names are accepted with or without the "transformer." prefix. */
#ifndef SOFTPROMPT_MODEL_H
#define SOFTPROMPT_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/error.h"
#include "softprompt/safetensors.h"

typedef enum sp_arch { SP_ARCH_GPT2 } sp_arch;

typedef struct sp_gpt2_config {
    int n_layer;
    int d_model;    /* n_embd */
    int n_head;
    int d_ff;       /* n_inner, 4 * d_model when null */
    int vocab_size;
    int n_ctx;      /* n_positions */
    float ln_eps;   /* layer_norm_epsilon */
} sp_gpt2_config;

/* One pre-LayerNorm block. Conv1D weights are stored [in, out]: y = x W + b. */
typedef struct sp_gpt2_layer {
    const float *ln1_w, *ln1_b;             /* [d] */
    const float *qkv_w, *qkv_b;             /* [d, 3d], [3d]  (c_attn) */
    const float *attn_proj_w, *attn_proj_b; /* [d, d], [d]    (attn.c_proj) */
    const float *ln2_w, *ln2_b;             /* [d] */
    const float *fc_w, *fc_b;               /* [d, d_ff], [d_ff] (mlp.c_fc) */
    const float *fc_proj_w, *fc_proj_b;     /* [d_ff, d], [d]    (mlp.c_proj) */
} sp_gpt2_layer;

typedef struct sp_model {
    sp_arch arch;
    sp_gpt2_config cfg;
    const float *wte;     /* [V, d] token embeddings */
    const float *wpe;     /* [n_ctx, d] position embeddings */
    const float *lnf_w, *lnf_b; /* [d] */
    const float *lm_head; /* [V, d]; == wte when tied (GPT-2 always is) */
    sp_gpt2_layer *layers; /* [n_layer] */

    /* Provenance and memory accounting (for `softprompt info` and fingerprints). */
    char *dir;
    int n_files;
    sp_st_file *files;
    float **owned; /* converted or realigned tensors */
    int n_owned;
    int64_t n_params;          /* parameters actually used (tied head counted once) */
    size_t bytes_mapped;       /* size of all mapped safetensors files */
    size_t bytes_in_place;     /* F32 tensor bytes used directly from the mapping */
    size_t bytes_converted;    /* private float32 copies made at load */
    int64_t params_by_dtype[SP_DTYPE_COUNT];
} sp_model;

/* Loads and validates dir. On failure m is left empty (safe to sp_model_free) and err names
 * the file and the tensor or key at fault. */
int sp_model_load(sp_model *m, const char *dir, sp_error *err);
void sp_model_free(sp_model *m);

/* Bytes of float32 activations one training token costs the engine (forward + backward). */
size_t sp_model_activation_bytes_per_token(const sp_model *m, int seq_len);

#endif
