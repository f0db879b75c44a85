/* `softprompt prepare --tokenizer DIR` end to end with tokenizer.json + tokenizer_config.json
 * directories of the Llama kinds (tests/fixtures/tokenizer/hf): every example starts with the
 * tokenizer's BOS where it says so (after the soft tokens that precede all text), never for
 * tokenizers without one, targets end with the config's EOS, and the dataset records the
 * tokenizer's hash, which the model directory's tokenizer must match. Needs no downloaded
 * file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

/* OPT kind: "</s>" is both BOS (TemplateProcessing "</s> $A") and EOS. After the soft tokens
 * the inputs are exactly Hugging Face tokenizers' ids for the text with special tokens (one
 * </s>, first); the target ends with the one other </s>. The ids are tokenizers@0.23.2's for
 * the opt fixture: encode("A wonderful little film. It was", null, {addSpecialTokens: true})
 * and encode(" positive", null, {addSpecialTokens: false}). */
START_TEST(test_opt_bos_is_eos) {
    static const int32_t INPUT_IDS[] = {2,   69,  272, 115, 276, 316, 106, 121, 112, 463, 36,
                                        106, 109, 112, 113, 50,  301, 120, 272, 101, 119};
    static const int32_t TARGET_IDS[] = {288, 115, 119, 275, 109, 284, 2};
    const size_t ni = sizeof INPUT_IDS / sizeof *INPUT_IDS;
    const size_t nt = sizeof TARGET_IDS / sizeof *TARGET_IDS;
    const char *dir = HF_DIR "opt";
    sp_tokenizer *t = tu_tok_load_ok(dir);
    ck_assert_int_eq(sp_tokenizer_bos_id(t), 2);
    ck_assert_int_eq(sp_tokenizer_eos_id(t), 2);
    sp_batch_data b;
    char *out = NULL;
    sp_dataset *ds = prepare(dir, "{text} It was", &b, &out);
    ck_assert_msg(strstr(out, "examples start with </s>"), "%s", out);
    ck_assert_msg(strstr(out, "targets end with </s>"), "%s", out); /* the tokenizer's EOS */
    const int32_t *tok = b.tokens;
    /* inputs: 20 soft tokens, the text with its BOS, the target but its last token */
    ck_assert_int_eq(b.seq_start[1], (int)(20 + ni + nt - 1));
    for (int k = 0; k < 20; k++) ck_assert_int_eq(tok[k], SP_SOFT(k));
    for (size_t k = 0; k < ni; k++)
        ck_assert_msg(tok[20 + k] == INPUT_IDS[k], "input %zu: %d, want %d", k, tok[20 + k],
                      INPUT_IDS[k]);
    for (size_t k = 0; k + 1 < nt; k++) ck_assert_int_eq(tok[20 + ni + k], TARGET_IDS[k]);
    ck_assert_int_eq(b.target_start[1], (int)nt);
    for (size_t k = 0; k < nt; k++) ck_assert_int_eq(b.target_ids[k], TARGET_IDS[k]);
    sp_batch_data_free(&b);
    sp_dataset_close(ds);
    free(out);
    char *h5 = tu_path(tu_dir, "d-all.h5");
    ck_assert_int_eq(remove(h5), 0);
    free(h5);
    /* Soft tokens after some text: the </s> is the very first token, and the only one. */
    ds = prepare(dir, "Review:{soft:4} {text} It was", &b, &out);
    ck_assert_int_eq(b.tokens[0], 2);
    for (int k = 1; k < b.seq_start[1]; k++) ck_assert_int_ne(b.tokens[k], 2);
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

/* prepare --tokenizer DIR (t5-unigram + config.json of model_type t5 when t5 is set), the
 * record {"text": text, "label": "yes"} as generation data, no soft tokens, extra: up to two
 * more arguments (NULL-terminated); the first example in b, the command's stdout in *out. */
static sp_dataset *prepare_t5(const char *text, int t5, const char *const extra[2],
                              sp_batch_data *b, char **out) {
    static const char *const FILES[] = {"tokenizer.json", "tokenizer_config.json", NULL};
    char *dir = tu_copy_files(HF_DIR "t5-unigram", "t5", FILES);
    char *cfg = tu_path(dir, "config.json"), *in = tu_path(tu_dir, "t5.jsonl");
    static const char T5_CONFIG[] = "{\"model_type\": \"t5\"}";
    if (t5) tu_write_file(cfg, T5_CONFIG, strlen(T5_CONFIG));
    json_t *rec = json_pack("{s:s, s:s}", "text", text, "label", "yes");
    char *line = json_dumps(rec, JSON_COMPACT);
    tu_write_file(in, line, strlen(line));
    char *prefix = tu_path(tu_dir, "t5d"), *err = NULL;
    const char *args[] = {
        "prepare", "--tokenizer", dir,     "--input", in,       "--prompt-length",          "0",
        "--split", "all",         "--out", prefix,    extra[0], extra[0] ? extra[1] : NULL, NULL};
    int rc = tu_run_cli(args, out, &err);
    ck_assert_msg(rc == 0, "prepare: rc %d: %s", rc, err);
    char *path = tu_path(tu_dir, "t5d-all.h5");
    sp_dataset *ds = tu_dataset_open_ok(path);
    int64_t ids[1] = {0};
    sp_error e = {0};
    sp_batch_data_init(b);
    ck_assert_msg(sp_dataset_read_batch(ds, ids, 1, b, &e) == 0, "%s", e.msg);
    tu_rmtree(dir), remove(in), remove(path);
    json_decref(rec);
    free(line), free(err), free(path), free(prefix), free(in), free(cfg), free(dir);
    return ds;
}

/* A T5 model directory (config.json of an encoder-decoder): the input part of every example is
 * exactly what the Hugging Face tokenizer gives for the text with its specials ("$A </s>":
 * ids_special of expected.json, from the tokenizers Node binding), so the encoder reads what
 * PEFT's seq2seq prompt tuning feeds it; the target " yes" + </s> follows, scored from the
 * input's </s> on. Without config.json (a tokenizer alone) or with --no-input-eos the input
 * has no </s>; --input-eos adds it without one; a template ending with </s> gets no second. */
START_TEST(test_t5_input_ends_with_eos) {
    json_t *exp = json_load_file(HF_DIR "t5-unigram/expected.json", JSON_ALLOW_NUL, NULL);
    json_t *prose = NULL;
    ck_assert_ptr_nonnull(exp);
    json_t *entries = json_object_get(exp, "entries"), *e;
    size_t i;
    json_array_foreach(entries, i, e) if (!strcmp(json_string_value(json_object_get(e, "name")),
                                                  "prose")) prose = e;
    ck_assert_ptr_nonnull(prose);
    const char *text = json_string_value(json_object_get(prose, "text"));
    json_t *want = json_object_get(prose, "ids_special");
    int nw = (int)json_array_size(want);
    ck_assert_int_eq(json_integer_value(json_array_get(want, nw - 1)), 1); /* </s> */
    const struct {
        int t5;
        const char *extra[2];
        int eos;
    } CASES[] = {{1, {NULL}, 1},
                 {1, {"--no-input-eos"}, 0},
                 {0, {NULL}, 0},
                 {0, {"--input-eos"}, 1},
                 {1, {"--template", "{text}</s>"}, 1}}; /* not twice */
    for (size_t c = 0; c < sizeof CASES / sizeof *CASES; c++) {
        sp_batch_data b;
        char *out = NULL;
        sp_dataset *ds = prepare_t5(text, CASES[c].t5, CASES[c].extra, &b, &out);
        int n_in = CASES[c].eos ? nw : nw - 1; /* the input part, up to the first target */
        ck_assert_int_eq(b.target_pos[0], n_in - 1);
        for (int k = 0; k < n_in; k++)
            ck_assert_msg(b.tokens[k] == json_integer_value(json_array_get(want, k)),
                          "case %zu: token %d: %d", c, k, (int)b.tokens[k]);
        ck_assert_msg(!strstr(out, "inputs end with EOS") == !CASES[c].eos, "%s", out);
        int nt = b.target_start[1];
        ck_assert_int_eq(b.target_ids[nt - 1], 1); /* --eos: the target ends with </s> */
        ck_assert_int_ne(b.target_ids[0], 1);
        sp_batch_data_free(&b);
        sp_dataset_close(ds);
        free(out);
    }
    json_decref(exp);
    /* a config.json that says nothing readable is refused, naming the file and the field */
    static const char *const FILES[] = {"tokenizer.json", "tokenizer_config.json", NULL};
    static const char BAD[] = "{\"model_type\": \"t5\", \"is_encoder_decoder\": \"yes\"}";
    char *dir = tu_copy_files(HF_DIR "t5-unigram", "t5bad", FILES);
    char *cfg = tu_path(dir, "config.json"), *prefix = tu_path(tu_dir, "bad"), *out, *err;
    tu_write_file(cfg, BAD, strlen(BAD));
    const char *args[] = {"prepare", "--tokenizer", dir, "--input", INPUT, "--out", prefix, NULL};
    ck_assert_int_eq(tu_run_cli(args, &out, &err), 1);
    ck_assert_msg(strstr(err, "config.json: field \"is_encoder_decoder\": expected true or false"),
                  "%s", err);
    free(out), free(err), free(prefix), free(cfg), free(dir);
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

/* Prepares the reviews as classification data with a verbalizer; rc of the command, its stderr
 * in *err_out. */
static int prepare_cls(const char *tok_dir, const char *tpl, const char *verb, char **err_out) {
    char *prefix = tu_path(tu_dir, "m"), *out = NULL;
    const char *args[] = {"prepare",    "--tokenizer", tok_dir,        "--input", INPUT,
                          "--template", tpl,           "--verbalizer", verb,      "--split",
                          "all",        "--out",       prefix,         NULL};
    int rc = tu_run_cli(args, &out, err_out);
    free(out), free(prefix);
    return rc;
}

/* A masked LM's template: {mask} becomes the tokenizer's mask token, the class word is scored at
 * its position, and the sequence ends with the tokenizer's EOS as Hugging Face's tokenizer gives
 * it ([CLS] ... [MASK] . [SEP]; <s> ... <mask>. </s>). The dataset fits a masked LM, not a causal
 * one; a masked LM refuses a set without {mask}. */
START_TEST(test_mask_template) {
    static const struct {
        const char *dir, *mask, *eos, *verb, *word;
        sp_arch arch;
    } KINDS[] = {{HF_DIR "bert-uncased", "[MASK]", "[SEP]", "positive=truth,negative=world",
                  "truth", SP_ARCH_BERT},
                 {HF_DIR "roberta", "<mask>", "</s>", "positive= truth,negative= world",
                  "\u0120truth", SP_ARCH_ROBERTA}};
    for (size_t i = 0; i < 2; i++) {
        sp_tokenizer *t = tu_tok_load_ok(KINDS[i].dir);
        char *err = NULL;
        int rc = prepare_cls(KINDS[i].dir, "{text} It was {mask}.", KINDS[i].verb, &err);
        ck_assert_msg(rc == 0, "%s: %s", KINDS[i].dir, err);
        free(err);
        char *path = tu_path(tu_dir, "m-all.h5");
        sp_dataset *ds = tu_dataset_open_ok(path);
        int64_t ids[1] = {0};
        sp_batch_data b;
        sp_error e = {0};
        sp_batch_data_init(&b);
        ck_assert_msg(sp_dataset_read_batch(ds, ids, 1, &b, &e) == 0, "%s", e.msg);
        int n = b.seq_start[1], pos = b.target_pos[0];
        int32_t mask = sp_tokenizer_token_to_id(t, KINDS[i].mask, strlen(KINDS[i].mask));
        int32_t eos = sp_tokenizer_token_to_id(t, KINDS[i].eos, strlen(KINDS[i].eos));
        ck_assert_int_eq(b.target_start[1], 1);
        ck_assert_int_eq(b.tokens[pos], mask);
        ck_assert_int_eq(b.tokens[n - 1], eos);
        ck_assert_int_eq(b.tokens[20], sp_tokenizer_bos_id(t)); /* after the 20 soft tokens */
        ck_assert_int_lt(pos, n - 2);                           /* '.' and EOS follow */
        const sp_dataset_meta *meta = sp_dataset_get_meta(ds);
        ck_assert_int_eq(b.target_ids[0], meta->verbalizer[0]); /* review 0 is positive */
        sp_model_config mlm = {.arch = KINDS[i].arch, .vocab_size = 1000, .n_ctx = 512};
        sp_model_config causal = {.arch = SP_ARCH_GPT2, .vocab_size = 1000, .n_ctx = 512};
        ck_assert_msg(sp_dataset_check_model(ds, &mlm, &e) == 0, "%s", e.msg);
        ck_assert_int_eq(sp_dataset_check_model(ds, &causal, &e), -1);
        ck_assert_msg(strstr(e.msg, "has {mask}, but the model (gpt2) is a causal LM"), "%s",
                      e.msg);
        sp_batch_data_free(&b);
        sp_dataset_close(ds);
        ck_assert_int_eq(remove(path), 0);
        /* the same reviews without {mask}: refused by the masked LM */
        rc = prepare_cls(KINDS[i].dir, "{text} It was", KINDS[i].verb, &err);
        ck_assert_msg(rc == 0, "%s: %s", KINDS[i].dir, err);
        free(err);
        ds = tu_dataset_open_ok(path);
        ck_assert_int_eq(sp_dataset_check_model(ds, &mlm, &e), -1);
        ck_assert_msg(strstr(e.msg, "is a masked LM, scored at a {mask} position, but the "
                                    "dataset's template '{soft:20}{text} It was' has no {mask}"),
                      "%s", e.msg);
        sp_dataset_close(ds);
        ck_assert_int_eq(remove(path), 0);
        free(path);
        sp_tokenizer_free(t);
    }
}
END_TEST

/* Bad {mask} templates and a verbalizer word of several WordPieces: refused before any data is
 * read, naming the word and its pieces. */
START_TEST(test_mask_refusals) {
    static const struct {
        const char *dir, *tpl, *verb, *want;
    } CASES[] = {
        {HF_DIR "bert-uncased", "{text} It was {mask}.", "positive=wonderful,negative=world",
         "the word \"wonderful\" of class \"positive\" is "},
        {HF_DIR "bert-uncased", "{mask} {text} {mask}", "positive=truth,negative=world",
         "column 15: a second {mask}"},
        {HF_DIR "qwen2", "{text} It was {mask}.", "positive= good,negative= bad",
         "{mask}, but the tokenizer has no mask token"},
    };
    for (size_t i = 0; i < sizeof CASES / sizeof *CASES; i++) {
        char *err = NULL;
        int rc = prepare_cls(CASES[i].dir, CASES[i].tpl, CASES[i].verb, &err);
        ck_assert_msg(rc != 0 && strstr(err, CASES[i].want), "case %zu: rc %d: %s", i, rc, err);
        free(err);
    }
    char *err = NULL, *out = NULL, *prefix = tu_path(tu_dir, "g");
    const char *gen[] = {"prepare",       "--tokenizer", HF_DIR "bert-uncased",
                         "--input",       INPUT,         "--template",
                         "{text} {mask}", "--target",    " {label}",
                         "--out",         prefix,        NULL};
    ck_assert_int_ne(tu_run_cli(gen, &out, &err), 0);
    ck_assert_msg(strstr(err, "{mask} needs --verbalizer"), "%s", err);
    free(err), free(out), free(prefix);
}
END_TEST

int main(void) {
    const TTest *tests[] = {test_llama2_bos,
                            test_llama3_bos_first,
                            test_opt_bos_is_eos,
                            test_qwen2_no_bos,
                            test_tokenizer_of_model_dir,
                            test_t5_and_bert,
                            test_mask_template,
                            test_mask_refusals,
                            test_t5_input_ends_with_eos,
                            NULL};
    return tu_main("prepare_tokenizers", tests, NULL, NULL);
}
