/* `softprompt prepare --tokenizer DIR` end to end with tokenizer.json + tokenizer_config.json
 * directories of the Llama kinds (tests/fixtures/tokenizer/hf): every example starts with the
 * tokenizer's BOS where it says so (after the soft tokens that precede all text), never for
 * tokenizers without one, targets end with the config's EOS, and the dataset records the
 * tokenizer's hash, which the model directory's tokenizer must match. Needs no downloaded
 * file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "softprompt/dataset.h"
#include "softprompt/engine.h"
#include "testutil_tok.h"

#define HF_DIR TU_HF_DIR "/"
#define INPUT SP_FIXTURES_DIR "/prepare/reviews.jsonl"

/* Prepares the reviews as generation data (target " {label}" + EOS) with template tpl; returns
 * the opened dataset and its first two examples in b. */
static sp_dataset *prepare(const char *tok_dir, const char *tpl, sp_batch_data *b, char **out) {
    char *prefix = tu_path(tu_dir, "d"), *err = NULL;
    const char *args[] = {"prepare",    "--tokenizer", tok_dir,    "--input",  INPUT,
                          "--template", tpl,           "--target", " {label}", "--split",
                          "all",        "--out",       prefix,     NULL};
    int rc = tu_run_cli(args, out, &err);
    ck_assert_msg(rc == 0, "prepare --tokenizer %s: rc %d: %s", tok_dir, rc, err);
    free(err);
    char *path = tu_path(tu_dir, "d-all.h5");
    sp_dataset *ds = tu_dataset_open_ok(path);
    int64_t ids[2] = {0, 1};
    sp_error e = {0};
    sp_batch_data_init(b);
    ck_assert_msg(sp_dataset_read_batch(ds, ids, 2, b, &e) == 0, "%s", e.msg);
    free(path), free(prefix);
    return ds;
}

static char *decode(sp_tokenizer *t, const int32_t *ids, size_t n) {
    size_t len;
    return tu_tok_decode_ok(t, ids, n, &len);
}

/* Llama 2 kind: 20 soft tokens, <s>, the text; targets " positive" then </s>. */
START_TEST(test_llama2_bos) {
    const char *dir = HF_DIR "llama2";
    sp_tokenizer *t = tu_tok_load_ok(dir);
    sp_batch_data b;
    char *out = NULL;
    sp_dataset *ds = prepare(dir, "{text} It was", &b, &out);
    ck_assert_msg(strstr(out, "examples start with <s>"), "%s", out);
    char hash[17];
    sp_tokenizer_hash_hex(t, hash);
    ck_assert_str_eq(sp_dataset_get_meta(ds)->tokenizer_hash, hash);
    const int32_t *tok = b.tokens;
    int n = b.seq_start[1];
    for (int k = 0; k < 20; k++) ck_assert_int_eq(tok[k], SP_SOFT(k));
    ck_assert_int_eq(tok[20], sp_tokenizer_bos_id(t));
    ck_assert_int_eq(sp_tokenizer_bos_id(t), 1);
    for (int k = 21; k < n; k++) ck_assert_int_ne(tok[k], 1); /* only one BOS */
    /* Inputs after BOS: the text, the template's literal and the target but its last token. */
    char *s = decode(t, tok + 21, (size_t)(n - 21));
    ck_assert_msg(!strncmp(s, "A wonderful little film. It was", 31), "'%s'", s);
    free(s);
    int nt = b.target_start[1];
    ck_assert_int_eq(b.target_ids[nt - 1], sp_tokenizer_eos_id(t));
    ck_assert_int_eq(sp_tokenizer_eos_id(t), 2);
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(out);
    sp_tokenizer_free(t);
}
END_TEST

/* Llama 3 kind, soft tokens after some text: BOS is the very first token. */
START_TEST(test_llama3_bos_first) {
    const char *dir = HF_DIR "llama3";
    sp_tokenizer *t = tu_tok_load_ok(dir);
    sp_batch_data b;
    char *out = NULL;
    sp_dataset *ds = prepare(dir, "Review:{soft:4} {text} It was", &b, &out);
    const int32_t *tok = b.tokens;
    ck_assert_int_eq(tok[0], sp_tokenizer_token_to_id(t, "<|begin_of_text|>", 17));
    int k = 1;
    while (!SP_IS_SOFT(tok[k])) k++;
    char *s = decode(t, tok + 1, (size_t)(k - 1));
    ck_assert_str_eq(s, "Review:");
    free(s);
    for (int j = 0; j < 4; j++) ck_assert_int_eq(tok[k + j], SP_SOFT(j));
    int nt = b.target_start[1];
    ck_assert_int_eq(b.target_ids[nt - 1], sp_tokenizer_token_to_id(t, "<|end_of_text|>", 15));
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(out);
    sp_tokenizer_free(t);
}
END_TEST

