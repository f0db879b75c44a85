/* Pieces of the trainer that are separate concerns but not public API. */
#ifndef SP_TRAIN_INTERNAL_H
#define SP_TRAIN_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>

#include "softprompt/dataset.h"
#include "softprompt/model.h"
#include "softprompt/prepare.h"
#include "softprompt/rng.h"
#include "softprompt/train.h"

/* ---- data order (data_order.c) ----
 * Epoch e visits the examples in a permutation drawn from (seed, e) alone, so any step's
 * global batch can be recomputed from (epoch, position) after a resume. A global batch that
 * runs past the end of an epoch continues with the next epoch's permutation. */
typedef struct sp__data_order {
    int64_t n_examples;
    uint64_t seed;
    int64_t epoch;      /* epoch of the next example */
    int64_t position;   /* examples of that epoch already taken */
    int64_t perm_epoch; /* epoch perm[] currently holds, -1 none */
    int64_t *perm;      /* [n_examples] */
} sp__data_order;

int sp__data_order_init(sp__data_order *o, int64_t n_examples, uint64_t seed, sp_error *err);
void sp__data_order_free(sp__data_order *o);
/* Fills ids[0..count) with the next global batch and advances. */
void sp__data_order_next(sp__data_order *o, int64_t *ids, int count);

/* ---- memory estimate (memory_check.c) ----
 * Fails with the estimate and the limit when one rank's peak memory (its share of the model's
 * shared pages, private converted weights, activations of the worst micro-batch of micro_batch
 * examples from any of the n_sets datasets, NULL entries ignored) exceeds what it may use:
 * SP_MAX_MEMORY if set, else the node's MemAvailable or the cgroup's memory.max headroom,
 * divided among local_ranks. No limit found: no check. */
int sp__train_check_memory(const sp_model *m, sp_dataset *const *sets, int n_sets, int micro_batch,
                           int local_ranks, sp_error *err);
/* The same check for predict: the worst micro-batch of the examples (the micro_batch longest,
 * each run seqs_per_example times, behind a key/value prefix of up to max_prefix rows), its
 * logits (logit_rows rows of the vocabulary, besides the worker's), and the prompts' key/value
 * prefixes (prefix_rows rows in all, sp_model_kv_cache_bytes). */
int sp__predict_check_memory(const sp_model *m, const sp_examples *ex, int micro_batch,
                             int seqs_per_example, int logit_rows, int max_prefix, int prefix_rows,
                             int local_ranks, sp_error *err);

/* ---- prompt initialisation (prompt_init.c) ----
 * Writes prompt [P, d]. The dataset is used by vocab-top and labels (token frequencies,
 * verbalizer); the tokenizer directory by text. Runs on rank 0; the trainer broadcasts it. */
int sp__prompt_init(float *prompt, int n_prompt, const sp_model *m, const sp_train_config *c,
                    sp_dataset *train, sp_rng *rng, sp_error *err);
/* The n token ids an init of c->init draws (vocab, vocab-top, labels, text), as the prompt's
 * rows would be their embeddings. */
int sp__init_token_ids(int32_t *ids, int n, const sp_model *m, const sp_train_config *c,
                       sp_dataset *train, sp_rng *rng, sp_error *err);

/* ---- configuration (train_config.c) ----
 * The run's configuration as JSON (stored in checkpoints and out/config.json), and the check
 * that a checkpoint's run is the same run (fields that change the trajectory must agree;
 * ranks, threads, micro-batch and logging may differ). */
json_t *sp__train_config_to_json(const sp_train_config *c, int n_prompt, int64_t total_steps);
int sp__train_config_check_resume(const char *ckpt_json, const sp_train_config *c, int n_prompt,
                                  int64_t total_steps, const char *ckpt_path, sp_error *err);

/* ---- the run directory (run_dir.c) ----
 * A run owns its --out directory. sp__run_dir_check refuses a directory that holds a model, a
 * dataset or files softprompt did not write, unless it is a run's own directory (its
 * config.json is a run configuration); a missing or empty directory is fine. The lock
 * (OUT/.lock, rank 0, the run's whole life) keeps a second trainer out and names the holder;
 * see run_dir.c for how crashes, node failures and file systems without flock are handled.
 * sp__run_lock_probe fails as acquire would, without creating or taking anything. */
typedef struct sp__run_lock {
    char path[4200]; /* OUT/.lock */
    int fd, held, have_flock;
    int created_file; /* this process created the lock file */
    pthread_t thread; /* renews the heartbeat (the file's modification time) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop, thread_started;
} sp__run_lock;

int sp__run_dir_check(const char *dir, sp_error *err);
int sp__run_lock_acquire(sp__run_lock *l, const char *dir, sp_error *err);
int sp__run_lock_probe(const char *dir, sp_error *err);
/* The same lock for a command's single output file (predict): OUT.lock beside OUT, held by
 * rank 0 while the command writes OUT.partial and publishes OUT; cmd names the command in
 * messages ("--out labels.jsonl is in use by another predict run (...)"). */
int sp__out_lock_acquire(sp__run_lock *l, const char *out, const char *cmd, sp_error *err);
int sp__out_lock_probe(const char *out, const char *cmd, sp_error *err);
/* No-op when not held. undo: the run never started (or, for an output file's lock, is over), so
 * a lock file this process created is removed too. */
void sp__run_lock_release(sp__run_lock *l, int undo);

/* ---- signals (signals.c) ----
 * SIGTERM, SIGUSR1 (Slurm's warning before a time limit or preemption) and SIGINT ask the run
 * to stop after the current step; a second one ends the process at once. */
void sp__signals_install(void);
int sp__signals_stop_requested(void); /* the signal number, or 0 */

/* ---- run log (run_log.c): progress line on rank 0 and metrics as JSON lines ---- */
typedef struct sp__run_log {
    FILE *metrics; /* out/metrics.jsonl, appended */
    int tty;       /* stderr is a terminal: redraw one line */
    int quiet;
    double t_start;
    int64_t first_step, total_steps;
} sp__run_log;

int sp__run_log_open(sp__run_log *l, const char *out_dir, int64_t resume_step, int quiet,
                     int64_t total_steps, sp_error *err);
void sp__run_log_step(sp__run_log *l, int64_t step, double loss, double lr, double grad_norm,
                      int64_t tokens, double step_seconds, int print);
void sp__run_log_eval(sp__run_log *l, int64_t step, const char *split, const sp_eval_result *r);
void sp__run_log_close(sp__run_log *l);

#endif
