/* Data-parallel prompt tuning: the training loop, evaluation and their configuration.
 *
 * Every rank maps the same frozen model, reads only its share of each global batch, runs the
 * engine on it in micro-batches, and one allreduce per step combines the gradient sums and
 * target counts; every rank then applies the same optimizer update. The step's loss and
 * gradient are the mean over all target tokens of the global batch, whatever the number of
 * ranks and micro-batch size. With `deterministic`, per-example gradients are gathered and
 * summed in global example order, so the trained prompt is bitwise independent of the number
 * of ranks and of the micro-batch size. */
#ifndef SOFTPROMPT_TRAIN_H
#define SOFTPROMPT_TRAIN_H

#include <stdint.h>

#include "softprompt/dataset.h"
#include "softprompt/dist.h"
#include "softprompt/engine.h"
#include "softprompt/error.h"
#include "softprompt/model.h"
#include "softprompt/optim.h"
#include "softprompt/team.h"

/* Process exit status of a run that stopped on a signal after writing a checkpoint: the job
 * can be resumed with --resume auto (EX_TEMPFAIL from sysexits.h). */
#define SP_EXIT_STOPPED 75

typedef enum sp_init_kind {
    SP_INIT_RANDOM,    /* uniform in [-0.5, 0.5] (Lester et al.) */
    SP_INIT_VOCAB,     /* embeddings of tokens sampled uniformly from the whole vocabulary (PEFT
                          SAMPLE_VOCAB) */
    SP_INIT_VOCAB_TOP, /* sampled from the 5,000 most frequent tokens of the training set
                          (Lester et al.'s "sampled vocab") */
    SP_INIT_TEXT,      /* PEFT TEXT: tokenize init_text, repeat/truncate to P */
    SP_INIT_LABELS,    /* class-label (verbalizer) embeddings, the rest sampled vocab (Lester) */
    SP_INIT_FILE, /* what sp_prompt_load reads: a checkpoint, h5py file, PEFT adapter, .npy, zip */
} sp_init_kind;

/* What is trained (docs/methods.md). The trainable values are one vector whose segments the
 * method lists (src/train/params.c); every other part of training treats them alike.
 *   PROMPT        the input soft tokens [P, d] of the template's {soft:N} slots (Lester et al.)
 *   PREFIX        a per-layer key/value prefix [L, 2, P, kv_dim] attended by every position, as
 *                 transformers runs PEFT's PREFIX_TUNING past_key_values; with prefix_hidden > 0
 *                 reparametrized by PEFT's PrefixEncoder (Li & Liang): embedding [P, kv_dim] ->
 *                 Linear(kv_dim, h) -> tanh -> Linear(h, L 2 kv_dim)
 *   PTUNING_V2    PREFIX without reparametrization, with optional dropout on the prefix (Liu et
 *                 al. 2022), classification through the verbalizer
 *   PROMPT_PREFIX both the input prompt and the prefix, in one vector
 * The prefix methods remove the template's soft slots from the input (as PEFT's prefix tuning
 * puts nothing into it), except PROMPT_PREFIX, which trains them. */
typedef enum sp_method {
    SP_METHOD_PROMPT,
    SP_METHOD_PREFIX,
    SP_METHOD_PTUNING_V2,
    SP_METHOD_PROMPT_PREFIX,
} sp_method;

int sp_method_parse(const char *name, sp_method *out); /* prompt | prefix | ptuning-v2 | ... */
const char *sp_method_name(sp_method m);
int sp_method_has_prompt(sp_method m);
int sp_method_has_prefix(sp_method m);

