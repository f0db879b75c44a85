/* The softprompt front end: help and usage errors, init-model flag validation, and
 * init-model followed by info reporting the parameter count the GPT-2 shape formula gives;
 * strings from files printed escaped; eval's JSON output (no result for a non-finite loss) and
 * refusals (empty sets, another model's checkpoint); export naming the base model and refusing
 * another model's checkpoint without touching the adapter there. */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* 124439808 -> "124,439,808", written independently of the CLI's formatting code. */
static void commas(char *buf, uint64_t v) {
    if (v < 1000) {
        sprintf(buf, "%" PRIu64, v);
        return;
    }
    commas(buf, v / 1000);
    sprintf(buf + strlen(buf), ",%03" PRIu64, v % 1000);
}

/* GPT-2 with d_ff = 4d: embeddings + L blocks (12 d^2 + 13 d each) + final LayerNorm. */
static uint64_t gpt2_params(uint64_t L, uint64_t d, uint64_t V, uint64_t ctx) {
    return V * d + ctx * d + L * (12 * d * d + 13 * d) + 2 * d;
}

START_TEST(help_lists_commands) {
    const char *args[] = {"help", NULL};
    tu_cli r = tu_cli_run(args);
    ck_assert_int_eq(r.rc, 0);
    tu_assert_has(r.out, "usage: softprompt <command>");
    tu_assert_has(r.out, "  info ");
    tu_assert_has(r.out, "  init-model ");
    tu_cli_free(&r);
}
END_TEST

START_TEST(command_help) {
    const char *a1[] = {"info", "--help", NULL};
    tu_cli r = tu_cli_run(a1);
    ck_assert_int_eq(r.rc, 0);
    tu_assert_has(r.out, "usage: softprompt info PATH");
    tu_cli_free(&r);
    const char *a2[] = {"help", "init-model", NULL};
    r = tu_cli_run(a2);
    ck_assert_int_eq(r.rc, 0);
    tu_assert_has(r.out, "usage: softprompt init-model");
    tu_assert_has(r.out, "--dtype");
    tu_cli_free(&r);
}
END_TEST

START_TEST(unknown_command) {
    const char *args[] = {"frobnicate", NULL};
    tu_cli r = tu_cli_run(args);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "unknown command 'frobnicate'");
    tu_cli_free(&r);
    const char *none[] = {NULL};
    r = tu_cli_run(none);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "usage: softprompt");
    tu_cli_free(&r);
}
END_TEST

START_TEST(info_usage_errors) {
    const char *a1[] = {"info", NULL};
    tu_cli r = tu_cli_run(a1);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "softprompt info: expected exactly one PATH, got 0");
    tu_cli_free(&r);
    const char *a2[] = {"info", "a", "b", NULL};
    r = tu_cli_run(a2);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "got 2");
    tu_cli_free(&r);
    const char *a3[] = {"info", "--bogus", "x", NULL};
    r = tu_cli_run(a3);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "softprompt info: unknown option '--bogus'");
    tu_cli_free(&r);
}
END_TEST

/* A value outside a flag's fixed set of names is a usage error (exit 2) naming the accepted
 * values, found before any file is opened (the paths here do not exist). */