/* Qwen2 kind: no BOS; the text follows the soft tokens directly. */
START_TEST(test_qwen2_no_bos) {
    const char *dir = HF_DIR "qwen2";
    sp_tokenizer *t = tu_tok_load_ok(dir);
    sp_batch_data b;
    char *out = NULL;
    sp_dataset *ds = prepare(dir, "{text} It was", &b, &out);
    ck_assert_msg(!strstr(out, "examples start with"), "%s", out);
    const int32_t *tok = b.tokens;
    int n = b.seq_start[1];
    char *s = decode(t, tok + 20, (size_t)(n - 20));
    ck_assert_msg(!strncmp(s, "A wonderful little film. It was", 31), "'%s'", s);
    free(s);
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(out);
    sp_tokenizer_free(t);
}
END_TEST

/* Encoder kinds, tokenizer-level (their families are not in the engine yet): T5's Unigram has
 * no BOS and ends targets with </s>; BERT's WordPiece starts with [CLS] and ends with [SEP]. */
START_TEST(test_t5_and_bert) {
    static const struct {
        const char *dir, *bos, *eos;
    } KINDS[] = {{HF_DIR "t5-unigram", NULL, "</s>"}, {HF_DIR "bert-uncased", "[CLS]", "[SEP]"}};
    for (size_t i = 0; i < 2; i++) {
        sp_tokenizer *t = tu_tok_load_ok(KINDS[i].dir);
        sp_batch_data b;
        char *out = NULL;
        sp_dataset *ds = prepare(KINDS[i].dir, "{text} It was", &b, &out);
        const int32_t *tok = b.tokens;
        int n = b.seq_start[1], k = 20;
        if (KINDS[i].bos) {
            ck_assert_msg(strstr(out, "examples start with"), "%s", out);
            ck_assert_int_eq(tok[k++], sp_tokenizer_token_to_id(t, KINDS[i].bos, 5));
        } else {
            ck_assert_msg(!strstr(out, "examples start with"), "%s", out);
        }
        char *s = decode(t, tok + k, (size_t)(n - k));
        /* (the small T5 vocabulary has no capital A: <unk>) */
        ck_assert_msg(
            strstr(s, i ? "wonderful little film. it was" : "wonderful little film. It was"),
            "%s: '%s'", KINDS[i].dir, s);
        free(s);
        int nt = b.target_start[1];
        ck_assert_int_eq(b.target_ids[nt - 1],
                         sp_tokenizer_token_to_id(t, KINDS[i].eos, strlen(KINDS[i].eos)));
        sp_batch_data_free(&b);
        sp_dataset_close(ds);
        free(out);
        sp_tokenizer_free(t);
        char *h5 = tu_path(tu_dir, "d-all.h5");
        ck_assert_int_eq(remove(h5), 0);
        free(h5);
    }
}
END_TEST

/* The model directory's tokenizer is compared with the one a dataset was prepared with: the
 * same directory matches, another tokenizer is refused naming both hashes (directories without
 * or with half a tokenizer: test_tokenizer_load's test_hash_of_dir). */
START_TEST(test_tokenizer_of_model_dir) {
    const char *dir = HF_DIR "llama3";
    sp_batch_data b;
    char *out = NULL, hash[17], other[17];
    sp_dataset *ds = prepare(dir, "{text} It was", &b, &out);
    int found = -1;
    sp_error err = {0};
    ck_assert_msg(sp_tokenizer_hash_of_dir(dir, hash, &found, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(found, 1);
    ck_assert_str_eq(hash, sp_dataset_get_meta(ds)->tokenizer_hash);
    ck_assert_int_eq(sp_dataset_check_tokenizer(ds, hash, dir, &err), 0);
    ck_assert_msg(sp_tokenizer_hash_of_dir(HF_DIR "qwen2", other, &found, &err) == 0, "%s",
                  err.msg);
    ck_assert_int_eq(found, 1);
    ck_assert_int_eq(sp_dataset_check_tokenizer(ds, other, HF_DIR "qwen2", &err), -1);
    ck_assert_msg(strstr(err.msg, hash) && strstr(err.msg, other) &&
                      strstr(err.msg, "--allow-tokenizer-mismatch"),
                  "%s", err.msg);
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(out);
}
END_TEST

int main(void) {
    const TTest *tests[] = {test_llama2_bos,   test_llama3_bos_first,
                            test_qwen2_no_bos, test_tokenizer_of_model_dir,
                            test_t5_and_bert,  NULL};
    return tu_main("prepare_tokenizers", tests, NULL, NULL);
}
