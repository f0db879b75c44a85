/* Prompts for use (sp_prompt_load, sp_prompt_check_model) and PEFT adapters in both directions:
 *  - checkpoints, h5py files and PEFT adapters (directory or file) load, with what is known of
 *    their origin; adapters are validated against their adapter_config.json (method, task,
 *    submodules, shape, extra tensors, non-finite values, missing config); pickles are refused;
 *  - a checkpoint of another model is refused (or a warning with the override), an adapter
 *    with another model's num_layers/num_attention_heads gets a warning;
 *  - every key sp_peft_export writes exists in every PEFT release since 0.6 (the recorded
 *    field lists, tests/fixtures/peft); base_model_name_or_path defaults to a loadable name;
 *  - the eval and export commands built on them: JSON output (null for a non-finite loss),
 *    empty sets refused, foreign checkpoints refused. */
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "softprompt/checkpoint.h"
#include "softprompt/model_init.h"
#include "softprompt/safetensors.h"
#include "testutil.h"

enum { NP = 4, DM = 16, VOCAB = 211 };

/* A tiny GPT-2 (2 layers, d 16, 2 heads) whose vocabulary covers make_dataset's tokens. */
static char *make_model(const char *name, uint64_t seed) {
    sp_init_options o = tu_gpt2_options(2, DM, 2, 64, VOCAB, 32, seed);
    return tu_write_model(name, &o);
}

/* A classification set with NP soft slots and n examples (0 allowed). */
static char *make_dataset(const char *name, int n) {
    return tu_write_cls_set(
        name, &(tu_cls_set){.n_soft = NP, .n_examples = n, .text_min = 3, .text_mod = 5});
}

static sp_prompt_file load_ok(const char *path) {
    sp_prompt_file pf;
    sp_error err = {0};
    ck_assert_msg(sp_prompt_load(path, &pf, &err) == 0, "%s: %s", path, err.msg);
    ck_assert_int_eq(pf.n_prompt, NP);
    ck_assert_int_eq(pf.d, DM);
    return pf;
}

/* Loading fails with a message naming `names` (the file at fault) and containing want. */
static void load_fails(const char *path, const char *names, const char *want) {
    sp_prompt_file pf;
    sp_error err = {0};
    ck_assert_msg(sp_prompt_load(path, &pf, &err) == -1, "%s loaded", path);
    ck_assert_ptr_null(pf.prompt);
    ck_assert_msg(strstr(err.msg, names) != NULL, "message does not name %s: %s", names, err.msg);
    ck_assert_msg(strstr(err.msg, want) != NULL, "expected \"%s\" in: %s", want, err.msg);
}

/* The adapter's config with key set to value (json_null() to set null; NULL to delete). */
static void edit_adapter_config(const char *dir, const char *key, json_t *value) {
    char *path = tu_path(dir, "adapter_config.json");
    tu_json_edit(path, key, value);
    free(path);
}

/* A copy of adapter directory from, as to (both files). */
static char *copy_adapter(const char *from, const char *to_name) {
    char *to = tu_path(tu_dir, to_name);
    ck_assert_int_eq(mkdir(to, 0755), 0);
    const char *files[] = {"adapter_config.json", "adapter_model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *a = tu_path(from, files[i]), *b = tu_path(to, files[i]);
        tu_copy_file(a, b);
        free(a), free(b);
    }
    return to;
}

/* Replaces dir/adapter_model.safetensors with the given tensors. */
static void write_adapter_tensors(const char *dir, const sp_st_out *t, int n) {
    char *path = tu_path(dir, "adapter_model.safetensors");
    sp_error err = {0};
    ck_assert_msg(sp_st_write(path, t, n, NULL, 0, &err) == 0, "%s", err.msg);
    free(path);
}

/* ------------------------------------------------------------------------------------------ */
/* Loading                                                                                    */
/* ------------------------------------------------------------------------------------------ */

