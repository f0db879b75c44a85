/* The tokenizer.json pipeline (src/tokenizer/pipeline.c): normalizers, pre-tokenizers,
 * decoders and post-processors of the Llama 3 / Qwen2 / Qwen3 / SmolLM byte-level kinds and the
 * Llama 2 / Mistral / Phi-3 / Gemma character-level kinds, each fixture against Hugging Face
 * tokenizers' own ids and decodes (tests/fixtures/tokenizer/README.md); the BOS/EOS policy from the
 * post-processor and tokenizer_config.json; and every step or setting it refuses, named by its JSON
 * path. Needs no downloaded file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil_tok.h"

static void push(sp_token_buf *b, const int32_t *ids, size_t n) {
    if (n == 0) return;
    b->ids = realloc(b->ids, (b->n + n + 1) * sizeof *b->ids);
    ck_assert_ptr_nonnull(b->ids);
    memcpy(b->ids + b->n, ids, n * sizeof *ids);
    b->n += n;
}

/* ids, then ids with BOS/EOS as the tokenizer says, then Hugging Face's decode of ids. */
static void check_fixture(const char *name) {
    sp_tokenizer *t = tu_tok_fixture(name);
    json_t *entries = tu_tok_fixture_expected(name), *e;
    size_t i;
    sp_token_buf got = {0};
    json_array_foreach(entries, i, e) {
        json_t *text = json_object_get(e, "text"), *dec = json_object_get(e, "decoded");
        char what[160];
        snprintf(what, sizeof what, "%s: %s", name, json_string_value(json_object_get(e, "name")));
        tu_tok_encode_ok(t, json_string_value(text), json_string_length(text), SP_TOK_ALLOW_SPECIAL,
                         &got);
        tu_tok_assert_json_ids(&got, json_object_get(e, "ids"), what);
        size_t n = got.n;
        char *out;
        size_t len;
        out = tu_tok_decode_ok(t, got.ids, n, &len);
        ck_assert_msg(len == json_string_length(dec) && !memcmp(out, json_string_value(dec), len),
                      "%s: decoded '%s', expected '%s'", what, out, json_string_value(dec));
        free(out);
        /* The whole-sequence form: BOS/EOS around the same ids. */
        sp_token_buf whole = {0};
        int32_t bos = sp_tokenizer_bos_id(t), eos = sp_tokenizer_eos_id(t);
        if (sp_tokenizer_adds_bos(t)) push(&whole, &bos, 1);
        push(&whole, got.ids, got.n);
        if (sp_tokenizer_adds_eos(t)) push(&whole, &eos, 1);
        snprintf(what + strlen(what), sizeof what - strlen(what), " (with special tokens)");
        tu_tok_assert_json_ids(&whole, json_object_get(e, "ids_special"), what);
        sp_token_buf_free(&whole);
    }
    sp_token_buf_free(&got);
    json_decref(entries);
    sp_tokenizer_free(t);
}

START_TEST(test_reference_ids) {
    check_fixture(TU_TOK_FIXTURES[_i]);
}
END_TEST

START_TEST(test_bos_eos_policy) {
    static const struct {
        const char *name, *bos, *eos;
        int adds_bos;
    } want[] = {
        {"llama3", "<|begin_of_text|>", "<|end_of_text|>", 1},
        {"qwen2", NULL, "<|endoftext|>", 0},
        {"smollm", "<|endoftext|>", "<|endoftext|>", 0},
        {"llama2", "<s>", "</s>", 1},
        {"llama2-metaspace", "<s>", "</s>", 1},
        {"gemma", "<bos>", "<eos>", 1},
        {"gemma-split", "<bos>", "<eos>", 1},
        {"phi3", "<s>", "<|endoftext|>", 1},
        {"qwen3", NULL, "<|endoftext|>", 0},
        {"bloom", "<s>", "</s>", 0},
        {"neox", "<|endoftext|>", "<|endoftext|>", 0},
        {"opt", "</s>", "</s>", 1},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        sp_tokenizer *t = tu_tok_fixture(want[k].name);
        int32_t bos =
            want[k].bos ? sp_tokenizer_token_to_id(t, want[k].bos, strlen(want[k].bos)) : -1;
        ck_assert_msg(sp_tokenizer_bos_id(t) == bos, "%s: bos %d", want[k].name,
                      sp_tokenizer_bos_id(t));
        ck_assert_int_eq(sp_tokenizer_eos_id(t),
                         sp_tokenizer_token_to_id(t, want[k].eos, strlen(want[k].eos)));
        ck_assert_int_eq(sp_tokenizer_adds_bos(t), want[k].adds_bos);
        ck_assert_int_eq(sp_tokenizer_adds_eos(t), 0);
        ck_assert(sp_tokenizer_is_special(t, sp_tokenizer_eos_id(t)));
        sp_tokenizer_free(t);
    }
}
END_TEST

