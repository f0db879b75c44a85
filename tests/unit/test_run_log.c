/* metrics.jsonl (src/train/run_log.c): every row is written, values that are not numbers
 * (a diverging run's NaN loss, an infinite gradient norm, an evaluation without targets) as
 * null; a resumed run keeps such rows up to its checkpoint. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"
#include "train/internal.h"

/* The rows of metrics.jsonl, each checked to be a JSON object. */
static json_t *rows_of(const char *dir) {
    char *path = tu_path(dir, "metrics.jsonl");
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    json_t *rows = json_array();
    char line[4096];
    while (fgets(line, sizeof line, f)) {
        json_error_t je;
        json_t *j = json_loads(line, 0, &je);
        ck_assert_msg(json_is_object(j), "not a JSON object: %s (%s)", line, je.text);
        json_array_append_new(rows, j);
    }
    fclose(f);
    free(path);
    return rows;
}

static void log_rows(sp__run_log *l) {
    int64_t confusion[4] = {3, 1, 0, 4};
    sp_eval_result ok = {.n_examples = 8,
                         .n_targets = 8,
                         .loss_sum = 4.0,
                         .n_classes = 2,
                         .correct = 7,
                         .confusion = confusion};
    sp_eval_result bad = ok;
    bad.loss_sum = NAN;
    sp_eval_result none = {0};
    sp__run_log_step(l, 1, 2.5, 0.3, 1.25, 100, 0.5, 0);
    sp__run_log_step(l, 2, NAN, 0.3, INFINITY, 100, 0.5, 0);
    sp__run_log_eval(l, 2, "valid", &ok);
    sp__run_log_eval(l, 2, "valid", &bad);
    sp__run_log_eval(l, 2, "valid", &none);
    sp__run_log_step(l, 3, -INFINITY, NAN, 0.5, 100, 0.5, 0);
}

START_TEST(non_finite_values_are_written_as_null) {
    sp__run_log l;
    sp_error err = {0};
    ck_assert_msg(sp__run_log_open(&l, tu_dir, -1, 1, 10, &err) == 0, "%s", err.msg);
    log_rows(&l);
    sp__run_log_close(&l);
    json_t *rows = rows_of(tu_dir);
    ck_assert_int_eq(json_array_size(rows), 6);
    json_t *r0 = json_array_get(rows, 0), *r1 = json_array_get(rows, 1);
    ck_assert(json_real_value(json_object_get(r0, "loss")) == 2.5);
    ck_assert(json_is_null(json_object_get(r1, "loss")));
    ck_assert(json_is_null(json_object_get(r1, "grad_norm")));
    ck_assert(json_real_value(json_object_get(r1, "lr")) == 0.3);
    ck_assert_int_eq(json_integer_value(json_object_get(r1, "tokens")), 100);
    json_t *e0 = json_array_get(rows, 2), *e1 = json_array_get(rows, 3),
           *e2 = json_array_get(rows, 4);
    ck_assert(json_real_value(json_object_get(e0, "loss")) == 0.5);
    ck_assert(json_real_value(json_object_get(e0, "accuracy")) == 0.875);
    ck_assert(json_is_null(json_object_get(e1, "loss")));
    ck_assert(json_real_value(json_object_get(e1, "accuracy")) == 0.875);
    ck_assert(json_is_null(json_object_get(e2, "loss")));
    ck_assert_str_eq(json_string_value(json_object_get(e2, "split")), "valid");
    json_t *r3 = json_array_get(rows, 5);
    ck_assert(json_is_null(json_object_get(r3, "loss")) && json_is_null(json_object_get(r3, "lr")));
    json_decref(rows);

    /* A run resumed from step 2 keeps the rows up to it, null values included. */
    ck_assert_msg(sp__run_log_open(&l, tu_dir, 2, 1, 10, &err) == 0, "%s", err.msg);
    sp__run_log_close(&l);
    rows = rows_of(tu_dir);
    ck_assert_int_eq(json_array_size(rows), 5);
    ck_assert(json_is_null(json_object_get(json_array_get(rows, 1), "loss")));
    json_decref(rows);
}
END_TEST

int main(void) {
    const TTest *tests[] = {non_finite_values_are_written_as_null, NULL};
    return tu_main("run_log", tests, NULL, NULL);
}
