/* `softprompt train`: data-parallel prompt tuning (mpirun -np N, srun --mpi=pmix, or alone). */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/ranks.h"
#include "softprompt/train.h"

typedef struct train_args {
    sp_train_config c;
    const char *init_text;
} train_args;

#define CMD "train"
#define BIG ((double)((int64_t)1 << 40))
#define AT(field) offsetof(train_args, field)

/* The optimizer's defaults depend on its kind, so --optimizer is applied before other flags. */
static const char *parse_optimizer(void *args, const char *v) {
    sp_optim_kind kind;
    if (sp_optim_kind_parse(v, &kind)) return "adafactor, adamw or sgd";
    sp_optim_config_default(&((train_args *)args)->c.optim, kind);
    return NULL;
}

/* --method ptuning-v2 is a preset (Liu et al. 2022): AdamW at lr 5e-3; flags given after it
 * (--optimizer, --lr, ...) still apply, as it is applied first. */
static const char *parse_method(void *args, const char *v) {
    sp_train_config *c = &((train_args *)args)->c;
    if (sp_method_parse(v, &c->method)) return sp__flag_methods();
    if (c->method == SP_METHOD_PTUNING_V2) {
        sp_optim_config_default(&c->optim, SP_OPTIM_ADAMW);
        c->optim.lr = 5e-3;
    }
    return NULL;
}

static const char *parse_schedule(void *args, const char *v) {
    return sp_sched_kind_parse(v, &((train_args *)args)->c.optim.schedule)
               ? "constant, linear or cosine"
               : NULL;
}

static const char *parse_init(void *args, const char *v) {
    sp_train_config *c = &((train_args *)args)->c;
    if (sp_init_kind_parse(v, &c->init) == 0 && c->init != SP_INIT_FILE) return NULL;
    struct stat st;
    if (strchr(v, '/') || strchr(v, '.') || stat(v, &st) == 0) { /* read by sp_prompt_load */
        c->init = SP_INIT_FILE, c->init_arg = v;
        return NULL;
    }
    return "vocab-top, vocab, random, labels, text or a prompt FILE (a checkpoint .h5, a PEFT\n"
           "adapter, a .npy or a KoboldAI .zip)";
}

static const char *parse_metric(void *args, const char *v) {
    if (strcmp(v, "accuracy") && strcmp(v, "loss")) return "accuracy or loss";
    ((train_args *)args)->c.metric = v;
    return NULL;
}

#define DATA "data and run"
#define OPTIM "optimizer"
#define METHOD "what is trained"
#define INIT "prompt initialisation"
#define OUTPUT "evaluation, checkpoints, output"

