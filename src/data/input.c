/* Record input: records.h readers plus a JSON-array reader (see input.h). */
#include "softprompt/input.h"

#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data/records_internal.h"
#include "util/path.h"
#include "util/vec.h"

typedef struct jarray {
    char *buf; /* the whole file, NUL-terminated */
    size_t len;
    size_t pos;        /* next byte to scan */
    int done;          /* the closing ']' was seen */
    int64_t element;   /* 1-based index of the current element */
    size_t track_pos;  /* position up to which line/col are known */
    int64_t line, col; /* of track_pos */
    int64_t el_line, el_col;
    json_t *obj;
    sp__record_fields fields;
} jarray;

struct sp_input {
    char *path;
    sp_records *rec; /* JSONL / CSV / TSV */
    sp_records_format fmt;
    jarray *arr; /* JSON array */
};

/* ------------------------------------------------------------------------------------------ */
/* JSON arrays                                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Advances the line/column bookkeeping to byte pos (columns count characters). */
static void track_to(jarray *a, size_t pos) {
    for (size_t i = a->track_pos; i < pos; i++) {
        unsigned char c = (unsigned char)a->buf[i];
        if (c == '\n')
            a->line++, a->col = 1;
        else if ((c & 0xC0) != 0x80)
            a->col++;
    }
    a->track_pos = pos;
}

static size_t skip_ws(const jarray *a, size_t p) {
    while (p < a->len && strchr(" \t\r\n", a->buf[p]) && a->buf[p]) p++;
    return p;
}

static void array_free(jarray *a) {
    if (!a) return;
    json_decref(a->obj);
    free(a->buf);
    sp__record_fields_free(&a->fields);
    free(a);
}

static int read_whole(const char *path, FILE *f, char **out, size_t *len, sp_error *err) {
    struct stat st;
    if (fstat(fileno(f), &st) != 0)
        return sp_fail(err, "%s: cannot stat: %s", path, strerror(errno));
    if ((uint64_t)st.st_size > SP_INPUT_MAX_JSON_BYTES)
        return sp_fail(err,
                       "%s: a JSON array file larger than %zu MiB is not supported (convert it "
                       "to JSON lines, which are streamed)",
                       path, SP_INPUT_MAX_JSON_BYTES >> 20);
    sp__buf b = {0}; /* room for the whole file and one byte more, to see its end at once */
    if (sp__buf_reserve(&b, (size_t)st.st_size + 1) != 0 || sp__buf_read(&b, f) != 0) {
        sp__buf_free(&b);
        return sp_fail(err, "%s: %s", path, ferror(f) ? "read error" : "out of memory");
    }
    *out = b.p, *len = b.len;
    return 0;
}

static void array_where(const sp_input *in, char *buf, size_t cap) {
    const jarray *a = in->arr;
    snprintf(buf, cap, "%s:%" PRId64 ":%" PRId64 " (element %" PRId64 ")", in->path, a->el_line,
             a->el_col, a->element);
}

/* End of the value starting at p: the first ',' or ']' outside strings and brackets. */
static size_t value_end(const jarray *a, size_t p) {
    int depth = 0, in_str = 0, esc = 0;
    for (; p < a->len; p++) {
        char c = a->buf[p];
        if (in_str) {
            if (esc)
                esc = 0;
            else if (c == '\\')
                esc = 1;
            else if (c == '"')
                in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0) return p;
            depth--;
        } else if (c == ',' && depth == 0) {
            return p;
        }
    }
    return p;
}

