/* The real Llama 3 and Llama 2 vocabularies (rebuilt into tokenizer.json in .cache/ by
 * `scripts/fetch-data llama3-tokenizer-js llama-tokenizer-js`) against the ids Hugging Face
 * tokenizers gives (tests/fixtures/tokenizer/real/). A vocabulary that has not been fetched is
 * reported and not tested, so the suite also runs where only the default data is fetched. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "softprompt/tokenizer.h"
#include "testutil.h"

static const struct {
    const char *kind, *package;
    int32_t bos, eos;
} KINDS[] = {
    {"llama3", "llama3-tokenizer-js", 128000, 128001},
    {"llama2", "llama-tokenizer-js", 1, 2},
};

START_TEST(test_real_vocabulary) {
    char dir[512], json[600], fixture[512];
    snprintf(dir, sizeof dir, "%s/%s-tokenizer", SP_CACHE_DIR, KINDS[_i].kind);
    snprintf(json, sizeof json, "%s/tokenizer.json", dir);
    snprintf(fixture, sizeof fixture, "%s/tokenizer/real/%s.json", SP_FIXTURES_DIR, KINDS[_i].kind);
    if (access(json, R_OK) != 0) {
        printf("%s: not fetched, not tested (scripts/fetch-data %s)\n", KINDS[_i].kind,
               KINDS[_i].package);
        return;
    }
    sp_error err = {0};
    sp_tokenizer *t = sp_tokenizer_load(dir, &err);
    ck_assert_msg(t != NULL, "%s", err.msg);
    ck_assert_int_eq(sp_tokenizer_bos_id(t), KINDS[_i].bos);
    ck_assert_int_eq(sp_tokenizer_eos_id(t), KINDS[_i].eos);
    ck_assert(sp_tokenizer_adds_bos(t));
    json_error_t je;
    json_t *root = json_load_file(fixture, JSON_ALLOW_NUL, &je), *e;
    ck_assert_msg(root != NULL, "%s: %s", fixture, je.text);
    size_t i;
    sp_token_buf got = {0};
    json_array_foreach(json_object_get(root, "entries"), i, e) {
        json_t *text = json_object_get(e, "text"), *ids = json_object_get(e, "ids");
        const char *name = json_string_value(json_object_get(e, "name"));
        got.n = 0;
        ck_assert_msg(sp_tokenizer_encode_append(t, json_string_value(text),
                                                 json_string_length(text), SP_TOK_ALLOW_SPECIAL,
                                                 &got, &err) == 0,
                      "%s: %s", name, err.msg);
        ck_assert_msg(got.n == json_array_size(ids), "%s %s: %zu ids, expected %zu", KINDS[_i].kind,
                      name, got.n, json_array_size(ids));
        for (size_t k = 0; k < got.n; k++)
            ck_assert_msg(got.ids[k] == json_integer_value(json_array_get(ids, k)),
                          "%s %s: id %zu is %d, expected %lld", KINDS[_i].kind, name, k, got.ids[k],
                          json_integer_value(json_array_get(ids, k)));
        char *out;
        size_t len;
        json_t *dec = json_object_get(e, "decoded");
        ck_assert_int_eq(sp_tokenizer_decode(t, got.ids, got.n, 0, &out, &len, &err), 0);
        ck_assert_msg(len == json_string_length(dec) && !memcmp(out, json_string_value(dec), len),
                      "%s %s: decoded '%s'", KINDS[_i].kind, name, out);
        free(out);
    }
    sp_token_buf_free(&got);
    json_decref(root);
    sp_tokenizer_free(t);
}
END_TEST

int main(void) {
    Suite *s = suite_create("tokenizer_real");
    TCase *tc = tcase_create("real");
    tcase_add_loop_test(tc, test_real_vocabulary, 0, 2);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
