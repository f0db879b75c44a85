/* The resume-state checks (src/train/checkpoint_resume.c): the counters of a checkpoint that
 * verified, checked against the training set and the run's seed and global batch, on crafted
 * states (positions past the end or not following from the step, counters, metrics, RNG) and
 * on every checkpoint of real runs across epoch boundaries. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/train.h"
#include "testutil_ckpt.h"
#include "train/internal.h"

/* A classification set of 20 examples (tokens < 140). */
static char *make_dataset(const char *name) {
    return tu_write_cls_set(name, &(tu_cls_set){.n_soft = 2,
                                                .n_examples = 20,
                                                .text_min = 3,
                                                .text_mod = 6,
                                                .template_spec = "<soft0> <soft1> {text} It was"});
}

/* Sets the data position, tokens and counters of c to what a trainer with this seed and global
 * batch has after `step` steps on ds (the trainer's data order, replayed). */
static void trained_state(sp_checkpoint *c, const sp_dataset *ds, uint64_t seed, int G,
                          int64_t step) {
    sp__data_order o;
    sp_error err = {0};
    ck_assert_int_eq(sp__data_order_init(&o, sp_dataset_n_examples(ds), seed, &err), 0);
    const int64_t *off = sp_dataset_offsets(ds);
    int64_t *ids = malloc((size_t)G * sizeof *ids), tokens = 0;
    for (int64_t s = 0; s < step; s++) {
        sp__data_order_next(&o, ids, G);
        for (int k = 0; k < G; k++) tokens += off[ids[k] + 1] - off[ids[k]];
    }
    c->step = c->optim_step = step, c->epoch = o.epoch, c->epoch_position = o.position;
    c->tokens_seen = tokens;
    c->best_step = step > 0 ? step - 1 : -1;
    c->best_metric = step > 0 ? 0.875 : NAN, c->metric = step > 0 ? 0.8125 : NAN;
    free(ids);
    sp__data_order_free(&o);
}

static void resume_ok(const sp_checkpoint *c, const sp_dataset *ds, uint64_t seed, int G) {
    sp_error err = {0};
    ck_assert_msg(sp_checkpoint_check_resume_state(c, "ck.h5", ds, seed, G, &err) == 0,
                  "step %lld epoch %lld position %lld: %s", (long long)c->step, (long long)c->epoch,
                  (long long)c->epoch_position, err.msg);
}

static void resume_fails(const sp_checkpoint *c, const sp_dataset *ds, uint64_t seed, int G,
                         const char *want) {
    sp_error err = {0};
    ck_assert_int_eq(sp_checkpoint_check_resume_state(c, "ck.h5", ds, seed, G, &err), -1);
    ck_assert_msg(strstr(err.msg, "ck.h5: ") == err.msg && strstr(err.msg, want),
                  "expected \"%s\" in: %s", want, err.msg);
}

