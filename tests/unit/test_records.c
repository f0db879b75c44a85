/* JSONL / CSV / TSV record readers: accepted inputs (quoting, CRLF, blank lines, numbers) and
 * every refusal, each asserting that the message names file:line and the field at fault. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "softprompt/records.h"
#include "testutil.h"

/* Appends s to the growable string *out. */
static void append(char **out, size_t *len, const char *s) {
    size_t n = strlen(s);
    *out = realloc(*out, *len + n + 1);
    memcpy(*out + *len, s, n + 1);
    *len += n;
}

/* Reads every record of file name (written with content) and renders them as
 * "line|name=value|name=value\n"...; non-text JSON values render as name=<kind>. */
static char *render(const char *name, const char *content, size_t len, sp_records_format fmt) {
    char *path = tu_path(tu_dir, name);
    tu_write_file(path, content, len);
    sp_error err = {0};
    sp_records *r = sp_records_open(path, fmt, &err);
    ck_assert_msg(r != NULL, "open: %s", err.msg);
    char *out = NULL;
    size_t out_len = 0;
    append(&out, &out_len, "");
    sp_record rec;
    int rc;
    while ((rc = sp_records_next(r, &rec, &err)) == 1) {
        char buf[64];
        snprintf(buf, sizeof buf, "%lld", (long long)rec.line);
        append(&out, &out_len, buf);
        for (int i = 0; i < rec.n_fields; i++) {
            append(&out, &out_len, "|");
            append(&out, &out_len, rec.names[i]);
            append(&out, &out_len, "=");
            if (rec.values[i])
                append(&out, &out_len, rec.values[i]);
            else
                append(&out, &out_len, "<"), append(&out, &out_len, rec.kinds[i]),
                    append(&out, &out_len, ">");
        }
        append(&out, &out_len, "\n");
    }
    ck_assert_msg(rc == 0, "next: %s", err.msg);
    sp_records_close(r);
    free(path);
    return out;
}

#define CHECK_RENDER(name, content, fmt, expected)                                                 \
    do {                                                                                           \
        char *got_ = render(name, content, sizeof(content) - 1, fmt);                              \
        ck_assert_str_eq(got_, expected);                                                          \
        free(got_);                                                                                \
    } while (0)

/* Opens and reads file name until an error; asserts there is one and that its message
 * contains every expected fragment (NULL-terminated). */
static void expect_error_v(const char *name, const char *content, size_t len, sp_records_format fmt,
                           const char *const *want) {
    char *path = tu_path(tu_dir, name);
    tu_write_file(path, content, len);
    sp_error err = {0};
    sp_records *r = sp_records_open(path, fmt, &err);
    int rc = -1;
    if (r) {
        sp_record rec;
        while ((rc = sp_records_next(r, &rec, &err)) == 1) continue;
        sp_records_close(r);
    }
    ck_assert_msg(rc == -1, "%s: expected an error", name);
    for (int i = 0; want[i]; i++)
        ck_assert_msg(strstr(err.msg, want[i]) != NULL, "message \"%s\" lacks \"%s\"", err.msg,
                      want[i]);
    free(path);
}

/* A file that must be refused, and fragments of the message (format auto-detected). */
typedef struct bad_file {
    const char *name, *content;
    size_t len;
    const char *want[5];
} bad_file;
/* ROW(name, content, want...): content is a string literal (it may hold NUL bytes). */
#define ROW(name, content, ...)                                                                    \
    {                                                                                              \
        name, content, sizeof(content) - 1, {                                                      \
            __VA_ARGS__                                                                            \
        }                                                                                          \
    }

static void expect_errors(const bad_file *rows, size_t n) {
    for (size_t i = 0; i < n; i++)
        expect_error_v(rows[i].name, rows[i].content, rows[i].len, SP_RECORDS_AUTO, rows[i].want);
}
#define EXPECT_ERRORS(rows) expect_errors(rows, sizeof rows / sizeof *rows)

/* ------------------------------------------------------------------------------------------ */