START_TEST(loads_checkpoints_h5py_files_and_adapters) {
    char *model = make_model("model", 1);
    char *ck = tu_write_prompt_checkpoint("ck.h5", model, NP,
                                          "{\"init\": \"text\", \"init_arg\": \"Classify:\"}");
    sp_prompt_file pf = load_ok(ck);
    ck_assert_int_eq(pf.kind, SP_PROMPT_CHECKPOINT);
    ck_assert_int_eq(pf.step, 12);
    ck_assert_str_eq(pf.init_name, "text");
    ck_assert_str_eq(pf.init_text, "Classify:");
    ck_assert_uint_eq(strlen(pf.model_fingerprint), 16);
    ck_assert(pf.prompt[1] == 0.01f * (float)(7 % 13 - 6));
    sp_prompt_file_free(&pf);

    /* An h5py-style file, named without .h5: told apart by content. */
    double vals[NP * DM];
    for (int i = 0; i < NP * DM; i++) vals[i] = 0.5 * i;
    hsize_t dims[2] = {NP, DM};
    char *plain = tu_path(tu_dir, "plain.prompt");
    tu_h5_write_dataset(plain, "prompt", 2, dims, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, vals);
    pf = load_ok(plain);
    ck_assert_int_eq(pf.kind, SP_PROMPT_H5);
    ck_assert_ptr_null(pf.init_name);
    ck_assert_ptr_null(pf.model_fingerprint);
    ck_assert_int_eq(pf.step, -1);
    ck_assert(pf.prompt[5] == 2.5f);
    sp_prompt_file_free(&pf);

    /* A PEFT adapter: the directory, or its safetensors file. */
    char *ad = tu_write_adapter("adapter", model, NP, "text", "Classify:");
    char *ad_file = tu_path(ad, "adapter_model.safetensors");
    const char *paths[] = {ad, ad_file};
    for (int i = 0; i < 2; i++) {
        pf = load_ok(paths[i]);
        ck_assert_int_eq(pf.kind, SP_PROMPT_PEFT);
        ck_assert_str_eq(pf.path, ad_file);
        ck_assert_str_eq(pf.init_name, "text");
        ck_assert_str_eq(pf.init_text, "Classify:");
        ck_assert_str_eq(pf.base_model, "org/base");
        ck_assert_int_eq(pf.num_layers, 2);
        ck_assert_int_eq(pf.num_attention_heads, 2);
        ck_assert(pf.prompt[1] == 0.02f * (float)(7 % 13 - 6));
        sp_prompt_file_free(&pf);
    }
    /* PEFT's init names map back to softprompt's. */
    char *vocab = tu_write_adapter("vocab", model, NP, "vocab", NULL);
    pf = load_ok(vocab);
    ck_assert_str_eq(pf.init_name, "vocab");
    ck_assert_ptr_null(pf.init_text);
    sp_prompt_file_free(&pf);
    char *labels = tu_write_adapter("labels", model, NP, "labels", NULL);
    pf = load_ok(labels);
    ck_assert_str_eq(pf.init_name, "random");
    sp_prompt_file_free(&pf);
    /* F16 adapters (PEFT on a half-precision model) are converted. */
    uint16_t h[NP * DM];
    for (int i = 0; i < NP * DM; i++) h[i] = sp_f32_to_f16(0.25f * (float)(i % 5));
    sp_st_out t = {.name = "prompt_embeddings", .dtype = SP_DTYPE_F16, .ndim = 2, .data = h};
    t.shape[0] = NP, t.shape[1] = DM;
    char *half = copy_adapter(ad, "half");
    write_adapter_tensors(half, &t, 1);
    pf = load_ok(half);
    ck_assert(pf.prompt[4] == 1.0f);
    sp_prompt_file_free(&pf);
    free(model), free(ck), free(plain), free(ad), free(ad_file), free(vocab), free(labels);
    free(half);
}
END_TEST

