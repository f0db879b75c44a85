/* `softprompt init-model OUT`: write a random-weight GPT-2 or Llama-family directory of any
 * shape, or of a named real model's shape. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "softprompt/model_init.h"

static void usage(FILE *out) {
    fprintf(out, "usage: softprompt init-model [options] OUT\n\n"
                 "Writes a model directory with random weights in Hugging Face's layout\n"
                 "(config.json, model.safetensors or shards + index) for tests and benchmarks:\n"
                 "GPT2LMHeadModel, LlamaForCausalLM or Qwen2ForCausalLM. Defaults are GPT-2\n"
                 "124M's shape; --shape starts from another real model's shape, and the other\n"
                 "options change it.\n\n"
                 "options:\n"
                 "  --shape NAME        gpt2, gpt2-medium, distilgpt2, smollm2-135m,\n"
                 "                      smollm2-360m, tinyllama-1.1b, qwen2.5-0.5b, llama-3.2-1b\n"
                 "  --arch A            gpt2, llama or qwen2 (default gpt2, or the shape's)\n"
                 "  --layers N          transformer blocks (default 12)\n"
                 "  --d N               model width n_embd / hidden_size (default 768)\n"
                 "  --heads N           attention heads, must divide --d (default 12)\n"
                 "  --kv-heads N        key/value heads (llama, qwen2), must divide --heads\n"
                 "                      (default --heads)\n"
                 "  --head-dim N        head width (llama, qwen2; default d / heads)\n"
                 "  --d-ff N            MLP width (default 4 x d; llama, qwen2: 8/3 x d rounded\n"
                 "                      up to a multiple of 64)\n"
                 "  --vocab N           vocabulary size (default 50257)\n"
                 "  --ctx N             context length n_positions (default 1024)\n"
                 "  --rope-theta X      rotary base (llama 10000, qwen2 1000000)\n"
                 "  --tied, --untied    LM head tied to the embedding or separate (gpt2: tied;\n"
                 "                      llama, qwen2: untied unless the shape ties it)\n"
                 "  --dtype T           f32, f16 or bf16 (default f32)\n"
                 "  --shards N          number of safetensors files (default 1)\n"
                 "  --seed S            random seed, 0 to 2^64-1 (default 0)\n"
                 "  --std X             weight standard deviation (default 0.02)\n"
                 "  --random-norms      also randomise LayerNorm gains and all biases\n"
                 "  --prefix            name tensors transformer.* like GPT2LMHeadModel\n"
                 "  --force             write into a non-empty directory\n"
                 "  -h, --help          show this help\n");
}

#define CMD "init-model"

/* A float32 (strtof: a value that overflows float is refused, not made infinite). */
static int parse_std(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (end == s || *end || errno || !isfinite(v) || v < 0)
        return sp_flag_bad(CMD, "--std", s, "a finite number >= 0");
    *out = v;
    return 0;
}

static int parse_dtype(const char *s, sp_dtype *out) {
    if (strcmp(s, "f32") == 0)
        *out = SP_DTYPE_F32;
    else if (strcmp(s, "f16") == 0)
        *out = SP_DTYPE_F16;
    else if (strcmp(s, "bf16") == 0)
        *out = SP_DTYPE_BF16;
    else
        return sp_flag_bad(CMD, "--dtype", s, "f32, f16 or bf16");
    return 0;
}

enum {
    OPT_LAYERS = 256,
    OPT_D,
    OPT_HEADS,
    OPT_DFF,
    OPT_VOCAB,
    OPT_CTX,
    OPT_DTYPE,
    OPT_SHARDS,
    OPT_SEED,
    OPT_STD,
    OPT_RANDOM_NORMS,
    OPT_PREFIX,
    OPT_FORCE,
    OPT_SHAPE,
    OPT_ARCH,
    OPT_KV_HEADS,
    OPT_HEAD_DIM,
    OPT_ROPE_THETA,
    OPT_TIED,
    OPT_UNTIED
};