START_TEST(unknown_names_are_usage_errors) {
    const char *methods = "expected prompt, prefix, ptuning-v2 or prompt+prefix";
    const char *formats = "expected jsonl, json, csv or tsv";
    struct {
        const char *args[12], *expected;
    } cases[] = {
        {{"train", "--model", "m", "--train", "t.h5", "--out", "o", "--method", "deep"}, methods},
        {{"eval", "--model", "m", "--data", "d.h5", "--prompt", "p.h5", "--method", "deep"},
         methods},
        {{"export", "--model", "m", "--prompt", "p.h5", "--out", "o", "--method", "deep"}, methods},
        {{"generate", "--model", "m", "--prompt", "p.h5", "--text", "x", "--method", "deep"},
         methods},
        {{"inspect", "--model", "m", "--method", "deep", "p.h5"}, methods},
        {{"predict", "--model", "m", "--prompt", "p.h5", "--data", "d.h5", "--out", "o", "--method",
          "deep"},
         methods},
        {{"prepare", "--tokenizer", "t", "--input", "i.jsonl", "--out", "o", "--format", "xml"},
         formats},
        {{"generate", "--model", "m", "--input", "i.jsonl", "--format", "xml"}, formats},
        {{"predict", "--model", "m", "--prompt", "p.h5", "--input", "i.jsonl", "--out", "o",
          "--input-format", "xml"},
         formats},
        {{"predict", "--model", "m", "--prompt", "p.h5", "--data", "d.h5", "--out", "o", "--format",
          "xml"},
         "expected jsonl, csv or tsv"},
        {{"export", "--model", "m", "--prompt", "p.h5", "--out", "o", "--format", "xml"},
         "expected peft, npy or kobold"},
        {{"train", "--model", "m", "--train", "t.h5", "--out", "o", "--optimizer", "adam"},
         "expected adafactor, adamw or sgd"},
        {{"train", "--model", "m", "--train", "t.h5", "--out", "o", "--schedule", "step"},
         "expected constant, linear or cosine"},
        {{"train", "--model", "m", "--train", "t.h5", "--out", "o", "--metric", "f1"},
         "expected accuracy or loss"},
        {{"train", "--model", "m", "--train", "t.h5", "--out", "o", "--weights", "f16"},
         "expected auto, f32 or bf16"},
        {{"init-model", "--dtype", "f64", "m"}, "expected f32, f16 or bf16"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tu_cli r = tu_cli_run(cases[i].args);
        ck_assert_msg(r.rc == 2, "%s ... %s: exit %d (%s)", cases[i].args[0], cases[i].expected,
                      r.rc, r.err);
        tu_assert_has(r.err, cases[i].expected);
        tu_cli_free(&r);
    }
}
END_TEST

START_TEST(info_missing_directory) {
    char *dir = tu_path(tu_dir, "nope");
    const char *args[] = {"info", dir, NULL};
    tu_cli r = tu_cli_run(args);
    ck_assert_int_eq(r.rc, 1);
    tu_assert_has(r.err, "softprompt info: ");
    tu_assert_has(r.err, "nope/config.json: cannot open: No such file or directory");
    tu_cli_free(&r);
    free(dir);
}
END_TEST

START_TEST(info_missing_h5) {
    const char *args[] = {"info", "data.h5", NULL};
    tu_cli r = tu_cli_run(args);
    ck_assert_int_eq(r.rc, 1);
    tu_assert_has(r.err, "softprompt info: data.h5: cannot open: No such file or directory");
    tu_cli_free(&r);
}
END_TEST

/* A classification dataset of 4 examples at tu_dir/name whose class names are names[2]. */
static char *write_dataset(const char *name, const char *const names[2]) {
    static const int32_t verbalizer[2] = {5, 6};
    sp_dataset_meta m = {0};
    m.task = SP_TASK_CLASSIFICATION;
    m.n_soft = 1, m.n_classes = 2, m.verbalizer = verbalizer, m.class_names = names;
    m.template_spec = "{soft}{text}\x1b[31m", m.source = "in\njected.jsonl";
    char *path = tu_path(tu_dir, name);
    sp_error err = {0};
    sp_dataset_writer *w = sp_dataset_writer_open(path, &m, 0, &err);
    ck_assert_msg(w != NULL, "%s", err.msg);
    for (int i = 0; i < 4; i++) {
        int32_t tokens[3] = {SP_SOFT(0), 1, 2}, pos = 2, id = verbalizer[i % 2];
        ck_assert_msg(sp_dataset_writer_add(w, tokens, 3, &pos, &id, 1, i % 2, &err) == 0, "%s",
                      err.msg);
    }
    ck_assert_msg(sp_dataset_writer_close(w, &err) == 0, "%s", err.msg);
    return path;
}

/* Strings from the file (class names, template, source) are printed escaped: a dataset cannot
 * clear the screen or fake lines of `info` output. */
START_TEST(info_escapes_dataset_strings) {
    const char *names[2] = {"neg\x1b[2J", "pos\nfake line\xE2\x80\xAE"};
    char *p = write_dataset("evil.h5", names);
    const char *args[] = {"info", p, NULL};
    tu_cli r = tu_cli_run(args);
    ck_assert_int_eq(r.rc, 0);
    tu_assert_has(r.out, "neg\\x1b[2J");
    tu_assert_has(r.out, "pos\\nfake line\\u{202e}");
    tu_assert_has(r.out, "{soft}{text}\\x1b[31m");
    tu_assert_has(r.out, "in\\njected.jsonl");
    ck_assert_msg(!strchr(r.out, '\x1b'), "raw ESC in:\n%s", r.out);
    ck_assert_msg(!strstr(r.out, "\nfake line"), "raw newline in a class name:\n%s", r.out);
    tu_cli_free(&r);
    free(p);
}
END_TEST

/* eval's confusion table shows class names escaped too. */
START_TEST(eval_escapes_class_names) {
    char *model = tu_path(tu_dir, "m"), *prompt = tu_path(tu_dir, "p.h5");
    const char *init[] = {"init-model", "--layers", "1",     "--d", "8",   "--heads", "2",
                          "--vocab",    "10",       "--ctx", "8",   model, NULL};
    tu_cli r = tu_cli_run(init);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    tu_cli_free(&r);
    const char *names[2] = {"neg\x1b[2J", "pos\nfake line"};
    char *data = write_dataset("evil.h5", names);
    hsize_t dims[2] = {1, 8};
    float zeros[8] = {0};
    tu_h5_write_dataset(prompt, "prompt", 2, dims, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, zeros);
    const char *args[] = {"eval", "--model", model, "--data", data, "--prompt", prompt, NULL};
    r = tu_cli_run(args);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    tu_assert_has(r.out, "  neg\\x1b[2J ");
    tu_assert_has(r.out, "  pos\\nfake line ");
    ck_assert_msg(!strchr(r.out, '\x1b'), "raw ESC in:\n%s", r.out);
    tu_cli_free(&r);
    free(model), free(prompt), free(data);
}
END_TEST

/* A damaged root object header is reported as damage, not as a missing "format" attribute. */
START_TEST(info_reports_damage) {
    const char *names[2] = {"neg", "pos"};
    char *p = write_dataset("good.h5", names);
    char *bad = tu_damage_header(p, ".", "bad.h5");
    const char *args[] = {"info", bad, NULL};
    tu_cli r = tu_cli_run(args);
    ck_assert_int_eq(r.rc, 1);
    tu_assert_has(r.err, "bad.h5: cannot look up root attribute \"format\" (metadata checksum "
                         "mismatch: the file is damaged)");
    tu_cli_free(&r);
    free(bad), free(p);
}
END_TEST

/* LeakSanitizer's interface, present only in sanitizer builds. */
int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

/* Regression: a dataset whose metadata checksum fails made LeakSanitizer report libhdf5's
 * object header (1.10 leaks it when the checksum fails; tests/lsan.supp says why it is
 * suppressed and why full stacks are needed to match it). Sanitizer builds only. */
START_TEST(damaged_dataset_leaks_nothing) {
    if (!__lsan_do_recoverable_leak_check) return; /* no LeakSanitizer in this build */
    const char *names[2] = {"neg", "pos"};
    char *p = write_dataset("good.h5", names);
    setenv("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0", 1);
    setenv("LSAN_OPTIONS",
           "suppressions=" SP_FIXTURES_DIR "/../lsan.supp:print_suppressions=0:"
           "fast_unwind_on_malloc=0",
           1);
    const char *objects[] = {".", "offsets"};
    for (int k = 0; k < 2; k++) {
        char *bad = tu_damage_header(p, objects[k], "bad.h5");
        const char *args[] = {"info", bad, NULL};
        tu_cli r = tu_cli_run(args);
        ck_assert_msg(!strstr(r.err, "LeakSanitizer"), "%s", r.err);
        ck_assert_int_eq(r.rc, 1);
        tu_assert_has(r.err, "metadata checksum mismatch: the file is damaged");
        tu_cli_free(&r);
        free(bad);
    }
    free(p);
}
END_TEST

/* Each bad value must exit 2 naming the flag and the value. */
START_TEST(init_model_bad_flags) {
    static const struct {
        const char *flag, *value, *expect;
    } cases[] = {
        {"--layers", "0", "--layers '0': expected an integer from 1 to 1024"},
        {"--layers", "abc", "--layers 'abc': expected an integer"},
        {"--layers", "3x", "--layers '3x'"},
        {"--d", "-5", "--d '-5': expected an integer from 1 to 65536"},
        {"--heads", "5", "--heads '5': expected a divisor of --d 768"},
        {"--d-ff", "0", "--d-ff '0'"},
        {"--vocab", "99999999999", "--vocab '99999999999'"},
        {"--ctx", "", "--ctx '': expected an integer"},
        {"--dtype", "f8", "--dtype 'f8': expected f32, f16 or bf16"},
        {"--shards", "0", "--shards '0'"},
        {"--seed", "-1", "--seed '-1'"},
        {"--std", "-0.5", "--std '-0.5': expected a finite number >= 0"},
        {"--std", "nan", "--std 'nan'"},
    };
    char *out = tu_path(tu_dir, "out");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {"init-model", cases[i].flag, cases[i].value, out, NULL};
        tu_cli r = tu_cli_run(args);
        ck_assert_msg(r.rc == 2, "%s %s: exit %d", cases[i].flag, cases[i].value, r.rc);
        tu_assert_has(r.err, "softprompt init-model: ");
        tu_assert_has(r.err, cases[i].expect);
        tu_cli_free(&r);
    }
    const char *unknown[] = {"init-model", "--bogus", out, NULL};
    tu_cli r = tu_cli_run(unknown);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "unknown option '--bogus'");
    tu_cli_free(&r);
    const char *missing_value[] = {"init-model", out, "--layers", NULL};
    r = tu_cli_run(missing_value);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "--layers needs a value (N)");
    tu_cli_free(&r);
    const char *no_out[] = {"init-model", "--layers", "2", NULL};
    r = tu_cli_run(no_out);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "expected exactly one OUT, got 0");
    tu_cli_free(&r);
    const char *too_many_shards[] = {"init-model", "--layers", "1",       "--d", "8",
                                     "--heads",    "2",        "--vocab", "10",  "--ctx",
                                     "4",          "--shards", "17",      out,   NULL};
    r = tu_cli_run(too_many_shards); /* 16 tensors: the library refuses, exit 1 */
    ck_assert_int_eq(r.rc, 1);
    tu_assert_has(r.err, "n_shards = 17, expected 1 to 16");
    tu_cli_free(&r);
    free(out);
}
END_TEST

