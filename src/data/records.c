/* Streaming JSONL / CSV / TSV record readers (see records.h for the accepted formats).
 *
 * The input goes through a small buffered byte reader so that lines and records can be bounded
 * (SP_RECORDS_MAX_BYTES) before they are buffered, and so that the byte order mark can be
 * peeked at. CSV and TSV share one state machine; TSV simply has no quoting. */
#include "softprompt/records.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "data/records_internal.h"
#include "util/escape.h"
#include "util/path.h"
#include "util/vec.h"

#define IO_BUF_BYTES 65536

struct sp_records {
    char *path;
    FILE *f;
    sp_records_format fmt;
    int io_errno; /* errno of a failed read, reported when the reader sees EOF */
    unsigned char io[IO_BUF_BYTES];
    size_t io_pos, io_len;
    int64_t line; /* 1-based line of the next byte to be read */

    int n_header;
    char **header; /* CSV/TSV field names */

    /* The current record. CSV/TSV: text holds the fields NUL-terminated back to back and
     * field_off their starts. JSONL: obj keeps keys and string values alive (see
     * records_internal.h). */
    sp__buf text;
    size_t *field_off;
    int64_t *field_line;
    int n_fields, cap_fields;
    sp__record_fields fields;
    json_t *obj;
};

/* ------------------------------------------------------------------------------------------ */
/* UTF-8                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Length of the well-formed sequence starting at s[0] (Unicode Table 3-7), or 0. */
static size_t utf8_seq_len(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    if (c >= 0x01 && c <= 0x7F) return 1;
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        n = 2;
    else if (c == 0xE0)
        n = 3, lo = 0xA0;
    else if (c == 0xED)
        n = 3, hi = 0x9F; /* excludes surrogates */
    else if (c >= 0xE1 && c <= 0xEF)
        n = 3;
    else if (c == 0xF0)
        n = 4, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        n = 4;
    else if (c == 0xF4)
        n = 4, hi = 0x8F; /* <= U+10FFFF */
    else
        return 0; /* NUL, continuation byte, C0/C1, F5..FF */
    if (avail < n || s[1] < lo || s[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    return n;
}

int sp_utf8_check(const char *s, size_t len, size_t *bad) {
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_seq_len(u + i, len - i);
        if (n == 0) {
            if (bad) *bad = i;
            return 0;
        }
        i += n;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Formats and buffered input                                                                 */
/* ------------------------------------------------------------------------------------------ */

int sp_records_format_parse(const char *name, sp_records_format *out, sp_error *err) {
    if (!strcasecmp(name, "jsonl") || !strcasecmp(name, "json") || !strcasecmp(name, "ndjson"))
        *out = SP_RECORDS_JSONL;
    else if (!strcasecmp(name, "csv"))
        *out = SP_RECORDS_CSV;
    else if (!strcasecmp(name, "tsv"))
        *out = SP_RECORDS_TSV;
    else
        return sp_fail(err, "unknown record format \"%s\" (expected jsonl, csv or tsv)", name);
    return 0;
}

const char *sp_records_format_name(sp_records_format fmt) {
    switch (fmt) {
    case SP_RECORDS_JSONL:
        return "jsonl";
    case SP_RECORDS_CSV:
        return "csv";
    case SP_RECORDS_TSV:
        return "tsv";
    case SP_RECORDS_AUTO:
        break;
    }
    return "auto";
}

static int format_from_path(const char *path, sp_records_format *out, sp_error *err) {
    const char *dot = sp__path_ext(path);
    sp_error ignored;
    if (dot && sp_records_format_parse(dot + 1, out, &ignored) == 0) return 0;
    return sp_fail(err,
                   "%s: cannot tell the record format from the file name (expected .jsonl, "
                   ".json, .csv or .tsv); give the format explicitly",
                   path);
}

/* Next byte of the input, or EOF (then io_errno says whether it was an error). */
static int next_byte(sp_records *r) {
    if (r->io_pos == r->io_len) {
        r->io_len = fread(r->io, 1, sizeof r->io, r->f);
        r->io_pos = 0;
        if (r->io_len == 0) {
            if (ferror(r->f) && !r->io_errno) r->io_errno = errno ? errno : EIO;
            return EOF;
        }
    }
    return r->io[r->io_pos++];
}

static int peek_byte(sp_records *r) {
    int c = next_byte(r);
    if (c != EOF) r->io_pos--;
    return c;
}

/* A UTF-8 byte order mark is skipped (as Python's "utf-8-sig" does); one of UTF-16 or UTF-32
 * is refused with the conversion to make, instead of an "invalid UTF-8" or "NUL byte" error on
 * the first field. */
static int check_bom(sp_records *r, sp_error *err) {
    peek_byte(r);
    const unsigned char *b = r->io;
    size_t n = r->io_len;
    if (n >= 3 && b[0] == 0xEF && b[1] == 0xBB && b[2] == 0xBF) {
        r->io_pos = 3;
        return 0;
    }
    const char *enc = NULL, *bom = NULL;
    if (n >= 4 && !memcmp(b, "\xFF\xFE\0\0", 4))
        enc = "UTF-32", bom = "FF FE 00 00";
    else if (n >= 4 && !memcmp(b, "\0\0\xFE\xFF", 4))
        enc = "UTF-32", bom = "00 00 FE FF";
    else if (n >= 2 && b[0] == 0xFF && b[1] == 0xFE)
        enc = "UTF-16", bom = "FF FE";
    else if (n >= 2 && b[0] == 0xFE && b[1] == 0xFF)
        enc = "UTF-16", bom = "FE FF";
    if (!enc) return 0;
    const char *dot = sp__path_ext(r->path);
    int stem = (int)(dot ? (size_t)(dot - r->path) : strlen(r->path));
    return sp_fail(err,
                   "%s: %s with BOM (the file starts with bytes %s): convert to UTF-8, e.g. "
                   "iconv -f %s -t UTF-8 %s > %.*s-utf8%s",
                   r->path, enc, bom, enc, r->path, stem, r->path, dot ? dot : "");
}

const char *sp__nul_hint(unsigned byte) {
    return byte ? ""
                : " (a text file holding NUL bytes is usually UTF-16 or UTF-32 without a byte "
                  "order mark: convert it to UTF-8)";
}

/* Returns 1 (and fills err) if a read failed; the reader then saw EOF. */
static int io_failed(sp_records *r, sp_error *err) {
    if (!r->io_errno) return 0;
    sp_fail(err, "%s:%lld: read error: %s", r->path, (long long)r->line, strerror(r->io_errno));
    return 1;
}

/* Makes room for need fields in the record arrays (CSV/TSV). */
static int grow_fields(sp_records *r, int need) {
    if (need <= r->cap_fields) return 0;
    if (sp__record_fields_reserve(&r->fields, need) != 0) return -1;
    size_t cap = (size_t)r->fields.cap;
    if (sp__vec_resize(&r->field_off, cap, sizeof *r->field_off) ||
        sp__vec_resize(&r->field_line, cap, sizeof *r->field_line))
        return -1;
    r->cap_fields = (int)cap;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* CSV and TSV                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Name of field i of the current row, for messages (the header itself has none yet). */
static const char *field_label(const sp_records *r, int i, char *buf, size_t cap) {
    if (!r->header)
        snprintf(buf, cap, "header column %d", i + 1);
    else if (i < r->n_header) {
        char name[256];
        snprintf(buf, cap, "field \"%s\"", sp__escape(r->header[i], name, sizeof name));
    } else
        snprintf(buf, cap, "field #%d", i + 1);
    return buf;
}

/* Terminates the field being built, checks its UTF-8 and starts the next one. */
static int end_field(sp_records *r, sp_error *err) {
    int i = r->n_fields;
    size_t start = r->field_off[i], len = r->text.len - start, bad;
    if (sp__buf_addc(&r->text, '\0') != 0) return sp_fail(err, "%s: out of memory", r->path);
    if (!sp_utf8_check(r->text.p + start, len, &bad)) {
        char label[300];
        const char *what = field_label(r, i, label, sizeof label);
        unsigned byte = (unsigned char)r->text.p[start + bad];
        return sp_fail(err, "%s:%lld: %s: %s (byte 0x%02X) at byte offset %zu of the field%s",
                       r->path, (long long)r->field_line[i], what,
                       byte ? "invalid UTF-8" : "NUL byte", byte, bad, sp__nul_hint(byte));
    }
    r->n_fields++;
    return 0;
}

static int begin_field(sp_records *r, sp_error *err) {
    if (grow_fields(r, r->n_fields + 1) != 0) return sp_fail(err, "%s: out of memory", r->path);
    r->field_off[r->n_fields] = r->text.len;
    r->field_line[r->n_fields] = r->line;
    return 0;
}

enum { ST_START, ST_UNQUOTED, ST_QUOTED, ST_AFTER_QUOTE };

/* Appends c to the field; refuses records over the size limit. */
static int push_limited(sp_records *r, int c, int64_t rec_line, int state, sp_error *err) {
    if (r->text.len >= SP_RECORDS_MAX_BYTES) {
        int f = r->n_fields;
        if (state == ST_QUOTED)
            return sp_fail(err,
                           "%s:%lld: record longer than %zu MiB; the quoted field that began "
                           "on line %lld is probably missing its closing quote",
                           r->path, (long long)rec_line, SP_RECORDS_MAX_BYTES >> 20,
                           (long long)r->field_line[f]);
        return sp_fail(err, "%s:%lld: record longer than %zu MiB", r->path, (long long)rec_line,
                       SP_RECORDS_MAX_BYTES >> 20);
    }
    if (sp__buf_addc(&r->text, (char)c) != 0) return sp_fail(err, "%s: out of memory", r->path);
    return 0;
}

/* Drops the CR of a CRLF ending from an unquoted field. */
static void strip_cr(sp_records *r) {
    size_t start = r->field_off[r->n_fields];
    if (r->text.len > start && r->text.p[r->text.len - 1] == '\r') r->text.len--;
}

/* Ends the current field at a delimiter, LF or EOF (c); sets *done at the end of the row. */
static int finish_field(sp_records *r, int c, int *state, int *done, sp_error *err) {
    const int delim = r->fmt == SP_RECORDS_TSV ? '\t' : ',';
    if (end_field(r, err) != 0) return -1;
    if (c == '\n') r->line++;
    if (c != delim)
        *done = 1;
    else if (begin_field(r, err) != 0)
        return -1;
    *state = ST_START;
    return 0;
}

static const char *row_field_label(const sp_records *r, char *buf, size_t cap) {
    return field_label(r, r->n_fields, buf, cap);
}

/* One step of the row state machine for byte c (EOF included). Sets *done at the end of the
 * row; returns -1 on error. */
static int row_step(sp_records *r, int c, int *state, int64_t rec_line, int *done, sp_error *err) {
    const int delim = r->fmt == SP_RECORDS_TSV ? '\t' : ',';
    char label[300];
    switch (*state) {
    case ST_START:
        if (r->fmt == SP_RECORDS_CSV && c == '"') {
            *state = ST_QUOTED;
            return 0;
        }
        *state = ST_UNQUOTED;
        /* fall through */
    case ST_UNQUOTED:
        if (c == EOF || c == '\n' || c == delim) {
            if (c != delim) strip_cr(r);
            return finish_field(r, c, state, done, err);
        }
        return push_limited(r, c, rec_line, *state, err);
    case ST_QUOTED:
        if (c == EOF)
            return sp_fail(err,
                           "%s:%lld: %s: unterminated quoted field (no closing '\"' before the "
                           "end of the file)",
                           r->path, (long long)r->field_line[r->n_fields],
                           row_field_label(r, label, sizeof label));
        if (c == '"') {
            *state = ST_AFTER_QUOTE;
            return 0;
        }
        if (c == '\n') r->line++;
        return push_limited(r, c, rec_line, *state, err);
    default: /* ST_AFTER_QUOTE */
        if (c == '"') {
            *state = ST_QUOTED;
            return push_limited(r, c, rec_line, ST_QUOTED, err);
        }
        if (c == EOF || c == '\n' || c == delim) return finish_field(r, c, state, done, err);
        if (c == '\r' && peek_byte(r) == '\n') return 0; /* CRLF after the closing quote */
        return sp_fail(err,
                       "%s:%lld: %s: unexpected character '%c' after the closing quote (a '\"' "
                       "inside a quoted field must be doubled)",
                       r->path, (long long)r->line, row_field_label(r, label, sizeof label),
                       c >= 0x20 && c < 0x7F ? c : '?');
    }
}

/* Reads one row into text/field_off; blank lines are skipped. Returns 1, 0 at EOF, -1. */
static int read_row(sp_records *r, sp_error *err) {
    for (;;) {
        r->text.len = 0;
        r->n_fields = 0;
        int c = peek_byte(r);
        if (c == EOF) return io_failed(r, err) ? -1 : 0;
        int64_t rec_line = r->line;
        int state = ST_START, done = 0, quoted_first = c == '"' && r->fmt == SP_RECORDS_CSV;
        if (begin_field(r, err) != 0) return -1;
        while (!done) {
            c = next_byte(r);
            if (c == EOF && io_failed(r, err)) return -1;
            if (row_step(r, c, &state, rec_line, &done, err) != 0) return -1;
        }
        /* A row that is one empty unquoted field is a blank line. */
        if (r->n_fields == 1 && r->text.len == 1 && !quoted_first) continue;
        return 1;
    }
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Column of the first header name equal to r->header[i] among columns [0, i), or -1; inserts i
 * into the open-addressing table slots[cap] (cap a power of two > n_header). Linear in the
 * number of columns overall, where comparing every pair was quadratic (200,000 columns took
 * minutes). */
static int header_seen(const sp_records *r, int i, int *slots, size_t cap) {
    size_t k = (size_t)fnv1a(r->header[i]) & (cap - 1);
    for (; slots[k] >= 0; k = (k + 1) & (cap - 1))
        if (!strcmp(r->header[slots[k]], r->header[i])) return slots[k];
    slots[k] = i;
    return -1;
}

static int read_header(sp_records *r, sp_error *err) {
    int rc = read_row(r, err);
    if (rc < 0) return -1;
    if (rc == 0) return sp_fail(err, "%s: no header row (the file is empty)", r->path);
    size_t cap = 16;
    while (cap < 2 * (size_t)r->n_fields) cap *= 2;
    int *slots = malloc(cap * sizeof *slots);
    r->header = calloc((size_t)r->n_fields, sizeof *r->header);
    if (!r->header || !slots) rc = sp_fail(err, "%s: out of memory", r->path);
    for (size_t k = 0; slots && k < cap; k++) slots[k] = -1;
    for (int i = 0; rc >= 0 && i < r->n_fields; i++) {
        if (!(r->header[i] = strdup(r->text.p + r->field_off[i]))) {
            rc = sp_fail(err, "%s: out of memory", r->path);
            break;
        }
        r->n_header = i + 1;
        int j = header_seen(r, i, slots, cap);
        char name[256];
        if (j >= 0)
            rc = sp_fail(err, "%s:%lld: duplicate header name \"%s\" (columns %d and %d)", r->path,
                         (long long)r->field_line[0], sp__escape(r->header[i], name, sizeof name),
                         j + 1, i + 1);
    }
    free(slots);
    return rc < 0 ? -1 : 0;
}

static int next_row_record(sp_records *r, sp_record *rec, sp_error *err) {
    int rc = read_row(r, err);
    if (rc <= 0) return rc;
    int64_t line = r->field_line[0];
    if (r->n_fields != r->n_header)
        return sp_fail(err, "%s:%lld: expected %d fields (as in the header), got %d", r->path,
                       (long long)line, r->n_header, r->n_fields);
    for (int i = 0; i < r->n_fields; i++) {
        r->fields.names[i] = r->header[i];
        r->fields.values[i] = r->text.p + r->field_off[i];
        r->fields.kinds[i] = NULL;
    }
    r->fields.n = r->n_fields;
    rec->line = line;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Field arrays and JSON objects as records (also used by input.c's JSON array reader)        */
/* ------------------------------------------------------------------------------------------ */

int sp__record_fields_reserve(sp__record_fields *f, int need) {
    if (need <= f->cap) return 0;
    size_t cap = sp__vec_cap((size_t)f->cap, (size_t)need, 16, sizeof *f->num);
    if (cap == 0 || cap > INT_MAX || sp__vec_resize(&f->names, cap, sizeof *f->names) ||
        sp__vec_resize(&f->values, cap, sizeof *f->values) ||
        sp__vec_resize(&f->kinds, cap, sizeof *f->kinds) ||
        sp__vec_resize(&f->num, cap, sizeof *f->num))
        return -1;
    f->cap = (int)cap;
    return 0;
}

/* Shortest "%.*g" text that reads back as v (0.1 -> "0.1", not 0.10000000000000001). */
static void format_real(double v, char *out, size_t cap) {
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(out, cap, "%.*g", prec, v);
        if (strtod(out, NULL) == v) return;
    }
}

/* Fills field i from one JSON member. */
static void set_json_field(sp__record_fields *f, int i, const char *key, json_t *v) {
    f->names[i] = key;
    f->values[i] = f->num[i];
    f->kinds[i] = NULL;
    switch (json_typeof(v)) {
    case JSON_STRING:
        f->values[i] = json_string_value(v);
        break;
    case JSON_INTEGER:
        snprintf(f->num[i], sizeof f->num[i], "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        break;
    case JSON_REAL:
        format_real(json_real_value(v), f->num[i], sizeof f->num[i]);
        break;
    case JSON_TRUE:
        snprintf(f->num[i], sizeof f->num[i], "true");
        break;
    case JSON_FALSE:
        snprintf(f->num[i], sizeof f->num[i], "false");
        break;
    case JSON_NULL:
        f->values[i] = NULL, f->kinds[i] = "null";
        break;
    case JSON_ARRAY:
        f->values[i] = NULL, f->kinds[i] = "an array";
        break;
    case JSON_OBJECT:
        f->values[i] = NULL, f->kinds[i] = "an object";
        break;
    }
}

int sp__record_fields_from_json(sp__record_fields *f, json_t *obj) {
    if (sp__record_fields_reserve(f, (int)json_object_size(obj)) != 0) return -1;
    const char *key;
    json_t *v;
    int i = 0;
    json_object_foreach(obj, key, v) set_json_field(f, i++, key, v);
    f->n = i;
    return 0;
}

void sp__record_fields_view(const sp__record_fields *f, sp_record *rec) {
    rec->n_fields = f->n;
    rec->names = f->names;
    rec->values = f->values;
    rec->kinds = f->kinds;
}

void sp__record_fields_free(sp__record_fields *f) {
    free(f->names), free(f->values), free(f->kinds), free(f->num);
    memset(f, 0, sizeof *f);
}

const char *sp__json_kind_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    case JSON_OBJECT:
        break;
    }
    return "an object";
}

void sp__json_key_at(const char *s, size_t off, char *out, size_t cap) {
    int depth = 0, in_str = 0, esc = 0, expect_key = 0, str_is_key = 0;
    size_t key_start = 0, key_len = 0, str_start = 0;
    snprintf(out, cap, "(unknown field)");
    for (size_t i = 0; i < off; i++) {
        char c = s[i];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"') {
                in_str = 0;
                if (str_is_key) key_start = str_start, key_len = i - str_start;
            }
        } else if (c == '"') {
            in_str = 1, str_start = i + 1, str_is_key = depth == 1 && expect_key;
        } else if (c == '{' || c == '[') {
            depth++;
            expect_key = depth == 1 && c == '{';
        } else if (c == '}' || c == ']') {
            depth--;
        } else if (depth == 1 && c == ',') {
            expect_key = 1;
        } else if (depth == 1 && c == ':') {
            expect_key = 0;
        }
    }
    if (in_str && str_is_key)
        snprintf(out, cap, "a key");
    else if (key_len)
        snprintf(out, cap, "field \"%.*s\"", (int)(key_len < 200 ? key_len : 200), s + key_start);
}

/* ------------------------------------------------------------------------------------------ */
/* JSONL                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Reads one line (without its LF) into text, NUL-terminated. Returns 1, 0 at EOF, -1. */
static int read_line(sp_records *r, sp_error *err) {
    r->text.len = 0;
    int c = next_byte(r);
    if (c == EOF) return io_failed(r, err) ? -1 : 0;
    for (; c != EOF && c != '\n'; c = next_byte(r)) {
        if (r->text.len >= SP_RECORDS_MAX_BYTES)
            return sp_fail(err, "%s:%lld: line longer than %zu MiB", r->path, (long long)r->line,
                           SP_RECORDS_MAX_BYTES >> 20);
        if (sp__buf_addc(&r->text, (char)c) != 0) return sp_fail(err, "%s: out of memory", r->path);
    }
    if (io_failed(r, err)) return -1;
    if (sp__buf_addc(&r->text, '\0') != 0) return sp_fail(err, "%s: out of memory", r->path);
    r->text.len--;
    return 1;
}

static int is_blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
    return 1;
}

/* Parses the line in text into r->obj and the record arrays. */
static int parse_json_line(sp_records *r, int64_t line, sp_error *err) {
    size_t bad;
    if (!sp_utf8_check(r->text.p, r->text.len, &bad)) {
        char what[256];
        sp__json_key_at(r->text.p, bad, what, sizeof what);
        unsigned byte = (unsigned char)r->text.p[bad];
        return sp_fail(err, "%s:%lld: %s: %s (byte 0x%02X) at byte offset %zu of the line%s",
                       r->path, (long long)line, what, byte ? "invalid UTF-8" : "NUL byte", byte,
                       bad, sp__nul_hint(byte));
    }
    json_error_t je;
    r->obj = json_loadb(r->text.p, r->text.len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    /* A common mistake: a .json file holding one array of objects. */
    const char *p = r->text.p + strspn(r->text.p, " \t");
    const char *hint = line == 1 && *p == '['
                           ? " (a file holding one JSON array is not JSON lines: write one "
                             "object per line)"
                           : "";
    if (!r->obj)
        return sp_fail(err, "%s:%lld: invalid JSON at column %d: %s%s", r->path, (long long)line,
                       je.column, je.text, hint);
    if (!json_is_object(r->obj))
        return sp_fail(err, "%s:%lld: expected a JSON object per line, got %s%s", r->path,
                       (long long)line, sp__json_kind_name(r->obj), hint);
    if (sp__record_fields_from_json(&r->fields, r->obj) != 0)
        return sp_fail(err, "%s: out of memory", r->path);
    r->n_fields = r->fields.n;
    return 0;
}

static int next_json_record(sp_records *r, sp_record *rec, sp_error *err) {
    for (;;) {
        int64_t line = r->line;
        int rc = read_line(r, err);
        if (rc <= 0) return rc;
        r->line++;
        if (is_blank(r->text.p, r->text.len)) continue;
        if (parse_json_line(r, line, err) != 0) return -1;
        rec->line = line;
        return 1;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Public API                                                                                 */
/* ------------------------------------------------------------------------------------------ */

sp_records *sp_records_open(const char *path, sp_records_format fmt, sp_error *err) {
    if (fmt == SP_RECORDS_AUTO && format_from_path(path, &fmt, err) != 0) return NULL;
    sp_records *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path))) {
        free(r);
        sp_fail(err, "%s: out of memory", path);
        return NULL;
    }
    r->fmt = fmt;
    r->line = 1;
    if (!(r->f = fopen(path, "rb"))) {
        sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
        sp_records_close(r);
        return NULL;
    }
    if (check_bom(r, err) != 0 || (fmt != SP_RECORDS_JSONL && read_header(r, err) != 0)) {
        sp_records_close(r);
        return NULL;
    }
    return r;
}

int sp_records_next(sp_records *r, sp_record *rec, sp_error *err) {
    json_decref(r->obj);
    r->obj = NULL;
    memset(rec, 0, sizeof *rec);
    rec->path = r->path;
    int rc =
        r->fmt == SP_RECORDS_JSONL ? next_json_record(r, rec, err) : next_row_record(r, rec, err);
    if (rc != 1) return rc;
    sp__record_fields_view(&r->fields, rec);
    return 1;
}

const char *const *sp_records_header(const sp_records *r, int *n) {
    *n = r->n_header;
    return (const char *const *)r->header;
}

void sp_records_close(sp_records *r) {
    if (!r) return;
    if (r->f) fclose(r->f);
    for (int i = 0; i < r->n_header; i++) free(r->header[i]);
    free(r->header);
    json_decref(r->obj);
    free(r->text.p);
    free(r->field_off), free(r->field_line);
    sp__record_fields_free(&r->fields);
    free(r->path);
    free(r);
}

static int find_field(const sp_record *rec, const char *name) {
    for (int i = 0; i < rec->n_fields; i++)
        if (!strcmp(rec->names[i], name)) return i;
    return -1;
}

const char *sp_record_get(const sp_record *rec, const char *name) {
    int i = find_field(rec, name);
    return i < 0 ? NULL : rec->values[i];
}

int sp_record_require(const sp_record *rec, const char *name, const char **value, sp_error *err) {
    int i = find_field(rec, name);
    if (i >= 0 && rec->values[i]) {
        *value = rec->values[i];
        return 0;
    }
    if (i >= 0)
        return sp_fail(err, "%s:%lld: field \"%s\" is %s, expected text", rec->path,
                       (long long)rec->line, name, rec->kinds[i]);
    char have[512] = "", shown[128];
    size_t n = 0;
    for (int j = 0; j < rec->n_fields && n < sizeof have; j++)
        n += (size_t)snprintf(have + n, sizeof have - n, "%s\"%s\"", j ? ", " : "",
                              sp__escape(rec->names[j], shown, sizeof shown));
    return sp_fail(err, "%s:%lld: no field \"%s\" (the record has %s%s)", rec->path,
                   (long long)rec->line, name, rec->n_fields ? "fields " : "no fields", have);
}
