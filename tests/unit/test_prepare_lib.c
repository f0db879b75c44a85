/* sp_prepare called as a library (test_prepare runs the command): the stratified split's counts
 * per split and class, the report's numbers checked against the datasets read back, its
 * warnings, and all or nothing: a failure in the second pass or while publishing the second
 * split leaves no file, and invalid options are told apart from bad data. Uses the committed
 * SmolLM tokenizer fixture, so it needs nothing fetched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_fsync.h"
#include "softprompt/dataset.h"
#include "softprompt/prepare.h"
#include "softprompt/tokenizer.h"
#include "testutil.h"

#define TOKENIZER SP_FIXTURES_DIR "/tokenizer/hf/smollm"
#define VERB "0= no,1= is" /* one token each in the fixture's vocabulary */

static char *g_input, *g_prefix;

static void setup(void) {
    tu_dir_setup();
    g_input = tu_path(tu_dir, "records.jsonl");
    g_prefix = tu_path(tu_dir, "ds");
    fake_fsync_reset();
}

static void teardown(void) {
    free(g_input), free(g_prefix);
    tu_dir_teardown();
}

/* n records: record i has class i < n_zero ? 0 : 1 and a text of 1 + i % 7 words; every
 * empty_every-th record (when > 0) has an empty text. */
static void write_records(int n, int n_zero, int empty_every) {
    FILE *f = fopen(g_input, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < n; i++) {
        char text[128] = "";
        if (!(empty_every > 0 && i % empty_every == empty_every - 1))
            for (int w = 0; w <= i % 7; w++) strcat(text, w ? " the cat" : "a cat");
        fprintf(f, "{\"text\": \"%s\", \"label\": \"%d\"}\n", text, i < n_zero ? 0 : 1);
    }
    fclose(f);
}

static sp_prepare_options options(const char *split) {
    sp_prepare_options o;
    sp_prepare_options_default(&o);
    o.tokenizer = TOKENIZER;
    o.input = g_input;
    o.out = g_prefix;
    o.split = split;
    o.fmt.verbalizer_spec = VERB;
    return o;
}

static void prepare_ok(const sp_prepare_options *o, sp_prepare_report *r) {
    sp_error err = {0};
    int rc = sp_prepare(o, r, &err);
    ck_assert_msg(rc == 0, "sp_prepare: %d %s", rc, err.msg);
}

/* Files in tu_dir besides the input. */
static int outputs(void) {
    return tu_count_entries(tu_dir, NULL) - 1;
}

/* Class counts of a dataset read back. */
static void dataset_classes(const char *path, int64_t *n0, int64_t *n1) {
    sp_dataset *ds = tu_dataset_open_ok(path);
    const int32_t *labels = sp_dataset_labels(ds);
    *n0 = *n1 = 0;
    for (int64_t i = 0; i < sp_dataset_get_meta(ds)->n_examples; i++)
        *(labels[i] == 0 ? n0 : n1) += 1;
    sp_dataset_close(ds);
}

/* Each class is cut by the ratios on its own: with 70 / 30 records and 0.5 / 0.3 / 0.2 the
 * splits hold 35+15, 21+9 and 14+6, whatever the seed; the report says so and so do the files. */
START_TEST(stratified_split_counts) {
    write_records(100, 70, 0);
    const int64_t want[3][2] = {{35, 15}, {21, 9}, {14, 6}};
    const char *names[3] = {"train", "valid", "test"};
    for (uint64_t seed = 1; seed <= 2; seed++) {
        sp_prepare_options o = options("train=0.5,valid=0.3,test=0.2");
        o.seed = seed, o.force = 1;
        sp_prepare_report r;
        prepare_ok(&o, &r);
        ck_assert_int_eq(r.n_splits, 3);
        ck_assert_int_eq(r.n_records, 100);
        ck_assert_int_eq(r.n_classes, 2);
        for (int k = 0; k < 3; k++) {
            const sp_prepare_split *s = &r.splits[k];
            ck_assert_str_eq(s->name, names[k]);
            ck_assert_int_eq(s->per_class[0], want[k][0]);
            ck_assert_int_eq(s->per_class[1], want[k][1]);
            ck_assert_int_eq(s->n_examples, want[k][0] + want[k][1]);
            int64_t n0, n1;
            dataset_classes(s->path, &n0, &n1);
            ck_assert_int_eq(n0, want[k][0]);
            ck_assert_int_eq(n1, want[k][1]);
        }
        sp_prepare_report_free(&r);
    }
    ck_assert_int_eq(outputs(), 3);
}
END_TEST