/* init-model, then info: shapes and the parameter count from the formula. */
static void init_then_info(const char *dtype, const char *shards, const char *expect_dtype,
                           const char *expect_files, int untied) {
    const uint64_t L = 3, d = 32, heads = 4, V = 1000, ctx = 64;
    char *dir = tu_path(tu_dir, "model");
    const char *init[] = {"init-model",
                          "--layers",
                          "3",
                          "--d",
                          "32",
                          "--heads",
                          "4",
                          "--vocab",
                          "1000",
                          "--ctx",
                          "64",
                          "--dtype",
                          dtype,
                          "--shards",
                          shards,
                          "--seed",
                          "5",
                          dir,
                          untied ? "--untied" : NULL,
                          NULL};
    tu_cli r = tu_cli_run(init);
    ck_assert_msg(r.rc == 0, "init-model exit %d: %s", r.rc, r.err);
    char n[64], line[128];
    uint64_t params = gpt2_params(L, d, V, ctx) + (untied ? V * d : 0);
    snprintf(line, sizeof line, "%" PRIu64 " parameters", params);
    tu_assert_has(r.out, line);
    tu_assert_has(r.out, dir);
    tu_cli_free(&r);

    const char *info[] = {"info", dir, NULL};
    r = tu_cli_run(info);
    ck_assert_msg(r.rc == 0, "info exit %d: %s", r.rc, r.err);
    commas(n, params);
    snprintf(line, sizeof line, "(%s)", n);
    tu_assert_has(r.out, line);
    tu_assert_has(r.out, "GPT2LMHeadModel");
    snprintf(line, sizeof line, "layers        %" PRIu64 "\n", L);
    tu_assert_has(r.out, line);
    snprintf(line, sizeof line, "heads         %" PRIu64 " (head dim %" PRIu64 ")", heads,
             d / heads);
    tu_assert_has(r.out, line);
    snprintf(line, sizeof line, "d_ff          %" PRIu64 "\n", 4 * d);
    tu_assert_has(r.out, line);
    snprintf(line, sizeof line, "%s %s params", expect_dtype, n);
    tu_assert_has(r.out, line);
    tu_assert_has(r.out, expect_files);
    tu_assert_has(r.out, "used in place");
    tu_assert_has(r.out, "per token at full context (64 tokens)");
    tu_assert_has(r.out, untied ? "separate LM head" : "LM head tied to wte");
    tu_cli_free(&r);
    free(dir);
}

