/* Record input for `softprompt prepare`: the JSONL / CSV / TSV readers of records.h plus a
 * reader of one top-level JSON array of objects (what the npm `sentiment` fixtures and many
 * exported data sets look like), behind one interface yielding sp_record.
 *
 * Format names: "jsonl" (also "ndjson"), "csv", "tsv", "json", or NULL / "auto" for the file
 * extension. A ".json" file, or the format "json", is sniffed: if its first character after an
 * optional byte order mark and whitespace is '[' it is read as a JSON array, otherwise as JSON
 * lines.
 *
 * JSON arrays: every element must be an object; values are converted exactly as records.h says
 * for JSONL (strings as they are, numbers and booleans to their text, null/arrays/objects are
 * "present but not text"); duplicate keys are errors; the file must be valid UTF-8. The whole
 * file is read into memory (at most SP_INPUT_MAX_JSON_BYTES) and each element is parsed on its
 * own, so a record's location is known: it is "path:line:column (element N)", N 1-based.
 * Locations of the other formats are "path:line". */
#ifndef SOFTPROMPT_INPUT_H
#define SOFTPROMPT_INPUT_H

#include <stddef.h>

#include "softprompt/error.h"
#include "softprompt/records.h"

#define SP_INPUT_MAX_JSON_BYTES ((size_t)1 << 30)

typedef struct sp_input sp_input;

/* The format names, for messages. */
#define SP_INPUT_FORMATS "jsonl, json, csv or tsv"

/* Whether sp_input_open accepts format as a format name (NULL and "auto" included). */
int sp_input_format_known(const char *format);

/* Returns NULL and fills err for a bad format name, an unopenable file or a bad header. */
sp_input *sp_input_open(const char *path, const char *format, sp_error *err);
/* 1: a record; 0: end of input; -1: error (message starts with the location). */
int sp_input_next(sp_input *in, sp_record *rec, sp_error *err);
/* Location of the record last returned, for messages ("data.csv:12"). */
void sp_input_where(const sp_input *in, const sp_record *rec, char *buf, size_t cap);
/* "jsonl", "csv", "tsv" or "json array". */
const char *sp_input_format_name(const sp_input *in);
void sp_input_close(sp_input *in);

#endif
