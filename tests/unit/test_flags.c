/* The flags module (src/cli/flags.c): one table per command gives parsing, --help and the
 * messages. Tested on a table of its own, with stderr captured. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/flags.h"
#include "testutil.h"

typedef struct args {
    const char *name, *mode;
    int count, quiet, loud;
    int64_t big;
    uint64_t seed;
    double rate;
    int mode_applied_before_rate; /* set by the custom parser when rate is still default */
    int n_tags;
    const char *tags[4];
} args;

#define AT(f) offsetof(args, f)

static const char *parse_mode(void *a, const char *v) {
    args *x = a;
    if (strcmp(v, "fast") && strcmp(v, "slow")) return "fast or slow";
    x->mode = v;
    x->mode_applied_before_rate = x->rate == 0.5;
    return NULL;
}

static const char *parse_tag(void *a, const char *v) {
    args *x = a;
    if (x->n_tags == 4) return "at most 4 tags";
    x->tags[x->n_tags++] = v;
    return NULL;
}

static const sp__flag FLAGS[] = {
    SP_OPT_STR("name", AT(name), "NAME", "the name", .flags = SP_FLAG_REQUIRED, .group = "first"),
    SP_OPT_INT("count", AT(count), "N", 1, 10, "a count\nover two lines"),
    SP_OPT_INT64("big", AT(big), "N", 0, 1e12, "a big number"),
    SP_OPT_U64("seed", AT(seed), "S", "a seed"),
    SP_OPT_DOUBLE("rate", AT(rate), "X", 0, 1, "a rate", .group = "second"),
    SP_OPT_CUSTOM("mode", AT(mode), "M", parse_mode, "fast or slow", .order = -1),
    SP_OPT_SWITCH("quiet", AT(quiet), 1, "say less"),
    SP_OPT_SWITCH("loud", AT(quiet), 0, "say more"),
    SP_OPT_CUSTOM("tag", AT(tags), "T", parse_tag, "a tag (repeatable)", .flags = SP_FLAG_REPEAT),
    SP_OPT_STR("a-very-long-flag-name", AT(name), "VALUE", "wraps to its own line"),
    {0},
};

static const sp__flag_spec SPEC = {
    .cmd = "demo",
    .usage = "usage: softprompt demo --name NAME [options] [FILE...]\n",
    .about = "About it.\n",
    .flags = FLAGS,
    .positional = "FILE",
    .min_positional = 0,
    .max_positional = 2,
    .epilog = "The end.\n",
};

typedef struct outcome {
    int rc, n_pos;
    char *pos[16];
    char err[4096];
    args a;
} outcome;

/* Parses argv (NULL-terminated, argv[0] included) with stderr captured. */
static outcome parse(const char **argv) {
    outcome o;
    memset(&o, 0, sizeof o);
    o.a.rate = 0.5, o.a.count = 3;
    int argc = 0;
    while (argv[argc]) argc++;
    fflush(stderr);
    FILE *tmp = tmpfile();
    int saved = dup(2);
    dup2(fileno(tmp), 2);
    o.rc = sp__flags_parse(&SPEC, argc, (char **)argv, &o.a, o.pos, &o.n_pos);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    rewind(tmp);
    size_t n = fread(o.err, 1, sizeof o.err - 1, tmp);
    o.err[n] = '\0';
    fclose(tmp);
    return o;
}

#define EXPECT_ERR(o, text)                                                                        \
    do {                                                                                           \
        ck_assert_int_eq((o).rc, 2);                                                               \
        ck_assert_msg(strstr((o).err, text), "expected '%s' in: %s", text, (o).err);               \
    } while (0)

START_TEST(values_and_positionals) {
    const char *argv[] = {"demo",
                          "--name",
                          "x",
                          "--count=7",
                          "f1",
                          "--big",
                          "1000000000000",
                          "--seed",
                          "18446744073709551615",
                          "--rate",
                          "0.25",
                          "--quiet",
                          "--",
                          "--f2",
                          NULL};
    outcome o = parse(argv);
    ck_assert_msg(o.rc == 0, "%s", o.err);
    ck_assert_str_eq(o.a.name, "x");
    ck_assert_int_eq(o.a.count, 7);
    ck_assert_int_eq(o.a.big, 1000000000000LL);
    ck_assert(o.a.seed == UINT64_MAX);
    ck_assert(o.a.rate == 0.25);
    ck_assert_int_eq(o.a.quiet, 1);
    ck_assert_int_eq(o.n_pos, 2);
    ck_assert_str_eq(o.pos[0], "f1");
    ck_assert_str_eq(o.pos[1], "--f2"); /* after "--" everything is positional */
}
END_TEST

START_TEST(a_value_may_start_with_a_dash) {
    const char *argv[] = {"demo", "--name", "-x", NULL};
    outcome o = parse(argv);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_str_eq(o.a.name, "-x");
}
END_TEST