static void on_warning(const char *w, void *ctx) {
    (void)w;
    ++*(int *)ctx;
}

/* Generation with truncation, skipped empty records and a warning: every number of the report
 * against the files. */
START_TEST(report_numbers) {
    write_records(40, 40, 5); /* records 4, 9, ... empty: 8 skipped */
    sp_prepare_options o = options("a=0.75,b=0.25");
    o.fmt.verbalizer_spec = NULL;
    o.fmt.template_spec = "{soft:3}{text} =>";
    o.fmt.target_spec = "{label}!";
    o.fmt.max_length = 12;
    o.skip_empty = 1;
    int warned = 0;
    o.on_warning = on_warning, o.ctx = &warned;
    sp_prepare_report r;
    prepare_ok(&o, &r);
    ck_assert_int_eq(r.n_records, 40);
    ck_assert_int_eq(r.n_skipped_empty, 8);
    ck_assert_int_eq(r.n_skipped_unknown, 0);
    ck_assert_int_eq(r.n_classes, 0);
    ck_assert_int_eq(r.n_soft, 3);
    ck_assert_int_eq(r.max_length, 12);
    ck_assert_str_eq(r.template_spec, "{soft:3}{text} =>");
    ck_assert_str_eq(r.target_spec, "{label}!");
    ck_assert_int_eq(r.n_warnings, 0); /* a sound template */
    ck_assert_int_eq(warned, 0);
    sp_error err = {0};
    sp_tokenizer *tok = sp_tokenizer_load(TOKENIZER, &err);
    ck_assert_ptr_nonnull(tok);
    char hash[17];
    sp_tokenizer_hash_hex(tok, hash);
    sp_tokenizer_free(tok);
    ck_assert_str_eq(r.tokenizer_hash, hash);
    ck_assert_int_gt(r.input_bytes, 0);
    int64_t examples = 0, truncated = 0;
    for (int k = 0; k < r.n_splits; k++) {
        const sp_prepare_split *s = &r.splits[k];
        char *want = tu_path(tu_dir, k ? "ds-b.h5" : "ds-a.h5");
        ck_assert_str_eq(s->path, want);
        free(want);
        sp_dataset *ds = tu_dataset_open_ok(s->path);
        const sp_dataset_meta *m = sp_dataset_get_meta(ds);
        ck_assert_int_eq(m->n_examples, s->n_examples);
        ck_assert_int_eq(m->n_tokens, s->n_tokens);
        ck_assert_int_eq(m->n_targets, s->n_targets);
        ck_assert_int_eq(m->n_truncated, s->n_truncated);
        int64_t longest = 0;
        for (int64_t i = 0; i < m->n_examples; i++)
            if (sp_dataset_example_length(ds, i) > longest)
                longest = sp_dataset_example_length(ds, i);
        ck_assert_int_eq(longest, s->longest);
        ck_assert_int_le(longest, 12);
        sp_dataset_close(ds);
        examples += s->n_examples, truncated += s->n_truncated;
    }
    ck_assert_int_eq(examples, 32);
    ck_assert_int_eq(r.splits[0].n_examples, 24);
    ck_assert_int_gt(truncated, 0); /* the longer texts do not fit in 12 tokens */
    ck_assert_int_lt(truncated, examples);
    sp_prepare_report_free(&r);
    /* a template that inserts the label: one warning, in the report and to the callback */
    o.fmt.template_spec = "{text} {label}";
    o.fmt.max_length = 0;
    o.force = 1;
    prepare_ok(&o, &r);
    ck_assert_int_eq(r.n_warnings, 1);
    ck_assert_int_eq(warned, 1);
    ck_assert_ptr_nonnull(strstr(r.warnings[0], "answer leaks into the input"));
    ck_assert_str_eq(r.template_spec, "{soft:20}{text} {label}"); /* the default prompt length */
    sp_prepare_report_free(&r);
}
END_TEST

/* A record that passes the first pass but cannot be rendered (generation: its target field is
 * there but empty), after others were written: nothing is left. */
