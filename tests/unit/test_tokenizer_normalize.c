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

START_TEST(unicode_forms) {
    /* e + combining acute, the precomposed é, the fi ligature, the Kelvin sign, circled one */
    const char *decomposed = "e\xcc\x81", *composed = "\xc3\xa9", *fi = "\xef\xac\x81",
               *kelvin = "\xe2\x84\xaa", *one = "\xe2\x91\xa0";
    sp_tokenizer *t = with_normalizer("{\"type\": \"NFC\"}", NULL);
    expect_normalized(t, decomposed, composed);
    expect_normalized(t, "plain ASCII", "plain ASCII");
    expect_normalized(t, fi, fi); /* compatibility forms stay */
    expect_normalized(t, kelvin, "K");
    sp_tokenizer_free(t);
    t = with_normalizer("{\"type\": \"NFD\"}", NULL);
    expect_normalized(t, composed, decomposed);
    expect_normalized(t, fi, fi);
    sp_tokenizer_free(t);
    t = with_normalizer("{\"type\": \"NFKC\"}", NULL);
    expect_normalized(t, fi, "fi");
    expect_normalized(t, one, "1");
    expect_normalized(t, decomposed, composed);
    sp_tokenizer_free(t);
    t = with_normalizer("{\"type\": \"NFKD\"}", NULL);
    expect_normalized(t, fi, "fi");
    expect_normalized(t, composed, decomposed);
    sp_tokenizer_free(t);
}
END_TEST

/* NFKD of 3,000 ligatures is twice as many UTF-16 units as the input (ICU's second try). */
START_TEST(unicode_output_longer_than_input) {
    enum { N = 3000 };
    char *in = malloc(3 * N + 1), *want = malloc(2 * N + 1);
    for (int i = 0; i < N; i++)
        memcpy(in + 3 * i, "\xef\xac\x81", 3), memcpy(want + 2 * i, "fi", 2);
    in[3 * N] = want[2 * N] = '\0';
    sp_tokenizer *t = with_normalizer("{\"type\": \"NFKD\"}", NULL);
    expect_normalized(t, in, want);
    sp_tokenizer_free(t);
    free(in), free(want);
}
END_TEST

START_TEST(prepend_and_replace) {
    sp_tokenizer *t =
        with_normalizer("{\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"}", NULL);
    expect_normalized(t, "ab",
                      "\xe2\x96\x81"
                      "ab");
    sp_tokenizer_free(t);
    t = with_normalizer(
        "{\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}",
        NULL);
    expect_normalized(t, "a b  c ",
                      "a\xe2\x96\x81"
                      "b\xe2\x96\x81\xe2\x96\x81"
                      "c\xe2\x96\x81");
    expect_normalized(t, "none", "none");
    sp_tokenizer_free(t);
    t = with_normalizer(
        "{\"type\": \"Replace\", \"pattern\": {\"Regex\": \" +\"}, \"content\": \" \"}", NULL);
    expect_normalized(t, "a   b  c d", "a b c d");
    sp_tokenizer_free(t);
    /* "x*" also matches the empty string everywhere: only real matches are replaced. */
    t = with_normalizer("{\"type\": \"Replace\", \"pattern\": {\"Regex\": \"x*\"}, \"content\": "
                        "\"-\"}",
                        NULL);
    expect_normalized(t, "axxbx", "a-b-");
    expect_normalized(t, "ab", "ab");
    sp_tokenizer_free(t);
}
END_TEST

/* A Sequence applies its normalizers in order. */
START_TEST(sequence_in_order) {
    sp_tokenizer *t = with_normalizer(
        "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"x\"}, "
        "{\"type\": \"Replace\", \"pattern\": {\"String\": \"x\"}, \"content\": \"y\"}]}",
        NULL);
    expect_normalized(t, "ab", "yab");
    sp_tokenizer_free(t);
    t = with_normalizer(
        "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Replace\", \"pattern\": "
        "{\"String\": \"x\"}, \"content\": \"y\"}, {\"type\": \"Prepend\", \"prepend\": \"x\"}]}",
        NULL);
    expect_normalized(t, "ab", "xab");
    sp_tokenizer_free(t);
    /* Prepend leaves text that an earlier normalizer emptied empty. */
    t = with_normalizer(
        "{\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Replace\", \"pattern\": "
        "{\"String\": \"x\"}, \"content\": \"\"}, {\"type\": \"Prepend\", \"prepend\": \"_\"}]}",
        NULL);
    expect_normalized(t, "xx", "");
    expect_normalized(t, "xax", "_a");
    sp_tokenizer_free(t);
}
END_TEST

/* The text between added tokens is normalized, a (non-normalized) added token is not. */
START_TEST(added_tokens_are_not_normalized) {
    sp_tokenizer *t = with_normalizer(
        "{\"type\": \"Replace\", \"pattern\": {\"String\": \"x\"}, \"content\": \"y\"}",
        "[{\"id\": 300, \"content\": \"<x>\", \"special\": true, \"normalized\": false}]");
    expect_normalized(t, "ax<x>x", "ay<x>y");
    sp_tokenizer_free(t);
}
END_TEST

int main(void) {
    const TTest *tests[] = {
        unicode_forms,     unicode_output_longer_than_input, prepend_and_replace,
        sequence_in_order, added_tokens_are_not_normalized,  NULL};
    return tu_main("tokenizer_normalize", tests, NULL);
}
