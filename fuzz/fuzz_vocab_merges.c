/* GPT-2's two-file format: the input up to its first NUL byte is vocab.json, the rest
 * merges.txt (no NUL: an empty merges.txt). A tokenizer that loads encodes and decodes a fixed
 * text. */
#include "fuzz_util.h"
#include "softprompt/tokenizer.h"

static const char text[] = "Hello, world! It's 2024:  caf\xc3\xa9 <|endoftext|>\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *dir;
    if (!dir) dir = fz_subdir("vocabmerges");
    size_t n1, n2;
    const uint8_t *rest = fz_split(data, size, &n1, &n2);
    fz_write(fz_path(0, "vocabmerges/vocab.json"), data, n1);
    fz_write(fz_path(1, "vocabmerges/merges.txt"), rest ? rest : data, n2);
    sp_error err;
    sp_tokenizer *tok = sp_tokenizer_load(dir, &err);
    if (!tok) return 0;
    fz_exercise_tokenizer(tok, text, sizeof text - 1);
    sp_tokenizer_free(tok);
    return 0;
}
