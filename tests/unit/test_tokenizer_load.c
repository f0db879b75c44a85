/* The tokenizer loader (src/tokenizer/load.c): which files a directory holds and in which
 * format (tokenizer.json, vocab.json + merges.txt, encoder.json + vocab.bpe; tokenizer.json
 * preferred), all three giving GPT-2's ids; the syntax of each file (JSON, merges lines, the
 * two merge forms of tokenizer.json, the model options and added-token flags it refuses), every
 * error naming the file and the line or entry; tokenizer_config.json beside vocab.json + merges.txt
 * (OPT's add_bos_token); and sp_tokenizer_hash_of_dir. Needs the GPT-2
 * files that scripts/fetch-data fetches. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil_tok.h"

/* ---- the three formats ---- */

START_TEST(test_tokenizer_json_same_ids) {
    char *dir = tu_mkdtemp();
    tu_tok_write_gpt2_json(dir, NULL);
    sp_tokenizer *ref = tu_tok_gpt2(), *t = tu_tok_load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), 50257);
    ck_assert_int_eq(sp_tokenizer_eos_id(t), 50256);
    ck_assert(sp_tokenizer_is_special(t, 50256));
    ck_assert_uint_eq(sp_tokenizer_hash(t), sp_tokenizer_hash(ref));
    tu_tok_assert_same_tokenization(ref, t);
    sp_tokenizer_free(ref), sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

START_TEST(test_vocab_json_merges_txt) {
    char *dir = tu_mkdtemp();
    tu_tok_copy_into(TU_GPT2_DIR "/encoder.json", dir, "vocab.json");
    tu_tok_copy_into(TU_GPT2_DIR "/vocab.bpe", dir, "merges.txt");
    sp_tokenizer *ref = tu_tok_gpt2(), *t = tu_tok_load_ok(dir);
    ck_assert_uint_eq(sp_tokenizer_hash(t), sp_tokenizer_hash(ref));
    ck_assert_int_eq(sp_tokenizer_eos_id(t), 50256);
    tu_tok_assert_same_tokenization(ref, t);
    sp_tokenizer_free(t);
    /* tokenizer.json is preferred when both are present. */
    json_t *extra = json_pack("[{s:i, s:s, s:b}]", "id", 50257, "content", "<|pad|>", "special", 1);
    tu_tok_write_gpt2_json(dir, extra);
    json_decref(extra);
    t = tu_tok_load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_vocab_size(t), 50258);
    sp_tokenizer_free(ref), sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* OPT's tokenizer in the vocab.json + merges.txt form (the hf/opt fixture's vocabulary and
 * merges written out) with its tokenizer_config.json: GPT2Tokenizer's add_bos_token puts "</s>"
 * first, as the tokenizer.json form's TemplateProcessing does; the ids with and without it equal
 * the tokenizers binding's (every fixture text without a special token's spelling). */
static char *write_opt_pair(void) {
    char *dir = tu_mkdtemp(), *src = tu_tok_fixture_dir("opt");
    json_t *tj = tu_tok_fixture_json("opt"), *model = json_object_get(tj, "model"), *m;
    char *v = tu_path(dir, "vocab.json"), *mp = tu_path(dir, "merges.txt");
    ck_assert_int_eq(json_dump_file(json_object_get(model, "vocab"), v, 0), 0);
    FILE *fp = fopen(mp, "w");
    ck_assert_ptr_nonnull(fp);
    fputs("#version: 0.2\n", fp);
    size_t i;
    json_array_foreach(json_object_get(model, "merges"), i, m) {
        fprintf(fp, "%s %s\n", json_string_value(json_array_get(m, 0)),
                json_string_value(json_array_get(m, 1)));
    }
    ck_assert_int_eq(fclose(fp), 0);
    char *cfg = tu_path(src, "tokenizer_config.json");
    tu_tok_copy_into(cfg, dir, "tokenizer_config.json");
    json_decref(tj);
    free(v), free(mp), free(cfg), free(src);
    return dir;
}

