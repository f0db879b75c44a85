/* safetensors: write/read round trip, atomic writing, and one test per malformed file, each
 * built byte by byte so the reader's validation (not the writer) is what is exercised. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "softprompt/rng.h"
#include "softprompt/safetensors.h"
#include "testutil.h"

static char *path; /* tu_dir/x.safetensors */

static void setup(void) {
    path = tu_path(tu_dir, "x.safetensors");
}

static void teardown(void) {
    free(path);
}

/* File = u64 LE hdr_len, header text, then data_len zero bytes. */
static void write_raw(uint64_t hdr_len, const char *header, size_t data_len) {
    size_t n = strlen(header);
    unsigned char *buf = calloc(1, 8 + n + data_len);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(hdr_len >> (8 * i));
    memcpy(buf + 8, header, n);
    tu_write_file(path, buf, 8 + n + data_len);
    free(buf);
}

static void write_header(const char *header, size_t data_len) {
    write_raw(strlen(header), header, data_len);
}

/* sp_st_open must fail, leave f empty, and name the file and each expected fragment. */
static void expect_open_error(const char *frag1, const char *frag2) {
    sp_st_file f;
    sp_error err = {0};
    ck_assert_int_eq(sp_st_open(&f, path, &err), -1);
    ck_assert_ptr_null(f.map);
    ck_assert_int_eq(f.n_tensors, 0);
    ck_assert_msg(strncmp(err.msg, path, strlen(path)) == 0, "message lacks the path: %s", err.msg);
    ck_assert_msg(strstr(err.msg, frag1), "expected '%s' in: %s", frag1, err.msg);
    if (frag2) ck_assert_msg(strstr(err.msg, frag2), "expected '%s' in: %s", frag2, err.msg);
}

/* ---- round trip ------------------------------------------------------------------------- */