START_TEST(jsonl_values_and_blank_lines) {
    const char in[] = "\xEF\xBB\xBF{\"text\": \"good film\", \"label\": 1}\n"
                      "\n"
                      "   \r\n"
                      "{\"text\": \"caf\\u00e9 \xE2\x82\xAC\", \"label\": 0.5, \"ok\": true}\r\n"
                      "{\"label\": -3, \"text\": \"x\", \"n\": null, \"a\": [1], \"o\": {}}\n"
                      "{\"f\": false, \"big\": 1e300, \"tenth\": 0.1, \"one\": 1.0}";
    CHECK_RENDER("a.jsonl", in, SP_RECORDS_AUTO,
                 "1|text=good film|label=1\n"
                 "4|text=caf\xC3\xA9 \xE2\x82\xAC|label=0.5|ok=true\n"
                 "5|label=-3|text=x|n=<null>|a=<an array>|o=<an object>\n"
                 "6|f=false|big=1e+300|tenth=0.1|one=1\n");
}
END_TEST

START_TEST(csv_quoting_crlf_and_newlines) {
    const char in[] = "text,label,note\r\n"
                      "\"Hello, world\",1,plain\r\n"
                      "\"She said \"\"hi\"\"\",0,\"\"\r\n"
                      "\"two\nlines\r\nhere\",1,x\r\n"
                      "\r\n"
                      "5\" screen,0,\n"
                      "last,1,\"q\"";
    CHECK_RENDER("b.csv", in, SP_RECORDS_AUTO,
                 "2|text=Hello, world|label=1|note=plain\n"
                 "3|text=She said \"hi\"|label=0|note=\n"
                 "4|text=two\nlines\r\nhere|label=1|note=x\n"
                 "8|text=5\" screen|label=0|note=\n"
                 "9|text=last|label=1|note=q\n");
}
END_TEST

START_TEST(csv_lf_single_column) {
    const char in[] = "text\nabc\n\"\"\n\ndef\n";
    /* A quoted empty value is a record; an empty line is not. */
    CHECK_RENDER("c.csv", in, SP_RECORDS_CSV, "2|text=abc\n3|text=\n5|text=def\n");
}
END_TEST

START_TEST(tsv_no_quoting) {
    const char in[] = "label\ttext\r\n1\t\"quoted\" stays\r\n\r\n0\ta,b\n2\t";
    CHECK_RENDER("d.tsv", in, SP_RECORDS_AUTO,
                 "2|label=1|text=\"quoted\" stays\n4|label=0|text=a,b\n5|label=2|text=\n");
}
END_TEST

START_TEST(explicit_format_and_header) {
    const char in[] = "a,b\n1,2\n";
    CHECK_RENDER("data.txt", in, SP_RECORDS_CSV, "2|a=1|b=2\n");
    char *path = tu_path(tu_dir, "data.txt");
    sp_error err = {0};
    ck_assert_ptr_null(sp_records_open(path, SP_RECORDS_AUTO, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "data.txt: cannot tell the record format"));
    sp_records *r = sp_records_open(path, SP_RECORDS_CSV, &err);
    int n;
    const char *const *h = sp_records_header(r, &n);
    ck_assert_int_eq(n, 2);
    ck_assert_str_eq(h[1], "b");
    sp_records_close(r);
    free(path);
    sp_records_format f;
    ck_assert_int_eq(sp_records_format_parse("TSV", &f, &err), 0);
    ck_assert_int_eq(f, SP_RECORDS_TSV);
    ck_assert_int_eq(sp_records_format_parse("json", &f, &err), 0);
    ck_assert_int_eq(f, SP_RECORDS_JSONL);
    ck_assert_int_eq(sp_records_format_parse("xml", &f, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "\"xml\""));
    ck_assert_str_eq(sp_records_format_name(SP_RECORDS_CSV), "csv");
}
END_TEST