/* ---- load errors ---- */

static const tu_tok_bad_edit BYTE_LEVEL_ERRORS[] = {
    {"llama3", "pre_tokenizer",
     "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(?<x\"}, \"behavior\": \"Isolated\"}", NULL,
     "tokenizer.json: pre_tokenizer.pattern: regex /(?<x/", NULL},
    {"llama3", "pre_tokenizer",
     "{\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, \"behavior\": \"Sideways\"}", NULL,
     "pre_tokenizer.behavior: \"Sideways\" is not one of Removed, Isolated", NULL},
    {"llama3", "pre_tokenizer", "{\"type\": \"UnicodeScripts\"}", NULL,
     "pre_tokenizer: pre-tokenizer type \"UnicodeScripts\" is not supported",
     "Sequence, Split, ByteLevel, Digits, Metaspace, WhitespaceSplit, BertPreTokenizer"},
    {"qwen2", "normalizer", "{\"type\": \"StripAccents\"}", NULL,
     "normalizer: normalizer type \"StripAccents\" is not supported",
     "NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip, Precompiled, BertNormalizer, Lowercase"},
    {"qwen2", "decoder", "{\"type\": \"WordPiece\"}", NULL,
     "decoder: a byte-level tokenizer needs a ByteLevel decoder", NULL},
    {"llama3", "post_processor", "{\"type\": \"RobertaProcessing\"}", NULL,
     "post_processor.cls: expected [token, id]", NULL},
    {"llama3", "post_processor",
     "{\"type\": \"BertProcessing\", \"cls\": [\"<nope>\", 0], \"sep\": [\"<nope>\", 0]}", NULL,
     "post_processor.cls: '<nope>' with id 0 is not that vocabulary token", NULL},
    {"llama3", "post_processor", "{\"type\": \"PairProcessing\"}", NULL,
     "post_processor: post-processor type \"PairProcessing\" is not supported",
     "TemplateProcessing, BertProcessing, RobertaProcessing, ByteLevel, Sequence"},
    {"bloom", "pre_tokenizer",
     "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"[a[^b]]\"}, \"behavior\": \"Isolated\"}",
     NULL, "regex /[a[^b]]/: a negated character class inside a character class is not supported",
     NULL},
    {"bloom", "pre_tokenizer",
     "{\"type\": \"Split\", \"pattern\": {\"Regex\": \"[a-z&&[^aeiou]]\"}, \"behavior\": "
     "\"Isolated\"}",
     NULL, "a character class intersection (&&) is not supported", NULL},
    {"llama3", "model", "{\"type\": \"Unigram\", \"unk_id\": 0, \"vocab\": [[\"a\", 0.0]]}", NULL,
     "tokenizer.json: a ByteLevel pre-tokenizer is supported with a BPE model only", NULL},
};

START_TEST(test_errors_byte_level) {
    TU_TOK_EXPECT_EDIT_ERRORS(BYTE_LEVEL_ERRORS);
    json_t *seq = tu_tok_fixture_json("llama3");
    json_array_append_new(json_object_get(json_object_get(seq, "pre_tokenizer"), "pretokenizers"),
                          json_pack("{s:s}", "type", "Punctuation"));
    tu_tok_expect_json_error(
        seq, NULL, "pre_tokenizer.pretokenizers[2]: pre-tokenizer type \"Punctuation\"", NULL);
}
END_TEST

