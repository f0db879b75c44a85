/* Encoding and decoding: the first input byte picks one of several fixed tokenizers (the
 * tokenizer.json kinds of tests/fixtures/tokenizer/hf, loaded once) and the flags; the rest is
 * the text. Ids are decoded back and looked up; for the byte-level kinds whose round trip is
 * documented exact (Llama 3, SmolLM) decode(encode(x)) must give x (encode accepts only valid
 * UTF-8). */
#include "fuzz_util.h"
#include "softprompt/tokenizer.h"

static const struct {
    const char *name;
    int round_trip;
} kinds[] = {
    {"llama3", 1},
    {"smollm", 1},
    {"llama2", 0},
    {"qwen2", 0},
    {"llama2-metaspace", 0},
    {"nfkc-replace-regex", 0},
    {"added-strip", 0},
    {"sp-unk-fused", 0},
    {"sp-unk-unfused", 0},
    {"sp-metaspace-split", 0},
    {"split-invert", 0},
    {"bytelevel-prefix-space", 0},
    {"digits-runs", 0},
    {"split-MergedWithNext", 0},
    {"split-Contiguous", 0},
    {"split-possessive", 0},
    {"t5-unigram", 0},
    {"t5-unigram-legacy", 0},
    {"unigram-byte-fallback", 0},
    {"bert-uncased", 0},
    {"bert-options", 0},
    {"roberta", 0},
};
#define N_KINDS ((int)(sizeof kinds / sizeof kinds[0]))

static sp_tokenizer *toks[N_KINDS];

static void setup(void) {
    for (int k = 0; k < N_KINDS; k++) {
        char dir[4200];
        sp_error err;
        snprintf(dir, sizeof dir, "%s/tokenizer/hf/%s", SP_FIXTURES_DIR, kinds[k].name);
        if (!(toks[k] = sp_tokenizer_load(dir, &err))) fz_die("cannot load", err.msg);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!toks[0]) setup();
    if (size < 1) return 0;
    int k = (data[0] & 0x3f) % N_KINDS;
    unsigned enc_flags = (data[0] & 0x80) ? SP_TOK_ALLOW_SPECIAL : 0;
    unsigned dec_flags = (data[0] & 0x40) ? SP_TOK_SKIP_SPECIAL : 0;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    sp_tokenizer *tok = toks[k];
    sp_error err;
    int32_t *ids = NULL;
    size_t n = 0;
    if (sp_tokenizer_encode(tok, text, len, enc_flags, &ids, &n, &err) != 0) {
        free(ids);
        return 0;
    }
    int32_t vocab = sp_tokenizer_vocab_size(tok);
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= vocab) fz_die("encode gave an id outside the vocabulary", NULL);
        size_t tl;
        if (!sp_tokenizer_id_to_token(tok, ids[i], &tl)) fz_die("encode gave an unused id", NULL);
    }
    char *out = NULL;
    size_t out_len = 0;
    if (sp_tokenizer_decode(tok, ids, n, dec_flags, &out, &out_len, &err) != 0)
        fz_die("decode of encoded ids failed", err.msg);
    if (kinds[k].round_trip && !dec_flags && (out_len != len || memcmp(out, text, len) != 0)) {
        fprintf(stderr, "round trip differs with %s (%zu bytes in, %zu out)\n", kinds[k].name, len,
                out_len);
        abort();
    }
    free(out);
    free(ids);
    return 0;
}