START_TEST(init_model_then_info_f32) {
    init_then_info("f32", "1", "F32", "1 (model.safetensors, not sharded)", 0);
}
END_TEST

/* GPT2LMHeadModel with tie_word_embeddings false stores lm_head.weight [V, d]. */
START_TEST(init_model_gpt2_untied) {
    init_then_info("f32", "1", "F32", "1 (model.safetensors, not sharded)", 1);
    char *path = tu_path(tu_dir, "model/config.json");
    char *cfg = tu_read_file(path, NULL);
    tu_assert_has(cfg, "\"tie_word_embeddings\": false");
    free(cfg), free(path);
}
END_TEST

START_TEST(init_model_then_info_f16_sharded) {
    init_then_info("f16", "3", "F16", "3 shards", 0);
}
END_TEST

/* opt-350m's shape, shrunk (1 layer, vocabulary 500): post-norm blocks, 512-wide embeddings
 * with project_in / project_out to d_model 1024. */
START_TEST(init_model_opt350m_shape_then_info) {
    char *dir = tu_path(tu_dir, "opt350");
    const char *init[] = {"init-model", "--shape", "opt-350m", "--layers", "1", "--vocab",
                          "500",        "--dtype", "bf16",     dir,        NULL};
    tu_cli r = tu_cli_run(init);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    tu_assert_has(r.out, "1 layers, d_model 1024, 16 heads (16 key/value), d_ff 4096, vocab 500, "
                         "context 2048, tied head");
    tu_cli_free(&r);
    char *cfg_path = tu_path(dir, "config.json");
    size_t len;
    char *cfg = tu_read_file(cfg_path, &len);
    tu_assert_has(cfg, "\"do_layer_norm_before\": false");
    tu_assert_has(cfg, "\"word_embed_proj_dim\": 512");
    free(cfg), free(cfg_path);
    const char *info[] = {"info", dir, NULL};
    r = tu_cli_run(info);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    tu_assert_has(r.out, "OPTForCausalLM (model_type opt)");
    tu_assert_has(r.out, "post-norm     norms after each residual add, none before the LM head");
    tu_assert_has(r.out, "embeddings    512 wide (the prompt's too), project_in to 1024");
    /* 500*512 + 2050*1024 + 2*512*1024 + 1 layer (4*(1024*1024 + 1024) + 4*1024 + 2*4096*1024 +
     * 4096 + 1024) */
    tu_assert_has(r.out, "16,000,000");
    tu_cli_free(&r);
    const char *bad[] = {"init-model", "--arch", "gpt2", "--embed-dim", "8", dir, NULL};
    r = tu_cli_run(bad);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "--embed-dim '8': expected only with --arch opt");
    tu_cli_free(&r);
    free(dir);
}
END_TEST