static int array_next(sp_input *in, sp_record *rec, sp_error *err) {
    jarray *a = in->arr;
    char where[512];
    json_decref(a->obj);
    a->obj = NULL;
    if (a->done) return 0;
    size_t p = skip_ws(a, a->pos);
    track_to(a, p);
    a->el_line = a->line, a->el_col = a->col;
    if (p >= a->len)
        return sp_fail(err, "%s:%" PRId64 ":%" PRId64 ": the JSON array is not closed (no ']')",
                       in->path, a->line, a->col);
    if (a->buf[p] == ']' && a->element == 0) {
        a->done = 1;
        return 0;
    }
    a->element++;
    size_t end = value_end(a, p);
    size_t vlen = end;
    while (vlen > p && strchr(" \t\r\n", a->buf[vlen - 1])) vlen--;
    array_where(in, where, sizeof where);
    if (vlen == p) return sp_fail(err, "%s: expected a JSON object", where);
    size_t bad;
    if (!sp_utf8_check(a->buf + p, vlen - p, &bad)) {
        char what[256];
        sp__json_key_at(a->buf + p, bad, what, sizeof what);
        unsigned byte = (unsigned char)a->buf[p + bad];
        return sp_fail(err, "%s: %s: %s (byte 0x%02X) at byte offset %zu of the element%s", where,
                       what, byte ? "invalid UTF-8" : "NUL byte", byte, bad, sp__nul_hint(byte));
    }
    json_error_t je;
    a->obj = json_loadb(a->buf + p, vlen - p, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
    if (!a->obj) {
        jarray tmp = *a; /* locate the error without disturbing the element's position */
        track_to(&tmp, p + (size_t)je.position);
        return sp_fail(err, "%s: invalid JSON at %" PRId64 ":%" PRId64 ": %s", where, tmp.line,
                       tmp.col, je.text);
    }
    if (!json_is_object(a->obj))
        return sp_fail(err, "%s: expected a JSON object, got %s", where,
                       sp__json_kind_name(a->obj));
    if (sp__record_fields_from_json(&a->fields, a->obj) != 0)
        return sp_fail(err, "%s: out of memory", where);
    if (end >= a->len)
        return sp_fail(err, "%s: the JSON array is not closed (no ']' after this element)", where);
    if (a->buf[end] == ']') {
        size_t q = skip_ws(a, end + 1);
        if (q < a->len) {
            jarray tmp = *a;
            track_to(&tmp, q);
            return sp_fail(err, "%s:%" PRId64 ":%" PRId64 ": unexpected text after the JSON array",
                           in->path, tmp.line, tmp.col);
        }
        a->done = 1;
    }
    a->pos = end + 1;
    memset(rec, 0, sizeof *rec);
    rec->path = in->path;
    rec->line = a->el_line;
    sp__record_fields_view(&a->fields, rec);
    return 1;
}

static int array_open(sp_input *in, FILE *f, sp_error *err) {
    jarray *a = calloc(1, sizeof *a);
    if (!a) return sp_fail(err, "%s: out of memory", in->path);
    in->arr = a;
    a->line = 1, a->col = 1;
    if (read_whole(in->path, f, &a->buf, &a->len, err) != 0) return -1;
    size_t p = 0;
    if (a->len >= 3 && !memcmp(a->buf, "\xEF\xBB\xBF", 3)) p = a->track_pos = 3;
    p = skip_ws(a, p);
    track_to(a, p);
    if (p >= a->len || a->buf[p] != '[')
        return sp_fail(err, "%s:%" PRId64 ":%" PRId64 ": expected '[' (a JSON array of objects)",
                       in->path, a->line, a->col);
    a->pos = p + 1;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Dispatch                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* First non-blank byte of the file after an optional BOM, or EOF. */
static int first_char(FILE *f) {
    int c = fgetc(f);
    if (c == 0xEF) {
        int b = fgetc(f), d = fgetc(f);
        if (b == 0xBB && d == 0xBF)
            c = fgetc(f);
        else
            return c;
    }
    while (c == ' ' || c == '\t' || c == '\r' || c == '\n') c = fgetc(f);
    return c;
}

int sp_input_format_known(const char *format) {
    sp_records_format fmt;
    sp_error ignored;
    return !format || !strcasecmp(format, "auto") || !strcasecmp(format, "json") ||
           sp_records_format_parse(format, &fmt, &ignored) == 0;
}

sp_input *sp_input_open(const char *path, const char *format, sp_error *err) {
    sp_input *in = calloc(1, sizeof *in);
    if (!in || !(in->path = strdup(path))) {
        free(in);
        sp_fail(err, "%s: out of memory", path);
        return NULL;
    }
    int sniff = 0;
    sp_records_format fmt = SP_RECORDS_AUTO;
    if (!format || !strcasecmp(format, "auto")) {
        const char *dot = sp__path_ext(path);
        sniff = dot && !strcasecmp(dot, ".json");
    } else if (!strcasecmp(format, "json")) {
        sniff = 1;
    } else if (sp_records_format_parse(format, &fmt, err) != 0) {
        sp_fail(err, "unknown input format \"%s\" (expected " SP_INPUT_FORMATS ")", format);
        goto fail;
    }
    if (sniff) {
        FILE *f = fopen(path, "rb");
        if (!f) {
            sp_fail(err, "%s: cannot open: %s", path, strerror(errno));
            goto fail;
        }
        if (first_char(f) == '[') {
            rewind(f);
            int rc = array_open(in, f, err);
            fclose(f);
            if (rc != 0) goto fail;
            return in;
        }
        fclose(f);
        fmt = SP_RECORDS_JSONL;
    }
    if (fmt == SP_RECORDS_AUTO) { /* for sp_input_format_name; records.c decides the same */
        const char *dot = sp__path_ext(path);
        sp_error ignored;
        if (!dot || sp_records_format_parse(dot + 1, &in->fmt, &ignored) != 0)
            in->fmt = SP_RECORDS_AUTO;
    } else {
        in->fmt = fmt;
    }
    if (!(in->rec = sp_records_open(path, fmt, err))) goto fail;
    return in;
fail:
    sp_input_close(in);
    return NULL;
}

int sp_input_next(sp_input *in, sp_record *rec, sp_error *err) {
    if (in->arr) return array_next(in, rec, err);
    return sp_records_next(in->rec, rec, err);
}

void sp_input_where(const sp_input *in, const sp_record *rec, char *buf, size_t cap) {
    if (in->arr)
        array_where(in, buf, cap);
    else
        snprintf(buf, cap, "%s:%lld", in->path, (long long)rec->line);
}

const char *sp_input_format_name(const sp_input *in) {
    if (in->arr) return "json array";
    return sp_records_format_name(in->fmt);
}

void sp_input_close(sp_input *in) {
    if (!in) return;
    sp_records_close(in->rec);
    array_free(in->arr);
    free(in->path);
    free(in);
}