/* The shapes of real checkpoints, from their published config.json files. */
typedef struct shape {
    const char *name, *type;
    int layers, d, heads, kv_heads, d_ff, vocab, ctx, tied;
    double theta, eps;
} shape;

static const shape SHAPES[] = {
    {"gpt2", "gpt2", 12, 768, 12, 12, 3072, 50257, 1024, 1, 0, 1e-5},
    {"gpt2-medium", "gpt2", 24, 1024, 16, 16, 4096, 50257, 1024, 1, 0, 1e-5},
    {"distilgpt2", "gpt2", 6, 768, 12, 12, 3072, 50257, 1024, 1, 0, 1e-5},
    {"smollm2-135m", "llama", 30, 576, 9, 3, 1536, 49152, 8192, 1, 100000, 1e-5},
    {"smollm2-360m", "llama", 32, 960, 15, 5, 2560, 49152, 8192, 1, 100000, 1e-5},
    {"tinyllama-1.1b", "llama", 22, 2048, 32, 4, 5632, 32000, 2048, 0, 10000, 1e-5},
    {"qwen2.5-0.5b", "qwen2", 24, 896, 14, 2, 4864, 151936, 32768, 1, 1000000, 1e-6},
    {"llama-3.2-1b", "llama", 16, 2048, 32, 8, 8192, 128256, 131072, 1, 500000, 1e-5},
};

/* Sets every field a shape defines (and the architecture's defaults for the rest). */
static void apply_shape(const shape *s, sp_model_config *c) {
    *c = (sp_model_config){.n_layer = s->layers,
                           .d_model = s->d,
                           .n_head = s->heads,
                           .n_kv_head = s->kv_heads,
                           .d_ff = s->d_ff,
                           .vocab_size = s->vocab,
                           .n_ctx = s->ctx,
                           .ln_eps = (float)s->eps,
                           .tied = s->tied,
                           .rope_theta = s->theta};
    snprintf(c->model_type, sizeof c->model_type, "%s", s->type);
    c->qkv_bias = strcmp(s->type, "qwen2") == 0;
    if (strcmp(s->name, "llama-3.2-1b") == 0)
        c->rope_scaling = SP_ROPE_LLAMA3, c->rope_factor = 32, c->rope_low_freq_factor = 1,
        c->rope_high_freq_factor = 4, c->rope_original_ctx = 8192;
}

static int parse_shape(const char *arg, sp_model_config *c) {
    for (size_t i = 0; i < sizeof SHAPES / sizeof SHAPES[0]; i++)
        if (strcmp(arg, SHAPES[i].name) == 0) {
            apply_shape(&SHAPES[i], c);
            return 0;
        }
    return sp_flag_bad(CMD, "--shape", arg,
                       "gpt2, gpt2-medium, distilgpt2, smollm2-135m, smollm2-360m, "
                       "tinyllama-1.1b, qwen2.5-0.5b or llama-3.2-1b");
}

/* --arch on its own: the architecture's conventions on the current dimensions. */
static int parse_arch(const char *arg, sp_model_config *c) {
    int gpt2 = strcmp(arg, "gpt2") == 0, qwen2 = strcmp(arg, "qwen2") == 0;
    if (!gpt2 && !qwen2 && strcmp(arg, "llama") != 0)
        return sp_flag_bad(CMD, "--arch", arg, "gpt2, llama or qwen2");
    snprintf(c->model_type, sizeof c->model_type, "%s", arg);
    c->tied = gpt2, c->qkv_bias = qwen2;
    c->rope_theta = gpt2 ? 0 : qwen2 ? 1000000 : 10000;
    c->ln_eps = qwen2 ? 1e-6f : 1e-5f;
    return 0;
}

/* Applies one option; returns 0 or the exit status 2. *d_ff_set records an explicit --d-ff.
 * --shape and --arch were applied in a first pass. */