START_TEST(get_and_require) {
    char *path = tu_path(tu_dir, "g.jsonl");
    const char in[] = "\n{\"text\": \"t\", \"label\": null}\n";
    tu_write_file(path, in, sizeof in - 1);
    sp_error err = {0};
    sp_records *r = sp_records_open(path, SP_RECORDS_AUTO, &err);
    sp_record rec;
    ck_assert_int_eq(sp_records_next(r, &rec, &err), 1);
    ck_assert_str_eq(sp_record_get(&rec, "text"), "t");
    ck_assert_ptr_null(sp_record_get(&rec, "label"));
    ck_assert_ptr_null(sp_record_get(&rec, "nope"));
    const char *v = NULL;
    ck_assert_int_eq(sp_record_require(&rec, "text", &v, &err), 0);
    ck_assert_str_eq(v, "t");
    ck_assert_int_eq(sp_record_require(&rec, "label", &v, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "g.jsonl:2: field \"label\" is null, expected text"));
    ck_assert_int_eq(sp_record_require(&rec, "sentence", &v, &err), -1);
    ck_assert_ptr_nonnull(
        strstr(err.msg, "g.jsonl:2: no field \"sentence\" (the record has fields \"text\", "
                        "\"label\")"));
    ck_assert_int_eq(sp_records_next(r, &rec, &err), 0);
    sp_records_close(r);
    free(path);
}
END_TEST

START_TEST(utf8_validator) {
    size_t bad = 99;
    ck_assert_int_eq(sp_utf8_check("a\xC3\xA9\xE2\x82\xAC\xF0\x9F\x98\x80", 10, &bad), 1);
    ck_assert_int_eq(sp_utf8_check("ab\xC0\xAF", 4, &bad), 0); /* overlong '/' */
    ck_assert_uint_eq(bad, 2);
    ck_assert_int_eq(sp_utf8_check("\xED\xA0\x80", 3, &bad), 0); /* surrogate U+D800 */
    ck_assert_uint_eq(bad, 0);
    ck_assert_int_eq(sp_utf8_check("x\xF4\x90\x80\x80", 5, &bad), 0); /* > U+10FFFF */
    ck_assert_uint_eq(bad, 1);
    ck_assert_int_eq(sp_utf8_check("xy\xE2\x82", 4, &bad), 0); /* truncated */
    ck_assert_uint_eq(bad, 2);
    ck_assert_int_eq(sp_utf8_check("a\0b", 3, &bad), 0); /* NUL */
    ck_assert_uint_eq(bad, 1);
    ck_assert_int_eq(sp_utf8_check("\x80", 1, &bad), 0); /* lone continuation */
}
END_TEST

/* ------------------------------------------------------------------------------------------ */

START_TEST(missing_file) {
    char *path = tu_path(tu_dir, "nope.jsonl");
    sp_error err = {0};
    ck_assert_ptr_null(sp_records_open(path, SP_RECORDS_AUTO, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "nope.jsonl: cannot open: No such file"));
    free(path);
}
END_TEST

static const bad_file JSONL_ERRORS[] = {
    ROW("m.jsonl", "{\"text\": \"a\"}\n\n{\"text\": \"b\",}\n",
        "m.jsonl:3: invalid JSON at column"),
    ROW("arr.jsonl", "{\"text\": \"a\"}\n[1, 2]\n",
        "arr.jsonl:2: expected a JSON object per line, got an array"),
    ROW("whole.json", "[{\"text\": \"a\"},\n{\"text\": \"b\"}]\n", "whole.json:1: invalid JSON",
        "write one object per line"),
    ROW("one.json", " [{\"text\": \"a\"}, {\"text\": \"b\"}]\n",
        "one.json:1: expected a JSON object per line, got an array", "write one object per line"),
    ROW("s.jsonl", "\"just a string\"\n",
        "s.jsonl:1: expected a JSON object per line, got a string"),
    ROW("dup.jsonl", "{\"text\": \"a\", \"text\": \"b\"}\n", "dup.jsonl:1: invalid JSON",
        "duplicate"),
    ROW("u.jsonl", "{\"a\": 1}\n{\"label\": 1, \"text\": \"ab\xFF\"}\n",
        "u.jsonl:2: field \"text\": invalid UTF-8 (byte 0xFF) at byte offset 24"),
    ROW("k.jsonl", "{\"te\xC3xt\": 1}\n",
        "k.jsonl:1: a key: invalid UTF-8 (byte 0xC3) at byte offset 4"),
    ROW("nul.jsonl", "{\"text\": \"a\\u0000b\"}\n", "nul.jsonl:1: invalid JSON"),
};

