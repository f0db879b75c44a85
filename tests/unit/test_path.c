/* util/path: joining, the directory, base name and extension of a path, suffixes, and the
 * regular-file test (a directory or a missing path is not a file; a link to a file is). */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "util/path.h"

START_TEST(names_of_a_path) {
    char *p = sp__path_join("run/out", "config.json");
    ck_assert_str_eq(p, "run/out/config.json");
    free(p);
    const char *dirs[][2] = {{"a/b/c.h5", "a/b"}, {"c.h5", "."}, {"/c.h5", "/"}, {"/x/y", "/x"}};
    for (size_t i = 0; i < sizeof dirs / sizeof *dirs; i++) {
        char *d = sp__dir_of(dirs[i][0]);
        ck_assert_str_eq(d, dirs[i][1]);
        free(d);
    }
    ck_assert_str_eq(sp__base_name("a/b/data.jsonl"), "data.jsonl");
    ck_assert_str_eq(sp__base_name("data.jsonl"), "data.jsonl");
    ck_assert_str_eq(sp__base_name("a/"), "");
    ck_assert_str_eq(sp__path_ext("a/b/data.v2.csv"), ".csv");
    ck_assert_ptr_null(sp__path_ext("dir.d/README")); /* a dot in a directory is no extension */
    ck_assert_str_eq(sp__path_ext(".hidden"), ".hidden");
    ck_assert(sp__ends_with("model.safetensors", ".safetensors"));
    ck_assert(sp__ends_with("x.h5", "x.h5"));
    ck_assert(!sp__ends_with("h5", ".h5"));
    ck_assert(!sp__ends_with("x.h5.tmp", ".h5"));
}
END_TEST

START_TEST(regular_files_only) {
    char *file = tu_path(tu_dir, "f"), *link = tu_path(tu_dir, "l"), *dir = tu_path(tu_dir, "d");
    tu_write_file(file, "x", 1);
    ck_assert_int_eq(symlink(file, link), 0);
    ck_assert_int_eq(mkdir(dir, 0755), 0);
    ck_assert(sp__is_file(file));
    ck_assert(sp__is_file(link));
    ck_assert(!sp__is_file(dir));
    ck_assert(!sp__is_file("/nonexistent/f"));
    free(file), free(link), free(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("path");
    TCase *tc = tcase_create("path");
    tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
    tcase_add_test(tc, names_of_a_path);
    tcase_add_test(tc, regular_files_only);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