START_TEST(adapters_are_validated_against_their_config) {
    char *model = make_model("model", 1);
    char *good = tu_write_adapter("good", model, NP, "random", NULL);
    struct {
        const char *name, *key;
        json_t *value;
        const char *want;
    } cases[] = {
        {"lora", "peft_type", json_string("LORA"),
         "peft_type is \"LORA\": softprompt reads PROMPT_TUNING adapters only (that method changes "
         "the model's weights"},
        {"prefix", "peft_type", json_string("PREFIX_TUNING"), "per-layer keys and values"},
        {"ctl", "peft_type", json_string("P\033[31mX"), "peft_type is \"P?[31mX\""},
        {"notype", "peft_type", NULL, "missing \"peft_type\""},
        {"seq2seq", "task_type", json_string("SEQ_2_SEQ_LM"),
         "task_type is \"SEQ_2_SEQ_LM\": softprompt runs causal language models (CAUSAL_LM)"},
        {"two", "num_transformer_submodules", json_integer(2),
         "num_transformer_submodules is 2: the adapter holds a prompt for each of 2 stacks"},
        {"rows", "num_virtual_tokens", json_integer(NP + 1),
         "tensor \"prompt_embeddings\" is [4, 16] but adapter_config.json says "
         "num_virtual_tokens 5, token_dim 16"},
        {"width", "token_dim", json_integer(DM * 2), "num_virtual_tokens 4, token_dim 32"},
        {"word", "num_virtual_tokens", json_string("four"),
         "\"num_virtual_tokens\" must be an integer >= 1"},
        {"zero", "token_dim", json_integer(0), "\"token_dim\" must be an integer >= 1"},
        {"nonum", "num_virtual_tokens", NULL, "missing \"num_virtual_tokens\""},
        {"base", "base_model_name_or_path", json_integer(3),
         "\"base_model_name_or_path\" must be a string or null"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *dir = copy_adapter(good, cases[i].name);
        edit_adapter_config(dir, cases[i].key, cases[i].value);
        load_fails(dir, dir, cases[i].want); /* names its config or its tensor file */
        free(dir);
    }
    /* What PEFT accepts: null token_dim, submodules and task_type (PEFT fills them in). */
    char *nulls = copy_adapter(good, "nulls");
    edit_adapter_config(nulls, "token_dim", json_null());
    edit_adapter_config(nulls, "num_transformer_submodules", json_null());
    edit_adapter_config(nulls, "task_type", json_null());
    sp_prompt_file pf = load_ok(nulls);
    sp_prompt_file_free(&pf);

    /* Not JSON; not an object; no config at all. */
    char *bad = copy_adapter(good, "badjson");
    char *cfg = tu_path(bad, "adapter_config.json");
    tu_write_file(cfg, "{\"peft_type\": ", strlen("{\"peft_type\": "));
    load_fails(bad, cfg, "invalid JSON");
    tu_write_file(cfg, "[1]", 3);
    load_fails(bad, cfg, "not a JSON object");
    ck_assert_int_eq(unlink(cfg), 0);
    char *st = tu_path(bad, "adapter_model.safetensors");
    load_fails(st, cfg, "missing: PEFT needs adapter_config.json beside adapter_model.safetensors");
    free(model), free(good), free(nulls), free(bad), free(cfg), free(st);
}
END_TEST

START_TEST(adapter_tensors_are_checked) {
    char *model = make_model("model", 1);
    char *good = tu_write_adapter("good", model, NP, "random", NULL);
    float p[NP * DM], head[2 * DM];
    tu_fill_prompt(p, NP * DM, 0.1f);
    tu_fill_prompt(head, 2 * DM, 0.1f);
    sp_st_out t[4] = {{.name = "prompt_embeddings", .dtype = SP_DTYPE_F32, .ndim = 2, .data = p},
                      {.name = "score.weight", .dtype = SP_DTYPE_F32, .ndim = 2, .data = head},
                      {.name = "x1", .dtype = SP_DTYPE_F32, .ndim = 1, .data = head},
                      {.name = "x2", .dtype = SP_DTYPE_F32, .ndim = 1, .data = head}};
    t[0].shape[0] = NP, t[0].shape[1] = DM;
    t[1].shape[0] = 2, t[1].shape[1] = DM;
    t[2].shape[0] = t[3].shape[0] = 3;
    char *extra = copy_adapter(good, "extra");
    char *extra_st = tu_path(extra, "adapter_model.safetensors");
    write_adapter_tensors(extra, t, 2);
    load_fails(extra, extra_st,
               "unexpected tensor \"score.weight\" beside \"prompt_embeddings\": a prompt-tuning "
               "adapter for a causal LM holds that tensor only");
    write_adapter_tensors(extra, t, 4);
    load_fails(extra, extra_st, "unexpected tensors \"score.weight\", \"x1\", \"x2\" beside");
    write_adapter_tensors(extra, t + 1, 1);
    load_fails(extra, extra_st, "unexpected tensor \"score.weight\"");
    sp_st_out none = t[2];
    none.name = "prompt_embeddings"; /* 1-D */
    write_adapter_tensors(extra, &none, 1);
    load_fails(extra, extra_st, "tensor \"prompt_embeddings\" is 1-D F32; expected 2-D floats");

    /* Non-finite values, as float32 and after conversion from F16. */
    p[1 * DM + 3] = NAN;
    write_adapter_tensors(extra, t, 1);
    load_fails(extra, extra_st, "tensor \"prompt_embeddings\" element [1, 3] is nan");
    uint16_t h[NP * DM] = {0};
    h[NP * DM - 1] = sp_f32_to_f16(-INFINITY);
    sp_st_out half = {.name = "prompt_embeddings", .dtype = SP_DTYPE_F16, .ndim = 2, .data = h};
    half.shape[0] = NP, half.shape[1] = DM;
    write_adapter_tensors(extra, &half, 1);
    load_fails(extra, extra_st, "element [3, 15] is -inf");
    free(model), free(good), free(extra), free(extra_st);
}
END_TEST

START_TEST(pickles_and_other_files_are_refused) {
    char *model = make_model("model", 1);
    char *good = tu_write_adapter("good", model, NP, "random", NULL);
    /* A directory with PEFT's pickle format only. */
    char *pk = tu_path(tu_dir, "pickled");
    ck_assert_int_eq(mkdir(pk, 0755), 0);
    char *cfg_from = tu_path(good, "adapter_config.json"),
         *cfg_to = tu_path(pk, "adapter_config.json");
    tu_copy_file(cfg_from, cfg_to);
    char *bin = tu_path(pk, "adapter_model.bin");
    static const char zip[] = "PK\003\004 torch.save zip";
    tu_write_file(bin, zip, sizeof zip - 1);
    const char *why = "a PyTorch pickle (as adapter_model.bin is): refused, because loading a "
                      "pickle can run arbitrary code";
    load_fails(pk, bin, why);
    load_fails(bin, bin, "save_file(torch.load(");
    /* Older torch.save (a bare pickle stream), under any name. */
    char *old = tu_path(tu_dir, "prompt.dat");
    static const char stream[] = "\x80\x02}q\x00.";
    tu_write_file(old, stream, sizeof stream - 1);
    load_fails(old, old, why);
    /* A run directory instead of its adapter or checkpoint. */
    char *run = tu_path(tu_dir, "run");
    ck_assert_int_eq(mkdir(run, 0755), 0);
    char *best = tu_path(run, "best.h5");
    tu_write_file(best, "x", 1);
    load_fails(run, run, "is a training run's directory, not an adapter: pass");
    char *empty = tu_path(tu_dir, "emptydir");
    ck_assert_int_eq(mkdir(empty, 0755), 0);
    load_fails(empty, empty, "no adapter_model.safetensors: not a PEFT adapter directory");
    char *txt = tu_path(tu_dir, "notes.txt");
    tu_write_file(txt, "hello, world", 12);
    load_fails(txt, txt, "not a prompt file: expected a softprompt checkpoint");
    char *missing = tu_path(tu_dir, "nope.h5");
    load_fails(missing, missing, "cannot open: No such file or directory");
    free(model), free(good), free(pk), free(cfg_from), free(cfg_to), free(bin), free(old);
    free(run), free(best), free(empty), free(txt), free(missing);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* Is it a prompt for this model?                                                             */
/* ------------------------------------------------------------------------------------------ */

START_TEST(prompts_are_checked_against_the_model) {
    char *a_dir = make_model("a", 1), *b_dir = make_model("b", 2);
    sp_model a, b;
    tu_model_load_ok(&a, a_dir);
    tu_model_load_ok(&b, b_dir);
    char *ck = tu_write_prompt_checkpoint("ck.h5", a_dir, NP, "{}");
    sp_prompt_file pf = load_ok(ck);
    char *w = (char *)1;
    sp_error err = {0};
    ck_assert_msg(sp_prompt_check_model(&pf, &a, 0, &w, &err) == 0, "%s", err.msg);
    ck_assert_ptr_null(w);
    /* Same width, other weights: refused, both fingerprints and the override named. */
    char fa[17], fb[17];
    sp_model_fingerprint(&a, fa);
    sp_model_fingerprint(&b, fb);
    ck_assert_int_eq(sp_prompt_check_model(&pf, &b, 0, &w, &err), -1);
    ck_assert_ptr_null(w);
    ck_assert_msg(strstr(err.msg, ck) && strstr(err.msg, "trained with another model") &&
                      strstr(err.msg, fa) && strstr(err.msg, fb) &&
                      strstr(err.msg, "--allow-model-mismatch"),
                  "%s", err.msg);
    ck_assert_msg(sp_prompt_check_model(&pf, &b, 1, &w, &err) == 0, "%s", err.msg);
    ck_assert_msg(w && strstr(w, "using it anyway (--allow-model-mismatch)\n"), "%s", w);
    free(w);
    sp_prompt_file_free(&pf);

    /* Width. */
    sp_init_options o = tu_gpt2_options(1, 8, 2, 16, 50, 8, 0);
    char *narrow_dir = tu_write_model("narrow", &o);
    sp_model narrow;
    tu_model_load_ok(&narrow, narrow_dir);
    char *ad = tu_write_adapter("adapter", a_dir, NP, "random", NULL);
    pf = load_ok(ad);
    ck_assert_int_eq(sp_prompt_check_model(&pf, &narrow, 1, &w, &err), -1);
    ck_assert_msg(strstr(err.msg, "the prompt is 16 wide (token_dim)") &&
                      strstr(err.msg, "has d_model 8"),
                  "%s", err.msg);
    /* An adapter of the same width and shape: no warning. Other layers/heads: a warning. */
    ck_assert_msg(sp_prompt_check_model(&pf, &b, 0, &w, &err) == 0, "%s", err.msg);
    ck_assert_ptr_null(w);
    sp_prompt_file_free(&pf);
    edit_adapter_config(ad, "num_layers", json_integer(24));
    pf = load_ok(ad);
    ck_assert_msg(sp_prompt_check_model(&pf, &a, 0, &w, &err) == 0, "%s", err.msg);
    ck_assert_msg(w && strstr(w, "says num_layers 24 and num_attention_heads 2") &&
                      strstr(w, "has 2 and 2: the adapter was probably made for another model "
                                "(base_model_name_or_path org/base)"),
                  "%s", w);
    free(w);
    sp_prompt_file_free(&pf);
    sp_model_free(&a), sp_model_free(&b), sp_model_free(&narrow);
    free(a_dir), free(b_dir), free(ck), free(narrow_dir), free(ad);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* PEFT export: keys and base model                                                           */
/* ------------------------------------------------------------------------------------------ */

static int version_at_least(const char *v, int major, int minor) {
    int a = 0, b = 0;
    ck_assert_int_eq(sscanf(v, "%d.%d", &a, &b), 2);
    return a > major || (a == major && b >= minor);
}

static int has_string(json_t *array, const char *s) {
    for (size_t i = 0; i < json_array_size(array); i++) {
        json_t *v = json_array_get(array, i);
        if (json_is_string(v) && strcmp(json_string_value(v), s) == 0) return 1;
    }
    return 0;
}

START_TEST(exported_keys_exist_in_every_peft_since_0_6) {
    json_t *fx = tu_json_load(SP_FIXTURES_DIR "/peft/prompt_tuning_config_fields.json");
    json_t *versions = json_object_get(fx, "versions");
    ck_assert_int_ge(json_object_size(versions), 20);
    ck_assert_ptr_nonnull(json_object_get(versions, "0.6.0"));
    /* The fixture says what broke PEFT <= 0.13: modules_to_save is a 0.17 field. */
    ck_assert(!has_string(json_object_get(json_object_get(versions, "0.13.2"), "fields"),
                          "modules_to_save"));
    char *model = make_model("model", 1);
    const char *inits[][2] = {
        {"random", NULL}, {"vocab", NULL}, {"text", "Classify:"}, {"labels", NULL}};
    int checked = 0;
    for (int k = 0; k < 4; k++) {
        char name[32];
        snprintf(name, sizeof name, "ad%d", k);
        char *dir = tu_write_adapter(name, model, NP, inits[k][0], inits[k][1]);
        char *cfg_path = tu_path(dir, "adapter_config.json");
        json_t *cfg = tu_json_load(cfg_path);
        const char *key, *version;
        json_t *v, *entry;
        json_object_foreach(cfg, key, v) {
            json_object_foreach(versions, version, entry) {
                if (!version_at_least(version, 0, 6)) continue;
                ck_assert_msg(has_string(json_object_get(entry, "fields"), key),
                              "adapter_config.json key \"%s\" is not a PromptTuningConfig field "
                              "in PEFT %s (PeftConfig.from_pretrained would %s)",
                              key, version,
                              version_at_least(version, 0, 14) ? "warn" : "raise TypeError");
                checked++;
            }
        }
        /* The init values are PEFT's: TEXT and RANDOM everywhere, SAMPLE_VOCAB in the newest
         * (older PEFT compares the value with TEXT only). */
        const char *init = json_string_value(json_object_get(cfg, "prompt_tuning_init"));
        json_object_foreach(versions, version, entry) {
            json_t *values = json_object_get(entry, "prompt_tuning_init");
            ck_assert(has_string(values, "TEXT") && has_string(values, "RANDOM"));
            if (version_at_least(version, 0, 18))
                ck_assert_msg(has_string(values, init), "%s: %s", version, init);
        }
        json_decref(cfg);
        free(dir), free(cfg_path);
    }
    ck_assert_int_gt(checked, 4 * 13 * 20);
    json_decref(fx);
    free(model);
}
END_TEST

/* scripts/get-model's record of a download: source and a manifest line per file with its
 * current size and mtime, as `stat -c '%s %.9Y'` prints them. */
static void fake_get_model(const char *dir, const char *repo, const char *commit) {
    char *state = tu_path(dir, ".get-model");
    mkdir(state, 0755);
    char *source = tu_path(state, "source"), *manifest = tu_path(state, "manifest.tsv");
    char text[512];
    int n = snprintf(text, sizeof text, "repository %s\nrevision main\ncommit %s\nendpoint %s\n",
                     repo, commit, "http://127.0.0.1:9");
    tu_write_file(source, text, (size_t)n);
    FILE *f = fopen(manifest, "w");
    const char *files[] = {"config.json", "model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char *p = tu_path(dir, files[i]);
        struct stat st;
        ck_assert_int_eq(stat(p, &st), 0);
        fprintf(f, "%s\tsha256\t%064d\t%lld\t%lld.%09ld\n", files[i], 0, (long long)st.st_size,
                (long long)st.st_mtim.tv_sec, (long)st.st_mtim.tv_nsec);
        free(p);
    }
    fclose(f);
    free(state), free(source), free(manifest);
}

static char *base_of(const char *dir, char **revision, const char **origin) {
    sp_model m;
    tu_model_load_ok(&m, dir);
    sp_error err = {0};
    char *name = sp_peft_base_model(&m, revision, origin, &err);
    ck_assert_msg(name != NULL, "%s", err.msg);
    sp_model_free(&m);
    return name;
}

START_TEST(base_model_defaults_to_a_loadable_name) {
    char *model = make_model("model", 1);
    char *real = realpath(model, NULL), *rev = (char *)1;
    const char *origin = NULL;
    /* A relative --model: recorded absolute. */
    ck_assert_int_eq(chdir(tu_dir), 0);
    char *name = base_of("model", &rev, &origin);
    ck_assert_str_eq(name, real);
    ck_assert_ptr_null(rev);
    ck_assert_str_eq(origin, "the model directory's absolute path");
    free(name);
    /* config.json's _name_or_path names the model before fine-tuning: not used. */
    char *cfg_path = tu_path(model, "config.json");
    tu_json_edit(cfg_path, "_name_or_path", json_string("gpt2"));
    name = base_of(model, &rev, &origin);
    ck_assert_str_eq(name, real);
    free(name);
    /* Downloaded by get-model and unchanged: the repository, at its commit. */
    const char *commit = "0123456789abcdef0123456789abcdef01234567";
    fake_get_model(model, "acme/tiny-gpt2", commit);
    name = base_of(model, &rev, &origin);
    ck_assert_str_eq(name, "acme/tiny-gpt2");
    ck_assert_str_eq(rev, commit);
    ck_assert_str_eq(origin, "the Hugging Face repository scripts/get-model downloaded it from");
    free(name), free(rev);
    /* ...and the export records it. */
    sp_model m;
    tu_model_load_ok(&m, model);
    float prompt[NP * DM] = {0};
    char *out = tu_path(tu_dir, "out");
    sp_error err = {0};
    ck_assert_msg(sp_peft_export(out, prompt, NP, &m, NULL, "random", NULL, &err) == 0, "%s",
                  err.msg);
    char *out_cfg = tu_path(out, "adapter_config.json");
    json_t *cfg = tu_json_load(out_cfg);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "base_model_name_or_path")),
                     "acme/tiny-gpt2");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "tokenizer_name_or_path")),
                     "acme/tiny-gpt2");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "revision")), commit);
    json_decref(cfg);
    /* An explicit --base-model is recorded as given, without a revision. */
    ck_assert_msg(sp_peft_export(out, prompt, NP, &m, "my/base", "random", NULL, &err) == 0, "%s",
                  err.msg);
    cfg = tu_json_load(out_cfg);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "base_model_name_or_path")), "my/base");
    ck_assert(json_is_null(json_object_get(cfg, "revision")));
    json_decref(cfg);
    sp_model_free(&m);
    /* Weights changed since the download (here: only their mtime): the path again. */
    char *weights = tu_path(model, "model.safetensors");
    struct timespec times[2] = {{0, UTIME_OMIT}, {1000000000, 5}};
    ck_assert_int_eq(utimensat(AT_FDCWD, weights, times, 0), 0);
    name = base_of(model, &rev, &origin);
    ck_assert_str_eq(name, real);
    ck_assert_ptr_null(rev);
    free(name);
    /* A repository name that is not one. */
    fake_get_model(model, "../../etc", commit);
    name = base_of(model, &rev, &origin);
    ck_assert_str_eq(name, real);
    free(name);
    free(model), free(real), free(cfg_path), free(out), free(out_cfg), free(weights);
}
END_TEST

/* ------------------------------------------------------------------------------------------ */
/* The eval and export commands                                                               */
/* ------------------------------------------------------------------------------------------ */

START_TEST(eval_prints_json_and_refuses_what_is_not_a_result) {
    char *model = make_model("model", 1), *other = make_model("other", 2);
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
    char *model = make_model("model", 1), *other = make_model("other", 2);
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
    Suite *s = suite_create("prompt_file");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, tu_dir_setup, tu_dir_teardown);
    tcase_add_test(tc, loads_checkpoints_h5py_files_and_adapters);
    tcase_add_test(tc, adapters_are_validated_against_their_config);
    tcase_add_test(tc, adapter_tensors_are_checked);
    tcase_add_test(tc, pickles_and_other_files_are_refused);
    tcase_add_test(tc, prompts_are_checked_against_the_model);
    tcase_add_test(tc, exported_keys_exist_in_every_peft_since_0_6);
    tcase_add_test(tc, base_model_defaults_to_a_loadable_name);
    tcase_add_test(tc, eval_prints_json_and_refuses_what_is_not_a_result);
    tcase_add_test(tc, export_checks_the_prompt_and_names_the_base_model);
    suite_add_tcase(s, tc);
    return tu_run_suite(s);
}
