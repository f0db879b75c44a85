/* `softprompt init-model OUT`: write a random-weight directory of any family and shape, or of a
 * named real model's shape. */
#include <errno.h>
#include <stddef.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "model/family.h"
#include "softprompt/model_init.h"

#define CMD "init-model"

#define AT(field) offsetof(sp_init_options, field)

/* A float32 (strtof: a value that overflows float is refused, not made infinite). */
static const char *parse_std(void *args, const char *s) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < 0) return "a finite number >= 0";
    ((sp_init_options *)args)->std = v;
    return NULL;
}

static const char *parse_dtype(void *args, const char *s) {
    sp_dtype *out = &((sp_init_options *)args)->dtype;
    if (strcmp(s, "f32") == 0)
        *out = SP_DTYPE_F32;
    else if (strcmp(s, "f16") == 0)
        *out = SP_DTYPE_F16;
    else if (strcmp(s, "bf16") == 0)
        *out = SP_DTYPE_BF16;
    else
        return "f32, f16 or bf16";
    return NULL;
}

/* The shapes of real checkpoints, from their published config.json files. */
typedef struct shape {
    const char *name;
    sp_arch arch;
    int layers, d, heads, kv_heads, d_ff, vocab, ctx, tied;
    double theta, eps;
    int head_dim, window; /* 0: d / heads; none */
} shape;

