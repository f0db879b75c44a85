/* Writes random-weight Hugging Face model directories of any family (cfg.arch) and shape, so
 * tests and benchmarks can use real shapes (e.g. GPT-2 124M) without downloading weights. */
#ifndef SOFTPROMPT_MODEL_INIT_H
#define SOFTPROMPT_MODEL_INIT_H

#include <stdint.h>

#include "softprompt/dtype.h"
#include "softprompt/error.h"
#include "softprompt/model.h"

typedef struct sp_init_options {
    sp_model_config cfg;
    sp_dtype dtype; /* F32, F16 or BF16 */
    int n_shards;   /* 1: model.safetensors; n > 1: model-0000i-of-0000n + index */
    uint64_t seed;
    float std;        /* weights ~ N(0, std^2), as HF's initializer_range (0.02) */
    int random_norms; /* also randomise LayerNorm gains/biases and linear biases (tests) */
    int prefix;       /* name tensors "transformer.h.0..." as GPT2LMHeadModel saves them */
    int force;        /* allow writing into a non-empty directory */
} sp_init_options;

void sp_init_options_default(sp_init_options *o); /* GPT-2 124M shape, F32, seed 0 */
int sp_init_model_write(const char *dir, const sp_init_options *o, sp_error *err);

#endif