START_TEST(test_opt_pair_form_adds_bos) {
    char *dir = write_opt_pair();
    sp_tokenizer *t = tu_tok_load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_bos_id(t), 2);
    ck_assert_int_eq(sp_tokenizer_eos_id(t), 2);
    ck_assert(sp_tokenizer_adds_bos(t) && !sp_tokenizer_adds_eos(t));
    json_t *entries = tu_tok_fixture_expected("opt"), *e;
    size_t i, checked = 0;
    json_array_foreach(entries, i, e) {
        json_t *text = json_object_get(e, "text");
        if (memchr(json_string_value(text), '<', json_string_length(text))) continue;
        char what[160];
        snprintf(what, sizeof what, "opt pair form: %s",
                 json_string_value(json_object_get(e, "name")));
        sp_token_buf got = {0}, whole = {0};
        tu_tok_encode_ok(t, json_string_value(text), json_string_length(text), 0, &got);
        tu_tok_assert_json_ids(&got, json_object_get(e, "ids"), what);
        whole.ids = malloc((got.n + 1) * sizeof *whole.ids), whole.n = got.n + 1;
        whole.ids[0] = sp_tokenizer_bos_id(t);
        if (got.n) memcpy(whole.ids + 1, got.ids, got.n * sizeof *got.ids);
        tu_tok_assert_json_ids(&whole, json_object_get(e, "ids_special"), what);
        sp_token_buf_free(&got), sp_token_buf_free(&whole);
        checked++;
    }
    ck_assert_uint_ge(checked, 30);
    json_decref(entries);
    sp_tokenizer_free(t);
    /* without tokenizer_config.json: GPT-2's policy (no BOS) */
    char *cfg = tu_path(dir, "tokenizer_config.json");
    ck_assert_int_eq(unlink(cfg), 0);
    t = tu_tok_load_ok(dir);
    ck_assert(!sp_tokenizer_adds_bos(t));
    sp_tokenizer_free(t);
    /* bad input, named */
    tu_tok_write_str(dir, "tokenizer_config.json", "{\"add_bos_token\": \"yes\"}");
    tu_tok_expect_load_error(dir, "tokenizer_config.json: add_bos_token must be a boolean", NULL);
    tu_tok_write_str(dir, "tokenizer_config.json",
                     "{\"add_bos_token\": true, \"bos_token\": \"<nope>\"}");
    tu_tok_expect_load_error(
        dir, "tokenizer_config.json: bos_token '<nope>' is not in the vocabulary", NULL);
    tu_tok_write_str(dir, "tokenizer_config.json", "{\"add_bos_token\": true}");
    tu_tok_expect_load_error(dir, "add_bos_token is true but no bos_token is named", NULL);
    tu_tok_write_str(dir, "tokenizer_config.json", "[1]");
    tu_tok_expect_load_error(dir, "tokenizer_config.json: the top level is not a JSON object",
                             NULL);
    free(cfg);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* Merges given as "a b" strings or ["a", "b"] pairs, with errors naming the array index. */
