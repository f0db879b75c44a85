/* The memory check before training (src/train/memory_check.c): one rank's estimate (its share
 * of the mapped weights, converted weights, the activations of the worst micro-batch of any
 * set, a fixed allowance) against SP_MAX_MEMORY, to the byte and in K, M and G; ranks on a node
 * sharing the mapped weights; the refusal saying what was estimated from what and what to
 * change; malformed limits refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "train/internal.h"

#define GIB (1024.0 * 1024.0 * 1024.0)
#define OVERHEAD (128.0 * 1024 * 1024) /* memory_check.c's allowance for libraries and MPI */

/* Each test's model and sets: a holds 9 examples of 7 to 11 tokens, b 3 examples of 14. */
typedef struct fixture {
    sp_model m;
    sp_dataset *a, *b;
} fixture;
static fixture F;

static void open_fixture(void) {
    fixture *f = &F;
    char *model = tu_tiny_gpt2("m", 1);
    tu_model_load_ok(&f->m, model);
    char *a = tu_write_cls_set(
        "a.h5", &(tu_cls_set){.n_soft = 4, .n_examples = 9, .text_min = 3, .text_mod = 5});
    char *b = tu_write_cls_set(
        "b.h5", &(tu_cls_set){.n_soft = 4, .n_examples = 3, .text_min = 10, .text_mod = 1});
    f->a = tu_dataset_open_ok(a), f->b = tu_dataset_open_ok(b);
    free(model), free(a), free(b);
}

static void close_fixture(void) {
    sp_dataset_close(F.a), sp_dataset_close(F.b);
    sp_model_free(&F.m);
}

/* The estimate for a micro-batch of `tokens` tokens and `targets` targets whose longest
 * sequence has `longest` tokens, on one of `ranks` ranks of the node. */
static double estimate(const sp_model *m, int ranks, double tokens, double targets, int longest,
                       double *model, double *act) {
    double copies = (double)m->bytes_converted; /* one per node when shared, else per rank */
    *model = ((double)m->bytes_in_place + (m->copies_shared ? copies : 0)) / ranks +
             (m->copies_shared ? 0 : copies);
    *act = tokens * (double)sp_model_activation_bytes_per_token(m, longest) +
           targets * m->cfg.vocab_size * sizeof(float);
    return *model + *act + OVERHEAD;
}

/* sp__train_check_memory with SP_MAX_MEMORY=limit: 0, or -1 and the message in err. */
static int check(const char *limit, sp_dataset *const *sets, int n_sets, int micro, int ranks,
                 sp_error *err) {
    ck_assert_int_eq(setenv("SP_MAX_MEMORY", limit, 1), 0);
    return sp__train_check_memory(&F.m, sets, n_sets, micro, ranks, err);
}

static int check_bytes(double limit, sp_dataset *const *sets, int n_sets, int micro, int ranks) {
    char s[32];
    snprintf(s, sizeof s, "%.0f", limit);
    sp_error err = {0};
    return check(s, sets, n_sets, micro, ranks, &err);
}

/* The worst micro-batch of 3 from either set: b's three examples (42 tokens, sequences of 14),
 * and 3 targets. The estimate is the limit to the byte. */
START_TEST(estimate_against_the_limit) {
    sp_dataset *sets[] = {NULL, F.a, NULL, F.b};
    double model, act, need = estimate(&F.m, 1, 42, 3, 14, &model, &act);
    ck_assert(need == floor(need));
    ck_assert_int_eq(check_bytes(need, sets, 4, 3, 1), 0);
    ck_assert_int_eq(check_bytes(need - 1, sets, 4, 3, 1), -1);
    sp_dataset *reversed[] = {F.b, F.a}; /* the worst is the worst of all, wherever it is */
    ck_assert_int_eq(check_bytes(need, reversed, 2, 3, 1), 0);
    ck_assert_int_eq(check_bytes(need - 1, reversed, 2, 3, 1), -1);
    /* a alone: its three longest (11 + 10 + 10 tokens, sequences of 11). */
    need = estimate(&F.m, 1, 31, 3, 11, &model, &act);
    ck_assert_int_eq(check_bytes(need, sets, 2, 3, 1), 0);
    ck_assert_int_eq(check_bytes(need - 1, sets, 2, 3, 1), -1);
    /* A micro-batch larger than the set: all of it (79 tokens, 9 targets). */
    need = estimate(&F.m, 1, 79, 9, 11, &model, &act);
    ck_assert_int_eq(check_bytes(need, sets, 2, 100, 1), 0);
    ck_assert_int_eq(check_bytes(need - 1, sets, 2, 100, 1), -1);
}
END_TEST

/* Ranks of a node share the mapped weights: each counts its share. */
START_TEST(ranks_share_the_mapped_weights) {
    sp_dataset *sets[] = {F.a, F.b};
    ck_assert_uint_gt(F.m.bytes_in_place, 0);
    double model, act, one = estimate(&F.m, 1, 42, 3, 14, &model, &act);
    double two = estimate(&F.m, 2, 42, 3, 14, &model, &act);
    ck_assert(two < one);
    double limit = ceil(two);
    ck_assert_int_eq(check_bytes(limit, sets, 2, 3, 2), 0);
    ck_assert_int_eq(check_bytes(limit, sets, 2, 3, 1), -1);
    ck_assert_int_eq(check_bytes(limit - 1, sets, 2, 3, 2), -1);
    ck_assert_int_eq(check_bytes(one, sets, 2, 3, 0), 0); /* 0 ranks: one */
    ck_assert_int_eq(check_bytes(one - 1, sets, 2, 3, 0), -1);
}
END_TEST