/* A real shape, shrunk (layers, vocabulary): everything else is SmolLM2-135M's. */
START_TEST(init_model_llama_shape_then_info) {
    char *dir = tu_path(tu_dir, "smol");
    const char *init[] = {"init-model", "--shape", "smollm2-135m", "--layers", "1", "--vocab",
                          "500",        "--dtype", "bf16",         dir,        NULL};
    tu_cli r = tu_cli_run(init);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    tu_assert_has(r.out, "random llama weights");
    tu_assert_has(r.out, "1 layers, d_model 576, 9 heads (3 key/value), d_ff 1536, vocab 500, "
                         "context 8192, tied head");
    tu_cli_free(&r);
    const char *info[] = {"info", dir, NULL};
    r = tu_cli_run(info);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    tu_assert_has(r.out, "LlamaForCausalLM (model_type llama)");
    tu_assert_has(r.out, "9 query, 3 key/value (grouped, head dim 64)");
    tu_assert_has(r.out, "RMSNorm (eps 1e-05), rotary theta 100000, SwiGLU MLP");
    /* 500*576 + 1 layer (2*576 + 576*(576+2*192) + 576*576 + 3*576*1536) + 576 */
    tu_assert_has(r.out, "3,828,672");
    tu_assert_has(r.out, "LM head tied to wte");
    tu_cli_free(&r);
    free(dir);
}
END_TEST