START_TEST(test_tokenizer_json_merge_forms) {
    char *dir = tu_mkdtemp();
    tu_tok_write_pair_json(dir, json_pack("[[ss], s]", "a", "b", "ab c"));
    sp_tokenizer *t = tu_tok_load_ok(dir);
    sp_token_buf ids = {0};
    tu_tok_encode_ok(t, "abcab", 5, 0, &ids);
    tu_tok_assert_ids(&ids, (int32_t[]){257, 256}, 2, "abcab");
    sp_token_buf_free(&ids);
    sp_tokenizer_free(t);
    tu_tok_write_pair_json(dir, json_pack("[[ss], [i]]", "a", "b", 3));
    tu_tok_expect_load_error(
        dir, "tokenizer.json: model.merges[1]: expected \"a b\" or [\"a\", \"b\"]", NULL);
    tu_tok_write_pair_json(dir, json_pack("[s, s]", "a b", "ab c d"));
    tu_tok_expect_load_error(
        dir, "tokenizer.json: model.merges[1]: expected two tokens separated by one space", NULL);
    tu_tok_write_pair_json(dir, json_pack("[[ss]]", "zz", "q"));
    tu_tok_expect_load_error(
        dir, "tokenizer.json: model.merges[0]: merge 'zz q': 'zz' is not in the vocabulary", NULL);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- files missing or malformed ---- */

START_TEST(test_missing_files) {
    tu_tok_expect_load_error("/nonexistent-sp-tokenizer-dir",
                             "tokenizer directory /nonexistent-sp-tokenizer-dir", "No such file");
    char *dir = tu_mkdtemp();
    tu_tok_expect_load_error(dir, "no tokenizer files", "encoder.json + vocab.bpe");
    tu_tok_write_small_vocab(dir, -1, NULL);
    tu_tok_expect_load_error(dir, "merges.txt is missing", "vocab.json");
    char *p = tu_path(dir, "vocab.json");
    unlink(p);
    free(p);
    tu_tok_write_str(dir, "vocab.bpe", "#version: 0.2\n");
    tu_tok_expect_load_error(dir, "encoder.json is missing", "vocab.bpe");
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* merges.txt lines must be two tokens and one space (what they merge: test_tokenizer_vocab). */
static const tu_tok_bad_file BAD_MERGES_LINES[] = {
    {"merges.txt", "#version: 0.2\na b\nab c d\n",
     "merges.txt:3: expected two tokens separated by one space", "'ab c d'"},
    {"merges.txt", "a b\n\nab c\n", "merges.txt:2: expected two tokens", NULL},
};

START_TEST(test_bad_merges) {
    char *dir = tu_mkdtemp();
    tu_tok_write_small_vocab(dir, -1, (const char *const[]){"ab", "abc", NULL});
    TU_TOK_EXPECT_FILE_ERRORS(dir, BAD_MERGES_LINES);
    tu_tok_write_str(dir, "merges.txt", "#version: 0.2\r\na b\r\nab c\r\n"); /* CRLF is fine */
    sp_tokenizer *t = tu_tok_load_ok(dir);
    ck_assert_uint_eq(sp_tokenizer_n_merges(t), 2);
    sp_tokenizer_free(t);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* vocab.json must be one JSON object of token: integer id (the ids: test_tokenizer_vocab). */
static const tu_tok_bad_file BAD_VOCAB_JSON[] = {
    {"vocab.json", "{\"a\": 1,\n \"b\": }", "vocab.json:2:", "invalid JSON"},
    {"vocab.json", "[1, 2]", "vocab.json: vocabulary is not a JSON object", NULL},
    {"vocab.json", "{\"a\": 1, \"b\": \"2\"}",
     "vocab.json: vocabulary[\"b\"]: the id is not an integer", NULL},
    {"vocab.json", "{\"a\": 1, \"a\": 2}", "vocab.json:1:", "duplicate"},
};

START_TEST(test_bad_vocab) {
    char *dir = tu_mkdtemp();
    tu_tok_write_str(dir, "merges.txt", "#version: 0.2\n");
    TU_TOK_EXPECT_FILE_ERRORS(dir, BAD_VOCAB_JSON);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

static const tu_tok_bad_file BAD_TOKENIZER_JSON[] = {
    {"tokenizer.json", "{\"model\": {\"type\": \"WordLevel\", \"vocab\": {}}}",
     "tokenizer.json: model.type is \"WordLevel\", supported: \"BPE\", \"Unigram\", "
     "\"WordPiece\"",
     NULL},
    {"tokenizer.json", "{\"model\": [", "tokenizer.json:1:", "invalid JSON"},
};

/* The model's options and the added tokens' flags softprompt cannot honour. */
static const tu_tok_bad_edit BAD_MODEL_OPTIONS[] = {
    {"llama3", "model.dropout", "0.1", NULL, "model.dropout (BPE dropout) is not supported", NULL},
    {"llama3", "model.ignore_merges", "\"yes\"", NULL, "model.ignore_merges is not a boolean",
     NULL},
    {"llama2", "model.unk_token", "\"<nope>\"", NULL,
     "model.unk_token '<nope>' is not in the vocabulary", NULL},
};

START_TEST(test_bad_tokenizer_json) {
    char *dir = tu_mkdtemp();
    TU_TOK_EXPECT_FILE_ERRORS(dir, BAD_TOKENIZER_JSON);
    /* Errors inside added_tokens name the entry. */
    json_t *extra =
        json_pack("[{s:i, s:s, s:b}]", "id", 50300, "content", "<mask>", "single_word", 1);
    tu_tok_write_gpt2_json(dir, extra);
    json_decref(extra);
    tu_tok_expect_load_error(
        dir, "tokenizer.json: added_tokens[1]: '<mask>': \"single_word\": true is not supported",
        NULL);
    TU_TOK_EXPECT_EDIT_ERRORS(BAD_MODEL_OPTIONS);
    /* single_word (normalized added tokens beside a normalizer: the neox fixture) */
    json_t *r = tu_tok_fixture_json("llama3");
    json_object_set_new(json_array_get(json_object_get(r, "added_tokens"), 0), "single_word",
                        json_true());
    tu_tok_expect_json_error(
        r, NULL, "added_tokens[0]: '<|begin_of_text|>': \"single_word\": true is not supported",
        NULL);
    tu_rmtree(dir);
    free(dir);
}
END_TEST

/* ---- the tokenizer of a model directory ---- */

/* A directory's tokenizer hash is the loaded tokenizer's; a directory without tokenizer files
 * has none, and a half tokenizer (vocab.json alone) is an error. */
START_TEST(test_hash_of_dir) {
    const char *dir = TU_HF_DIR "/llama3";
    char hash[17], want[17];
    int found = -1;
    sp_error err = {0};
    ck_assert_msg(sp_tokenizer_hash_of_dir(dir, hash, &found, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(found, 1);
    sp_tokenizer *t = tu_tok_load_ok(dir);
    sp_tokenizer_hash_hex(t, want);
    sp_tokenizer_free(t);
    ck_assert_str_eq(hash, want);
    ck_assert_int_eq(sp_tokenizer_hash_of_dir(tu_dir, hash, &found, &err), 0);
    ck_assert_int_eq(found, 0);
    ck_assert_str_eq(hash, "");
    char *vocab = tu_path(tu_dir, "vocab.json");
    tu_write_file(vocab, "{\"a\": 0}", 8);
    ck_assert_int_eq(sp_tokenizer_hash_of_dir(tu_dir, hash, &found, &err), -1);
    ck_assert_int_eq(found, 1);
    ck_assert_msg(strstr(err.msg, "merges.txt is missing"), "%s", err.msg);
    free(vocab);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer_load");
    TCase *formats = tcase_create("formats");
    tcase_add_test(formats, test_tokenizer_json_same_ids);
    tcase_add_test(formats, test_vocab_json_merges_txt);
    tcase_add_test(formats, test_tokenizer_json_merge_forms);
    tcase_add_test(formats, test_opt_pair_form_adds_bos);
    suite_add_tcase(s, formats);
    TCase *errors = tcase_create("errors");
    tcase_add_test(errors, test_missing_files);
    tcase_add_test(errors, test_bad_merges);
    tcase_add_test(errors, test_bad_vocab);
    tcase_add_test(errors, test_bad_tokenizer_json);
    suite_add_tcase(s, errors);
    TCase *dir = tu_tcase(s, "model directory");
    tcase_add_test(dir, test_hash_of_dir);
    return tu_run_suite(s);
}