START_TEST(round_trip_dtypes_metadata_alignment) {
    float a[6] = {1, -2, 3.5f, 0, 1e-3f, 7};
    uint16_t h[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x8000}; /* 10 bytes: odd element count */
    uint16_t bf[1] = {0x3f80};
    int64_t q[2] = {-5, INT64_MAX};
    uint8_t u[3] = {1, 2, 255};
    double s = 3.25;
    sp_st_out t[] = {
        {"a", SP_DTYPE_F32, 2, {2, 3}, a},
        {"h", SP_DTYPE_F16, 1, {5}, h},
        {"bf", SP_DTYPE_BF16, 1, {1}, bf},
        {"q", SP_DTYPE_I64, 1, {2}, q},
        {"u", SP_DTYPE_U8, 1, {3}, u},
        {"scalar", SP_DTYPE_F64, 0, {0}, &s},
        {"empty", SP_DTYPE_F32, 2, {0, 4}, NULL},
    };
    const void *want[] = {a, h, bf, q, u, &s, NULL};
    const char *meta[] = {"format", "pt", "note", "round trip"};
    sp_error err;
    ck_assert_msg(sp_st_write(path, t, 7, meta, 2, &err) == 0, "%s", err.msg);

    size_t len;
    unsigned char *raw = (unsigned char *)tu_read_file(path, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | raw[i];
    ck_assert_uint_eq(n % 8, 0); /* data buffer starts 8-aligned */
    ck_assert_uint_eq(raw[8], '{');
    ck_assert_uint_eq(len, 8 + n + 24 + 10 + 2 + 16 + 3 + 8); /* packed back to back */
    free(raw);

    sp_st_file f;
    ck_assert_msg(sp_st_open(&f, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(f.n_tensors, 7);
    ck_assert_ptr_eq(f.tensors[0].data, (char *)f.map + 8 + n);
    for (int i = 0; i < 7; i++) {
        const sp_st_tensor *r = &f.tensors[i];
        ck_assert_str_eq(r->name, t[i].name); /* order kept */
        ck_assert_ptr_eq(sp_st_find(&f, t[i].name), r);
        ck_assert_int_eq(r->dtype, t[i].dtype);
        ck_assert_int_eq(r->ndim, t[i].ndim);
        for (int d = 0; d < r->ndim; d++) ck_assert_int_eq(r->shape[d], t[i].shape[d]);
        if (want[i]) ck_assert(memcmp(r->data, want[i], r->nbytes) == 0);
    }
    ck_assert_int_eq(f.tensors[5].numel, 1);
    ck_assert_uint_eq(f.tensors[6].nbytes, 0);
    ck_assert_uint_eq(f.tensors[1].nbytes, 10);
    ck_assert_ptr_null(sp_st_find(&f, "missing"));
    ck_assert_int_eq(f.n_meta, 2);
    ck_assert_str_eq(sp_st_metadata(&f, "format"), "pt");
    ck_assert_str_eq(sp_st_metadata(&f, "note"), "round trip");
    ck_assert_ptr_null(sp_st_metadata(&f, "other"));
    sp_st_close(&f);
    ck_assert_ptr_null(f.map);
}
END_TEST

START_TEST(hand_written_file_with_padding_reads) {
    /* Spaces after the JSON are allowed; a zero-size tensor may share an offset. */
    write_header("{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                 "\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                 "\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]}}     ",
                 12);
    sp_st_file f;
    sp_error err;
    ck_assert_msg(sp_st_open(&f, path, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(f.n_tensors, 3);
    ck_assert_int_eq(f.n_meta, 0);
    const sp_st_tensor *b = sp_st_find(&f, "b");
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq((const char *)b->data - (const char *)sp_st_find(&f, "a")->data, 4);
    sp_st_close(&f);
}
END_TEST

START_TEST(failed_write_leaves_target_untouched) {
    float a[2] = {1, 2};
    sp_st_out t[2] = {{"a", SP_DTYPE_F32, 1, {2}, a}, {"a", SP_DTYPE_F32, 1, {2}, a}};
    sp_error err;
    ck_assert_int_eq(sp_st_write(path, t, 1, NULL, 0, &err), 0);
    size_t len0;
    char *before = tu_read_file(path, &len0);

    /* Duplicate names: rejected before anything is written. */
    ck_assert_int_eq(sp_st_write(path, t, 2, NULL, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "'a' is listed twice"), "%s", err.msg);

    /* Streaming writer fed the wrong size: the temporary file is removed. */
    sp_st_writer *w = sp_st_writer_open(path, t, 1, NULL, 0, &err);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(tu_count_entries(tu_dir, ".tmp."), 1);
    ck_assert_int_eq(sp_st_writer_put(w, a, 4, &err), -1);
    ck_assert_msg(strstr(err.msg, "tensor 'a': got 4 bytes") && strstr(err.msg, "need 8"), "%s",
                  err.msg);

    /* Committed before all tensors were put. */
    w = sp_st_writer_open(path, t, 1, NULL, 0, &err);
    ck_assert_int_eq(sp_st_writer_commit(w, &err), -1);
    ck_assert_msg(strstr(err.msg, "only 0 of 1 tensors"), "%s", err.msg);

    /* Negative dimension. */
    sp_st_out neg = {"n", SP_DTYPE_F32, 1, {-1}, a};
    ck_assert_int_eq(sp_st_write(path, &neg, 1, NULL, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, "tensor 'n': negative dimension"), "%s", err.msg);

    size_t len1;
    char *after = tu_read_file(path, &len1);
    ck_assert_uint_eq(len0, len1);
    ck_assert(memcmp(before, after, len0) == 0);
    ck_assert_int_eq(tu_count_entries(tu_dir, ".tmp."), 0);
    free(before), free(after);
}
END_TEST

START_TEST(write_into_missing_directory_fails) {
    char *bad = tu_path(tu_dir, "no/such/dir/x.safetensors");
    float a = 1;
    sp_st_out t = {"a", SP_DTYPE_F32, 1, {1}, &a};
    sp_error err;
    ck_assert_int_eq(sp_st_write(bad, &t, 1, NULL, 0, &err), -1);
    ck_assert_msg(strstr(err.msg, bad) && strstr(err.msg, "temporary"), "%s", err.msg);
    free(bad);
}
END_TEST

/* ---- malformed files -------------------------------------------------------------------- */

START_TEST(missing_file) {
    expect_open_error("cannot open", "No such file");
}
END_TEST

START_TEST(shorter_than_8_bytes) {
    tu_write_file(path, "\x10\0\0\0\0", 5);
    expect_open_error("truncated", "5 bytes");
}
END_TEST

START_TEST(header_length_past_end) {
    write_raw(1000, "{}", 0);
    expect_open_error("header length 1000 runs past the end", NULL);
}
END_TEST

START_TEST(header_too_large) {
    write_raw((uint64_t)SP_ST_MAX_HEADER_BYTES + 1, "{}", 0);
    expect_open_error("exceeds the limit", NULL);
}
END_TEST

START_TEST(header_invalid_json) {
    write_header("{\"a\": {\"dtype\": ", 0);
    expect_open_error("header is not valid JSON", NULL);
}
END_TEST

START_TEST(header_not_object) {
    write_header("[1, 2]", 0);
    expect_open_error("header is a JSON array, expected an object", NULL);
}
END_TEST

START_TEST(duplicate_tensor_name) {
    write_header("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                 "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                 2);
    expect_open_error("not valid JSON", "duplicate");
}
END_TEST

START_TEST(entry_not_object) {
    write_header("{\"w\": 3}", 0);
    expect_open_error("tensor 'w': entry is a JSON integer", NULL);
}
END_TEST

START_TEST(entry_missing_dtype) {
    write_header("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_error("tensor 'w': missing \"dtype\"", NULL);
}
END_TEST

START_TEST(entry_missing_shape) {
    write_header("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4);
    expect_open_error("tensor 'w': missing \"shape\"", NULL);
}
END_TEST

START_TEST(entry_missing_data_offsets) {
    write_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4);
    expect_open_error("tensor 'w': missing \"data_offsets\"", NULL);
}
END_TEST

START_TEST(unknown_dtype) {
    write_header("{\"w\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_error("tensor 'w': unknown dtype \"Q4\"", "F32");
}
END_TEST

START_TEST(dtype_not_string) {
    write_header("{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4);
    expect_open_error("tensor 'w': \"dtype\" is a JSON integer", NULL);
}
END_TEST

START_TEST(negative_shape) {
    write_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,4]}}", 4);
    expect_open_error("tensor 'w': \"shape\"[1] is -1, expected a non-negative integer", NULL);
}
END_TEST

START_TEST(shape_not_integers) {
    write_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4);
    expect_open_error("tensor 'w': \"shape\"[0] is a JSON real number", NULL);
}
END_TEST

START_TEST(too_many_dims) {
    write_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
                 "\"data_offsets\":[0,1]}}",
                 1);
    expect_open_error("tensor 'w': \"shape\" has 9 dimensions, at most 8", NULL);
}
END_TEST

START_TEST(numel_overflow) {
    write_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],"
                 "\"data_offsets\":[0,4]}}",
                 4);
    expect_open_error("tensor 'w': shape [4611686018427387904, 4] has too many elements", NULL);
}
END_TEST