START_TEST(init_model_qwen2_and_bad_llama_flags) {
    char *dir = tu_path(tu_dir, "qwen");
    const char *init[] = {"init-model", "--arch",  "qwen2", "--layers",   "2", "--d",
                          "32",         "--heads", "4",     "--kv-heads", "2", "--vocab",
                          "50",         "--ctx",   "16",    dir,          NULL};
    tu_cli r = tu_cli_run(init);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    tu_cli_free(&r);
    const char *info[] = {"info", dir, NULL};
    r = tu_cli_run(info);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    tu_assert_has(r.out, "Qwen2ForCausalLM (model_type qwen2)");
    tu_assert_has(r.out, "rotary theta 1e+06, SwiGLU MLP, q/k/v biases");
    tu_assert_has(r.out, "separate LM head");
    tu_cli_free(&r);
    const char *bad_kv[] = {"init-model", "--arch", "llama", "--kv-heads", "5", dir, NULL};
    r = tu_cli_run(bad_kv);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "--kv-heads '5': expected a divisor of --heads 12");
    tu_cli_free(&r);
    const char *bad_arch[] = {"init-model", "--arch", "mt5", dir, NULL};
    r = tu_cli_run(bad_arch);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err,
                  "--arch 'mt5': expected gpt2, llama, qwen2, mistral, qwen3, gemma, gemma2, "
                  "gemma3_text, gpt_neox, phi3, opt, phi, bert, roberta, t5 or bloom");
    tu_cli_free(&r);
    const char *t5_kv[] = {"init-model", "--arch", "t5", "--kv-heads", "6", dir, NULL};
    r = tu_cli_run(t5_kv);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "--kv-heads '6': expected --heads 12: t5 has no grouped-query heads");
    tu_cli_free(&r);
    const char *bad_shape[] = {"init-model", "--shape", "gpt5", dir, NULL};
    r = tu_cli_run(bad_shape);
    ck_assert_int_eq(r.rc, 2);
    tu_assert_has(r.err, "--shape 'gpt5': expected gpt2, gpt2-medium");
    tu_cli_free(&r);
    char *other = tu_path(tu_dir, "pre");
    const char *prefix[] = {"init-model", "--arch", "llama",   "--layers", "1",        "--d", "8",
                            "--heads",    "2",      "--vocab", "10",       "--prefix", other, NULL};
    r = tu_cli_run(prefix);
    ck_assert_int_eq(r.rc, 1);
    tu_assert_has(r.err, "the transformer. prefix is GPT-2's naming; llama files use model.*");
    tu_cli_free(&r);
    free(dir), free(other);
}
END_TEST

