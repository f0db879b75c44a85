/* Record field arrays and JSON object -> record fields, shared by the record readers (records.c)
 * and the JSON array reader (input.c). */
#ifndef SP_RECORDS_INTERNAL_H
#define SP_RECORDS_INTERNAL_H

#include <jansson.h>
#include <stddef.h>

#include "softprompt/records.h"

/* The field arrays of the current record (see sp_record). From JSON, names and string values
 * point into the parsed object and num holds the text form of numbers and booleans. */
typedef struct sp__record_fields {
    int n, cap;
    const char **names, **values, **kinds;
    char (*num)[32];
} sp__record_fields;

/* Makes room for need fields (capacity doubling from 16); returns 0 or -1 (out of memory). */
int sp__record_fields_reserve(sp__record_fields *f, int need);

/* Fills the fields from the members of JSON object obj, which must stay alive while they are
 * used: strings as they are; numbers and booleans as text (1 -> "1", 0.5 -> "0.5", reals in the
 * shortest form that reads back the same); null, arrays and objects as NULL values whose kinds
 * say which. Returns 0 or -1 (out of memory). */
int sp__record_fields_from_json(sp__record_fields *f, json_t *obj);

/* Points rec's field arrays at f. */
void sp__record_fields_view(const sp__record_fields *f, sp_record *rec);

void sp__record_fields_free(sp__record_fields *f);

/* "an array", "a string", "a number", "a boolean", "null" or "an object", for messages. */
const char *sp__json_kind_name(const json_t *v);

/* Names the top-level key whose key or value holds byte off of a JSON object text, by a lexical
 * scan (used when the text is not valid UTF-8, so no JSON parser can say): "field \"k\"",
 * "a key" or "(unknown field)". Bytes before off are valid UTF-8, so the copied key is too. */
void sp__json_key_at(const char *s, size_t off, char *out, size_t cap);

/* The hint appended to an encoding error about byte (a NUL byte suggests UTF-16 or UTF-32
 * without a byte order mark); "" for other bytes. */
const char *sp__nul_hint(unsigned byte);

#endif