static const shape SHAPES[] = {
    {"gpt2", SP_ARCH_GPT2, 12, 768, 12, 12, 3072, 50257, 1024, 1, 0, 1e-5, 0, 0},
    {"gpt2-medium", SP_ARCH_GPT2, 24, 1024, 16, 16, 4096, 50257, 1024, 1, 0, 1e-5, 0, 0},
    {"distilgpt2", SP_ARCH_GPT2, 6, 768, 12, 12, 3072, 50257, 1024, 1, 0, 1e-5, 0, 0},
    {"smollm2-135m", SP_ARCH_LLAMA, 30, 576, 9, 3, 1536, 49152, 8192, 1, 100000, 1e-5, 0, 0},
    {"smollm2-360m", SP_ARCH_LLAMA, 32, 960, 15, 5, 2560, 49152, 8192, 1, 100000, 1e-5, 0, 0},
    {"tinyllama-1.1b", SP_ARCH_LLAMA, 22, 2048, 32, 4, 5632, 32000, 2048, 0, 10000, 1e-5, 0, 0},
    {"qwen2.5-0.5b", SP_ARCH_QWEN2, 24, 896, 14, 2, 4864, 151936, 32768, 1, 1000000, 1e-6, 0, 0},
    {"llama-3.2-1b", SP_ARCH_LLAMA, 16, 2048, 32, 8, 8192, 128256, 131072, 1, 500000, 1e-5, 0, 0},
    {"mistral-7b-v0.1", SP_ARCH_MISTRAL, 32, 4096, 32, 8, 14336, 32000, 32768, 0, 10000, 1e-5, 0,
     4096},
    {"qwen3-0.6b", SP_ARCH_QWEN3, 28, 1024, 16, 8, 3072, 151936, 40960, 1, 1000000, 1e-6, 128, 0},
    {"gemma-2b", SP_ARCH_GEMMA, 18, 2048, 8, 1, 16384, 256000, 8192, 1, 10000, 1e-6, 256, 0},
    {"gemma-2-2b", SP_ARCH_GEMMA2, 26, 2304, 8, 4, 9216, 256000, 8192, 1, 10000, 1e-6, 256, 4096},
    {"gemma-3-270m", SP_ARCH_GEMMA3, 18, 640, 4, 1, 2048, 262144, 32768, 1, 1000000, 1e-6, 256,
     512},
    {"gemma-3-1b", SP_ARCH_GEMMA3, 26, 1152, 4, 1, 6912, 262144, 32768, 1, 1000000, 1e-6, 256, 512},
    {"bert-base-uncased", SP_ARCH_BERT, 12, 768, 12, 12, 3072, 30522, 512, 1, 0, 1e-12, 0, 0},
    {"roberta-base", SP_ARCH_ROBERTA, 12, 768, 12, 12, 3072, 50265, 512, 1, 0, 1e-5, 0, 0},
    {"pythia-160m", SP_ARCH_GPT_NEOX, 12, 768, 12, 12, 3072, 50304, 2048, 0, 10000, 1e-5, 0, 0},
    {"pythia-410m", SP_ARCH_GPT_NEOX, 24, 1024, 16, 16, 4096, 50304, 2048, 0, 10000, 1e-5, 0, 0},
    {"phi-3-mini-4k", SP_ARCH_PHI3, 32, 3072, 32, 32, 8192, 32064, 4096, 0, 10000, 1e-5, 0, 2047},
    {"phi-2", SP_ARCH_PHI, 32, 2560, 32, 32, 10240, 51200, 2048, 0, 10000, 1e-5, 0, 0},
    {"opt-125m", SP_ARCH_OPT, 12, 768, 12, 12, 3072, 50272, 2048, 1, 0, 1e-5, 0, 0},
    {"opt-350m", SP_ARCH_OPT, 24, 1024, 16, 16, 4096, 50272, 2048, 1, 0, 1e-5, 0, 0},
    {"t5-small", SP_ARCH_T5, 6, 512, 8, 8, 2048, 32128, 512, 1, 0, 1e-6, 64, 0},
    {"t5-base", SP_ARCH_T5, 12, 768, 12, 12, 3072, 32128, 512, 1, 0, 1e-6, 64, 0},
    {"flan-t5-small", SP_ARCH_T5, 8, 512, 6, 6, 1024, 32128, 512, 0, 0, 1e-6, 64, 0},
    {"mt5-small", SP_ARCH_T5, 8, 512, 6, 6, 1024, 250112, 512, 0, 0, 1e-6, 64, 0},
    {"phi-4-mini", SP_ARCH_PHI3, 32, 3072, 24, 8, 8192, 200064, 131072, 1, 10000, 1e-5, 0, 262144},
    {"bloom-560m", SP_ARCH_BLOOM, 24, 1024, 16, 16, 4096, 250880, 2048, 1, 0, 1e-5, 0, 0},
};
#define SHAPE_NAMES                                                                                \
    "gpt2, gpt2-medium, distilgpt2, smollm2-135m, smollm2-360m, tinyllama-1.1b, qwen2.5-0.5b, "    \
    "llama-3.2-1b, mistral-7b-v0.1, qwen3-0.6b, gemma-2b, gemma-2-2b, gemma-3-270m, "              \
    "gemma-3-1b, pythia-160m, pythia-410m, phi-3-mini-4k, phi-2, opt-125m, opt-350m, phi-4-mini, " \
    "bert-base-uncased, roberta-base, t5-small, t5-base, flan-t5-small, mt5-small or bloom-560m"