static int apply(int c, const char *arg, sp_init_options *o, int *d_ff_set) {
    sp_model_config *g = &o->cfg;
    switch (c) {
    case OPT_SHAPE:
    case OPT_ARCH:
        return 0;
    case OPT_KV_HEADS:
        return sp_flag_int(CMD, "--kv-heads", arg, 1, 65536, &g->n_kv_head);
    case OPT_HEAD_DIM:
        return sp_flag_int(CMD, "--head-dim", arg, 2, 4096, &g->head_dim);
    case OPT_ROPE_THETA:
        return sp_flag_double(CMD, "--rope-theta", arg, 1, 1e12, &g->rope_theta);
    case OPT_TIED:
    case OPT_UNTIED:
        g->tied = c == OPT_TIED;
        return 0;
    case OPT_LAYERS:
        return sp_flag_int(CMD, "--layers", arg, 1, 1024, &g->n_layer);
    case OPT_D:
        return sp_flag_int(CMD, "--d", arg, 1, 65536, &g->d_model);
    case OPT_HEADS:
        return sp_flag_int(CMD, "--heads", arg, 1, 65536, &g->n_head);
    case OPT_DFF:
        *d_ff_set = 1;
        return sp_flag_int(CMD, "--d-ff", arg, 1, 1 << 20, &g->d_ff);
    case OPT_VOCAB:
        return sp_flag_int(CMD, "--vocab", arg, 1, 1 << 24, &g->vocab_size);
    case OPT_CTX:
        return sp_flag_int(CMD, "--ctx", arg, 1, 1 << 20, &g->n_ctx);
    case OPT_DTYPE:
        return parse_dtype(arg, &o->dtype);
    case OPT_SHARDS:
        return sp_flag_int(CMD, "--shards", arg, 1, 99999, &o->n_shards);
    case OPT_SEED:
        return sp_flag_u64(CMD, "--seed", arg, &o->seed);
    case OPT_STD:
        return parse_std(arg, &o->std);
    case OPT_RANDOM_NORMS:
        o->random_norms = 1;
        return 0;
    case OPT_PREFIX:
        o->prefix = 1;
        return 0;
    case OPT_FORCE:
        o->force = 1;
        return 0;
    }
    return 2;
}