START_TEST(duplicates_are_refused) {
    const char *a1[] = {"demo", "--name", "a", "--name", "b", NULL};
    EXPECT_ERR(parse(a1), "softprompt demo: --name given twice ('a', then 'b')");
    const char *a2[] = {"demo", "--name", "a", "--quiet", "--quiet", NULL};
    EXPECT_ERR(parse(a2), "softprompt demo: --quiet given twice");
    /* two flags storing into the same place */
    const char *a3[] = {"demo", "--name", "a", "--quiet", "--loud", NULL};
    EXPECT_ERR(parse(a3), "softprompt demo: --quiet and --loud both given: choose one");
    const char *a4[] = {"demo", "--a-very-long-flag-name", "a", "--name", "b", NULL};
    EXPECT_ERR(parse(a4), "--a-very-long-flag-name and --name both given");
    /* a repeatable flag collects every value */
    const char *a5[] = {"demo", "--name", "a", "--tag", "t1", "--tag=t2", NULL};
    outcome o = parse(a5);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_int_eq(o.a.n_tags, 2);
    ck_assert_str_eq(o.a.tags[1], "t2");
}
END_TEST

START_TEST(bad_values) {
    const char *a1[] = {"demo", "--name", "a", "--count", "11", NULL};
    EXPECT_ERR(parse(a1), "softprompt demo: --count '11': expected an integer from 1 to 10");
    const char *a2[] = {"demo", "--name", "a", "--rate", "abc", NULL};
    EXPECT_ERR(parse(a2), "--rate 'abc': expected a number from 0 to 1");
    const char *a3[] = {"demo", "--name", "a", "--rate", "nan", NULL};
    EXPECT_ERR(parse(a3), "--rate 'nan': expected a number");
    const char *a4[] = {"demo", "--name", "a", "--seed", "-1", NULL};
    EXPECT_ERR(parse(a4), "--seed '-1': expected an integer from 0 to 18446744073709551615");
    const char *a5[] = {"demo", "--name", "a", "--mode", "medium", NULL};
    EXPECT_ERR(parse(a5), "--mode 'medium': expected fast or slow");
    const char *a6[] = {"demo", "--name", "a", "--count", "", NULL};
    EXPECT_ERR(parse(a6), "--count '': expected an integer");
    const char *a7[] = {"demo", "--name", "a", "--count", "3x", NULL};
    EXPECT_ERR(parse(a7), "--count '3x'");
}
END_TEST

START_TEST(usage_errors) {
    const char *a1[] = {"demo", "--name", "a", "--cuont", "3", NULL};
    EXPECT_ERR(parse(a1), "softprompt demo: unknown option '--cuont' (did you mean --count?)");
    const char *a2[] = {"demo", "--name", "a", "--zzzzzz", NULL};
    EXPECT_ERR(parse(a2), "unknown option '--zzzzzz' (see softprompt demo --help)");
    const char *a3[] = {"demo", "--name", NULL};
    EXPECT_ERR(parse(a3), "softprompt demo: --name needs a value (NAME)");
    const char *a4[] = {"demo", "--count", "2", NULL};
    EXPECT_ERR(parse(a4), "softprompt demo: --name is required (see softprompt demo --help)");
    const char *a5[] = {"demo", "--name", "a", "--quiet=yes", NULL};
    EXPECT_ERR(parse(a5), "--quiet takes no value");
    const char *a6[] = {"demo", "--name", "a", "f1", "f2", "f3", NULL};
    EXPECT_ERR(parse(a6), "unexpected argument 'f3' (at most 2 FILE)");
    const char *a7[] = {"demo", "--name", "a", "-x", NULL};
    EXPECT_ERR(parse(a7), "unknown option '-x'");
    /* no abbreviations: a prefix is not taken for the flag it starts */
    const char *a8[] = {"demo", "--name", "a", "--coun", "3", NULL};
    EXPECT_ERR(parse(a8), "unknown option '--coun' (did you mean --count?)");
}
END_TEST

START_TEST(lower_order_applies_first) {
    /* --mode (order -1) is applied before --rate even when given after it */
    const char *argv[] = {"demo", "--name", "a", "--rate", "0.1", "--mode", "fast", NULL};
    outcome o = parse(argv);
    ck_assert_int_eq(o.rc, 0);
    ck_assert_int_eq(o.a.mode_applied_before_rate, 1);
    ck_assert(o.a.rate == 0.1);
}
END_TEST