START_TEST(jsonl_errors) {
    EXPECT_ERRORS(JSONL_ERRORS);
}
END_TEST

static const bad_file CSV_ERRORS[] = {
    ROW("q.csv", "text,label\nok,1\n\"never closed,1\nmore,0\n",
        "q.csv:3: field \"text\": unterminated quoted field"),
    ROW("q2.csv", "text,label\nok,\"1\n", "q2.csv:2: field \"label\": unterminated quoted field"),
    ROW("n.csv", "text,label\na,1\n\"b\nc\",1\nd,1,extra\n",
        "n.csv:5: expected 2 fields (as in the header), got 3"),
    ROW("few.csv", "text,label\r\nonly\r\n",
        "few.csv:2: expected 2 fields (as in the header), got 1"),
    ROW("u.csv", "text,label\nfine,1\n\"a\nb\xE2\x28\xA1\",0\n",
        "u.csv:3: field \"text\": invalid UTF-8 (byte 0xE2) at byte offset 3 of the "
        "field"),
    ROW("dup.csv", "text,label,text\n",
        "dup.csv:1: duplicate header name \"text\" (columns 1 and 3)"),
    ROW("after.csv", "text,label\n\"ab\"c,1\n",
        "after.csv:2: field \"text\": unexpected character 'c' after the closing quote"),
    ROW("empty.csv", "", "empty.csv: no header row"),
    ROW("hdr.csv", "te\xFFxt,label\n",
        "hdr.csv:1: header column 1: invalid UTF-8 (byte 0xFF) at byte offset 2"),
    ROW("nul.csv", "text,label\nab\0c,1\n",
        "nul.csv:2: field \"text\": NUL byte (byte 0x00) at byte offset 2"),
};

START_TEST(csv_errors) {
    EXPECT_ERRORS(CSV_ERRORS);
}
END_TEST

static const bad_file TSV_ERRORS[] = {
    ROW("n.tsv", "text\tlabel\na\t1\nb\t1\tx\n",
        "n.tsv:3: expected 2 fields (as in the header), got 3"),
    ROW("u.tsv", "text\tlabel\n\xC0\xAF\t1\n",
        "u.tsv:2: field \"text\": invalid UTF-8 (byte 0xC0) at byte offset 0"),
    ROW("d.tsv", "a\tb\ta\n", "d.tsv:1: duplicate header name \"a\" (columns 1 and 3)"),
};

START_TEST(tsv_errors) {
    EXPECT_ERRORS(TSV_ERRORS);
}
END_TEST

/* A UTF-8 byte order mark is skipped in every format (Python's "utf-8-sig"): the first header
 * name is "text", not "\xEF\xBB\xBFtext". */
START_TEST(utf8_bom_is_skipped_in_every_format) {
    CHECK_RENDER("bom.csv", "\xEF\xBB\xBFtext,label\nhi,1\n", SP_RECORDS_AUTO,
                 "2|text=hi|label=1\n");
    CHECK_RENDER("bom.tsv", "\xEF\xBB\xBFtext\tlabel\nhi\t1\n", SP_RECORDS_AUTO,
                 "2|text=hi|label=1\n");
    CHECK_RENDER("bom.jsonl", "\xEF\xBB\xBF{\"text\": \"hi\"}\n", SP_RECORDS_AUTO, "1|text=hi\n");
}
END_TEST

/* UTF-16 and UTF-32 files (what Windows tools often save) are named as such, with the
 * conversion to make, instead of an "invalid UTF-8" or "NUL byte" error on the first field. */