START_TEST(init_model_refuses_non_empty) {
    char *dir = tu_path(tu_dir, "m");
    const char *init[] = {"init-model", "--layers", "1",     "--d", "8", "--heads", "2",
                          "--vocab",    "10",       "--ctx", "4",   dir, NULL};
    tu_cli r = tu_cli_run(init);
    ck_assert_int_eq(r.rc, 0);
    tu_cli_free(&r);
    r = tu_cli_run(init);
    ck_assert_int_eq(r.rc, 1);
    tu_assert_has(r.err, "softprompt init-model: ");
    tu_assert_has(r.err, "directory is not empty (use --force");
    tu_cli_free(&r);
    const char *forced[] = {"init-model", "--force", "--layers", "1",     "--d", "8", "--heads",
                            "2",          "--vocab", "10",       "--ctx", "4",   dir, NULL};
    r = tu_cli_run(forced);
    ck_assert_int_eq(r.rc, 0);
    tu_cli_free(&r);
    free(dir);
}
END_TEST

/* ---- eval and export ---- */

enum { NP = 4, DM = 16 };

/* A classification set with NP soft slots and n examples (0 allowed). */
static char *make_dataset(const char *name, int n) {
    return tu_write_cls_set(
        name, &(tu_cls_set){.n_soft = NP, .n_examples = n, .text_min = 3, .text_mod = 5});
}

START_TEST(eval_prints_json_and_refuses_what_is_not_a_result) {
    char *model = tu_tiny_gpt2("model", 1), *other = tu_tiny_gpt2("other", 2);
    char *data = make_dataset("data.h5", 9), *empty = make_dataset("empty.h5", 0);
    char *ad = tu_write_adapter("adapter", model, NP, "random", NULL);
    const char *a1[] = {"eval", "--model", model, "--data", data, "--prompt", ad, "--json", NULL};
    tu_cli r = tu_cli_run(a1);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    json_error_t je;
    json_t *j = json_loads(r.out, 0, &je);
    ck_assert_msg(j != NULL, "not JSON: %s (%s)", r.out, je.text);
    ck_assert_int_eq(json_integer_value(json_object_get(j, "examples")), 9);
    ck_assert(json_is_real(json_object_get(j, "loss")) &&
              json_is_real(json_object_get(j, "accuracy")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "prompt")), ad);
    json_decref(j);
    tu_cli_free(&r);

    /* An empty set: refused, not "accuracy 0.0000 (0/0)". */
    const char *a2[] = {"eval", "--model", model, "--data", empty, NULL};
    r = tu_cli_run(a2);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_msg(strstr(r.err, "holds no examples: nothing to evaluate"), "%s", r.err);
    ck_assert_msg(strstr(r.out, "accuracy") == NULL, "%s", r.out);
    tu_cli_free(&r);

    /* A checkpoint of another model of the same width. */
    char *ck = tu_write_prompt_checkpoint("ck.h5", other, NP, "{}");
    const char *a3[] = {"eval", "--model", model, "--data", data, "--prompt", ck, NULL};
    r = tu_cli_run(a3);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_msg(strstr(r.err, "trained with another model") &&
                      strstr(r.err, "--allow-model-mismatch"),
                  "%s", r.err);
    tu_cli_free(&r);

    /* A model with one NaN in an embedding row: no result (never "nan" in the JSON), exit 1,
     * and the examples whose loss is not finite named. */
    char *st = tu_path(model, "model.safetensors");
    tu_st_set_f32(st, "wte.weight", 105 * DM + 3, NAN);
    r = tu_cli_run(a1);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_msg(r.out[0] == '\0', "%s", r.out);
    ck_assert_msg(strstr(r.err, "is not finite (nan)") && strstr(r.err, "softprompt info"), "%s",
                  r.err);
    tu_cli_free(&r);
    free(model), free(other), free(data), free(empty), free(ad), free(ck), free(st);
}
END_TEST

