/* `softprompt train`: data-parallel prompt tuning (mpirun -np N, srun --mpi=pmix, or alone). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/flags.h"
#include "cli/ranks.h"
#include "softprompt/train.h"

static void usage(FILE *out) {
    fprintf(
        out,
        "usage: softprompt train --model DIR --train FILE.h5 --out DIR [options]\n"
        "       mpirun -np N softprompt train ...   |   srun --mpi=pmix softprompt train ...\n\n"
        "Trains the soft prompt of a frozen model on a dataset made by `softprompt prepare`.\n"
        "Every rank maps the model and computes the gradient of its share of each global batch;\n"
        "the result does not depend on the number of ranks or the micro-batch size.\n\n"
        "data and run:\n"
        "  --model DIR            Hugging Face model directory\n"
        "  --train FILE.h5        training set;  --valid FILE.h5  validation set (optional)\n"
        "  --out DIR              output: checkpoints/, best.h5, metrics.jsonl, config.json,\n"
        "                         adapter/ (PEFT adapter of the final prompt)\n"
        "  --steps N              optimizer steps (default: --epochs over the training set)\n"
        "  --epochs X             passes over the training set when --steps is not given (1)\n"
        "  --global-batch N       examples per step over all ranks (32)\n"
        "  --micro-batch N        examples per engine call on one rank (8)\n"
        "  --threads N            threads per rank (default SLURM_CPUS_PER_TASK, OMP_NUM_THREADS,\n"
        "                         or the node's cores divided among its ranks; never more); each\n"
        "                         micro-batch is split by sequence over them\n"
        "  --seed S               data order and initialisation (42)\n"
        "  --deterministic        bitwise-identical prompt for any rank count and micro-batch\n"
        "                         (examples run one at a time, summed in a fixed order)\n\n"
        "optimizer:\n"
        "  --optimizer NAME       adafactor (default; Lester et al.: lr 0.3, wd 1e-5, no "
        "parameter\n"
        "                         scaling, decay rate -0.8), adamw, sgd\n"
        "  --lr X  --weight-decay X  --beta1 X  --beta2 X  --eps X  --momentum X (sgd)\n"
        "  --decay-rate X  --clip-threshold X  --scale-parameter   (adafactor)\n"
        "  --clip-norm X          clip the gradient's global L2 norm (0 = off)\n"
        "  --schedule NAME        constant (default), linear, cosine;  --warmup N  steps\n\n"
        "prompt initialisation:\n"
        "  --init KIND            vocab-top (default: embeddings sampled from the 5,000 most\n"
        "                         frequent training tokens), vocab (whole vocabulary), random\n"
        "                         (uniform +-0.5), labels (class-label words first), text, or a\n"
        "                         FILE.h5 with a \"prompt\" dataset (e.g. a checkpoint)\n"
        "  --init-text TEXT       text for --init text (repeated/truncated to the prompt length)\n"
        "  --tokenizer DIR        tokenizer for --init text (default: the model directory)\n\n"
        "evaluation, checkpoints, output:\n"
        "  --eval-every N         evaluate on --valid every N steps (and always at the end)\n"
        "  --max-eval-examples N  evaluate on the first N validation examples only\n"
        "  --metric NAME          accuracy (classification default) or loss: selects best.h5\n"
        "  --save-every N         checkpoint every N steps (and at the end, and on signals)\n"
        "  --keep K               newest checkpoints kept besides best.h5 (2)\n"
        "  --resume WHAT          auto (default: newest valid checkpoint in --out), never, or a\n"
        "                         checkpoint file\n"
        "  --log-every N          progress line every N steps when stderr is not a terminal (10)\n"
        "  --quiet                no progress output\n\n"
        "signals: SIGTERM, SIGUSR1 or SIGINT stop after the current step with a checkpoint and\n"
        "exit status %d (resumable with --resume auto); a second signal exits at once.\n",
        SP_EXIT_STOPPED);
}

enum {
    OPT_MODEL = 256,
    OPT_TRAIN,
    OPT_VALID,
    OPT_OUT,
    OPT_STEPS,
    OPT_EPOCHS,
    OPT_GLOBAL_BATCH,
    OPT_MICRO_BATCH,
    OPT_THREADS,
    OPT_SEED,
    OPT_DETERMINISTIC,
    OPT_OPTIMIZER,
    OPT_LR,
    OPT_WD,
    OPT_BETA1,
    OPT_BETA2,
    OPT_EPS,
    OPT_MOMENTUM,
    OPT_DECAY_RATE,
    OPT_CLIP_THRESHOLD,
    OPT_SCALE_PARAMETER,
    OPT_CLIP_NORM,
    OPT_SCHEDULE,
    OPT_WARMUP,
    OPT_INIT,
    OPT_INIT_TEXT,
    OPT_TOKENIZER,
    OPT_EVAL_EVERY,
    OPT_MAX_EVAL,
    OPT_METRIC,
    OPT_SAVE_EVERY,
    OPT_KEEP,
    OPT_RESUME,
    OPT_LOG_EVERY,
    OPT_QUIET,
};

static const struct option OPTIONS[] = {
    {"model", 1, 0, OPT_MODEL},
    {"train", 1, 0, OPT_TRAIN},
    {"valid", 1, 0, OPT_VALID},
    {"out", 1, 0, OPT_OUT},
    {"steps", 1, 0, OPT_STEPS},
    {"epochs", 1, 0, OPT_EPOCHS},
    {"global-batch", 1, 0, OPT_GLOBAL_BATCH},
    {"micro-batch", 1, 0, OPT_MICRO_BATCH},
    {"threads", 1, 0, OPT_THREADS},
    {"seed", 1, 0, OPT_SEED},
    {"deterministic", 0, 0, OPT_DETERMINISTIC},
    {"optimizer", 1, 0, OPT_OPTIMIZER},
    {"lr", 1, 0, OPT_LR},
    {"weight-decay", 1, 0, OPT_WD},
    {"beta1", 1, 0, OPT_BETA1},
    {"beta2", 1, 0, OPT_BETA2},
    {"eps", 1, 0, OPT_EPS},
    {"momentum", 1, 0, OPT_MOMENTUM},
    {"decay-rate", 1, 0, OPT_DECAY_RATE},
    {"clip-threshold", 1, 0, OPT_CLIP_THRESHOLD},
    {"scale-parameter", 0, 0, OPT_SCALE_PARAMETER},
    {"clip-norm", 1, 0, OPT_CLIP_NORM},
    {"schedule", 1, 0, OPT_SCHEDULE},
    {"warmup", 1, 0, OPT_WARMUP},
    {"init", 1, 0, OPT_INIT},
    {"init-text", 1, 0, OPT_INIT_TEXT},
    {"tokenizer", 1, 0, OPT_TOKENIZER},
    {"eval-every", 1, 0, OPT_EVAL_EVERY},
    {"max-eval-examples", 1, 0, OPT_MAX_EVAL},
    {"metric", 1, 0, OPT_METRIC},
    {"save-every", 1, 0, OPT_SAVE_EVERY},
    {"keep", 1, 0, OPT_KEEP},
    {"resume", 1, 0, OPT_RESUME},
    {"log-every", 1, 0, OPT_LOG_EVERY},
    {"quiet", 0, 0, OPT_QUIET},
    {"help", 0, 0, 'h'},
    {0, 0, 0, 0},
};

#define CMD "train"
#define BIG ((int64_t)1 << 40)

/* The optimizer's defaults depend on its kind, so --optimizer is applied before other flags. */
static int preset_optimizer(int argc, char **argv, sp_optim_config *o) {
    sp_optim_kind kind = SP_OPTIM_ADAFACTOR;
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--optimizer") == 0 && i + 1 < argc)
            v = argv[i + 1];
        else if (strncmp(argv[i], "--optimizer=", 12) == 0)
            v = argv[i] + 12;
        if (v && sp_optim_kind_parse(v, &kind))
            return sp_flag_bad(CMD, "--optimizer", v, "adafactor, adamw or sgd");
    }
    sp_optim_config_default(o, kind);
    return 0;
}

