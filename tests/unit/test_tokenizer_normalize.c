/* Normalizers (src/tokenizer/normalize.c), each applied through a byte-level tokenizer whose
 * decode gives back exactly the normalized text: the four Unicode forms (including output
 * longer than the input), Prepend (not to text left empty), Replace with a string or a regex (empty
 * matches replace nothing), a Sequence in its order, and text between added tokens only.
 * Needs no downloaded file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil_tok.h"

/* A byte-level tokenizer (no merges) with the given normalizer and extra added_tokens (JSON;
 * NULL: none), written into tu_dir. */
static sp_tokenizer *with_normalizer(const char *normalizer, const char *added) {
    tu_tok_write_pair_json(tu_dir, json_array());
    char *path = tu_path(tu_dir, "tokenizer.json");
    json_t *n = json_loads(normalizer, 0, NULL);
    ck_assert_msg(n != NULL, "not JSON: %s", normalizer);
    tu_json_edit(path, "normalizer", n);
    if (added) {
        json_t *a = json_loads(added, 0, NULL);
        ck_assert_msg(a != NULL, "not JSON: %s", added);
        tu_json_edit(path, "added_tokens", a);
    }
    free(path);
    return tu_tok_load_ok(tu_dir);
}

/* Encoding in (special tokens allowed) and decoding gives want. */
static void expect_normalized(sp_tokenizer *t, const char *in, const char *want) {
    sp_token_buf ids = {0};
    tu_tok_encode_ok(t, in, strlen(in), SP_TOK_ALLOW_SPECIAL, &ids);
    size_t len;
    char *out = tu_tok_decode_ok(t, ids.ids, ids.n, &len);
    ck_assert_msg(len == strlen(want) && memcmp(out, want, len) == 0,
                  "'%s' normalized to '%s', expected '%s'", in, out, want);
    free(out);
    sp_token_buf_free(&ids);
}

/* normalizer JSON */
#define FORM(f) "{\"type\": \"" f "\"}"
#define PREPEND(s) "{\"type\": \"Prepend\", \"prepend\": \"" s "\"}"
#define REPLACE(kind, pattern, content)                                                            \
    "{\"type\": \"Replace\", \"pattern\": {\"" kind "\": \"" pattern                               \
    "\"}, \"content\": \"" content "\"}"
#define SEQUENCE(a, b) "{\"type\": \"Sequence\", \"normalizers\": [" a ", " b "]}"

/* e + combining acute, the precomposed e acute, the fi ligature, the Kelvin sign, circled one,
 * SentencePiece's space */
#define DECOMPOSED "e\xcc\x81"
#define COMPOSED "\xc3\xa9"
#define FI "\xef\xac\x81"
#define KELVIN "\xe2\x84\xaa"
#define ONE "\xe2\x91\xa0"
#define SPACE "\xe2\x96\x81"

static const struct {
    const char *normalizer, *in, *want;
} CASES[] = {
    {FORM("NFC"), DECOMPOSED, COMPOSED},
    {FORM("NFC"), "plain ASCII", "plain ASCII"},
    {FORM("NFC"), FI, FI}, /* compatibility forms stay */
    {FORM("NFC"), KELVIN, "K"},
    {FORM("NFD"), COMPOSED, DECOMPOSED},
    {FORM("NFD"), FI, FI},
    {FORM("NFKC"), FI, "fi"},
    {FORM("NFKC"), ONE, "1"},
    {FORM("NFKC"), DECOMPOSED, COMPOSED},
    {FORM("NFKD"), FI, "fi"},
    {FORM("NFKD"), COMPOSED, DECOMPOSED},
    {PREPEND(SPACE), "ab", SPACE "ab"},
    {REPLACE("String", " ", SPACE), "a b  c ", "a" SPACE "b" SPACE SPACE "c" SPACE},
    {REPLACE("String", " ", SPACE), "none", "none"},
    {REPLACE("Regex", " +", " "), "a   b  c d", "a b c d"},
    /* "x*" also matches the empty string everywhere: only real matches are replaced. */
    {REPLACE("Regex", "x*", "-"), "axxbx", "a-b-"},
    {REPLACE("Regex", "x*", "-"), "ab", "ab"},
    /* A Sequence applies its normalizers in order. */
    {SEQUENCE(PREPEND("x"), REPLACE("String", "x", "y")), "ab", "yab"},
    {SEQUENCE(REPLACE("String", "x", "y"), PREPEND("x")), "ab", "xab"},
    /* Prepend leaves text that an earlier normalizer emptied empty. */
    {SEQUENCE(REPLACE("String", "x", ""), PREPEND("_")), "xx", ""},
    {SEQUENCE(REPLACE("String", "x", ""), PREPEND("_")), "xax", "_a"},
};

START_TEST(normalizers) {
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        sp_tokenizer *t = with_normalizer(CASES[i].normalizer, NULL);
        expect_normalized(t, CASES[i].in, CASES[i].want);
        sp_tokenizer_free(t);
    }
}
END_TEST

/* NFKD of 3,000 ligatures is twice as many UTF-16 units as the input (ICU's second try). */
START_TEST(unicode_output_longer_than_input) {
    enum { N = 3000 };
    char *in = malloc(3 * N + 1), *want = malloc(2 * N + 1);
    for (int i = 0; i < N; i++)
        memcpy(in + 3 * i, "\xef\xac\x81", 3), memcpy(want + 2 * i, "fi", 2);
    in[3 * N] = want[2 * N] = '\0';
    sp_tokenizer *t = with_normalizer(FORM("NFKD"), NULL);
    expect_normalized(t, in, want);
    sp_tokenizer_free(t);
    free(in), free(want);
}
END_TEST

/* The text between added tokens is normalized, a (non-normalized) added token is not. */
START_TEST(added_tokens_are_not_normalized) {
    sp_tokenizer *t = with_normalizer(
        REPLACE("String", "x", "y"),
        "[{\"id\": 300, \"content\": \"<x>\", \"special\": true, \"normalized\": false}]");
    expect_normalized(t, "ax<x>x", "ay<x>y");
    sp_tokenizer_free(t);
}
END_TEST

int main(void) {
    const TTest *tests[] = {normalizers, unicode_output_longer_than_input,
                            added_tokens_are_not_normalized, NULL};
    return tu_main("tokenizer_normalize", tests, NULL, NULL);
}