START_TEST(bytes_overflow) {
    write_header("{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
                 "\"data_offsets\":[0,4]}}",
                 4);
    expect_open_error("tensor 'w': shape [4611686018427387904] is too large for dtype F64", NULL);
}
END_TEST

START_TEST(offsets_out_of_range) {
    write_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[16],\"data_offsets\":[0,64]}}", 16);
    expect_open_error("tensor 'w': data_offsets [0, 64] run past the end of the data buffer",
                      "16 bytes");
}
END_TEST

START_TEST(offsets_begin_after_end) {
    write_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[8,4]}}", 16);
    expect_open_error("tensor 'w': data_offsets [8, 4] begin after they end", NULL);
}
END_TEST

START_TEST(offsets_wrong_arity) {
    write_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4,8]}}", 16);
    expect_open_error("tensor 'w': \"data_offsets\" has 3 elements", NULL);
}
END_TEST

START_TEST(offsets_negative) {
    write_header("{\"w\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[-4,0]}}", 16);
    expect_open_error("tensor 'w': \"data_offsets\"[0] is -4", NULL);
}
END_TEST

START_TEST(overlapping_ranges) {
    write_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                 "\"c\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[24,32]},"
                 "\"b\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}",
                 32);
    expect_open_error("tensor 'b': data_offsets [8, 24] overlap those of tensor 'a' [0, 16]", NULL);
}
END_TEST

START_TEST(size_not_shape_times_dtype) {
    write_header("{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", 16);
    expect_open_error("tensor 'w': data_offsets [0, 16] span 16 bytes",
                      "shape [3] of F32 needs 12");
}
END_TEST

START_TEST(metadata_not_strings) {
    write_header("{\"__metadata__\":{\"format\":1}}", 0);
    expect_open_error("\"__metadata__\" key 'format' is a JSON integer, expected a string", NULL);
}
END_TEST

START_TEST(not_a_regular_file) {
    free(path);
    path = strdup(tu_dir);
    expect_open_error("not a regular file", NULL);
}
END_TEST

/* ---- robustness ------------------------------------------------------------------------- */