/* Converted copies count once per rank when private, once per node (a share per rank) when the
 * ranks of the node share them (sp_model_load_shared). */
START_TEST(converted_copies_private_or_shared) {
    sp_dataset *sets[] = {F.a, F.b};
    size_t saved = F.m.bytes_converted;
    F.m.bytes_converted = (size_t)300 << 20;
    for (int shared = 0; shared < 2; shared++) {
        F.m.copies_shared = shared;
        double model, act, two = estimate(&F.m, 2, 42, 3, 14, &model, &act);
        double one = estimate(&F.m, 1, 42, 3, 14, &model, &act);
        ck_assert(shared ? one - two > 150.0 * (1 << 20) : one - two < 150.0 * (1 << 20));
        ck_assert_int_eq(check_bytes(ceil(two), sets, 2, 3, 2), 0);
        ck_assert_int_eq(check_bytes(ceil(two) - 1, sets, 2, 3, 2), -1);
    }
    F.m.copies_shared = 0, F.m.bytes_converted = saved;
}
END_TEST

/* The refusal gives the estimate, its parts and what they come from, the limit and its source,
 * and what to change. */
START_TEST(refusal_says_what_and_why) {
    sp_dataset *sets[] = {F.a, F.b};
    double model, act, need = estimate(&F.m, 1, 42, 3, 14, &model, &act);
    sp_error err = {0};
    ck_assert_int_eq(check("100M", sets, 2, 3, 1, &err), -1);
    char want[1024];
    snprintf(want, sizeof want,
             "this run needs about %.2f GiB per rank (model %.2f GiB, activations %.2f GiB for a "
             "micro-batch of up to 42 tokens, sequences up to 14 tokens), but only %.2f GiB is "
             "available (SP_MAX_MEMORY); lower --micro-batch, prepare with a smaller "
             "--max-length, or run fewer ranks per node",
             need / GIB, model / GIB, act / GIB, 100.0 * 1024 * 1024 / GIB);
    ck_assert_str_eq(err.msg, want);
}
END_TEST

/* K, M and G are powers of 1024, fractions allowed. */
START_TEST(limit_suffixes) {
    sp_dataset *sets[] = {F.a, F.b};
    double model, act, need = estimate(&F.m, 1, 42, 3, 14, &model, &act);
    const struct {
        char suffix;
        double unit;
    } units[] = {{'K', 1024.0}, {'M', 1024.0 * 1024}};
    for (int u = 0; u < 2; u++) {
        double n = ceil(need / units[u].unit);
        char s[32];
        sp_error err = {0};
        snprintf(s, sizeof s, "%.0f%c", n, units[u].suffix);
        ck_assert_msg(check(s, sets, 2, 3, 1, &err) == 0, "%s: %s", s, err.msg);
        snprintf(s, sizeof s, "%.0f%c", n - 1, units[u].suffix);
        ck_assert_msg(check(s, sets, 2, 3, 1, &err) == -1, "%s passed", s);
    }
    ck_assert(need < 0.5 * GIB && need > 0.1 * GIB);
    sp_error err = {0};
    ck_assert_int_eq(check("0.5G", sets, 2, 3, 1, &err), 0);
    ck_assert_int_eq(check("0.1G", sets, 2, 3, 1, &err), -1);
}
END_TEST

START_TEST(malformed_limits_refused) {
    sp_dataset *sets[] = {F.a};
    static const char *const bad[] = {"abc", "G", "0", "-1G", "4GB", "4 G", "1e3X", "nan"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        sp_error err = {0};
        ck_assert_msg(check(bad[i], sets, 1, 1, 1, &err) == -1, "SP_MAX_MEMORY=%s", bad[i]);
        char want[128];
        snprintf(want, sizeof want,
                 "SP_MAX_MEMORY='%s': expected a number of bytes, e.g. 4G or 512M", bad[i]);
        ck_assert_str_eq(err.msg, want);
    }
    /* Unset or empty: the node's (or the cgroup's) free memory decides; a tiny run fits. */
    sp_error err = {0};
    ck_assert_msg(check("", sets, 1, 1, 1, &err) == 0, "%s", err.msg);
    unsetenv("SP_MAX_MEMORY");
    ck_assert_msg(sp__train_check_memory(&F.m, sets, 1, 1, 1, &err) == 0, "%s", err.msg);
}
END_TEST

int main(void) {
    const TTest *tests[] = {estimate_against_the_limit,
                            ranks_share_the_mapped_weights,
                            converted_copies_private_or_shared,
                            refusal_says_what_and_why,
                            limit_suffixes,
                            malformed_limits_refused,
                            NULL};
    return tu_main("memory_check", tests, open_fixture, close_fixture);
}