static const bad_file UTF16_AND_UTF32_ARE_NAMED[] = {
    ROW("le.csv", "\xFF\xFEt\0e\0x\0t\0\n\0",
        "le.csv: UTF-16 with BOM (the file starts with bytes FF FE): convert to UTF-8",
        "iconv -f UTF-16 -t UTF-8 ", "le.csv > ", "le-utf8.csv"),
    ROW("be.jsonl", "\xFE\xFF\0{\0}\0\n",
        "be.jsonl: UTF-16 with BOM (the file starts with bytes FE FF)"),
    ROW("le.tsv", "\xFF\xFE\0\0t\0\0\0",
        "le.tsv: UTF-32 with BOM (the file starts with bytes FF FE 00 00)",
        "iconv -f UTF-32 -t UTF-8"),
    ROW("be.csv", "\0\0\xFE\xFF\0\0\0t",
        "be.csv: UTF-32 with BOM (the file starts with bytes 00 00 FE FF)"),
    /* Without a BOM the first NUL byte says what it probably means. */
    ROW("nobom.csv", "t\0e\0x\0t\0\n\0",
        "nobom.csv:1: header column 1: NUL byte (byte 0x00) at byte offset 1",
        "usually UTF-16 or UTF-32 without a byte order mark: convert it to UTF-8"),
};

START_TEST(utf16_and_utf32_are_named) {
    EXPECT_ERRORS(UTF16_AND_UTF32_ARE_NAMED);
}
END_TEST

/* CPU seconds to open a CSV file whose header has n distinct column names. */
static double header_seconds(int n) {
    char *path = tu_path(tu_dir, "wide.csv");
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    for (int i = 0; i < n; i++) fprintf(f, "%scolumn_%d", i ? "," : "", i);
    fputc('\n', f);
    fclose(f);
    struct timespec a, b;
    sp_error err = {0};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &a);
    sp_records *r = sp_records_open(path, SP_RECORDS_CSV, &err);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &b);
    ck_assert_msg(r != NULL, "%s", err.msg);
    int got = 0;
    sp_records_header(r, &got);
    ck_assert_int_eq(got, n);
    sp_records_close(r);
    free(path);
    return (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
}

/* The header's duplicate check is linear: 10x the columns costs about 10x the time (it
 * compared every pair, so 200,000 columns took minutes). The bound is generous (40x, the
 * quadratic check would be 100x) and both sizes are measured in this run. */
START_TEST(wide_header_is_linear) {
    double small = 1e9;
    for (int k = 0; k < 3; k++) {
        double t = header_seconds(20000);
        if (t < small) small = t;
    }
    double big = header_seconds(200000);
    ck_assert_msg(big < 40 * small + 0.05,
                  "200,000 columns took %.3f s, 20,000 took %.4f s (ratio %.0f)", big, small,
                  big / small);
}
END_TEST

/* A line (JSONL) or record (CSV) over the limit is refused before it is buffered whole. */
START_TEST(size_limits) {
    size_t n = SP_RECORDS_MAX_BYTES + 1024;
    char *big = malloc(n + 64);
    int len = snprintf(big, 64, "{\"a\": 1}\n{\"text\": \"");
    memset(big + len, 'x', n - (size_t)len - 3);
    memcpy(big + n - 3, "\"}\n", 3);
    const char *const want[] = {"big.jsonl:2: line longer than 16 MiB", NULL};
    expect_error_v("big.jsonl", big, n, SP_RECORDS_AUTO, want);
    len = snprintf(big, 64, "text,label\nok,1\n\"");
    memset(big + len, 'y', n - (size_t)len);
    const char *const want_csv[] = {"big.csv:3: record longer than 16 MiB",
                                    "quoted field that began on line 3", NULL};
    expect_error_v("big.csv", big, n, SP_RECORDS_AUTO, want_csv);
    free(big);
}
END_TEST

int main(void) {
    const TTest *tests[] = {jsonl_values_and_blank_lines,
                            csv_quoting_crlf_and_newlines,
                            csv_lf_single_column,
                            tsv_no_quoting,
                            explicit_format_and_header,
                            get_and_require,
                            utf8_validator,
                            missing_file,
                            jsonl_errors,
                            csv_errors,
                            tsv_errors,
                            size_limits,
                            utf8_bom_is_skipped_in_every_format,
                            utf16_and_utf32_are_named,
                            wide_header_is_linear,
                            NULL};
    return tu_main("records", tests, NULL, NULL);
}
