/* tokenizer.json (Hugging Face): sp_tokenizer_load on a directory holding only the input as
 * tokenizer.json (model, added_tokens, normalizer, pre_tokenizer, decoder, post_processor).
 * A tokenizer that loads encodes and decodes a fixed text, so that what the loader accepted is
 * also exercised by the encoder. */
#include "fuzz_util.h"
#include "softprompt/tokenizer.h"

static const char text[] = "Hello, World! It's 2024:  caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\n\t"
                           "<s></s><|endoftext|> x";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *dir;
    if (!dir) dir = fz_subdir("tokjson");
    fz_write(fz_path(0, "tokjson/tokenizer.json"), data, size);
    sp_error err;
    sp_tokenizer *tok = sp_tokenizer_load(dir, &err);
    if (!tok) return 0;
    fz_exercise_tokenizer(tok, text, sizeof text - 1);
    char hex[17];
    sp_tokenizer_hash_hex(tok, hex);
    (void)sp_tokenizer_describe(tok);
    sp_tokenizer_free(tok);
    return 0;
}