static int parse_optimizer_flag(int opt, const char *v, sp_optim_config *o) {
    switch (opt) {
    case OPT_OPTIMIZER:
        return 0; /* applied by preset_optimizer */
    case OPT_LR:
        return sp_flag_double(CMD, "--lr", v, 1e-12, 1e6, &o->lr);
    case OPT_WD:
        return sp_flag_double(CMD, "--weight-decay", v, 0, 1e3, &o->weight_decay);
    case OPT_BETA1:
        return sp_flag_double(CMD, "--beta1", v, 0, 0.999999, &o->beta1);
    case OPT_MOMENTUM:
        return sp_flag_double(CMD, "--momentum", v, 0, 0.999999, &o->beta1);
    case OPT_BETA2:
        return sp_flag_double(CMD, "--beta2", v, 0, 0.999999999, &o->beta2);
    case OPT_EPS:
        return sp_flag_double(CMD, "--eps", v, 1e-30, 1, &o->eps);
    case OPT_DECAY_RATE:
        return sp_flag_double(CMD, "--decay-rate", v, -1, -1e-6, &o->decay_rate);
    case OPT_CLIP_THRESHOLD:
        return sp_flag_double(CMD, "--clip-threshold", v, 1e-6, 1e6, &o->clip_threshold);
    case OPT_SCALE_PARAMETER:
        o->scale_parameter = 1;
        return 0;
    case OPT_CLIP_NORM:
        return sp_flag_double(CMD, "--clip-norm", v, 0, 1e12, &o->clip_norm);
    case OPT_WARMUP:
        return sp_flag_int64(CMD, "--warmup", v, 0, BIG, &o->warmup_steps);
    case OPT_SCHEDULE:
        return sp_sched_kind_parse(v, &o->schedule)
                   ? sp_flag_bad(CMD, "--schedule", v, "constant, linear or cosine")
                   : 0;
    }
    return -1; /* not an optimizer flag */
}

