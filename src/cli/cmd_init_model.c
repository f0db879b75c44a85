/* `softprompt init-model OUT`: write a random-weight GPT-2 directory of any shape. */
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
                 "Writes a GPT-2 model directory with random weights in Hugging Face's layout\n"
                 "(config.json, model.safetensors or shards + index) for tests and benchmarks.\n"
                 "Defaults are GPT-2 124M's shape.\n\n"
                 "options:\n"
                 "  --layers N          transformer blocks (default 12)\n"
                 "  --d N               model width n_embd (default 768)\n"
                 "  --heads N           attention heads, must divide --d (default 12)\n"
                 "  --d-ff N            MLP width (default 4 x d)\n"
                 "  --vocab N           vocabulary size (default 50257)\n"
                 "  --ctx N             context length n_positions (default 1024)\n"
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
    OPT_FORCE
};

/* Applies one option; returns 0 or the exit status 2. *d_ff_set records an explicit --d-ff. */
static int apply(int c, const char *arg, sp_init_options *o, int *d_ff_set) {
    sp_gpt2_config *g = &o->cfg;
    switch (c) {
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
        {"help", no_argument, NULL, 'h'},
        {0, 0, 0, 0},
    };
    sp_init_options_default(o);
    int c, d_ff_set = 0, rc;
    opterr = 0;
    optind = 1;
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
    if (o->cfg.d_model % o->cfg.n_head != 0) {
        char v[32];
        snprintf(v, sizeof v, "%d", o->cfg.n_head);
        char expected[64];
        snprintf(expected, sizeof expected, "a divisor of --d %d", o->cfg.d_model);
        return sp_flag_bad(CMD, "--heads", v, expected);
    }
    if (!d_ff_set) o->cfg.d_ff = 4 * o->cfg.d_model;
    *out_dir = argv[optind];
    return -1; /* parsed: go on */
}

/* Parameters of the written model: embeddings, blocks, final LayerNorm (tied head). */
static uint64_t param_count(const sp_gpt2_config *c) {
    uint64_t d = (uint64_t)c->d_model, f = (uint64_t)c->d_ff;
    uint64_t block = 4 * d + (d * 3 * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d);
    return ((uint64_t)c->vocab_size + (uint64_t)c->n_ctx) * d + (uint64_t)c->n_layer * block +
           2 * d;
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
    const sp_gpt2_config *c = &o.cfg;
    uint64_t n = param_count(c);
    printf("wrote %s: random GPT-2 weights (seed %" PRIu64 ", std %g%s)\n", dir, o.seed,
           (double)o.std, o.random_norms ? ", random norms" : "");
    printf("  %d layers, d_model %d, %d heads, d_ff %d, vocab %d, context %d\n", c->n_layer,
           c->d_model, c->n_head, c->d_ff, c->vocab_size, c->n_ctx);
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