static int parse_args(int argc, char **argv, sp_init_options *o, const char **out_dir) {
    static const struct option opts[] = {
        {"layers", required_argument, NULL, OPT_LAYERS},
        {"d", required_argument, NULL, OPT_D},
        {"heads", required_argument, NULL, OPT_HEADS},
        {"d-ff", required_argument, NULL, OPT_DFF},
        {"vocab", required_argument, NULL, OPT_VOCAB},
        {"ctx", required_argument, NULL, OPT_CTX},
        {"dtype", required_argument, NULL, OPT_DTYPE},
        {"shards", required_argument, NULL, OPT_SHARDS},
        {"seed", required_argument, NULL, OPT_SEED},
        {"std", required_argument, NULL, OPT_STD},
        {"random-norms", no_argument, NULL, OPT_RANDOM_NORMS},
        {"prefix", no_argument, NULL, OPT_PREFIX},
        {"force", no_argument, NULL, OPT_FORCE},
        {"shape", required_argument, NULL, OPT_SHAPE},
        {"arch", required_argument, NULL, OPT_ARCH},
        {"kv-heads", required_argument, NULL, OPT_KV_HEADS},
        {"head-dim", required_argument, NULL, OPT_HEAD_DIM},
        {"rope-theta", required_argument, NULL, OPT_ROPE_THETA},
        {"tied", no_argument, NULL, OPT_TIED},
        {"untied", no_argument, NULL, OPT_UNTIED},
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    sp_init_options_default(o);
    int c, d_ff_set = 0, rc;
    opterr = 0;
    /* First pass: --shape, then --arch (they set defaults the other options override). */
    const char *shape_arg = NULL, *arch_arg = NULL;
    char **copy = malloc(((size_t)argc + 1) * sizeof *copy); /* getopt permutes its argv */
    if (!copy) return 2;
    memcpy(copy, argv, ((size_t)argc + 1) * sizeof *copy);
    optind = 0; /* 0: GNU getopt reinitialises its state */
    while ((c = getopt_long(argc, copy, ":h", opts, NULL)) != -1) {
        if (c == OPT_SHAPE) shape_arg = optarg;
        if (c == OPT_ARCH) arch_arg = optarg;
    }
    free(copy);
    if ((shape_arg && (rc = parse_shape(shape_arg, &o->cfg))) ||
        (arch_arg && (rc = parse_arch(arch_arg, &o->cfg))))
        return rc;
    optind = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (c == 'h') {
            usage(stdout);
            return 0;
        }
        if (c == '?' || c == ':') {
            fprintf(stderr, "softprompt init-model: %s '%s' (see `softprompt init-model --help`)\n",
                    c == ':' ? "missing value for option" : "unknown option", argv[optind - 1]);
            return 2;
        }
        if ((rc = apply(c, optarg, o, &d_ff_set))) return rc;
    }
    if (argc - optind != 1) {
        fprintf(stderr, "softprompt init-model: expected exactly one output directory, got %d\n",
                argc - optind);
        return 2;
    }
    int llama = strcmp(o->cfg.model_type, "gpt2") != 0;
    if (llama && o->cfg.n_head % sp_config_kv_heads(&o->cfg) != 0) {
        char v[32], expected[64];
        snprintf(v, sizeof v, "%d", o->cfg.n_kv_head);
        snprintf(expected, sizeof expected, "a divisor of --heads %d", o->cfg.n_head);
        return sp_flag_bad(CMD, "--kv-heads", v, expected);
    }
    if (o->cfg.d_model % o->cfg.n_head != 0 && !(llama && o->cfg.head_dim > 0)) {
        char v[32];
        snprintf(v, sizeof v, "%d", o->cfg.n_head);
        char expected[64];
        snprintf(expected, sizeof expected, "a divisor of --d %d", o->cfg.d_model);
        return sp_flag_bad(CMD, "--heads", v, expected);
    }
    if (!d_ff_set && !shape_arg)
        o->cfg.d_ff = llama ? (8 * o->cfg.d_model / 3 + 63) / 64 * 64 : 4 * o->cfg.d_model;
    *out_dir = argv[optind];
    return -1; /* parsed: go on */
}

/* Parameters of the written model. */
static uint64_t param_count(const sp_model_config *c) {
    uint64_t d = (uint64_t)c->d_model, f = (uint64_t)c->d_ff, v = (uint64_t)c->vocab_size;
    if (strcmp(c->model_type, "gpt2") == 0) {
        uint64_t block = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d);
        return (v + (uint64_t)c->n_ctx) * d + (uint64_t)c->n_layer * block + 2 * d;
    }
    uint64_t qd = (uint64_t)c->n_head * sp_config_head_dim(c);
    uint64_t kvd = (uint64_t)sp_config_kv_heads(c) * sp_config_head_dim(c);
    uint64_t block = 2 * d + d * (qd + 2 * kvd) + qd * d + 3 * d * f;
    block += c->qkv_bias ? qd + 2 * kvd : 0;
    block += (c->o_bias ? d : 0) + (c->mlp_bias ? 2 * f + d : 0);
    return v * d * (c->tied ? 1 : 2) + (uint64_t)c->n_layer * block + d;
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
    uint64_t n = param_count(c);
    printf("wrote %s: random %s weights (seed %" PRIu64 ", std %g%s)\n", dir, c->model_type, o.seed,
           (double)o.std, o.random_norms ? ", random norms" : "");
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

const sp_command SP_CMD_INIT_MODEL = {
    .name = "init-model",
    .summary = "write a random-weight GPT-2 model directory (any shape, dtype, sharding)",
    .run = run,
    .usage = usage,
};