/* What a family's config always sets (Qwen2's q/k/v biases). */
static void family_options(sp_model_config *c) {
    c->pos_offset = 0; /* rows of the position table before position 0: OPT's and RoBERTa's */
    switch (c->arch) {
    case SP_ARCH_GPT2:
    case SP_ARCH_LLAMA:
    case SP_ARCH_MISTRAL:
    case SP_ARCH_PHI3:
    case SP_ARCH_QWEN3:
    case SP_ARCH_GEMMA:
        c->qkv_bias = 0;
        return;
    case SP_ARCH_GEMMA2: /* Gemma2Config's soft-capping, every other layer windowed */
        c->qkv_bias = 0, c->attn_softcap = 50, c->logit_softcap = 30, c->window_pattern = 2;
        return;
    case SP_ARCH_GEMMA3: /* 5 windowed layers of every 6, their own rotary base */
        c->qkv_bias = 0, c->window_pattern = 6, c->rope_local_theta = 10000;
        return;
    case SP_ARCH_QWEN2:
        c->qkv_bias = 1;
        return;
    case SP_ARCH_PHI: /* PhiConfig: biases (table rows); partial_rotary_factor: parse_args */
        c->qkv_bias = 0;
        return;
    case SP_ARCH_OPT: /* enable_bias; position 0 is the table's row 2 */
        c->qkv_bias = c->o_bias = c->mlp_bias = 1, c->pos_offset = 2;
        return;
    case SP_ARCH_GPT_NEOX: /* GPTNeoXConfig: parallel, erf GELU, biases (rotary_pct: parse_args) */
        c->qkv_bias = c->o_bias = 1, c->parallel_residual = 1, c->gelu_exact = 1;
        return;
    case SP_ARCH_BERT: /* two token types, positions from 0 */
        c->qkv_bias = 0, c->type_vocab_size = 2;
        return;
    case SP_ARCH_ROBERTA: /* one token type, positions from padding_idx (1) + 1 */
        c->qkv_bias = 0, c->type_vocab_size = 1, c->pos_offset = 2;
        return;
    case SP_ARCH_T5: /* T5Config's buckets; the decoder starts with the pad token, 0 */
        c->qkv_bias = 0, c->rel_buckets = 32, c->rel_max_distance = 128, c->decoder_start = 0;
        return;
    case SP_ARCH_BLOOM: /* a bias on every linear */
        c->qkv_bias = c->o_bias = c->mlp_bias = 1;
        return;
    }
}

/* Sets every field a shape defines (and the architecture's defaults for the rest). */
static void apply_shape(const shape *s, sp_model_config *c) {
    *c = (sp_model_config){.arch = s->arch,
                           .n_layer = s->layers,
                           .d_model = s->d,
                           .n_head = s->heads,
                           .n_kv_head = s->kv_heads,
                           .d_ff = s->d_ff,
                           .vocab_size = s->vocab,
                           .n_ctx = s->ctx,
                           .ln_eps = (float)s->eps,
                           .tied = s->tied,
                           .rope_theta = s->theta,
                           .head_dim = s->head_dim,
                           .sliding_window = s->window};
    family_options(c);
    if (strcmp(s->name, "flan-t5-small") == 0) /* feed_forward_proj gated-gelu */
        c->ff_gated = 1;
    if (strcmp(s->name, "mt5-small") == 0) /* model_type mt5: T5 1.1 */
        c->ff_gated = 1, c->mt5 = 1;
    if (strcmp(s->name, "opt-350m") == 0) /* post-norm blocks, 512-wide embeddings */
        c->post_norm = 1, c->d_embed = 512;
    if (strcmp(s->name, "phi-4-mini") == 0) /* partial_rotary_factor 0.75 (its longrope: no) */
        c->rotary_dim = 96;
    if (strcmp(s->name, "llama-3.2-1b") == 0)
        c->rope_scaling = SP_ROPE_LLAMA3, c->rope_factor = 32, c->rope_low_freq_factor = 1,
        c->rope_high_freq_factor = 4, c->rope_original_ctx = 8192;
}

static const char *parse_shape(void *args, const char *arg) {
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        if (strcmp(arg, SHAPES[i].name) == 0) {
            apply_shape(&SHAPES[i], &((sp_init_options *)args)->cfg);
            return NULL;
        }
    return SHAPE_NAMES;
}

