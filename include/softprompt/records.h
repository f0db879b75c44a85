/* Streaming readers of labelled text records (the raw input of `softprompt prepare`).
 *
 * Three formats, chosen from the file extension or explicitly:
 *   JSONL (.jsonl, .json, .ndjson): one JSON object per line. String values are taken as they
 *     are; numbers and booleans become their text form (1 -> "1", 0.5 -> "0.5", 1.0 -> "1",
 *     true -> "true"; reals use the shortest text that reads back to the same double). null,
 *     arrays and objects are kept as "present but not text": sp_record_get returns NULL for
 *     them and sp_record_require says what they were. Duplicate keys in one object are errors.
 *   CSV (.csv): RFC 4180. The first row names the fields. Fields may be quoted with '"';
 *     inside quotes "" stands for one '"' and commas, CR and LF are data. Rows end with LF or
 *     CRLF. Deviations, all common in practice: a '"' inside an UNquoted field is an ordinary
 *     character (5" screen); text after a closing quote (e.g. "ab"c) is an error.
 *   TSV (.tsv): the first row names the fields; fields are separated by TAB; rows end with LF
 *     or CRLF. There is NO quoting or escaping: a '"' is an ordinary character, and a field
 *     cannot contain a TAB or a newline.
 * In every format blank lines (empty, or only CR) between records are skipped, a UTF-8 byte
 * order mark at the start of the file is ignored, every name and value must be valid UTF-8
 * without NUL bytes (the tokenizer needs valid UTF-8), and a line (CSV: a record) longer than
 * SP_RECORDS_MAX_BYTES is refused before it is buffered. Header names must be unique.
 *
 * Every error message starts with "path:line:" (the line where the record or quoted field
 * began) and names the field at fault. */
#ifndef SOFTPROMPT_RECORDS_H
#define SOFTPROMPT_RECORDS_H

#include <stddef.h>
#include <stdint.h>

#include "softprompt/error.h"

#define SP_RECORDS_MAX_BYTES ((size_t)16 * 1024 * 1024)

typedef enum sp_records_format {
    SP_RECORDS_AUTO = 0, /* from the extension of the path */
    SP_RECORDS_JSONL,
    SP_RECORDS_CSV,
    SP_RECORDS_TSV,
} sp_records_format;

/* One record. Every pointer stays valid until the next sp_records_next or sp_records_close. */
typedef struct sp_record {
    const char *path; /* the input file, for messages */
    int64_t line;     /* 1-based line on which the record starts */
    int n_fields;
    const char *const *names;  /* [n_fields] header names (CSV/TSV) or object keys (JSONL) */
    const char *const *values; /* [n_fields] NUL-terminated UTF-8 text; NULL for a JSON
                                  null, array or object */
    const char *const *kinds;  /* [n_fields] NULL for text, else "null", "an array" or
                                  "an object" (JSONL only) */
} sp_record;

typedef struct sp_records sp_records;

/* "jsonl"/"json"/"ndjson", "csv", "tsv" (case-insensitive) -> format; for a --format option. */
int sp_records_format_parse(const char *name, sp_records_format *out, sp_error *err);
const char *sp_records_format_name(sp_records_format fmt);

/* Opens path; with SP_RECORDS_AUTO the extension decides (an unknown one is an error).
 * For CSV/TSV the header row is read and checked here. Returns NULL and fills err on failure. */
sp_records *sp_records_open(const char *path, sp_records_format fmt, sp_error *err);

/* Reads the next record into *rec: returns 1, or 0 at the end of the file, or -1 on error. */
int sp_records_next(sp_records *r, sp_record *rec, sp_error *err);

/* CSV/TSV: the header's field names ([*n]); JSONL: NULL and *n = 0. */
const char *const *sp_records_header(const sp_records *r, int *n);

void sp_records_close(sp_records *r);

/* The text of field name, or NULL if the record has no such field or it is not text. */
const char *sp_record_get(const sp_record *rec, const char *name);

/* Like sp_record_get, but a missing or non-text field is an error naming path:line, the field
 * and (for CSV/TSV) the fields that do exist. */
int sp_record_require(const sp_record *rec, const char *name, const char **value, sp_error *err);

/* Checks that s[0:len) is well-formed UTF-8 (no overlong forms, surrogates or code points
 * above U+10FFFF) and has no NUL byte. Returns 1 if so; else 0 with *bad = the byte offset of
 * the first offending byte. */
int sp_utf8_check(const char *s, size_t len, size_t *bad);

#endif