static int parse_init(const char *v, sp_train_config *c) {
    if (sp_init_kind_parse(v, &c->init) == 0 && c->init != SP_INIT_FILE) return 0;
    size_t n = strlen(v);
    if (n > 3 && strcmp(v + n - 3, ".h5") == 0) {
        c->init = SP_INIT_FILE, c->init_arg = v;
        return 0;
    }
    return sp_flag_bad(CMD, "--init", v, "vocab-top, vocab, random, labels, text or a FILE.h5");
}

static int parse_flag(int opt, const char *v, sp_train_config *c) {
    int rc = parse_optimizer_flag(opt, v, &c->optim);
    if (rc >= 0) return rc;
    switch (opt) {
    case OPT_MODEL:
        c->model_dir = v;
        return 0;
    case OPT_TRAIN:
        c->train_path = v;
        return 0;
    case OPT_VALID:
        c->valid_path = v;
        return 0;
    case OPT_OUT:
        c->out_dir = v;
        return 0;
    case OPT_STEPS:
        return sp_flag_int64(CMD, "--steps", v, 1, BIG, &c->steps);
    case OPT_EPOCHS:
        return sp_flag_double(CMD, "--epochs", v, 1e-9, 1e9, &c->epochs);
    case OPT_GLOBAL_BATCH:
        return sp_flag_int(CMD, "--global-batch", v, 1, 1 << 20, &c->global_batch);
    case OPT_MICRO_BATCH:
        return sp_flag_int(CMD, "--micro-batch", v, 1, 1 << 20, &c->micro_batch);
    case OPT_THREADS:
        return sp_flag_int(CMD, "--threads", v, 1, 4096, &c->threads);
    case OPT_SEED:
        return sp_flag_u64(CMD, "--seed", v, &c->seed);
    case OPT_DETERMINISTIC:
        c->deterministic = 1;
        return 0;
    case OPT_INIT:
        return parse_init(v, c);
    case OPT_INIT_TEXT:
        if (c->init != SP_INIT_FILE) c->init_arg = v;
        return 0;
    case OPT_TOKENIZER:
        c->tokenizer_dir = v;
        return 0;
    case OPT_EVAL_EVERY:
        return sp_flag_int64(CMD, "--eval-every", v, 0, BIG, &c->eval_every);
    case OPT_MAX_EVAL:
        return sp_flag_int64(CMD, "--max-eval-examples", v, 0, BIG, &c->max_eval_examples);
    case OPT_METRIC:
        c->metric = v;
        return strcmp(v, "accuracy") && strcmp(v, "loss")
                   ? sp_flag_bad(CMD, "--metric", v, "accuracy or loss")
                   : 0;
    case OPT_SAVE_EVERY:
        return sp_flag_int64(CMD, "--save-every", v, 0, BIG, &c->save_every);
    case OPT_KEEP:
        return sp_flag_int(CMD, "--keep", v, 1, 1000000, &c->keep);
    case OPT_RESUME:
        c->resume = v;
        return 0;
    case OPT_LOG_EVERY:
        return sp_flag_int64(CMD, "--log-every", v, 1, BIG, &c->log_every);
    case OPT_QUIET:
        c->quiet = 1;
        return 0;
    }
    return 2;
}

static int parse_args(int argc, char **argv, sp_train_config *c) {
    sp_train_config_default(c);
    if (preset_optimizer(argc, argv, &c->optim)) return 2;
    optind = 1, opterr = 0;
    int opt;
    while ((opt = getopt_long(argc, argv, "h", OPTIONS, NULL)) != -1) {
        if (opt == '?' || opt == ':') {
            fprintf(stderr, "softprompt train: unknown option or missing value: %s\n",
                    argv[optind - 1]);
            return 2;
        }
        if (parse_flag(opt, optarg, c)) return 2;
    }
    if (optind < argc) {
        fprintf(stderr, "softprompt train: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    const char *missing = !c->model_dir    ? "--model"
                          : !c->train_path ? "--train"
                          : !c->out_dir    ? "--out"
                                           : NULL;
    if (missing) {
        fprintf(stderr, "softprompt train: %s is required (see softprompt train --help)\n",
                missing);
        return 2;
    }
    if (c->init == SP_INIT_TEXT && !c->init_arg) {
        fprintf(stderr, "softprompt train: --init text needs --init-text TEXT\n");
        return 2;
    }
    return 0;
}

static int train_body(void *config, const sp_dist *d, sp_error *err) {
    return sp_train_run(config, d, err);
}

static int run(int argc, char **argv) {
    sp_train_config c;
    int rc = parse_args(argc, argv, &c);
    return rc ? rc : sp_cli_run_ranks("train", &argc, &argv, train_body, &c);
}

const sp_command SP_CMD_TRAIN = {"train", "train a soft prompt (MPI data parallel, resumable)", run,
                                 usage};