/* --arch on its own: the architecture's conventions on the current dimensions. */
static const char *parse_arch(void *args, const char *arg) {
    sp_model_config *c = &((sp_init_options *)args)->cfg;
    if (sp__arch_from_model_type(arg, &c->arch) != 0) return sp__arch_supported_plain();
    family_options(c);
    switch (c->arch) {
    case SP_ARCH_GPT2:
        c->tied = 1, c->rope_theta = 0, c->ln_eps = 1e-5f;
        break;
    case SP_ARCH_LLAMA:
        c->tied = 0, c->rope_theta = 10000, c->ln_eps = 1e-5f;
        break;
    case SP_ARCH_QWEN2:
        c->tied = 0, c->rope_theta = 1000000, c->ln_eps = 1e-6f;
        break;
    case SP_ARCH_MISTRAL: /* MistralConfig's defaults, sliding_window 4096 among them */
        c->tied = 0, c->rope_theta = 10000, c->ln_eps = 1e-6f, c->sliding_window = 4096;
        break;
    case SP_ARCH_QWEN3:
        c->tied = 0, c->rope_theta = 10000, c->ln_eps = 1e-6f;
        break;
    case SP_ARCH_GEMMA: /* GemmaConfig's defaults but head_dim (256 there: give --head-dim) */
        c->tied = 1, c->rope_theta = 10000, c->ln_eps = 1e-6f;
        break;
    case SP_ARCH_GEMMA2:
        c->tied = 1, c->rope_theta = 10000, c->ln_eps = 1e-6f, c->sliding_window = 4096;
        break;
    case SP_ARCH_GEMMA3:
        c->tied = 1, c->rope_theta = 1000000, c->ln_eps = 1e-6f, c->sliding_window = 4096;
        break;
    case SP_ARCH_GPT_NEOX:
        c->tied = 0, c->rope_theta = 10000, c->ln_eps = 1e-5f;
        break;
    case SP_ARCH_OPT:
        c->tied = 1, c->rope_theta = 0, c->ln_eps = 1e-5f;
        break;
    case SP_ARCH_PHI:
        c->tied = 0, c->rope_theta = 10000, c->ln_eps = 1e-5f;
        break;
    case SP_ARCH_PHI3: /* Phi3Config's defaults (sliding_window none) */
        c->tied = 0, c->rope_theta = 10000, c->ln_eps = 1e-5f;
        break;
    case SP_ARCH_BERT: /* BertConfig's defaults */
        c->tied = 1, c->rope_theta = 0, c->ln_eps = 1e-12f;
        break;
    case SP_ARCH_ROBERTA:
        c->tied = 1, c->rope_theta = 0, c->ln_eps = 1e-5f;
        break;
    case SP_ARCH_T5: /* T5Config's defaults (feed_forward_proj relu: --gated-gelu for 1.1) */
        c->tied = 1, c->rope_theta = 0, c->ln_eps = 1e-6f;
        break;
    case SP_ARCH_BLOOM: /* BloomConfig's defaults */
        c->tied = 1, c->rope_theta = 0, c->ln_eps = 1e-5f;
        break;
    }
    return NULL;
}