START_TEST(failure_in_the_second_pass_leaves_nothing) {
    FILE *f = fopen(g_input, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < 30; i++)
        fprintf(f, "{\"text\": \"a cat\", \"label\": \"%s\"}\n", i == 20 ? "" : "the cat");
    fclose(f);
    sp_prepare_options o = options(NULL);
    o.fmt.verbalizer_spec = NULL;
    sp_prepare_report r;
    sp_error err = {0};
    ck_assert_int_eq(sp_prepare(&o, &r, &err), -1);
    ck_assert_msg(strstr(err.msg, "records.jsonl:21: field \"label\": the target is empty"), "%s",
                  err.msg);
    ck_assert_int_eq(r.splits[0].n_examples + r.splits[1].n_examples, 20); /* written, then gone */
    sp_prepare_report_free(&r);
    ck_assert_int_eq(outputs(), 0);
}
END_TEST

/* Publishing the second split fails (its fsync): the first, already renamed into place, is
 * removed again. */
START_TEST(failure_while_publishing_leaves_nothing) {
    write_records(30, 15, 0);
    sp_prepare_options o = options("train=0.5,valid=0.5");
    fake_fsync_file_fail = 2;
    sp_prepare_report r;
    sp_error err = {0};
    ck_assert_int_eq(sp_prepare(&o, &r, &err), -1);
    ck_assert_msg(strstr(err.msg, "ds-valid.h5: cannot sync the temporary file"), "%s", err.msg);
    ck_assert_int_eq(fake_fsync_file_count, 2);
    sp_prepare_report_free(&r);
    ck_assert_int_eq(outputs(), 0);
    /* and the directory of the outputs failing to sync (EIO) leaves nothing either */
    fake_fsync_reset();
    fake_fsync_dir_errno = EIO;
    ck_assert_int_eq(sp_prepare(&o, &r, &err), -1);
    ck_assert_msg(strstr(err.msg, "ds-train.h5: written, but syncing directory"), "%s", err.msg);
    sp_prepare_report_free(&r);
    ck_assert_int_eq(outputs(), 0);
}
END_TEST

/* Options that cannot work are SP_PREPARE_BAD_OPTION (the command's usage errors); an existing
 * output is -1 and stays as it was. */
START_TEST(bad_options_and_existing_outputs) {
    write_records(10, 5, 0);
    const char *bad_splits[] = {"train=0.5", "a=0.5,a=0.5", "x/y=1", "a=0.5,b"};
    for (size_t i = 0; i < sizeof bad_splits / sizeof *bad_splits; i++) {
        sp_prepare_options o = options(bad_splits[i]);
        sp_prepare_report r;
        sp_error err = {0};
        ck_assert_int_eq(sp_prepare(&o, &r, &err), SP_PREPARE_BAD_OPTION);
        ck_assert_msg(strstr(err.msg, "--split"), "%s", err.msg);
        sp_prepare_report_free(&r);
    }
    sp_prepare_options o = options(NULL);
    o.fmt.template_spec = "{text";
    sp_prepare_report r;
    sp_error err = {0};
    ck_assert_int_eq(sp_prepare(&o, &r, &err), SP_PREPARE_BAD_OPTION);
    sp_prepare_report_free(&r);
    char *existing = tu_path(tu_dir, "ds-valid.h5");
    tu_write_file(existing, "mine", 4);
    o = options(NULL);
    ck_assert_int_eq(sp_prepare(&o, &r, &err), -1);
    ck_assert_msg(strstr(err.msg, "ds-valid.h5: already exists (use --force"), "%s", err.msg);
    sp_prepare_report_free(&r);
    size_t len;
    char *kept = tu_read_file(existing, &len);
    ck_assert_str_eq(kept, "mine");
    ck_assert_int_eq(outputs(), 1);
    free(kept), free(existing);
}
END_TEST

int main(void) {
    Suite *s = suite_create("prepare_lib");
    TCase *tc = tcase_create("prepare_lib");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, stratified_split_counts);
    tcase_add_test(tc, report_numbers);
    tcase_add_test(tc, failure_in_the_second_pass_leaves_nothing);
    tcase_add_test(tc, failure_while_publishing_leaves_nothing);
    tcase_add_test(tc, bad_options_and_existing_outputs);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