START_TEST(export_checks_the_prompt_and_names_the_base_model) {
    char *model = tu_tiny_gpt2("model", 1), *other = tu_tiny_gpt2("other", 2);
    char *ck = tu_write_prompt_checkpoint("ck.h5", model, NP, "{\"init\": \"vocab\"}");
    char *out = tu_path(tu_dir, "out");
    const char *a1[] = {"export", "--model", model, "--prompt", ck, "--out", out, NULL};
    tu_cli r = tu_cli_run(a1);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    char *real = realpath(model, NULL);
    char line[4200];
    snprintf(line, sizeof line, "base_model_name_or_path: %s (the model directory's absolute path)",
             real);
    ck_assert_msg(strstr(r.out, line), "%s", r.out);
    tu_cli_free(&r);
    char *cfg_path = tu_path(out, "adapter_config.json");
    json_t *cfg = tu_json_load(cfg_path);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "prompt_tuning_init")), "SAMPLE_VOCAB");
    ck_assert_ptr_null(json_object_get(cfg, "modules_to_save"));
    json_decref(cfg);
    /* An adapter exports again (the same prompt); another model's checkpoint does not. */
    char *again = tu_path(tu_dir, "again");
    const char *a2[] = {"export", "--model", model, "--prompt", out, "--out", again, NULL};
    r = tu_cli_run(a2);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    tu_cli_free(&r);
    char *st1 = tu_path(out, "adapter_model.safetensors"),
         *st2 = tu_path(again, "adapter_model.safetensors");
    size_t n1, n2;
    char *b1 = tu_read_file(st1, &n1), *b2 = tu_read_file(st2, &n2);
    ck_assert(n1 == n2 && memcmp(b1, b2, n1) == 0);
    const char *a3[] = {"export", "--model", other,     "--prompt", ck,
                        "--out",  again,     "--force", NULL};
    r = tu_cli_run(a3);
    ck_assert_int_eq(r.rc, 1);
    ck_assert_msg(strstr(r.err, "trained with another model"), "%s", r.err);
    tu_cli_free(&r);
    char *b3 = tu_read_file(st2, &n2); /* the refused export left the adapter as it was */
    ck_assert(n1 == n2 && memcmp(b1, b3, n1) == 0);
    free(b3);
    free(model), free(other), free(ck), free(out), free(real), free(cfg_path), free(again);
    free(st1), free(st2), free(b1), free(b2);
}
END_TEST

int main(void) {
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
    tcase_add_test(tc, help_lists_commands);
    tcase_add_test(tc, command_help);
    tcase_add_test(tc, unknown_command);
    tcase_add_test(tc, info_usage_errors);
    tcase_add_test(tc, unknown_names_are_usage_errors);
    tcase_add_test(tc, info_missing_directory);
    tcase_add_test(tc, info_missing_h5);
    tcase_add_test(tc, init_model_bad_flags);
    tcase_add_test(tc, init_model_then_info_f32);
    tcase_add_test(tc, init_model_gpt2_untied);
    tcase_add_test(tc, init_model_then_info_f16_sharded);
    tcase_add_test(tc, init_model_refuses_non_empty);
    tcase_add_test(tc, init_model_llama_shape_then_info);
    tcase_add_test(tc, init_model_opt350m_shape_then_info);
    tcase_add_test(tc, init_model_qwen2_and_bad_llama_flags);
    tcase_add_test(tc, info_escapes_dataset_strings);
    tcase_add_test(tc, info_reports_damage);
    tcase_add_test(tc, eval_escapes_class_names);
    tcase_add_test(tc, damaged_dataset_leaks_nothing);
    tcase_add_test(tc, eval_prints_json_and_refuses_what_is_not_a_result);
    tcase_add_test(tc, export_checks_the_prompt_and_names_the_base_model);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
