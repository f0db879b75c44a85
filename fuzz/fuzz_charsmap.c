/* SentencePiece's precompiled_charsmap (tokenizer.json's Precompiled normalizer, after base64):
 * tok_charsmap_parse on the input as the blob; a blob that parses normalizes a fixed text (per
 * grapheme and per character, so every lookup path runs) and looks up every suffix of it. */
#include "fuzz_util.h"
#include "tokenizer/tok_internal.h"

static const char text[] =
    "Hello \xef\xbc\xa8\xef\xbd\x85 \xef\xac\x81 e\xcc\x81 a\r\nb \xe2\x91\xa0 "
    "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd \xe6\x97\xa5\x01\x7f \xe2\x96\x81";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tok_charsmap m;
    sp_error err;
    if (tok_charsmap_parse(&m, data, size, &err) != 0) return 0;
    sp__buf out = {0};
    (void)tok_charsmap_normalize(&m, text, sizeof text - 1, &out, &err);
    sp__buf_free(&out);
    for (size_t i = 0; i < sizeof text - 1; i++) {
        const char *r;
        size_t n;
        if (tok_charsmap_lookup(&m, text + i, sizeof text - 1 - i, &r, &n) && n > 0 && !r[n - 1])
            fz_die("charsmap: a replacement includes its NUL", NULL);
    }
    tok_charsmap_free(&m);
    return 0;
}