static const sp__flag FLAGS[] = {
    SP_OPT_CUSTOM("shape", AT(cfg), "NAME", parse_shape,
                  "gpt2, gpt2-medium, distilgpt2, smollm2-135m,\n"
                  "smollm2-360m, tinyllama-1.1b, qwen2.5-0.5b, llama-3.2-1b,\n"
                  "mistral-7b-v0.1, qwen3-0.6b, gemma-2b, gemma-2-2b,\n"
                  "gemma-3-270m, gemma-3-1b, pythia-160m, pythia-410m,\n"
                  "phi-3-mini-4k, phi-4-mini, opt-125m, opt-350m, phi-2,\n"
                  "bert-base-uncased, roberta-base, t5-small, t5-base,\n"
                  "flan-t5-small, mt5-small, bloom-560m",
                  .order = -2),
    SP_OPT_CUSTOM("arch", AT(cfg.arch), "A", parse_arch,
                  "gpt2, llama, qwen2, mistral, qwen3, gemma, gemma2,\n"
                  "gemma3_text, gpt_neox, phi3, opt, phi, bert, roberta,\n"
                  "t5 or bloom"
                  "(default gpt2, or the shape's)",
                  .order = -1),
    SP_OPT_INT("layers", AT(cfg.n_layer), "N", 1, 1024, "transformer blocks (default 12)"),
    SP_OPT_INT("d", AT(cfg.d_model), "N", 1, 65536,
               "model width n_embd / hidden_size (default 768)"),
    SP_OPT_INT("heads", AT(cfg.n_head), "N", 1, 65536,
               "attention heads, must divide --d (default 12)"),
    SP_OPT_INT("kv-heads", AT(cfg.n_kv_head), "N", 1, 65536,
               "key/value heads (Llama family), must divide --heads\n(default --heads)"),
    SP_OPT_INT("head-dim", AT(cfg.head_dim), "N", 2, 4096,
               "head width (Llama family; default d / heads)"),
    SP_OPT_INT("sliding-window", AT(cfg.sliding_window), "N", 0, 1 << 24,
               "attention window (mistral; gemma2: every other layer;\n"
               "gemma3_text: 5 of 6; 0: none; default 4096)"),
    SP_OPT_INT(
        "rotary-dim", AT(cfg.rotary_dim), "N", 2, 4096,
        "rotated columns of each head (gpt_neox: rotary_pct x\nhead dim; default a quarter)"),
    SP_OPT_SWITCH("sequential", AT(cfg.parallel_residual), 0,
                  "gpt_neox: MLP after attention (use_parallel_residual\nfalse)"),
    SP_OPT_SWITCH("gelu-tanh", AT(cfg.gelu_exact), 0, "gpt_neox: hidden_act gelu_new (tanh GELU)"),
    SP_OPT_SWITCH("gated-gelu", AT(cfg.ff_gated), 1,
                  "t5: feed_forward_proj gated-gelu (T5 1.1, Flan-T5)"),
    SP_OPT_SWITCH("norm-residual", AT(cfg.residual_from_norm), 1,
                  "bloom: residuals from the norms' outputs\n"
                  "(apply_residual_connection_post_layernorm true)"),
    SP_OPT_SWITCH("post-norm", AT(cfg.post_norm), 1,
                  "opt: norms after the residual adds, no final norm\n"
                  "(do_layer_norm_before false, as opt-350m)"),
    SP_OPT_INT("embed-dim", AT(cfg.d_embed), "N", 1, 65536,
               "opt: word_embed_proj_dim, the embeddings' (and a soft\n"
               "prompt's) width, with project_in / project_out to --d\n"
               "(default --d: none)"),
    SP_OPT_INT("d-ff", AT(cfg.d_ff), "N", 1, 1 << 20,
               "MLP width (default 4 x d; llama, qwen2: 8/3 x d rounded\nup to a multiple of 64)"),
    SP_OPT_INT("vocab", AT(cfg.vocab_size), "N", 1, 1 << 24, "vocabulary size (default 50257)"),
    SP_OPT_INT("ctx", AT(cfg.n_ctx), "N", 1, 1 << 20, "context length n_positions (default 1024)"),
    SP_OPT_DOUBLE("rope-theta", AT(cfg.rope_theta), "X", 1, 1e12,
                  "rotary base (llama 10000, qwen2 1000000)"),
    SP_OPT_SWITCH(
        "tied", AT(cfg.tied), 1,
        "LM head tied to the embedding (gpt2 default; llama, qwen2:\nunless the shape unties it)"),
    SP_OPT_SWITCH("untied", AT(cfg.tied), 0, "separate LM head (lm_head.weight)"),
    SP_OPT_CUSTOM("dtype", AT(dtype), "T", parse_dtype, "f32, f16 or bf16 (default f32)"),
    SP_OPT_INT("shards", AT(n_shards), "N", 1, 99999,
               "safetensors files, each at least one tensor: 1 (default,\n"
               "model.safetensors) to the number of tensors (shards + index)"),
    SP_OPT_U64("seed", AT(seed), "S", "random seed, 0 to 2^64-1 (default 0)"),
    SP_OPT_CUSTOM("std", AT(std), "X", parse_std, "weight standard deviation (default 0.02)"),
    SP_OPT_SWITCH("random-norms", AT(random_norms), 1,
                  "also randomise LayerNorm gains and all biases"),
    SP_OPT_SWITCH("prefix", AT(prefix), 1, "name tensors transformer.* like GPT2LMHeadModel"),
    SP_OPT_SWITCH("force", AT(force), 1, "write into a non-empty directory"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = CMD,
    .usage = "usage: softprompt init-model [options] OUT\n",
    .about = "Writes a model directory with random weights in Hugging Face's layout\n"
             "(config.json, model.safetensors or shards + index) for tests and benchmarks:\n"
             "GPT2LMHeadModel, LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM,\n"
             "Qwen3ForCausalLM, GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM,\n"
             "GPTNeoXForCausalLM, Phi3ForCausalLM, OPTForCausalLM, PhiForCausalLM,\n"
             "BertForMaskedLM, RobertaForMaskedLM, T5ForConditionalGeneration or\n"
             "BloomForCausalLM.\n"
             "Defaults are GPT-2 124M's shape; --shape starts from another real model's shape,\n"
             "and the other options change it.\n",
    .flags = FLAGS,
    .positional = "OUT",
    .min_positional = 1,
    .max_positional = 1,
};

static void usage(FILE *out) {
    sp__flags_usage(&SPEC, out);
}

/* The MLP width HF's configs default to: 4 d; gated MLPs 8/3 d rounded up to a multiple of 64
 * (the same number of weights in their three matrices). */
static int default_d_ff(const sp__family *f, int d) {
    switch (f->mlp) {
    case SP_MLP_GELU:
    case SP_MLP_GELU_ERF:
    case SP_MLP_RELU:
        return 4 * d;
    case SP_MLP_SWIGLU:
    case SP_MLP_GEGLU:
        return (8 * d / 3 + 63) / 64 * 64;
    }
    return 4 * d;
}

/* Returns -1 when parsed (go on), or the exit status 2. */
static int parse_args(int argc, char **argv, sp_init_options *o, const char **out_dir) {
    sp_init_options_default(o);
    char *pos[argc > 0 ? argc : 1];
    int n_pos, rc = sp__flags_parse(&SPEC, argc, argv, o, pos, &n_pos);
    if (rc) return rc;
    const sp__family *f = sp__family_of(o->cfg.arch);
    if (f->gqa && o->cfg.n_head % sp_config_kv_heads(&o->cfg) != 0) {
        char v[32], expected[64];
        snprintf(v, sizeof v, "%d", o->cfg.n_kv_head);
        snprintf(expected, sizeof expected, "a divisor of --heads %d", o->cfg.n_head);
        return sp__flag_bad(CMD, "--kv-heads", v, expected);
    }
    int grouped = f->gqa && o->cfg.arch != SP_ARCH_T5; /* T5: d_kv from the config, no groups */
    if (!grouped && o->cfg.n_kv_head > 0 && o->cfg.n_kv_head != o->cfg.n_head) {
        char v[32], expected[64];
        snprintf(v, sizeof v, "%d", o->cfg.n_kv_head);
        snprintf(expected, sizeof expected, "--heads %d: %s has no grouped-query heads",
                 o->cfg.n_head, f->model_type);
        return sp__flag_bad(CMD, "--kv-heads", v, expected);
    }
    if (o->cfg.d_model % o->cfg.n_head != 0 && !(f->gqa && o->cfg.head_dim > 0)) {
        char v[32], expected[64];
        snprintf(v, sizeof v, "%d", o->cfg.n_head);
        snprintf(expected, sizeof expected, "a divisor of --d %d", o->cfg.d_model);
        return sp__flag_bad(CMD, "--heads", v, expected);
    }
    if (o->cfg.sliding_window && !f->window_key) {
        char v[32], expected[64];
        snprintf(v, sizeof v, "%d", o->cfg.sliding_window);
        snprintf(expected, sizeof expected, "0: %s has no sliding window", f->model_type);
        return sp__flag_bad(CMD, "--sliding-window", v, expected);
    }
    if (!sp__flags_given(argc, argv, "d-ff") && !sp__flags_given(argc, argv, "shape"))
        o->cfg.d_ff = default_d_ff(f, o->cfg.d_model);
    if (o->cfg.arch == SP_ARCH_GPT_NEOX && !sp__flags_given(argc, argv, "rotary-dim"))
        o->cfg.rotary_dim = o->cfg.d_model / o->cfg.n_head / 4 / 2 * 2; /* rotary_pct 0.25 */
    if (o->cfg.arch == SP_ARCH_PHI && !sp__flags_given(argc, argv, "rotary-dim"))
        o->cfg.rotary_dim = sp_config_head_dim(&o->cfg) * 2 / 5 / 2 * 2; /* phi-2: 0.4 */
    if (o->cfg.rotary_dim && o->cfg.arch != SP_ARCH_GPT_NEOX && o->cfg.arch != SP_ARCH_PHI3 &&
        o->cfg.arch != SP_ARCH_PHI) {
        char v[32];
        snprintf(v, sizeof v, "%d", o->cfg.rotary_dim);
        return sp__flag_bad(CMD, "--rotary-dim", v, "only with --arch gpt_neox, phi3 or phi");
    }
    if (o->cfg.residual_from_norm && o->cfg.arch != SP_ARCH_BLOOM)
        return sp__flag_bad(CMD, "--norm-residual", "given", "only with --arch bloom");
    if (o->cfg.post_norm && o->cfg.arch != SP_ARCH_OPT)
        return sp__flag_bad(CMD, "--post-norm", "given", "only with --arch opt");
    if (o->cfg.d_embed && o->cfg.arch != SP_ARCH_OPT) {
        char v[32];
        snprintf(v, sizeof v, "%d", o->cfg.d_embed);
        return sp__flag_bad(CMD, "--embed-dim", v, "only with --arch opt");
    }
    if (o->cfg.d_embed == o->cfg.d_model) o->cfg.d_embed = 0; /* no projections */
    *out_dir = pos[0];
    return -1;
}

static int run(int argc, char **argv) {
    sp_init_options o;
    const char *dir = NULL;
    int rc = parse_args(argc, argv, &o, &dir);
    if (rc >= 0) return rc;
    sp_error err;
    if (sp_init_model_write(dir, &o, &err) != 0) {
        fprintf(stderr, "softprompt init-model: %s\n", err.msg);
        return 1;
    }
    const sp_model_config *c = &o.cfg;
    uint64_t n = (uint64_t)sp__family_param_count(c);
    printf("wrote %s: random %s weights (seed %" PRIu64 ", std %g%s)\n", dir,
           sp_arch_model_type(c->arch), o.seed, (double)o.std,
           o.random_norms ? ", random norms" : "");
    printf("  %d layers, d_model %d, %d heads (%d key/value), d_ff %d, vocab %d, context %d%s\n",
           c->n_layer, c->d_model, c->n_head, sp_config_kv_heads(c), c->d_ff, c->vocab_size,
           c->n_ctx, c->tied ? ", tied head" : ", separate head");
    printf("  %" PRIu64 " parameters, %s, %" PRIu64 " bytes of weights\n", n,
           sp_dtype_name(o.dtype), n * (uint64_t)sp_dtype_size(o.dtype));
    if (o.n_shards == 1)
        printf("  files: config.json, model.safetensors\n");
    else
        printf("  files: config.json, model.safetensors.index.json, model-00001-of-%05d.safetensors"
               " .. model-%05d-of-%05d.safetensors\n",
               o.n_shards, o.n_shards, o.n_shards);
    return 0;
}

const sp__command SP_CMD_INIT_MODEL = {
    .name = "init-model",
    .summary = "write a random-weight GPT-2 model directory (any shape, dtype, sharding)",
    .run = run,
    .usage = usage,
};
