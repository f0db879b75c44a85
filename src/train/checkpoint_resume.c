/* sp_checkpoint_check_resume_state: the counters of a checkpoint that verified (checksum
 * included) checked against the training set and the run's configuration before a trainer
 * continues from them. A checksum proves integrity, not meaning: a file written by hand with a
 * valid checksum must not make the trainer index past its data (epoch_position 10^12 once
 * crashed sp__data_order_next) or continue with a stuck RNG.
 *
 * The data order is deterministic (data_order.c): the trainer takes global_batch examples per
 * step, epoch after epoch, each epoch a permutation seeded by (seed, epoch) alone, and moves to
 * the next epoch lazily when the next example is needed. So after `step` steps exactly
 * step * global_batch examples were consumed: step * global_batch == epoch * n +
 * epoch_position, with 0 <= epoch_position <= n; and tokens_seen is the sum of the lengths of
 * those examples, computable from the dataset's offsets and one permutation. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/checkpoint.h"
#include "train/internal.h"

static int check_position(const sp_checkpoint *ck, const char *path, int64_t n, int G,
                          sp_error *err) {
    if (ck->epoch < 0 || ck->epoch_position < 0 || ck->step < 0)
        return sp_fail(err, "%s: negative step, epoch or epoch_position", path);
    if (ck->epoch_position > n)
        return sp_fail(err,
                       "%s: epoch_position %" PRId64
                       " is past the end of the training set (%" PRId64 " examples)",
                       path, ck->epoch_position, n);
    int64_t consumed, at;
    if (__builtin_mul_overflow(ck->step, (int64_t)G, &consumed) ||
        __builtin_mul_overflow(ck->epoch, n, &at) ||
        __builtin_add_overflow(at, ck->epoch_position, &at))
        return sp_fail(err,
                       "%s: step %" PRId64 " or epoch %" PRId64
                       " is too large to be a position in the data",
                       path, ck->step, ck->epoch);
    if (consumed != at)
        return sp_fail(err,
                       "%s: step %" PRId64 " x global batch %d = %" PRId64
                       " examples consumed, but epoch %" PRId64 " and epoch_position %" PRId64
                       " of a %" PRId64 "-example training set are %" PRId64
                       ": the data position does not follow from the step",
                       path, ck->step, G, consumed, ck->epoch, ck->epoch_position, n, at);
    return 0;
}

/* Sum of the lengths of the first `count` examples of the epoch's order. */
static int prefix_tokens(const sp_dataset *train, uint64_t seed, int64_t epoch, int64_t count,
                         int64_t *sum, sp_error *err) {
    sp__data_order o;
    if (sp__data_order_init(&o, sp_dataset_n_examples(train), seed, err)) return -1;
    enum { CHUNK = 4096 };
    int64_t ids[CHUNK];
    const int64_t *off = sp_dataset_offsets(train);
    o.epoch = epoch;
    *sum = 0;
    for (int64_t done = 0; done < count;) {
        int c = count - done < CHUNK ? (int)(count - done) : CHUNK;
        sp__data_order_next(&o, ids, c);
        for (int k = 0; k < c; k++) *sum += off[ids[k] + 1] - off[ids[k]];
        done += c;
    }
    sp__data_order_free(&o);
    return 0;
}

static int check_tokens(const sp_checkpoint *ck, const char *path, const sp_dataset *train,
                        uint64_t seed, sp_error *err) {
    int64_t n = sp_dataset_n_examples(train);
    const int64_t *off = sp_dataset_offsets(train);
    int64_t per_epoch = off[n] - off[0], full, part;
    if (__builtin_mul_overflow(ck->epoch, per_epoch, &full))
        return sp_fail(err, "%s: epoch %" PRId64 " is too large for the training set", path,
                       ck->epoch);
    if (prefix_tokens(train, seed, ck->epoch, ck->epoch_position, &part, err)) return -1;
    if (__builtin_add_overflow(full, part, &full))
        return sp_fail(err, "%s: epoch %" PRId64 " is too large for the training set", path,
                       ck->epoch);
    if (ck->tokens_seen != full)
        return sp_fail(err,
                       "%s: tokens_seen is %" PRId64 ", but the %" PRId64
                       " examples consumed by step %" PRId64 " hold %" PRId64 " tokens",
                       path, ck->tokens_seen, ck->epoch * n + ck->epoch_position, ck->step, full);
    return 0;
}

static int check_counters(const sp_checkpoint *ck, const char *path, sp_error *err) {
    if (ck->optim_step != ck->step)
        return sp_fail(err,
                       "%s: optim_step %" PRId64 " differs from step %" PRId64
                       " (the optimizer steps once per step)",
                       path, ck->optim_step, ck->step);
    if (ck->best_step < -1 || ck->best_step > ck->step)
        return sp_fail(err, "%s: best_step %" PRId64 " is not in [-1, step %" PRId64 "]", path,
                       ck->best_step, ck->step);
    if (ck->rng[0] == 0 && ck->rng[1] == 0 && ck->rng[2] == 0 && ck->rng[3] == 0)
        return sp_fail(err,
                       "%s: rng_state is all zero, a state xoshiro256** never reaches (it would "
                       "return zeros forever)",
                       path);
    return 0;
}

/* A metric value is NaN (none) or a number in the metric's range. */
static int metric_fails(const char *path, const char *what, const char *metric_name, double v,
                        sp_error *err) {
    if (isnan(v)) return 0;
    int accuracy = strcmp(metric_name, "valid_accuracy") == 0;
    if (isinf(v) || (accuracy && (v < 0 || v > 1)) || (!accuracy && v < 0))
        return sp_fail(err, "%s: %s %g is not a possible %s", path, what, v, metric_name);
    return 0;
}

static int check_metrics(const sp_checkpoint *ck, const char *path, sp_error *err) {
    const char *name = ck->metric_name ? ck->metric_name : "";
    if (*name == '\0') {
        if (!isnan(ck->metric) || !isnan(ck->best_metric) || ck->best_step != -1)
            return sp_fail(err, "%s: metric values without a metric_name", path);
        return 0;
    }
    if (strcmp(name, "valid_accuracy") != 0 && strcmp(name, "valid_loss") != 0)
        return sp_fail(err, "%s: metric_name \"%.64s\" is neither valid_accuracy nor valid_loss",
                       path, name);
    if (metric_fails(path, "metric", name, ck->metric, err) ||
        metric_fails(path, "best_metric", name, ck->best_metric, err))
        return -1;
    if ((ck->best_step >= 0) != !isnan(ck->best_metric))
        return sp_fail(err,
                       "%s: best_step %" PRId64 " and best_metric %g disagree (a best step has a "
                       "value, no best step has NaN)",
                       path, ck->best_step, ck->best_metric);
    return 0;
}

int sp_checkpoint_check_resume_state(const sp_checkpoint *ck, const char *path,
                                     const sp_dataset *train, uint64_t seed, int global_batch,
                                     sp_error *err) {
    int64_t n = sp_dataset_n_examples(train);
    if (n < 1 || global_batch < 1)
        return sp_fail(err, "%s: cannot resume on %" PRId64 " examples with global batch %d", path,
                       n, global_batch);
    if (check_position(ck, path, n, global_batch, err) || check_counters(ck, path, err) ||
        check_metrics(ck, path, err) || check_tokens(ck, path, train, seed, err))
        return -1;
    return 0;
}