START_TEST(resume_state_is_checked_against_the_data) {
    char *data = make_dataset("train.h5"); /* 20 examples */
    sp_dataset *ds = tu_dataset_open_ok(data);
    const uint64_t seed = 11;
    const int G = 3;
    tu_ck_sample s;
    tu_ck_make_sample(&s, 0);
    sp_checkpoint *c = &s.c;
    /* Consistent states: the start, mid-epoch, an epoch boundary (60 = 3 x 20: the trainer
     * moves to the next epoch lazily, so epoch 2, position 20), after it. */
    int64_t steps[] = {0, 1, 6, 7, 20, 21, 100};
    for (size_t i = 0; i < sizeof steps / sizeof *steps; i++) {
        trained_state(c, ds, seed, G, steps[i]);
        resume_ok(c, ds, seed, G);
    }
    trained_state(c, ds, seed, G, 20);
    ck_assert_int_eq(c->epoch, 2);
    ck_assert_int_eq(c->epoch_position, 20);

    /* The crash of issue 15: epoch_position 10^12, and one past the end (heap overflow). */
    trained_state(c, ds, seed, G, 7);
    c->epoch_position = 1000000000000LL;
    resume_fails(c, ds, seed, G,
                 "epoch_position 1000000000000 is past the end of the training "
                 "set (20 examples)");
    c->epoch_position = 21;
    resume_fails(c, ds, seed, G, "epoch_position 21 is past the end");
    /* Positions that do not follow from the step. */
    trained_state(c, ds, seed, G, 7);
    c->epoch_position++;
    resume_fails(c, ds, seed, G,
                 "step 7 x global batch 3 = 21 examples consumed, but epoch 1 "
                 "and epoch_position 2 of a 20-example training set are 22");
    trained_state(c, ds, seed, G, 7);
    c->epoch = 0;
    resume_fails(c, ds, seed, G, "the data position does not follow from the step");
    trained_state(c, ds, seed, G, 7);
    resume_fails(c, ds, seed, 4, "does not follow from the step"); /* another global batch */
    trained_state(c, ds, seed, G, 7);
    c->step = c->optim_step = INT64_MAX / 2;
    resume_fails(c, ds, seed, G, "is too large to be a position in the data");
    trained_state(c, ds, seed, G, 7);
    c->epoch = INT64_MAX / 4;
    resume_fails(c, ds, seed, G, "is too large to be a position in the data");
    /* Counters. */
    trained_state(c, ds, seed, G, 7);
    c->tokens_seen += 1;
    resume_fails(c, ds, seed, G, "tokens_seen is");
    trained_state(c, ds, seed, G, 7);
    resume_fails(c, ds, seed + 1, G, "tokens_seen is"); /* another order, other examples */
    trained_state(c, ds, seed, G, 7);
    c->optim_step = 6;
    resume_fails(c, ds, seed, G, "optim_step 6 differs from step 7");
    trained_state(c, ds, seed, G, 7);
    c->best_step = 8;
    resume_fails(c, ds, seed, G, "best_step 8 is not in [-1, step 7]");
    trained_state(c, ds, seed, G, 7);
    c->best_metric = NAN;
    resume_fails(c, ds, seed, G, "best_step 6 and best_metric nan disagree");
    trained_state(c, ds, seed, G, 7);
    c->metric = 1.5;
    resume_fails(c, ds, seed, G, "metric 1.5 is not a possible valid_accuracy");
    trained_state(c, ds, seed, G, 7);
    c->metric_name = "valid_loss", c->best_metric = -2;
    resume_fails(c, ds, seed, G, "best_metric -2 is not a possible valid_loss");
    trained_state(c, ds, seed, G, 7);
    c->metric_name = "bleu";
    resume_fails(c, ds, seed, G, "metric_name \"bleu\" is neither");
    trained_state(c, ds, seed, G, 7);
    memset(c->rng, 0, sizeof c->rng);
    resume_fails(c, ds, seed, G, "rng_state is all zero");

    /* The same through a file: the checksum verifies, the meaning does not. */
    trained_state(c, ds, seed, G, 7);
    c->epoch_position = 1000000000000LL;
    char *path = tu_ck_write_crafted("far.h5", &s);
    sp_checkpoint r;
    tu_ck_read_ok(path, &r);
    sp_error err = {0};
    ck_assert_int_eq(sp_checkpoint_check_resume_state(&r, path, ds, seed, G, &err), -1);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "past the end"), "%s", err.msg);
    sp_checkpoint_free(&r);
    sp_dataset_close(ds);
    free(path), free(data);
}
END_TEST

/* A tiny GPT-2 whose vocabulary covers make_dataset's tokens. */
static char *make_model(const char *name, uint64_t seed) {
    sp_init_options o = tu_gpt2_options(2, 16, 2, 64, 211, 24, seed);
    o.random_norms = 1;
    return tu_write_model(name, &o);
}

/* Every checkpoint a real run writes passes the checks, across epoch boundaries (20 examples,
 * 7 per step) and for both data paths (packed micro-batches, per-example deterministic). */
START_TEST(trainer_checkpoints_pass_the_resume_checks) {
    char *model = make_model("m", 4);
    char *data = make_dataset("train.h5");
    sp_dataset *ds = tu_dataset_open_ok(data);
    for (int deterministic = 0; deterministic < 2; deterministic++) {
        char name[32];
        snprintf(name, sizeof name, "run%d", deterministic);
        char *out = tu_path(tu_dir, name);
        sp_train_config c;
        sp_train_config_default(&c);
        c.model_dir = model, c.train_path = data, c.out_dir = out;
        c.steps = 9, c.global_batch = 7, c.micro_batch = 3, c.save_every = 1, c.keep = 100;
        c.init = SP_INIT_RANDOM, c.quiet = 1, c.resume = "never", c.threads = 1, c.seed = 5;
        c.deterministic = deterministic;
        sp_dist one = {0, 1, 0, 1};
        sp_error err = {0};
        ck_assert_msg(sp_train_run(&c, &one, &err) == 0, "%s", err.msg);
        char *dir = tu_path(out, "checkpoints");
        for (int64_t step = 1; step <= 9; step++) {
            char *path = sp_checkpoint_path(dir, step);
            sp_checkpoint ck;
            tu_ck_read_ok(path, &ck);
            ck_assert_msg(sp_checkpoint_check_resume_state(&ck, path, ds, c.seed, 7, &err) == 0,
                          "%s", err.msg);
            /* and they are not accepted for another seed or global batch */
            ck_assert_int_eq(sp_checkpoint_check_resume_state(&ck, path, ds, c.seed, 6, &err), -1);
            sp_checkpoint_free(&ck);
            free(path);
        }
        free(dir), free(out);
    }
    sp_dataset_close(ds);
    free(model), free(data);
}
END_TEST

int main(void) {
    const TTest *tests[] = {resume_state_is_checked_against_the_data,
                            trainer_checkpoints_pass_the_resume_checks, NULL};
    return tu_main("checkpoint_resume", tests, tu_ck_quiet_hdf5, NULL);
}