START_TEST(help_text) {
    char *path = tu_path(tu_dir, "help.txt");
    FILE *f = fopen(path, "w");
    sp__flags_usage(&SPEC, f);
    fclose(f);
    char *text = tu_read_file(path, NULL);
    const char *expected = "usage: softprompt demo --name NAME [options] [FILE...]\n"
                           "\n"
                           "About it.\n"
                           "\n"
                           "first:\n"
                           "  --name NAME  the name\n"
                           "  --count N    a count\n"
                           "               over two lines\n"
                           "  --big N      a big number\n"
                           "  --seed S     a seed\n"
                           "\n"
                           "second:\n"
                           "  --rate X     a rate\n"
                           "  --mode M     fast or slow\n"
                           "  --quiet      say less\n"
                           "  --loud       say more\n"
                           "  --tag T      a tag (repeatable)\n"
                           "  --a-very-long-flag-name VALUE\n"
                           "               wraps to its own line\n"
                           "  -h, --help   show this help\n"
                           "\n"
                           "The end.\n";
    ck_assert_str_eq(text, expected);
    free(text), free(path);
}
END_TEST

START_TEST(given) {
    char *argv[] = {"demo", "--count=3", "--name", "x", "--", "--rate", NULL};
    ck_assert(sp__flags_given(6, argv, "count"));
    ck_assert(sp__flags_given(6, argv, "name"));
    ck_assert(!sp__flags_given(6, argv, "rate")); /* after "--" */
    ck_assert(!sp__flags_given(6, argv, "coun"));
}
END_TEST

/* A separate program (bench/): the messages name it, not "softprompt <cmd>"; --help is answered;
 * without positionals pos may be NULL. */
static const sp__flag_spec PROGRAM = {
    .cmd = "bench_demo",
    .program = "bench_demo",
    .usage = "usage: bench_demo --name NAME\n",
    .flags = FLAGS,
};

/* sp__flags_program on argv (NULL-terminated) with stdout and stderr captured into out. */
static int run_program(const char **argv, int *status, char *out, size_t cap) {
    args a = {.rate = 0.5};
    int argc = 0;
    while (argv[argc]) argc++;
    fflush(stdout), fflush(stderr);
    FILE *tmp = tmpfile();
    int saved[2] = {dup(1), dup(2)};
    dup2(fileno(tmp), 1), dup2(fileno(tmp), 2);
    int stop = sp__flags_program(&PROGRAM, argc, (char **)argv, &a, NULL, NULL, status);
    fflush(stdout), fflush(stderr);
    dup2(saved[0], 1), dup2(saved[1], 2);
    close(saved[0]), close(saved[1]);
    rewind(tmp);
    out[fread(out, 1, cap - 1, tmp)] = '\0';
    fclose(tmp);
    return stop;
}

START_TEST(a_program_is_named) {
    char out[4096];
    int status = -1;
    const char *ok[] = {"bench_demo", "--name", "x", "--count", "4", NULL};
    ck_assert_int_eq(run_program(ok, &status, out, sizeof out), 0);
    ck_assert_int_eq(status, 0);
    const char *cases[][3] = {
        {"--count", "4x", "bench_demo: --count '4x': expected an integer from 1 to 10\n"},
        {"--cuont", "4", "bench_demo: unknown option '--cuont' (did you mean --count?)\n"},
        {"--zzzzzz", "4", "bench_demo: unknown option '--zzzzzz' (see bench_demo --help)\n"},
    };
    for (int i = 0; i < 3; i++) {
        const char *argv[] = {"bench_demo", "--name", "x", cases[i][0], cases[i][1], NULL};
        ck_assert_int_eq(run_program(argv, &status, out, sizeof out), 1);
        ck_assert_int_eq(status, 2);
        ck_assert_str_eq(out, cases[i][2]);
    }
    const char *stray[] = {"bench_demo", "--name", "x", "file", NULL};
    ck_assert_int_eq(run_program(stray, &status, out, sizeof out), 1);
    ck_assert_int_eq(status, 2);
    ck_assert_str_eq(out, "bench_demo: unexpected argument 'file' (see bench_demo --help)\n");
    const char *missing[] = {"bench_demo", "--count", "2", NULL};
    ck_assert_int_eq(run_program(missing, &status, out, sizeof out), 1);
    ck_assert_str_eq(out, "bench_demo: --name is required (see bench_demo --help)\n");
    const char *help[] = {"bench_demo", "--count", "bad", "--help", NULL};
    ck_assert_int_eq(run_program(help, &status, out, sizeof out), 1);
    ck_assert_int_eq(status, 0);
    ck_assert_msg(strncmp(out, "usage: bench_demo --name NAME\n", 30) == 0, "%s", out);
}
END_TEST

int main(void) {
    Suite *s = suite_create("flags");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
    tcase_add_test(tc, values_and_positionals);
    tcase_add_test(tc, a_value_may_start_with_a_dash);
    tcase_add_test(tc, duplicates_are_refused);
    tcase_add_test(tc, bad_values);
    tcase_add_test(tc, usage_errors);
    tcase_add_test(tc, lower_order_applies_first);
    tcase_add_test(tc, help_text);
    tcase_add_test(tc, given);
    tcase_add_test(tc, a_program_is_named);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? 1 : 0;
}
