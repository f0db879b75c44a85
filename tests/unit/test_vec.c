/* util/vec: growable arrays grow geometrically and keep their elements, refuse sizes that
 * overflow without touching the array, sp__buf keeps its bytes NUL-terminated, and
 * sp__big_alloc aligns large blocks to huge pages. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"
#include "util/bigalloc.h"
#include "util/vec.h"

START_TEST(cap_doubles_from_the_minimum) {
    ck_assert_uint_eq(sp__vec_cap(0, 1, 16, 4), 16);
    ck_assert_uint_eq(sp__vec_cap(0, 17, 16, 4), 32);
    ck_assert_uint_eq(sp__vec_cap(16, 16, 16, 4), 16); /* fits: unchanged */
    ck_assert_uint_eq(sp__vec_cap(16, 17, 16, 4), 32);
    ck_assert_uint_eq(sp__vec_cap(16, 1000, 16, 4), 1024);
    ck_assert_uint_eq(sp__vec_cap(0, 5, 0, 1), 8);
    /* more elements than SIZE_MAX bytes hold: 0 */
    ck_assert_uint_eq(sp__vec_cap(16, SIZE_MAX / 8 + 1, 16, 8), 0);
    /* near the limit the capacity stops at the largest count that fits */
    ck_assert_uint_eq(sp__vec_cap(SIZE_MAX / 8 - 1, SIZE_MAX / 8, 16, 8), SIZE_MAX / 8);
}
END_TEST

START_TEST(push_keeps_every_element) {
    int64_t *v = NULL;
    size_t n = 0, cap = 0;
    for (int64_t i = 0; i < 100000; i++) ck_assert_int_eq(SP_VEC_PUSH(v, n, cap, i * 3), 0);
    ck_assert_uint_eq(n, 100000);
    ck_assert_uint_ge(cap, n);
    ck_assert_uint_lt(cap, 2 * n); /* doubling, not more */
    for (size_t i = 0; i < n; i++) ck_assert_int_eq(v[i], (int64_t)i * 3);
    free(v);
}
END_TEST

START_TEST(failed_growth_changes_nothing) {
    int32_t *v = NULL;
    size_t cap = 0;
    ck_assert_int_eq(sp__vec_reserve(&v, &cap, 3, sizeof *v), 0);
    v[0] = 7, v[1] = 8, v[2] = 9;
    int32_t *before = v;
    size_t cap_before = cap;
    ck_assert_int_eq(sp__vec_reserve(&v, &cap, SIZE_MAX / 2, sizeof *v), -1);
    ck_assert_int_eq(sp__vec_resize(&v, SIZE_MAX / 2, sizeof *v), -1);
    ck_assert_ptr_eq(v, before);
    ck_assert_uint_eq(cap, cap_before);
    ck_assert_int_eq(v[2], 9);
    ck_assert_int_eq(sp__vec_resize(&v, 0, sizeof *v), 0); /* zero elements: still a block */
    ck_assert_ptr_nonnull(v);
    free(v);
}
END_TEST

START_TEST(buf_is_always_a_c_string) {
    sp__buf b = {0};
    ck_assert_int_eq(sp__buf_add(&b, NULL, 0), 0);
    ck_assert_ptr_nonnull(b.p);
    ck_assert_str_eq(b.p, "");
    ck_assert_int_eq(sp__buf_add(&b, "ab\0cd", 5), 0); /* bytes, NULs included */
    ck_assert_uint_eq(b.len, 5);
    ck_assert_int_eq(memcmp(b.p, "ab\0cd", 6), 0);
    b.len = 0;
    for (int i = 0; i < 1000; i++) ck_assert_int_eq(sp__buf_addc(&b, (char)('a' + i % 26)), 0);
    ck_assert_uint_eq(strlen(b.p), 1000);
    ck_assert_int_eq(sp__buf_addf(&b, "|%d:%s|", 42, "x"), 0);
    ck_assert_str_eq(b.p + 1000, "|42:x|");
    ck_assert_int_eq(b.p[999], 'a' + 999 % 26);
    sp__buf_free(&b);
    ck_assert_ptr_null(b.p);
    ck_assert_uint_eq(b.len + b.cap, 0);
}
END_TEST

START_TEST(buf_reads_a_whole_stream) {
    size_t n = 100003;
    char *data = malloc(n);
    for (size_t i = 0; i < n; i++) data[i] = (char)(i * 7 % 251 + 1);
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    rewind(f);
    sp__buf b = {0};
    ck_assert_int_eq(sp__buf_add(&b, "head:", 5), 0); /* appends after what is there */
    ck_assert_int_eq(sp__buf_read(&b, f), 0);
    ck_assert_uint_eq(b.len, n + 5);
    ck_assert_int_eq(memcmp(b.p + 5, data, n), 0);
    ck_assert_int_eq(b.p[b.len], '\0');
    sp__buf_free(&b);
    rewind(f);
    ck_assert_int_eq(ftruncate(fileno(f), 0), 0);
    ck_assert_int_eq(sp__buf_read(&b, f), 0); /* an empty stream: "" */
    ck_assert_ptr_nonnull(b.p);
    ck_assert_uint_eq(b.len, 0);
    sp__buf_free(&b);
    fclose(f);
    /* a read error is -1 with what was read kept */
    FILE *w = fopen("/dev/null", "w");
    ck_assert_int_eq(sp__buf_read(&b, w), -1);
    ck_assert(ferror(w));
    fclose(w);
    sp__buf_free(&b);
    free(data);
}
END_TEST

/* sp__big_alloc: large blocks aligned to 2 MiB (whole huge pages: THP can back them), small
 * ones to 64, every byte writable (ASan checks the extent), freed by free(). */
START_TEST(big_alloc_aligns_to_huge_pages) {
    static const size_t sizes[] = {
        1, 63, 64, 4096, ((size_t)2 << 20) - 1, (size_t)2 << 20, ((size_t)5 << 20) + 3};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *p = sp__big_alloc(sizes[i]);
        ck_assert_ptr_nonnull(p);
        size_t align = sizes[i] >= ((size_t)2 << 20) ? (size_t)2 << 20 : 64;
        ck_assert_msg((uintptr_t)p % align == 0, "%zu bytes at %p", sizes[i], (void *)p);
        memset(p, 0xab, sizes[i]);
        ck_assert(p[sizes[i] - 1] == 0xab);
        free(p);
    }
}
END_TEST

int main(void) {
    Suite *s = suite_create("vec");
    TCase *tc = tcase_create("vec");
    tcase_add_test(tc, cap_doubles_from_the_minimum);
    tcase_add_test(tc, push_keeps_every_element);
    tcase_add_test(tc, failed_growth_changes_nothing);
    tcase_add_test(tc, buf_is_always_a_c_string);
    tcase_add_test(tc, buf_reads_a_whole_stream);
    tcase_add_test(tc, big_alloc_aligns_to_huge_pages);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