/* A small valid file; returns its bytes and the header length. */
static unsigned char *valid_file(size_t *len, uint64_t *hdr_len) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t h[3] = {1, 2, 3};
    sp_st_out t[] = {{"alpha", SP_DTYPE_F32, 2, {2, 3}, a},
                     {"beta", SP_DTYPE_F16, 1, {3}, h},
                     {"gamma", SP_DTYPE_F32, 1, {2}, a}};
    const char *meta[] = {"format", "pt"};
    sp_error err;
    ck_assert_msg(sp_st_write(path, t, 3, meta, 1, &err) == 0, "%s", err.msg);
    unsigned char *raw = (unsigned char *)tu_read_file(path, len);
    *hdr_len = 0;
    for (int i = 7; i >= 0; i--) *hdr_len = (*hdr_len << 8) | raw[i];
    return raw;
}

/* Whatever the bytes, open either fails naming the file or yields tensors inside the mapping
 * that do not share bytes (ASan/UBSan builds also check every access). */
static void open_and_check(void) {
    sp_st_file f;
    sp_error err;
    if (sp_st_open(&f, path, &err) != 0) {
        ck_assert_msg(strncmp(err.msg, path, strlen(path)) == 0, "%s", err.msg);
        return;
    }
    const char *lo = f.map, *hi = lo + f.map_len;
    for (int i = 0; i < f.n_tensors; i++) {
        const char *b = f.tensors[i].data, *e = b + f.tensors[i].nbytes;
        ck_assert(b >= lo && e <= hi && b <= e);
        ck_assert_uint_eq(f.tensors[i].nbytes,
                          (size_t)f.tensors[i].numel * sp_dtype_size(f.tensors[i].dtype));
        for (int j = 0; j < i; j++) {
            const char *b2 = f.tensors[j].data, *e2 = b2 + f.tensors[j].nbytes;
            ck_assert(b == e || b2 == e2 || e <= b2 || e2 <= b);
        }
    }
    sp_st_close(&f);
}

START_TEST(every_truncation_fails) {
    size_t len;
    uint64_t n;
    unsigned char *raw = valid_file(&len, &n);
    for (size_t k = 0; k < len; k++) {
        tu_write_file(path, raw, k);
        sp_st_file f;
        sp_error err;
        ck_assert_msg(sp_st_open(&f, path, &err) == -1, "opened a file cut to %zu bytes", k);
        ck_assert_msg(strncmp(err.msg, path, strlen(path)) == 0, "%s", err.msg);
    }
    free(raw);
}
END_TEST

START_TEST(random_header_mutations_never_crash) {
    size_t len;
    uint64_t n;
    unsigned char *raw = valid_file(&len, &n);
    unsigned char *buf = malloc(len);
    static const char alphabet[] = "{}[]\",:0123456789-eE. FIU8\\u\x00\xff";
    sp_rng rng;
    sp_rng_seed(&rng, 12345);
    for (int it = 0; it < 3000; it++) {
        memcpy(buf, raw, len);
        int edits = 1 + (int)sp_rng_below(&rng, 3);
        for (int e = 0; e < edits; e++) {
            size_t pos = (size_t)sp_rng_below(&rng, 8 + n); /* prefix or header */
            buf[pos] = sp_rng_below(&rng, 2)
                           ? (unsigned char)sp_rng_below(&rng, 256)
                           : (unsigned char)alphabet[sp_rng_below(&rng, sizeof alphabet - 1)];
        }
        tu_write_file(path, buf, len);
        open_and_check();
    }
    free(buf), free(raw);
}
END_TEST

int main(void) {
    const TTest *tests[] = {round_trip_dtypes_metadata_alignment,
                            hand_written_file_with_padding_reads,
                            failed_write_leaves_target_untouched,
                            write_into_missing_directory_fails,
                            missing_file,
                            shorter_than_8_bytes,
                            header_length_past_end,
                            header_too_large,
                            header_invalid_json,
                            header_not_object,
                            duplicate_tensor_name,
                            entry_not_object,
                            entry_missing_dtype,
                            entry_missing_shape,
                            entry_missing_data_offsets,
                            unknown_dtype,
                            dtype_not_string,
                            negative_shape,
                            shape_not_integers,
                            too_many_dims,
                            numel_overflow,
                            bytes_overflow,
                            offsets_out_of_range,
                            offsets_begin_after_end,
                            offsets_wrong_arity,
                            offsets_negative,
                            overlapping_ranges,
                            size_not_shape_times_dtype,
                            metadata_not_strings,
                            not_a_regular_file,
                            every_truncation_fails,
                            random_header_mutations_never_crash,
                            NULL};
    return tu_main("safetensors", tests, setup, teardown);
}