static const tu_tok_bad_edit CHAR_LEVEL_ERRORS[] = {
    {"llama2", "decoder", "null", NULL,
     "decoder: a tokenizer without a ByteLevel pre-tokenizer needs a decoder", NULL},
    {"llama2", "decoder",
     "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Strip\", \"content\": \" \", \"start\": "
     "1, \"stop\": 0}]}",
     NULL, "decoder.decoders[0]: Strip is supported after Fuse", NULL},
    {"gemma", "decoder",
     "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Fuse\"}, {\"type\": "
     "\"ByteFallback\"}]}",
     NULL, "tokenizer.json: decoder.decoders[1]: ByteFallback is supported before Fuse only", NULL},
    {"gemma", "decoder",
     "{\"type\": \"Sequence\", \"decoders\": [{\"type\": \"ByteFallback\"}, {\"type\": "
     "\"Replace\", \"pattern\": {\"String\": \"\u2581\"}, \"content\": \" \"}]}",
     NULL, "tokenizer.json: decoder.decoders[1]: Replace is supported before ByteFallback only",
     NULL},
    {"gemma", "model",
     "{\"type\": \"Unigram\", \"unk_id\": 3, \"vocab\": [], \"byte_fallback\": true}", NULL,
     "tokenizer.json: model.vocab: expected a non-empty array of [piece, score]", NULL},
    {"gemma", "model", "{\"type\": \"WordLevel\", \"vocab\": {}}", NULL,
     "tokenizer.json: model.type is \"WordLevel\", supported: \"BPE\", \"Unigram\", \"WordPiece\"",
     NULL},
    {"llama2", "pre_tokenizer",
     "{\"type\": \"Metaspace\", \"replacement\": \"_\", \"prepend_scheme\": \"sometimes\"}", NULL,
     "pre_tokenizer.prepend_scheme: \"sometimes\" is not always, first or never", NULL},
};

START_TEST(test_errors_char_level) {
    TU_TOK_EXPECT_EDIT_ERRORS(CHAR_LEVEL_ERRORS);
    json_t *r = tu_tok_fixture_json("llama2");
    json_t *single = json_object_get(json_object_get(r, "post_processor"), "single");
    json_array_append(single, json_array_get(single, 0)); /* <s> $A <s> ... <s> */
    json_array_append(single, json_array_get(single, 0));
    tu_tok_expect_json_error(r, NULL, "post_processor.single: only [BOS] $A [EOS]", NULL);
}
END_TEST

static const tu_tok_bad_edit CONFIG_ERRORS[] = {
    {"llama2", NULL, NULL, "{\"add_bos_token\": false}",
     "tokenizer_config.json: add_bos_token is false but tokenizer.json's post_processor adds it",
     NULL},
    {"qwen2", NULL, NULL, "{\"add_bos_token\": true, \"bos_token\": null}",
     "tokenizer_config.json: add_bos_token is true but no bos_token is named", NULL},
    {"qwen2", NULL, NULL, "{\"eos_token\": {\"content\": \"<|nope|>\"}}",
     "tokenizer_config.json: eos_token '<|nope|>' is not in the vocabulary", NULL},
    {"qwen2", NULL, NULL, "{\"eos_token\": 5}",
     "tokenizer_config.json: eos_token is not a string or {\"content\": string}", NULL},
    {"qwen2", NULL, NULL, "{\"eos_token\": ", "tokenizer_config.json:1:", "invalid JSON"},
    {"qwen2", NULL, NULL, "[\"<|endoftext|>\"]",
     "tokenizer_config.json: the top level is not a JSON object", NULL},
    {"qwen2", NULL, NULL, "{\"add_eos_token\": 1}",
     "tokenizer_config.json: add_bos_token / add_eos_token must be booleans", NULL},
};

START_TEST(test_errors_config) {
    TU_TOK_EXPECT_EDIT_ERRORS(CONFIG_ERRORS);
}
END_TEST

/* Without a ByteLevel step the BPE runs over characters and needs a decoder; normalizers are
 * checked in GPT-2-style files too. */
static const tu_tok_bad_file BAD_TOKENIZER_JSON[] = {
    {"tokenizer.json", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}}",
     "tokenizer.json: decoder: a tokenizer without a ByteLevel pre-tokenizer needs a decoder",
     NULL},
    {"tokenizer.json",
     "{\"normalizer\": {\"type\": \"StripAccents\"}, \"model\": {\"vocab\": {\"a\": 0}, "
     "\"merges\": []}}",
     "tokenizer.json: normalizer: normalizer type \"StripAccents\" is not supported",
     "NFC, NFD, NFKC, NFKD, Prepend, Replace"},
};

START_TEST(test_bad_tokenizer_json) {
    char *dir = tu_mkdtemp();
    TU_TOK_EXPECT_FILE_ERRORS(dir, BAD_TOKENIZER_JSON);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer_pipeline");
    TCase *ref = tcase_create("reference");
    tcase_add_loop_test(ref, test_reference_ids, 0, (int)TU_TOK_N_FIXTURES);
    suite_add_tcase(s, ref);
    TCase *api = tcase_create("api");
    tcase_add_test(api, test_bos_eos_policy);
    suite_add_tcase(s, api);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_errors_byte_level);
    tcase_add_test(errors, test_errors_char_level);
    tcase_add_test(errors, test_errors_config);
    tcase_add_test(errors, test_bad_tokenizer_json);
    suite_add_tcase(s, errors);
    return tu_run_suite(s);
}