static const sp__flag FLAGS[] = {
    SP_OPT_STR("model", AT(c.model_dir), "DIR", "Hugging Face model directory",
               .flags = SP_FLAG_REQUIRED, .group = DATA),
    SP_OPT_STR("train", AT(c.train_path), "FILE.h5", "training set (softprompt prepare)",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_STR("valid", AT(c.valid_path), "FILE.h5", "validation set (optional)"),
    SP_OPT_STR("out", AT(c.out_dir), "DIR",
               "output: checkpoints/, best.h5, metrics.jsonl, config.json,\n"
               "adapter/ (PEFT adapter of the final prompt)",
               .flags = SP_FLAG_REQUIRED),
    SP_OPT_INT64("steps", AT(c.steps), "N", 1, BIG,
                 "optimizer steps (default: --epochs over the set)"),
    SP_OPT_DOUBLE("epochs", AT(c.epochs), "X", 1e-9, 1e9,
                  "passes over the training set when --steps is not given (1)"),
    SP_OPT_INT("global-batch", AT(c.global_batch), "N", 1, 1 << 20,
               "examples per step over all ranks (32)"),
    SP_OPT_INT("micro-batch", AT(c.micro_batch), "N", 1, 1 << 20,
               "examples per engine call on one rank (8)"),
    SP_OPT_INT("threads", AT(c.threads), "N", 1, 4096,
               "threads per rank (default SLURM_CPUS_PER_TASK, OMP_NUM_THREADS,\n"
               "or the node's cores divided among its ranks; never more); each\n"
               "micro-batch is split by sequence over them"),
    SP_OPT_WEIGHTS(AT(c.weights)),
    SP_OPT_U64("seed", AT(c.seed), "S", "data order and initialisation (42)"),
    SP_OPT_SWITCH("deterministic", AT(c.deterministic), 1,
                  "bitwise-identical prompt for any rank count and micro-batch\n"
                  "(examples run one at a time, summed in a fixed order)"),
    SP_OPT_CUSTOM("method", AT(c.method), "NAME", parse_method,
                  "prompt (default: input soft tokens of the template's {soft:N}),\n"
                  "prefix (a trainable key/value prefix in every layer, PEFT's\n"
                  "PREFIX_TUNING; the template's soft slots are left out of the\n"
                  "input), ptuning-v2 (prefix preset of Liu et al. 2022: no MLP,\n"
                  "AdamW lr 5e-3 unless given), prompt+prefix (both)",
                  .order = -2, .group = METHOD),
    SP_OPT_INT("prefix-length", AT(c.prefix_length), "N", 1, 1 << 20,
               "prefix rows per layer (default: the template's soft slots)"),
    SP_OPT_INT("prefix-hidden", AT(c.prefix_hidden), "H", 1, 1 << 20,
               "--method prefix: reparametrize the prefix through PEFT's\n"
               "PrefixEncoder MLP of hidden size H (Li & Liang); off by default"),
    SP_OPT_DOUBLE("prefix-dropout", AT(c.prefix_dropout), "P", 0, 0.95,
                  "--method ptuning-v2: dropout on the prefix while training (0)"),
    SP_OPT_CUSTOM("optimizer", AT(c.optim.kind), "NAME", parse_optimizer,
                  "adafactor (default; Lester et al.: lr 0.3, wd 1e-5, no parameter\n"
                  "scaling, decay rate -0.8), adamw, sgd",
                  .order = -1, .group = OPTIM),
    SP_OPT_DOUBLE("lr", AT(c.optim.lr), "X", 1e-12, 1e6, "peak learning rate"),
    SP_OPT_DOUBLE("weight-decay", AT(c.optim.weight_decay), "X", 0, 1e3, "decoupled weight decay"),
    SP_OPT_DOUBLE("beta1", AT(c.optim.beta1), "X", 0, 0.999999,
                  "first-moment decay (adamw; adafactor: 0 = none)"),
    SP_OPT_DOUBLE("beta2", AT(c.optim.beta2), "X", 0, 0.999999999, "second-moment decay (adamw)"),
    SP_OPT_DOUBLE("eps", AT(c.optim.eps), "X", 1e-30, 1, "adamw epsilon"),
    SP_OPT_DOUBLE("momentum", AT(c.optim.beta1), "X", 0, 0.999999, "sgd momentum"),
    SP_OPT_DOUBLE("decay-rate", AT(c.optim.decay_rate), "X", -1, -1e-6,
                  "adafactor second-moment decay exponent (-0.8)"),
    SP_OPT_DOUBLE("clip-threshold", AT(c.optim.clip_threshold), "X", 1e-6, 1e6,
                  "adafactor update clipping (1)"),
    SP_OPT_SWITCH("scale-parameter", AT(c.optim.scale_parameter), 1,
                  "adafactor: scale the lr by the prompt's RMS"),
    SP_OPT_DOUBLE("clip-norm", AT(c.optim.clip_norm), "X", 0, 1e12,
                  "clip the gradient's global L2 norm (0 = off)"),
    SP_OPT_CUSTOM("schedule", AT(c.optim.schedule), "NAME", parse_schedule,
                  "constant (default), linear, cosine"),
    SP_OPT_INT64("warmup", AT(c.optim.warmup_steps), "N", 0, BIG, "linear warmup steps (0)"),
    SP_OPT_CUSTOM("init", AT(c.init), "KIND", parse_init,
                  "vocab-top (default: embeddings sampled from the 5,000 most\n"
                  "frequent training tokens), vocab (whole vocabulary), random\n"
                  "(uniform +-0.5), labels (class-label words first), text, or a\n"
                  "prompt FILE whose prompt and/or prefix this run's shapes match:\n"
                  "a checkpoint or h5py .h5, a PEFT adapter (directory or\n"
                  "adapter_model.safetensors), a .npy or a KoboldAI .zip",
                  .group = INIT),
    SP_OPT_STR("init-text", AT(init_text), "TEXT",
               "text for --init text (repeated/truncated to the prompt length)"),
    SP_OPT_STR("tokenizer", AT(c.tokenizer_dir), "DIR",
               "the model's tokenizer, for --init text and the check of the\n"
               "datasets' tokenizer (default: the model directory)"),
    SP_OPT_SWITCH("allow-tokenizer-mismatch", AT(c.allow_tokenizer_mismatch), 1,
                  "train on datasets prepared with another tokenizer than the\n"
                  "model's (refused otherwise: the token ids would mean other words)"),
    SP_OPT_INT64("eval-every", AT(c.eval_every), "N", 0, BIG,
                 "evaluate on --valid every N steps (and always at the end)", .group = OUTPUT),
    SP_OPT_INT64("max-eval-examples", AT(c.max_eval_examples), "N", 0, BIG,
                 "evaluate on the first N validation examples only"),
    SP_OPT_CUSTOM("metric", AT(c.metric), "NAME", parse_metric,
                  "accuracy (classification default) or loss: selects best.h5"),
    SP_OPT_INT64("save-every", AT(c.save_every), "N", 0, BIG,
                 "checkpoint every N steps (and at the end, and on signals)"),
    SP_OPT_INT("keep", AT(c.keep), "K", 1, 1000000, "newest checkpoints kept besides best.h5 (2)"),
    SP_OPT_STR("resume", AT(c.resume), "WHAT",
               "auto (default: newest valid checkpoint in --out), never, or a\n"
               "checkpoint file"),
    SP_OPT_INT64("log-every", AT(c.log_every), "N", 1, BIG,
                 "progress line every N steps when stderr is not a terminal (10)"),
    SP_OPT_STR("base-model", AT(c.base_model), "NAME",
               "the adapter's base_model_name_or_path (default as for export)"),
    SP_OPT_SWITCH("quiet", AT(c.quiet), 1, "no progress output"),
    SP_OPT_SWITCH("check", AT(c.check), 1,
                  "check everything the run needs (flags, model, data, memory, --out,\n"
                  "the run it would continue) and exit: 0 and one line saying what\n"
                  "the run would do, or 1 and the problem; writes nothing"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = CMD,
    .usage =
        "usage: softprompt train --model DIR --train FILE.h5 --out DIR [options]\n"
        "       mpirun -np N softprompt train ...   |   srun --mpi=pmix softprompt train ...\n",
    .about = "Trains the soft prompt of a frozen model on a dataset made by `softprompt prepare`.\n"
             "Every rank maps the model and computes the gradient of its share of each global "
             "batch;\n"
             "the result does not depend on the number of ranks or the micro-batch size.\n",
    .flags = FLAGS,
    .epilog = "signals: SIGTERM, SIGUSR1 or SIGINT stop after the current step with a checkpoint "
              "and\n"
              "exit status " SP_XSTR(SP_EXIT_STOPPED) " (resumable with --resume auto); a second "
                                                      "signal exits at once.\n",
};

static void usage(FILE *out) {
    sp__flags_usage(&SPEC, out);
}

/* The prefix flags belong to some methods only. */
static const char *check_method(const sp_train_config *c) {
    if (!sp_method_has_prefix(c->method) && c->prefix_length)
        return "--prefix-length is for the prefix methods (--method prefix, ptuning-v2, "
               "prompt+prefix)";
    if (c->prefix_hidden && c->method != SP_METHOD_PREFIX)
        return "--prefix-hidden (the reparametrization MLP) is for --method prefix; P-tuning v2 "
               "trains the prefix directly";
    if (c->prefix_dropout > 0 && c->method != SP_METHOD_PTUNING_V2)
        return "--prefix-dropout is for --method ptuning-v2";
    return NULL;
}

static int parse_args(int argc, char **argv, train_args *a) {
    memset(a, 0, sizeof *a);
    sp_train_config_default(&a->c);
    char *pos[argc > 0 ? argc : 1];
    int n_pos, rc = sp__flags_parse(&SPEC, argc, argv, a, pos, &n_pos);
    if (rc) return rc;
    sp_train_config *c = &a->c;
    const char *bad = check_method(c);
    if (bad) return sp__flag_usage_error(CMD, "%s", bad);
    if (c->init == SP_INIT_TEXT) {
        if (!a->init_text) return sp__flag_usage_error(CMD, "--init text needs --init-text TEXT");
        c->init_arg = a->init_text;
    } else if (a->init_text) {
        return sp__flag_usage_error(CMD, "--init-text is only used with --init text");
    }
    return 0;
}

static int train_body(void *config, const sp_dist *d, sp_error *err) {
    return sp_train_run(config, d, err);
}

static int run(int argc, char **argv) {
    train_args a;
    int rc = parse_args(argc, argv, &a);
    return rc ? rc : sp__cli_run_ranks("train", &argc, &argv, train_body, &a.c);
}

const sp__command SP_CMD_TRAIN = {"train", "train a soft prompt (MPI data parallel, resumable)",
                                  run, usage};
