/* The record readers of `softprompt prepare` (input.h over records.h): the first input byte
 * picks the format (JSONL, CSV, TSV, or "json", which sniffs a JSON array or JSON lines), the
 * rest is the file. Every record is read to the end and its fields looked up. */
#include <string.h>

#include "fuzz_util.h"
#include "softprompt/input.h"
#include "softprompt/records.h"

static const char *const formats[] = {"jsonl", "csv", "tsv", "json"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const char *format = formats[data[0] % 4];
    const char *path = fz_path(0, "records.txt");
    fz_write(path, data + 1, size - 1);
    sp_error err;
    sp_input *in = sp_input_open(path, format, &err);
    if (!in) return 0;
    (void)sp_input_format_name(in);
    sp_record rec;
    int rc;
    while ((rc = sp_input_next(in, &rec, &err)) == 1) {
        char where[256];
        sp_input_where(in, &rec, where, sizeof where);
        for (int i = 0; i < rec.n_fields; i++) {
            if (!rec.names[i]) abort();
            size_t bad;
            if (!sp_utf8_check(rec.names[i], strlen(rec.names[i]), &bad)) abort();
            const char *v = sp_record_get(&rec, rec.names[i]);
            if (v && !sp_utf8_check(v, strlen(v), &bad)) abort();
        }
        const char *text;
        (void)sp_record_require(&rec, "text", &text, &err);
    }
    sp_input_close(in);
    return 0;
}