typedef struct sp_train_config {
    const char *model_dir;
    const char *train_path;
    const char *valid_path; /* NULL: no evaluation */
    const char *out_dir;
    const char *tokenizer_dir; /* for --init text; default model_dir */
    int64_t steps;             /* total optimizer steps; 0: derive from epochs */
    double epochs;             /* used when steps == 0 */
    int global_batch;          /* examples per step over all ranks */
    int micro_batch;           /* examples per engine call on one rank */
    int threads;        /* per rank; 0 = from SLURM_CPUS_PER_TASK / OMP_NUM_THREADS / cores */
    sp_weights weights; /* the blocks' matrices: auto (default), f32 or bf16 (softprompt/model.h) */
    sp_optim_config optim;
    sp_init_kind init;
    const char *init_arg; /* text for SP_INIT_TEXT, path for SP_INIT_FILE */
    sp_method method;
    int prefix_length;     /* prefix rows P; 0: the dataset's soft slots */
    int prefix_hidden;     /* > 0: reparametrize the prefix through an MLP of this hidden size */
    double prefix_dropout; /* [0, 1): dropout on the prefix during training (one mask a step) */
    uint64_t seed;
    int deterministic;
    int64_t eval_every; /* 0: only at the end */
    int64_t save_every; /* 0: only at the end (and on signals) */
    int64_t log_every;
    int keep;           /* newest checkpoints kept (plus best) */
    const char *metric; /* "accuracy" | "loss" (validation), best checkpoint selection */
    const char *resume; /* "auto" | "never" | a checkpoint path */
    int quiet;
    int64_t max_eval_examples; /* 0: all */
    const char *base_model;    /* the adapter's base_model_name_or_path; NULL: sp_peft_base_model */
    int allow_tokenizer_mismatch; /* use data prepared with another tokenizer than the model's */
    int check; /* validate everything a run needs (flags, model, data, memory, --out, resume)
                  and return without training or writing anything */
} sp_train_config;

void sp_train_config_default(sp_train_config *c);
int sp_init_kind_parse(const char *name, sp_init_kind *out);
const char *sp_init_kind_name(sp_init_kind k);

/* Runs training on this rank. Returns 0 when finished, SP_EXIT_STOPPED when stopped by a
 * signal after checkpointing, or -1 with err filled (the caller reports and aborts the job).
 * A run stops with -1 at a step whose loss or gradient is not finite (naming the step and the
 * examples), before that step is applied, checkpointed or evaluated. Resuming a finished run
 * changes nothing (a missing adapter is written). */
int sp_train_run(const sp_train_config *c, const sp_dist *d, sp_error *err);

/* The datasets (NULL entries ignored) against the model, before any batch: every example's
 * length, token, target and verbalizer id (sp_dataset_check_model), and unless
 * allow_tokenizer_mismatch, the tokenizer each was prepared with against the one in
 * tokenizer_dir (when that directory has one). Reads every token once: run it on one rank. */
int sp_train_check_datasets(const sp_model *m, sp_dataset *const *sets, int n_sets,
                            const char *tokenizer_dir, int allow_tokenizer_mismatch, sp_error *err);

/* Validation results, summed over ranks. */
typedef struct sp_eval_result {
    int64_t n_examples, n_targets;
    double loss_sum;    /* full-vocabulary cross-entropy summed over targets */
    int n_classes;      /* 0 for generation datasets */
    int64_t correct;    /* argmax over verbalizer logits == label */
    int64_t *confusion; /* [n_classes * n_classes], row = true class, col = predicted */
} sp_eval_result;

/* Evaluates what was tuned on ds, each rank its contiguous share of the examples (max_examples
 * > 0 limits to the first ones). tuned gives the prompt [n_prompt, d] and the key/value prefix
 * [L, 2, n_kv_prefix, kv_dim] (either may be NULL with count 0; both: zero-shot); its other
 * fields are ignored. Without a prompt the template's soft slots are removed from the input. */
int sp_evaluate(sp_team *team, sp_dataset *ds, const sp_pass *tuned, int micro_batch,
                int64_t max_examples, const sp_dist *d, sp_eval_result *out, sp_error *err);
void sp_eval_result_free(sp_eval_result *r);

#endif
